"""Training in PyTorch: model I/O, the one training loop, fine-tuning and distillation on top of it."""
