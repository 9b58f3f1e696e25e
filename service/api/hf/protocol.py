"""Wire types of the Hugging Face task shapes that ``huggingface_hub.InferenceClient`` sends and reads
(text-classification and token-classification, as in the published task specs of ``@huggingface/tasks``)
and of Text Embeddings Inference's ``/predict`` and ``/info``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from slimserve.service.api.schemas import AS_JSON_INTEGER, Inputs

TopK = Annotated[int, Field(ge=1, le=1000), AS_JSON_INTEGER]
Stride = Annotated[int, Field(ge=0), AS_JSON_INTEGER]


class _Request(BaseModel):
    # strict and closed, as on /v1: "top_k": "3" or an unknown field is a 422.
    model_config = ConfigDict(extra="forbid", strict=True)

    def texts(self) -> list[str]:
        inputs: str | list[str] = getattr(self, "inputs")  # noqa: B009 - every request has inputs
        return [inputs] if isinstance(inputs, str) else list(inputs)


class TextClassificationParameters(_Request):
    top_k: TopK | None = Field(None, description="Only the best k labels; all labels when unset.")
    function_to_apply: Literal["softmax", "sigmoid", "none"] | None = Field(
        None, description="Only `softmax` (the default) is offered; the others answer 400."
    )


class TextClassificationRequest(_Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"inputs": "I love this!"}]})

    inputs: Inputs
    parameters: TextClassificationParameters | None = None


class TokenClassificationParameters(_Request):
    aggregation_strategy: Literal["none", "simple", "first", "average", "max"] | None = Field(
        None, description="As on /v1/ner's `aggregation` (default `simple`)."
    )
    ignore_labels: list[str] | None = Field(
        None, description='Entity groups (tags with `none`) to leave out; default `["O"]`.'
    )
    stride: Stride | None = Field(
        None, description="Accepted; long texts are windowed with the server's `ner_stride`."
    )


class TokenClassificationRequest(_Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"inputs": "Angela Merkel visited Paris."}]})

    inputs: Inputs
    parameters: TokenClassificationParameters | None = None


class ClassificationOutput(BaseModel):
    label: str
    score: float


class TokenClassificationOutput(BaseModel):
    entity_group: str | None = Field(None, description="The entity type (every strategy but `none`).")
    entity: str | None = Field(None, description="The piece's raw tag (`none` only).")
    score: float
    word: str = Field(description="Exactly `input[start:end]`.")
    start: int
    end: int


class PredictRequest(_Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"inputs": ["I love this!", "meh"]}]})

    inputs: Inputs
    truncate: bool = Field(
        False, description="Cut texts longer than the window; false (TEI's default) answers 400."
    )
    raw_scores: Literal[False] = Field(False, description="Only probabilities are offered.")


class ClassifierInfo(BaseModel):
    id2label: dict[str, str]
    label2id: dict[str, int]


class ModelType(BaseModel):
    classifier: ClassifierInfo


class Info(BaseModel):
    """TEI's /info, filled from the manifest and the server's settings."""

    model_id: str
    model_sha: str | None = Field(description="The served variant's sha256.")
    model_dtype: str = Field(description="The served variant (`int8`, `fp16`, ...).")
    model_type: ModelType
    pipeline_tag: str = Field(description="`text-classification` or `token-classification`.")
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int
    max_client_batch_size: int
    tokenization_workers: int
    version: str


class ErrorResponse(BaseModel):
    error: str = Field(examples=["no model named 'x' is served (served: intent, ner, sentiment)"])
    error_type: str = Field(examples=["model_not_found"])
