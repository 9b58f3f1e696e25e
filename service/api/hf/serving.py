"""What the Hugging Face routes do: parse the task's request for the model's task, run it through the
shared ``run_inference`` (same limits, deadline, queue and metrics as ``/v1``), answer the task's shape.

- text-classification: ``[[{"label", "score"}, ...], ...]``, one list per input (``InferenceClient``
  reads the first), best first, every label unless ``top_k``.
- token-classification: ``[{"entity_group", "score", "word", "start", "end"}, ...]`` for one text (a
  list of such lists for several); with ``aggregation_strategy`` ``none``, ``entity`` (the raw tag)
  instead of ``entity_group``. ``word`` is ``input[start:end]``.
- TEI ``/predict``: every label, best first: a list for one text, a list of lists for several.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request, Response
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json
from slimserve.service.api.endpoints import timing_headers
from slimserve.service.api.hf import protocol
from slimserve.service.api.serving import run_inference, served_model
from slimserve.service.engine.batcher import EngineResult
from slimserve.service.errors import InvalidInput, ModelNotFound, invalid
from slimserve.service.registry import Registry, Served
from slimserve.service.settings import Settings
from slimserve.service.tasks.classification import ClassifyParams, Prediction
from slimserve.service.tasks.token_classification import NerParams, NerResult

from slimserve import __version__

SEQUENCE = "sequence-classification"
TOKEN = "token-classification"
PIPELINE_TAGS = {SEQUENCE: "text-classification", TOKEN: "token-classification"}


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], body: bytes, other: type[BaseModel] | None = None) -> M:
    """``body`` as ``model`` (422 if the schema refuses it); a body that is the other task's request
    instead (valid for the route's documented union, wrong for this model) is a 400."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        if other is not None:
            try:
                other.model_validate_json(body)
            except ValidationError:
                pass
            else:
                raise InvalidInput(
                    f"this model's task takes a {model.__name__}, not a {other.__name__}"
                ) from None
        raise invalid(exc.errors()) from None


def _json(data: Any, result: EngineResult) -> Response:
    return Response(to_json(data), media_type="application/json", headers=timing_headers(result))


def _ranked(p: Prediction, k: int) -> list[dict[str, Any]]:
    ranked = p.top if p.top is not None else [p]
    return [{"label": t.label, "score": t.score} for t in ranked[:k]]


def _entities(result: NerResult, aggregation: str, ignore: set[str]) -> list[dict[str, Any]]:
    key = "entity" if aggregation == "none" else "entity_group"
    return [
        {key: e.entity, "score": e.score, "word": e.text, "start": e.start, "end": e.end}
        for e in result.entities
        if e.entity not in ignore
    ]


async def task(request: Request, body: bytes, registry: Registry, settings: Settings, name: str) -> Response:
    """``POST /hf/models/{name}``: the model's task, as ``InferenceClient`` speaks it."""
    served = served_model(registry, name)
    if served.manifest.task == SEQUENCE:
        req = _parse(protocol.TextClassificationRequest, body, protocol.TokenClassificationRequest)
        params = req.parameters or protocol.TextClassificationParameters()
        if params.function_to_apply not in (None, "softmax"):
            raise InvalidInput(f"function_to_apply {params.function_to_apply!r}: only softmax is offered")
        k = min(params.top_k or len(served.manifest.labels), len(served.manifest.labels))
        served, result = await run_inference(
            request, registry, settings, model=served.name, task=SEQUENCE, texts=req.texts(),
            params=ClassifyParams(top_k=k, truncate=True),
        )  # fmt: skip
        return _json([_ranked(p, k) for p in result.results], result)
    if served.manifest.task == TOKEN:
        ner = _parse(protocol.TokenClassificationRequest, body, protocol.TextClassificationRequest)
        options = ner.parameters or protocol.TokenClassificationParameters()
        aggregation = options.aggregation_strategy or "simple"
        ignore = set(options.ignore_labels if options.ignore_labels is not None else ["O"])
        served, result = await run_inference(
            request, registry, settings, model=served.name, task=TOKEN, texts=ner.texts(),
            params=NerParams(aggregation),
        )  # fmt: skip
        groups = [_entities(r, aggregation, ignore) for r in result.results]
        return _json(groups[0] if isinstance(ner.inputs, str) else groups, result)
    raise ModelNotFound(f"model {name!r} is a {served.manifest.task} model, which /hf does not serve")


async def predict(
    request: Request, body: bytes, registry: Registry, settings: Settings, name: str
) -> Response:
    """TEI's ``/predict`` (classification models): every label, best first."""
    served = served_model(registry, name)
    if served.manifest.task != SEQUENCE:
        raise ModelNotFound(
            f"model {name!r} is a {served.manifest.task} model; /predict serves classification models "
            f"(POST /hf/models/{name} answers token classification)"
        )
    req = _parse(protocol.PredictRequest, body)
    k = len(served.manifest.labels)
    served, result = await run_inference(
        request, registry, settings, model=served.name, task=SEQUENCE, texts=req.texts(),
        params=ClassifyParams(top_k=k, truncate=req.truncate),
    )  # fmt: skip
    ranked = [_ranked(p, k) for p in result.results]
    return _json(ranked[0] if isinstance(req.inputs, str) else ranked, result)


def info(served: Served, settings: Settings) -> protocol.Info:
    labels = list(served.manifest.labels)
    variant = served.manifest.variants[served.variant]
    return protocol.Info(
        model_id=served.name,
        model_sha=variant.sha256,
        model_dtype=served.variant,
        model_type=protocol.ModelType(
            classifier=protocol.ClassifierInfo(
                id2label={str(i): label for i, label in enumerate(labels)},
                label2id={label: i for i, label in enumerate(labels)},
            )
        ),
        pipeline_tag=PIPELINE_TAGS.get(served.manifest.task, served.manifest.task),
        max_concurrent_requests=settings.max_queue,
        max_input_length=served.manifest.max_seq_len,
        max_batch_tokens=settings.max_batch_tokens,
        max_batch_requests=settings.max_batch_size,
        max_client_batch_size=settings.max_inputs,
        tokenization_workers=settings.tokenizer_threads,
        version=__version__,
    )
