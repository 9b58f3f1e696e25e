"""Wire types of the HTTP API (the contract's shapes). Requests reject unknown fields."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from slimserve.service.tasks.token_classification import Aggregation

Inputs = Annotated[
    str | Annotated[list[str], Field(min_length=1)],
    Field(
        description="One text, or a non-empty list of texts; results come back aligned, in order.",
        examples=["The film is a quiet triumph.", ["I love it", "Worst purchase ever"]],
    ),
]


def _json_integer(value: object) -> object:
    # JSON Schema's "integer" is a value test: 3.0 is one, "3" and true are not. Strict pydantic would
    # refuse 3.0 and lax pydantic would take "3"; this takes exactly what the published schema allows.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


AS_JSON_INTEGER = BeforeValidator(_json_integer)
"""Put bounds beside it inside one Annotated (``Annotated[int, Field(ge=1), AS_JSON_INTEGER]``): bounds
given outside are written to JSON Schema as "ge"/"le", which validators ignore."""
JsonInteger = Annotated[int, AS_JSON_INTEGER]


class InferenceRequest(BaseModel):
    # Subclasses inherit this config (pydantic merges model_config). strict: JSON types are taken as
    # the OpenAPI schema declares them ("truncate": 0 or "top_k": "3" is a 422, not silently
    # coerced), as serde-based servers such as TEI behave.
    model_config = ConfigDict(extra="forbid", strict=True)

    def texts(self) -> list[str]:
        inputs: str | list[str] = getattr(self, "inputs")  # noqa: B009 - every request has inputs
        return [inputs] if isinstance(inputs, str) else list(inputs)


class ClassifyRequest(InferenceRequest):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"inputs": ["my card has not arrived yet"], "top_k": 3}]},
    )

    inputs: Inputs
    model: str | None = Field(
        None, description="A sequence-classification model; the endpoint's default if unset."
    )
    top_k: JsonInteger = Field(
        1, ge=1, le=1000, description="When > 1, `top` lists this many labels, best first."
    )
    truncate: bool = Field(
        True, description="Cut texts longer than the model's window; when false they get 400 input_too_long."
    )


class NerRequest(InferenceRequest):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"inputs": "Angela Merkel visited Paris.", "aggregation": "simple"}]},
    )

    inputs: Inputs
    model: str | None = Field(None, description="A token-classification model; `ner` if unset.")
    aggregation: Aggregation = Field(
        "simple",
        description="`simple` merges words into entities by their BIO tags (a word's tag from its first "
        "piece); `first`, `average` and `max` merge as Hugging Face's token-classification pipeline (a "
        "word's label from its first piece, or the average or the most confident of its pieces); `none` "
        "returns each word piece with its raw tag.",
    )


class LabelScore(BaseModel):
    label: str
    score: float


class Classification(BaseModel):
    label: str = Field(description="The most likely label.")
    score: float = Field(description="Its probability (softmax).")
    top: list[LabelScore] | None = Field(None, description="The `top_k` best labels, when top_k > 1.")


class ClassifyResponse(BaseModel):
    model: str
    version: int
    variant: str
    results: list[Classification]


class Entity(BaseModel):
    entity: str = Field(description="Entity type (`PER`) with `simple`; the raw tag (`B-PER`) with `none`.")
    text: str = Field(description="Exactly `input[start:end]`.")
    start: int = Field(description="Character offset into the input as sent (Python string index).")
    end: int
    score: float


class NerResult(BaseModel):
    entities: list[Entity]


class NerResponse(BaseModel):
    model: str
    version: int
    variant: str
    results: list[NerResult]


class Architecture(BaseModel):
    layers: int
    heads: list[int] = Field(description="Attention heads per layer.")
    ffn: list[int] = Field(description="FFN intermediate width per layer.")
    parameters: int
    flops_per_token: int


class ModelInfo(BaseModel):
    name: str
    task: str
    version: int
    variant: str = Field(description="The variant every request to this model is answered by.")
    precision: str | None = Field(description="fp32, fp16, int8 or int8-static; null if unknown.")
    form: str = Field(description="'teacher' (the fine-tuned model) or the compressed form's name.")
    architecture: Architecture | None = Field(
        description="The served variant's encoder; null for manifests built before schema 2."
    )
    recommended: dict[str, str] = Field(
        description="The build's recommended variant per device (cpu, cuda); empty before schema 2."
    )
    provider: str = Field(description="The execution provider ONNX Runtime really uses.")
    labels: list[str]
    max_seq_len: int
    metrics: dict[str, float] = Field(description="The manifest's metrics for the served variant.")


class RefusedVersion(BaseModel):
    name: str
    version: int
    reason: str = Field(description="Why the version did not load (the file and the cause).")
    retrying: bool = Field(description="An I/O error: store polling tries the version again later.")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    refused: list[RefusedVersion] = Field(
        default_factory=list,
        description="Versions that did not load and are not served (a corrupt newest version at "
        "start-up, a refused reload), newest first per model; the model serves the highest that loads.",
    )


class ReloadResponse(BaseModel):
    model: str
    version: int
    variant: str
    provider: str
    previous_version: int | None


class Status(BaseModel):
    status: str


class ErrorBody(BaseModel):
    type: str = Field(examples=["overloaded"])
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
