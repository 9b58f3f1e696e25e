"""Data: read a recipe's examples from the local mirror (or the hub), CoNLL parsing, label alignment."""
