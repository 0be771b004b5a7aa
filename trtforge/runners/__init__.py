"""Runners in the style of Polygraphy: ``activate()``, ``infer(feed) -> outputs``, ``deactivate()``.

One interface (``base.Runner``), one module per kind: ``onnxruntime.OnnxrtRunner`` runs an ONNX
model in onnxruntime (the accuracy gate's reference, the pool's GPU-less contexts);
``tensorrt.TrtRunner`` runs a deserialized TensorRT engine on the CUDA wrappers of ``cuda``
(cuda-python, ``pip install 'trtforge[gpu]'``; nothing here uses PyTorch). A runner is used by
one thread at a time.
"""
