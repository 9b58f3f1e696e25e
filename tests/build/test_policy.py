"""The quality policy: the recommended variant per device is the one the policy implies."""

from __future__ import annotations

from typing import Any

import pytest
from slimserve.build.evaluate.policy import best, recommend, within_policy
from slimserve.service.store import Architecture, Parity, Variant


def arch(layers: int, flops: int) -> Architecture:
    return Architecture(
        layers=layers,
        heads=[12] * layers,
        ffn=[1536] * layers,
        parameters=layers * 1000,
        flops_per_token=flops,
    )


def variant(
    precision: str | None,
    metric: float,
    b32_ms: float | None,
    *,
    form: str = "teacher",
    flops: int | None = None,
    size: int = 1000,
    key: str = "accuracy",
) -> Variant:
    fields: dict[str, Any] = {"precision": precision, "form": form}
    if flops is not None:
        fields["architecture"] = arch(6 if form == "teacher" else 3, flops)
    return Variant(
        file="x.onnx",
        sha256="0" * 64,
        bytes=size,
        metrics={key: metric},
        parity=Parity(max_abs_logit_diff=0.0, label_agreement=1.0),
        latency_ms={"batch_1": 1.0, "batch_32": b32_ms} if b32_ms else {},
        **fields,
    )


# A sentiment-like version: teacher 0.907; the 3-layer int8 student is fastest and inside 0.97.
SENTIMENT = {
    "fp32": variant("fp32", 0.907, 400.0, flops=200),
    "fp16": variant("fp16", 0.906, 600.0, flops=200),
    "int8": variant("int8", 0.903, 200.0, flops=200),
    "int8-static": variant("int8-static", 0.899, 150.0, flops=200),
    "l3-fp32": variant("fp32", 0.889, 200.0, form="l3", flops=100),
    "l3-fp16": variant("fp16", 0.889, 300.0, form="l3", flops=100),
    "l3-int8": variant("int8", 0.884, 100.0, form="l3", flops=100),
    "l2-int8": variant("int8", 0.850, 60.0, form="l2", flops=70),  # fastest, but under the floor
}


def test_cpu_is_the_fastest_within_the_floor_and_cuda_the_cheapest_fp16() -> None:
    assert recommend(SENTIMENT, "sequence-classification", 0.907, 0.97) == {
        "cpu": "l3-int8",
        "cuda": "l3-fp16",
    }


def test_a_tighter_floor_moves_the_choice_to_the_teacher() -> None:
    # 0.995 x 0.907 = 0.9025: only fp32, fp16 and int8 stay.
    assert within_policy(SENTIMENT, "sequence-classification", 0.907, 0.995) == ["fp16", "fp32", "int8"]
    assert recommend(SENTIMENT, "sequence-classification", 0.907, 0.995) == {"cpu": "int8", "cuda": "fp16"}


def test_fp32_is_taken_on_cuda_when_no_fp16_is_within_the_policy() -> None:
    variants = {k: v for k, v in SENTIMENT.items() if k != "l3-fp16"}
    assert recommend(variants, "sequence-classification", 0.907, 0.97)["cuda"] == "l3-fp32"


def test_fp16_before_fp32_at_equal_cost_whatever_the_order() -> None:
    variants = {
        "fp32": variant("fp32", 0.9, 100.0, flops=10),
        "fp16": variant("fp16", 0.8999, 900.0, flops=10),
    }
    assert recommend(variants, "sequence-classification", 0.9, 0.97)["cuda"] == "fp16"


def test_token_classification_judges_by_f1() -> None:
    variants = {
        "fp32": variant("fp32", 0.90, 400.0, flops=200, key="f1"),
        "int8": variant("int8", 0.89, 200.0, flops=200, key="f1"),
        "l3-int8": variant("int8", 0.80, 100.0, form="l3", flops=100, key="f1"),
    }
    assert recommend(variants, "token-classification", 0.90, 0.97) == {"cpu": "int8", "cuda": "fp32"}
    assert best(variants, "token-classification") == "fp32"


def test_version_1_variants_without_precision_or_architecture() -> None:
    variants = {
        "fp32": variant(None, 0.9, 300.0),
        "fp16": variant(None, 0.9, 500.0),
        "int8": variant(None, 0.9, 150.0),
    }
    assert recommend(variants, "sequence-classification", 0.9, 0.97) == {"cpu": "int8", "cuda": "fp16"}


def test_unmeasured_latency_ranks_below_measured() -> None:
    variants = {"fp32": variant("fp32", 0.9, None, flops=10), "int8": variant("int8", 0.9, 500.0, flops=10)}
    assert recommend(variants, "sequence-classification", 0.9, 0.97)["cpu"] == "int8"


def test_nothing_within_the_policy_recommends_the_most_accurate() -> None:
    assert recommend(SENTIMENT, "sequence-classification", 0.907, 1.5) == {"cpu": "fp32", "cuda": "fp32"}


def test_cpu_choice_serves_cuda_when_no_fp16_or_fp32_qualifies() -> None:
    variants = {"int8": variant("int8", 0.9, 100.0), "fp32": variant("fp32", 0.5, 300.0)}
    assert recommend(variants, "sequence-classification", 0.9, 0.97) == {"cpu": "int8", "cuda": "int8"}


def test_best_is_the_most_accurate_and_ties_go_to_the_fastest() -> None:
    assert best(SENTIMENT, "sequence-classification") == "fp32"
    tied = {"fp32": variant("fp32", 0.9, 400.0), "int8": variant("int8", 0.9, 200.0)}
    assert best(tied, "sequence-classification") == "int8"
    unmeasured = {"fp32": variant("fp32", 0.9, None, size=4), "int8": variant("int8", 0.9, None, size=1)}
    assert best(unmeasured, "sequence-classification") == "int8"


def test_empty_is_an_error() -> None:
    with pytest.raises(ValueError):
        recommend({}, "sequence-classification", 0.9, 0.97)
    with pytest.raises(ValueError):
        best({}, "sequence-classification")
