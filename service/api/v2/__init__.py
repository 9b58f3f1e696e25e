"""Open Inference Protocol v2 (KServe / Triton HTTP/REST) on the same engines as ``/v1``."""
