"""Compressed forms of the fine-tuned teacher: layer-dropped students and structured pruning."""
