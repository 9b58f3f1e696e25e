"""Hugging Face inference task shapes (and TEI's /predict and /info), one base URL per model."""
