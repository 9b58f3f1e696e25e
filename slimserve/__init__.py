"""slimserve: build compressed NLP models offline, serve them on ONNX Runtime."""

__version__ = "0.1.0"
