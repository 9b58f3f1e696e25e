"""Wire types of the Open Inference Protocol v2 (REST), and its tensor codec.

The JSON shapes are the protocol's (https://kserve.github.io/website/docs/concepts/architecture/
data-plane/v2-protocol); tensors travel either as JSON ``data`` or, with Triton's binary tensor data
extension (what ``tritonclient.http`` and the kserve SDK send by default), as raw bytes after the JSON
header, whose length is in the ``Inference-Header-Content-Length`` header. A BYTES tensor's raw form
is each element as a 4-byte little-endian length followed by its bytes.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json
from slimserve.service.api.schemas import AS_JSON_INTEGER
from slimserve.service.errors import InvalidInput, invalid
from slimserve.service.tasks.token_classification import Aggregation

HEADER_LENGTH = "inference-header-content-length"
"""Triton's binary tensor data extension: the JSON part's byte length, the tensors' bytes follow."""

TEXT_INPUT = "text"

Count = Annotated[int, Field(ge=0), AS_JSON_INTEGER]
Positive = Annotated[int, Field(ge=1), AS_JSON_INTEGER]
TopK = Annotated[int, Field(ge=1, le=1000), AS_JSON_INTEGER]


class _Wire(BaseModel):
    # strict: JSON types as the schema declares them ("top_k": "3" is a 422), as on /v1.
    model_config = ConfigDict(extra="forbid", strict=True)


class _Parameters(BaseModel):
    # v2 parameters are an open map: the ones this server reads are typed, others are ignored.
    model_config = ConfigDict(extra="allow", strict=True)


class InputParameters(_Parameters):
    binary_data_size: Count | None = Field(
        None, description="The texts follow the JSON as raw bytes, this many of them."
    )


class RequestInput(_Wire):
    name: Literal["text"] = Field(description=f"`{TEXT_INPUT}`: the only input of every model.")
    shape: list[Positive] = Field(
        min_length=1, description="`[n]` (or any shape of n elements, e.g. `[n, 1]`): n texts."
    )
    datatype: Literal["BYTES"] = Field(description="`BYTES`: UTF-8 texts.")
    parameters: InputParameters | None = None
    data: list[str | list[str]] | None = Field(
        None, min_length=1, description="The texts, row-major (`[[...], ...]` for shape `[n, 1]` works too)."
    )


class OutputParameters(_Parameters):
    binary_data: bool | None = Field(None, description="This output as raw bytes after the JSON.")
    classification: TopK | None = Field(
        None,
        description="Triton's classification extension (classification models): this output becomes the "
        "best k classes as BYTES `score:index:label`, shape `[n, k]`.",
    )


class RequestOutput(_Wire):
    name: Literal["label", "score", "entities"] = Field(
        description="`label`, `score` (classification models) or `entities` (NER models)."
    )
    parameters: OutputParameters | None = None


class RequestParameters(_Parameters):
    top_k: TopK | None = Field(
        None,
        description="Classification: `label` and `score` become `[n, top_k]`, best first.",
    )
    truncate: bool | None = Field(
        None, description="Classification: cut texts longer than the window (default); false answers 400."
    )
    aggregation: Aggregation | None = Field(None, description="NER: as on /v1/ner (default `simple`).")
    binary_data_output: bool | None = Field(None, description="Every output as raw bytes after the JSON.")


class InferRequest(_Wire):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "inputs": [
                        {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["I love it", "meh"]}
                    ],
                    "parameters": {"top_k": 2},
                }
            ]
        }
    )

    id: str | None = Field(None, description="Echoed in the response.")
    model_name: str | None = Field(None, description="When sent (the kserve SDK does): the path's model.")
    model_version: str | None = Field(None, description="When sent: the path's version.")
    parameters: RequestParameters | None = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=1)
    outputs: list[RequestOutput] | None = Field(None, description="Which outputs to return; all by default.")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="`variant`: the variant that answered.")
    outputs: list[ResponseOutput]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ConfigTensor(BaseModel):
    name: str
    data_type: str = Field(description="Triton's type name: `TYPE_STRING` (BYTES), `TYPE_FP32`.")
    dims: list[int]


class ModelConfig(BaseModel):
    """Triton's model configuration (its HTTP JSON form), which Triton's tools such as perf_analyzer
    read before they send anything. ``max_batch_size`` 0: batching happens inside the server."""

    name: str
    platform: str
    backend: str
    max_batch_size: int
    input: list[ConfigTensor]
    output: list[ConfigTensor]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class ErrorResponse(BaseModel):
    error: str = Field(examples=["no model named 'x' is served (served: intent, ner, sentiment)"])


# -- the codec ---------------------------------------------------------------------------------------


def parse_request(body: bytes, header_length: str | None) -> tuple[InferRequest, list[str]]:
    """The request and its texts. Raises :class:`InvalidRequest` (422) for what the schema refuses and
    :class:`InvalidInput` (400) for parts that disagree (shape against data, binary sizes)."""
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidInput(
                f"{HEADER_LENGTH} must be the JSON part's length in bytes (at most {len(body)}), "
                f"got {header_length!r}"
            )
        split = int(header_length)
        body, binary = body[:split], body[split:]
    try:
        request = InferRequest.model_validate_json(body)
    except ValidationError as exc:
        raise invalid(exc.errors()) from None
    tensor = request.inputs[0]
    size = tensor.parameters.binary_data_size if tensor.parameters else None
    if size is not None:
        if size != len(binary) or tensor.data is not None:
            raise InvalidInput(
                f"input {TEXT_INPUT!r}: binary_data_size {size} but {len(binary)} bytes follow the JSON"
                + (" and data is set too" if tensor.data is not None else "")
            )
        texts = _bytes_elements(binary)
    elif tensor.data is None:
        raise InvalidInput(f"input {TEXT_INPUT!r} has neither data nor binary_data_size")
    elif binary:
        raise InvalidInput("bytes follow the JSON header but no input declares binary_data_size")
    else:
        texts = [t for item in tensor.data for t in ([item] if isinstance(item, str) else item)]
    if len(texts) != math.prod(tensor.shape):
        raise InvalidInput(
            f"input {TEXT_INPUT!r} has {len(texts)} elements but its shape {tensor.shape} says "
            f"{math.prod(tensor.shape)}"
        )
    return request, texts


def _bytes_elements(raw: bytes) -> list[str]:
    texts: list[str] = []
    pos = 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise InvalidInput(f"input {TEXT_INPUT!r}: truncated BYTES element at byte {pos}")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise InvalidInput(f"input {TEXT_INPUT!r}: BYTES element at byte {pos - 4} runs past the end")
        try:
            texts.append(raw[pos : pos + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput(f"input {TEXT_INPUT!r}: element {len(texts)} is not UTF-8") from None
        pos += n
    return texts


@dataclass(frozen=True, slots=True)
class Tensor:
    """One output: ``data`` is row-major and flat."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any]

    def raw(self) -> bytes:
        if self.datatype == "BYTES":
            parts = []
            for item in self.data:
                encoded = item.encode("utf-8") if isinstance(item, str) else bytes(item)
                parts.append(struct.pack("<I", len(encoded)))
                parts.append(encoded)
            return b"".join(parts)
        if self.datatype == "FP32":
            return np.asarray(self.data, dtype="<f4").tobytes()
        raise ValueError(f"no raw encoding for {self.datatype}")


def encode_response(
    header: dict[str, Any], tensors: list[Tensor], binary: dict[str, bool]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON part's length when raw tensors follow it (else None).
    ``binary`` says, per output name, whether it travels as raw bytes."""
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for tensor in tensors:
        out: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if binary.get(tensor.name, False):
            raw = tensor.raw()
            out["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            out["data"] = tensor.data
        outputs.append(out)
    head = to_json({**header, "outputs": outputs})
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)
