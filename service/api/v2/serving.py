"""What a v2 request does: parse the tensors, run the model through the shared ``run_inference``
(same limits, deadline, queue and metrics as ``/v1``), and encode the outputs as tensors.

Tensors per task (also in the README and the model metadata):

- sequence classification: ``label`` BYTES and ``score`` FP32, shape ``[n]``; with the request
  parameter ``top_k`` = k > 1 both are ``[n, k]``, best first.
- token classification: ``entities`` BYTES ``[n]``, each element a JSON array of ``/v1/ner``'s entity
  objects (``entity``, ``text``, ``start``, ``end``, ``score``) for that input.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import Request, Response
from pydantic_core import to_json
from slimserve.service.api.endpoints import timing_headers
from slimserve.service.api.serving import run_inference, served_model
from slimserve.service.api.v2.protocol import (
    HEADER_LENGTH,
    TEXT_INPUT,
    ConfigTensor,
    InferRequest,
    MetadataTensor,
    ModelConfig,
    ModelMetadata,
    RequestParameters,
    Tensor,
    encode_response,
    parse_request,
)
from slimserve.service.errors import InvalidInput
from slimserve.service.registry import Registry, Served
from slimserve.service.settings import Settings
from slimserve.service.store import SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION
from slimserve.service.tasks.classification import ClassifyParams, Prediction
from slimserve.service.tasks.token_classification import NerParams, NerResult

SEQUENCE = SEQUENCE_CLASSIFICATION
TOKEN = TOKEN_CLASSIFICATION
PLATFORM = "onnxruntime_onnx"
OUTPUTS = {SEQUENCE: ("label", "score"), TOKEN: ("entities",)}
DATATYPES = {"label": "BYTES", "score": "FP32", "entities": "BYTES"}


def metadata(served: Served) -> ModelMetadata:
    outputs = OUTPUTS.get(served.manifest.task, ())
    return ModelMetadata(
        name=served.name,
        versions=[str(served.version)],
        platform=PLATFORM,
        inputs=[MetadataTensor(name=TEXT_INPUT, datatype="BYTES", shape=[-1])],
        outputs=[MetadataTensor(name=o, datatype=DATATYPES[o], shape=[-1]) for o in outputs],
    )


TRITON_TYPES = {"BYTES": "TYPE_STRING", "FP32": "TYPE_FP32"}


def config(served: Served) -> ModelConfig:
    meta = metadata(served)

    def tensors(items: list[MetadataTensor]) -> list[ConfigTensor]:
        return [ConfigTensor(name=t.name, data_type=TRITON_TYPES[t.datatype], dims=t.shape) for t in items]

    return ModelConfig(
        name=served.name,
        platform=PLATFORM,
        backend="onnxruntime",
        max_batch_size=0,
        input=tensors(meta.inputs),
        output=tensors(meta.outputs),
    )


def _wanted(request: InferRequest, task: str) -> tuple[list[str], dict[str, bool], dict[str, int]]:
    """Output names, whether each is raw bytes, and Triton classification counts per output."""
    names = OUTPUTS[task]
    default_binary = bool(request.parameters and request.parameters.binary_data_output)
    if not request.outputs:
        return list(names), dict.fromkeys(names, default_binary), {}
    wanted: list[str] = []
    binary: dict[str, bool] = {}
    classes: dict[str, int] = {}
    for out in request.outputs:
        if out.name not in names:
            raise InvalidInput(f"output {out.name!r} is not one of this model's outputs {list(names)}")
        params = out.parameters
        wanted.append(out.name)
        binary[out.name] = (
            default_binary if params is None or params.binary_data is None else params.binary_data
        )
        if params is not None and params.classification is not None:
            if task != SEQUENCE:
                raise InvalidInput("the classification parameter applies to classification models only")
            classes[out.name] = params.classification
    return wanted, binary, classes


def _classification_tensors(
    results: list[Prediction], wanted: list[str], top_k: int, classes: dict[str, int], labels: list[str]
) -> list[Tensor]:
    n = len(results)
    tensors = []
    for name in wanted:
        k = classes.get(name)
        if k is not None:  # Triton's classification extension: "score:index:label", best first
            data = [
                f"{t.score:f}:{labels.index(t.label)}:{t.label}" for p in results for t in (p.top or [p])[:k]
            ]
            tensors.append(Tensor(name, "BYTES", [n, min(k, len(labels))], data))
            continue
        if top_k > 1:
            k = min(top_k, len(labels))
            rows = [p.top or [] for p in results]
            if name == "label":
                tensors.append(Tensor(name, "BYTES", [n, k], [t.label for r in rows for t in r]))
            else:
                tensors.append(Tensor(name, "FP32", [n, k], [t.score for r in rows for t in r]))
        elif name == "label":
            tensors.append(Tensor(name, "BYTES", [n], [p.label for p in results]))
        else:
            tensors.append(Tensor(name, "FP32", [n], [p.score for p in results]))
    return tensors


def _ner_tensors(results: list[NerResult]) -> list[Tensor]:
    data = [to_json([asdict(e) for e in r.entities]).decode() for r in results]
    return [Tensor("entities", "BYTES", [len(results)], data)]


async def infer(
    request: Request,
    body: bytes,
    registry: Registry,
    settings: Settings,
    name: str,
    version: str | None = None,
) -> Response:
    parsed, texts = parse_request(body, request.headers.get(HEADER_LENGTH))
    if parsed.model_name not in (None, name) or parsed.model_version not in (None, version):
        raise InvalidInput(
            f"the body names model {parsed.model_name!r} version {parsed.model_version!r}, the path "
            f"{name!r} version {version!r}"
        )
    served = served_model(registry, name, version)
    task = served.manifest.task
    params = parsed.parameters or RequestParameters()
    wanted, binary, classes = _wanted(parsed, task)
    top_k = params.top_k or 1
    run_params: ClassifyParams | NerParams
    if task == SEQUENCE:
        if params.aggregation is not None:
            raise InvalidInput(f"parameter 'aggregation' applies to NER models; {name!r} is a {task} model")
        truncate = True if params.truncate is None else params.truncate
        run_params = ClassifyParams(top_k=max([top_k, *classes.values()]), truncate=truncate)
    else:
        if params.top_k is not None or params.truncate is not None:
            raise InvalidInput(
                f"parameters 'top_k' and 'truncate' apply to classification models; {name!r} is NER"
            )
        run_params = NerParams(params.aggregation or "simple")
    served, result = await run_inference(
        request, registry, settings, model=served.name, task=task, texts=texts, params=run_params
    )
    if task == SEQUENCE:
        tensors = _classification_tensors(
            result.results, wanted, top_k, classes, list(served.manifest.labels)
        )
    else:
        tensors = _ner_tensors(result.results)
    header: dict[str, Any] = {"model_name": served.name, "model_version": str(served.version)}
    if parsed.id is not None:
        header["id"] = parsed.id
    header["parameters"] = {"variant": served.variant}
    content, json_length = encode_response(header, tensors, binary)
    headers = timing_headers(result)
    if json_length is None:
        return Response(content, media_type="application/json", headers=headers)
    headers[HEADER_LENGTH] = str(json_length)
    return Response(content, media_type="application/octet-stream", headers=headers)
