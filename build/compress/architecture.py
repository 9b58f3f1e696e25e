"""What an encoder is made of after compression, read from the module itself (not the config,
which pruning leaves stale): layers, heads and FFN width per layer, parameters, FLOPs per token."""

from __future__ import annotations

import torch
from slimserve.service.store import Architecture


def encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer blocks of a Hugging Face BERT-style model (``model.<base>.encoder.layer``)."""
    return model.base_model.encoder.layer  # type: ignore[union-attr,return-value]


def head_size(model: torch.nn.Module) -> int:
    return int(encoder_layers(model)[0].attention.self.attention_head_size)


def heads_of(layer: torch.nn.Module) -> int:
    attention = layer.attention.self
    return int(attention.query.out_features // attention.attention_head_size)


def ffn_of(layer: torch.nn.Module) -> int:
    return int(layer.intermediate.dense.out_features)


def flops_per_token(hidden: int, heads: list[int], ffn: list[int], head_dim: int, seq_len: int) -> int:
    """2 x multiply-adds per token: q/k/v and output projections, attention scores and the weighted
    sum over ``seq_len`` positions, the two FFN matrices. Embeddings, norms, activations and the
    classifier head are left out (each under 1% here)."""
    total = 0
    for h, f in zip(heads, ffn, strict=True):
        width = h * head_dim
        total += 2 * (3 * hidden * width + width * hidden)  # q, k, v, output projection
        total += 2 * (2 * seq_len * width)  # QK^T and attention x V
        total += 2 * (2 * hidden * f)  # FFN in and out
    return total


def describe(model: torch.nn.Module, seq_len: int) -> Architecture:
    layers = list(encoder_layers(model))
    heads = [heads_of(layer) for layer in layers]
    ffn = [ffn_of(layer) for layer in layers]
    hidden = int(model.config.hidden_size)  # type: ignore[union-attr]
    return Architecture(
        layers=len(layers),
        heads=heads,
        ffn=ffn,
        parameters=sum(p.numel() for p in model.parameters()),
        flops_per_token=flops_per_token(hidden, heads, ffn, head_size(model), seq_len),
    )
