"""lit-garbage: household-garbage image classifier (PyTorch Lightning), exported to ONNX, TensorFlow, TFLite and TFJS."""

import os

# On CPU, busy-waiting OpenMP threads collapse when processes share cores (DataLoader workers,
# DDP ranks, a second job): measured 35x slower steps on 2 cores. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# TensorFlow's own log level (TF_CPP_MIN_LOG_LEVEL) is left to the commands: `lit-garbage export --verbose`
# shows TensorFlow's logs, every other run hides them (commands/options.py, `quiet_tensorflow`).

__version__ = "0.1.0"
