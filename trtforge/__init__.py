"""trtforge: ONNX to verified, stamped TensorRT engines in CI, and a loader that refuses misfits."""

__version__ = "0.1.0"
