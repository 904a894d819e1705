"""lit-garbage: household-garbage image classifier (PyTorch Lightning), exported to ONNX, TensorFlow, TFLite and TFJS."""

import os

# On CPU, busy-waiting OpenMP threads collapse when processes share cores (DataLoader workers,
# DDP ranks, a second job): measured 35x slower steps on 2 cores. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# TensorFlow's C++ start-up chatter (tensorboard/TF imports) is noise for users of this package.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
