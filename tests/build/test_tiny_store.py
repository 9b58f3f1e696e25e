"""The session's tiny store: a real published store in the contract's layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from slimserve.service.engine.runner import OnnxRunner
from slimserve.service.engine.tokenizer import TextTokenizer, pad
from slimserve.service.store import model_names, read_manifest, verify_checksums, version_dir, versions


def test_tiny_store_has_both_models_with_every_variant(tiny_store: Path) -> None:
    assert model_names(tiny_store) == ["intent", "sentiment"]
    for name in ("sentiment", "intent"):
        assert versions(tiny_store, name) == [1]
        directory = version_dir(tiny_store, name, 1)
        manifest = read_manifest(directory)
        assert manifest.name == name
        assert manifest.version == 1
        assert set(manifest.variants) == {"fp32", "fp16", "int8", "int8-static"}
        assert (directory / manifest.tokenizer).is_file()
        verify_checksums(directory, manifest)
        for variant in manifest.variants.values():
            assert set(variant.metrics) == {"accuracy", "macro_f1"}
            assert 0.0 <= variant.metrics["accuracy"] <= 1.0
            assert variant.bytes == (directory / variant.file).stat().st_size


@pytest.mark.parametrize("variant", ["fp32", "fp16", "int8", "int8-static"])
def test_tiny_variants_serve_any_batch_shape(tiny_store: Path, variant: str) -> None:
    directory = version_dir(tiny_store, "intent", 1)
    manifest = read_manifest(directory)
    tok = TextTokenizer(directory / manifest.tokenizer, manifest.max_seq_len)
    runner = OnnxRunner(directory / manifest.variants[variant].file)
    for texts in (["card?"], ["where is my card", "exchange rate", "x " * 300]):
        batch = pad(tok.encode(texts))
        logits = runner.run(batch.input_ids, batch.attention_mask, batch.token_type_ids)
        assert logits.shape == (len(texts), len(manifest.labels))
        assert logits.dtype.name == "float32"
