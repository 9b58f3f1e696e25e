"""PyTorch -> ONNX: export, ONNX Runtime fusion, fp16 and int8 (dynamic and static) conversion."""
