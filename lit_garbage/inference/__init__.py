"""Stage 4, inference: one way to run any model file (checkpoint, ONNX, SavedModel, TFLite, TFJS) on image files."""
