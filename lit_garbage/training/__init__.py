"""Stage 3, training: the LightningModule, callbacks, config checks, the LightningCLI and the Keras model import."""
