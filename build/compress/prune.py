"""Structured pruning: rank attention heads and FFN neurons by importance on training batches,
then remove the weakest from the weight matrices (physically: the exported graph is smaller).

Importance is the first-order estimate of the loss change when a unit is removed, |sum over an
example's tokens of activation x gradient|, summed over examples: for a head that is Michel et al.
(2019)'s head-mask gradient (the head's context output dotted with its gradient), for an FFN neuron
the same on its activation. Every layer keeps the same number of heads and of neurons: ONNX Runtime's
attention fusion takes one head count per layer and the build passes one to it (see docs/build.md).

transformers 5 has no ``prune_heads`` any more; ``prune_linear_layer`` slices the query/key/value rows
and the output projection's columns of whole heads (BERT's attention infers the head count from the
tensor shape), and the FFN's intermediate rows and output columns.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from slimserve.build.compress.architecture import encoder_layers, ffn_of, heads_of
from slimserve.build.errors import RecipeError
from slimserve.build.train.model_io import forward
from slimserve.service.engine.tokenizer import Batch


@dataclass(frozen=True)
class Importance:
    heads: list[np.ndarray]  # per layer, one score per head
    neurons: list[np.ndarray]  # per layer, one score per FFN neuron


@dataclass(frozen=True)
class Pruned:
    model: torch.nn.Module
    heads_kept: list[list[int]]  # per layer, original head indices kept (ascending)
    neurons_kept: list[list[int]]


def measure_importance(model: torch.nn.Module, batches: Iterable[tuple[Batch, torch.Tensor]]) -> Importance:
    """Accumulate |activation x gradient| per head and per FFN neuron over ``(batch, labels)``."""
    layers = list(encoder_layers(model))
    head_dim = int(layers[0].attention.self.attention_head_size)
    heads = [np.zeros(heads_of(layer)) for layer in layers]
    neurons = [np.zeros(ffn_of(layer)) for layer in layers]
    captured: dict[tuple[str, int], torch.Tensor] = {}

    def capture(kind: str, index: int):  # type: ignore[no-untyped-def]
        def hook(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            activation = inputs[0]
            activation.retain_grad()
            captured[(kind, index)] = activation

        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.attention.output.dense.register_forward_pre_hook(capture("head", i)))
        handles.append(layer.output.dense.register_forward_pre_hook(capture("ffn", i)))
    was_training = model.training
    model.eval()  # no dropout: the estimate is of the model as it will be served
    try:
        for batch, labels in batches:
            captured.clear()
            model.zero_grad(set_to_none=True)
            forward(model, batch, labels=labels).loss.backward()
            for i in range(len(layers)):
                ctx = captured[("head", i)]
                per_row = (ctx * ctx.grad).detach()  # [batch, tokens, heads x head_dim]
                b, t, _ = per_row.shape
                head_scores = per_row.view(b, t, -1, head_dim).sum(dim=(1, 3)).abs().sum(dim=0)
                heads[i] += head_scores.double().numpy()
                act = captured[("ffn", i)]
                neurons[i] += (act * act.grad).detach().sum(dim=1).abs().sum(dim=0).double().numpy()
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return Importance(heads, neurons)


def _top(scores: np.ndarray, keep: int) -> list[int]:
    # Stable on ties (lower index first), then back to the original order of the units.
    order = np.argsort(-scores, kind="stable")[:keep]
    return sorted(int(i) for i in order)


def prune(model: torch.nn.Module, importance: Importance, heads: int | None, ffn: int | None) -> Pruned:
    """A pruned deep copy: every layer keeps its ``heads`` most important heads and ``ffn`` most
    important FFN neurons (None: all of them)."""
    from transformers.pytorch_utils import prune_linear_layer

    pruned = copy.deepcopy(model)
    heads_kept: list[list[int]] = []
    neurons_kept: list[list[int]] = []
    for i, layer in enumerate(encoder_layers(pruned)):
        attention = layer.attention.self
        head_dim = int(attention.attention_head_size)
        n_heads, n_ffn = heads_of(layer), ffn_of(layer)
        if heads is not None and heads > n_heads:
            raise RecipeError(f"prune: {heads} heads asked for, layer {i} has {n_heads}")
        if ffn is not None and ffn > n_ffn:
            raise RecipeError(f"prune: {ffn} FFN neurons asked for, layer {i} has {n_ffn}")
        keep_heads = _top(importance.heads[i], heads) if heads is not None else list(range(n_heads))
        if len(keep_heads) < n_heads:
            index = torch.tensor([h * head_dim + j for h in keep_heads for j in range(head_dim)])
            attention.query = prune_linear_layer(attention.query, index, dim=0)
            attention.key = prune_linear_layer(attention.key, index, dim=0)
            attention.value = prune_linear_layer(attention.value, index, dim=0)
            layer.attention.output.dense = prune_linear_layer(layer.attention.output.dense, index, dim=1)
            attention.num_attention_heads = len(keep_heads)
            attention.all_head_size = len(keep_heads) * head_dim
        keep_neurons = _top(importance.neurons[i], ffn) if ffn is not None else list(range(n_ffn))
        if len(keep_neurons) < n_ffn:
            index = torch.tensor(keep_neurons)
            layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, index, dim=0)
            layer.output.dense = prune_linear_layer(layer.output.dense, index, dim=1)
        heads_kept.append(keep_heads)
        neurons_kept.append(keep_neurons)
    return Pruned(pruned, heads_kept, neurons_kept)
