"""`slimserve serve`: every setting is a flag (flags > SLIMSERVE_* environment > defaults).

Imports stay light at module level (the `slimserve` command assembles every sub-command); the
server, ONNX Runtime and the app are imported when the command runs."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import typer
from slimserve.service.settings import Settings


def _help(field: str) -> str:
    description = Settings.model_fields[field].description or ""
    return f"{description} [env SLIMSERVE_{field.upper()}]"


def _pairs(values: list[str] | None, flag: str, cast: type) -> dict[str, Any] | None:
    if not values:
        return None
    out: dict[str, Any] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise typer.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=flag)
        try:
            out[name] = cast(value)
        except ValueError as exc:
            raise typer.BadParameter(f"{item!r}: {exc}", param_hint=flag) from exc
    return out


def _global_variant(values: list[str] | None) -> str | None:
    """The one --variant value without NAME= (the setting for every model)."""
    plain = [v for v in values or [] if "=" not in v]
    if len(plain) > 1:
        raise typer.BadParameter(f"one variant for every model, got {plain}", param_hint="--variant")
    return plain[0] if plain else None


def serve(
    store: Path | None = typer.Option(None, "--store", help=_help("store")),
    host: str | None = typer.Option(None, "--host", help=_help("host")),
    port: int | None = typer.Option(None, "--port", help=_help("port")),
    model: list[str] | None = typer.Option(None, "--model", help=_help("models") + " Repeat the flag."),
    pin: list[str] | None = typer.Option(None, "--pin", help=_help("pins") + " NAME=VERSION, repeatable."),
    variant: list[str] | None = typer.Option(
        None,
        "--variant",
        help=_help("variant")
        + " Give VARIANT for every model, or NAME=VARIANT for one model (repeatable): "
        + _help("variants"),
    ),
    device: str | None = typer.Option(None, "--device", help=_help("device")),
    poll_interval_s: float | None = typer.Option(None, "--poll-interval-s", help=_help("poll_interval_s")),
    max_batch_size: int | None = typer.Option(None, "--max-batch-size", help=_help("max_batch_size")),
    max_batch_tokens: int | None = typer.Option(None, "--max-batch-tokens", help=_help("max_batch_tokens")),
    batch_overhead_tokens: int | None = typer.Option(
        None, "--batch-overhead-tokens", help=_help("batch_overhead_tokens")
    ),
    batch_wait_ms: float | None = typer.Option(None, "--batch-wait-ms", help=_help("batch_wait_ms")),
    max_queue: int | None = typer.Option(None, "--max-queue", help=_help("max_queue")),
    retry_after_s: int | None = typer.Option(None, "--retry-after-s", help=_help("retry_after_s")),
    intra_op_threads: int | None = typer.Option(None, "--intra-op-threads", help=_help("intra_op_threads")),
    runner_threads: int | None = typer.Option(None, "--runner-threads", help=_help("runner_threads")),
    ort_spin: bool | None = typer.Option(None, "--ort-spin/--no-ort-spin", help=_help("ort_spin")),
    tokenizer_threads: int | None = typer.Option(
        None, "--tokenizer-threads", help=_help("tokenizer_threads")
    ),
    tokenize_inline_chars: int | None = typer.Option(
        None, "--tokenize-inline-chars", help=_help("tokenize_inline_chars")
    ),
    fast_path: bool | None = typer.Option(None, "--fast-path/--no-fast-path", help=_help("fast_path")),
    max_inputs: int | None = typer.Option(None, "--max-inputs", help=_help("max_inputs")),
    max_body_bytes: int | None = typer.Option(None, "--max-body-bytes", help=_help("max_body_bytes")),
    max_text_chars: int | None = typer.Option(None, "--max-text-chars", help=_help("max_text_chars")),
    deadline_ms: float | None = typer.Option(None, "--deadline-ms", help=_help("deadline_ms")),
    ner_stride: int | None = typer.Option(None, "--ner-stride", help=_help("ner_stride")),
    api_key: list[str] | None = typer.Option(
        None, "--api-key", help=_help("api_keys") + " Repeatable; prefer the environment (flags show in ps)."
    ),
    admin_key: list[str] | None = typer.Option(
        None, "--admin-key", help=_help("admin_keys") + " Repeatable; prefer the environment."
    ),
    limit_concurrency: int | None = typer.Option(
        None, "--limit-concurrency", help=_help("limit_concurrency")
    ),
    body_timeout_s: float | None = typer.Option(None, "--body-timeout-s", help=_help("body_timeout_s")),
    metrics_auth: bool | None = typer.Option(
        None, "--metrics-auth/--no-metrics-auth", help=_help("metrics_auth")
    ),
    warmup: bool | None = typer.Option(None, "--warmup/--no-warmup", help=_help("warmup")),
    shutdown_grace_s: float | None = typer.Option(None, "--shutdown-grace-s", help=_help("shutdown_grace_s")),
    log_level: str | None = typer.Option(None, "--log-level", help=_help("log_level")),
    debug_runner_delay_ms: float | None = typer.Option(
        None, "--debug-runner-delay-ms", help=_help("debug_runner_delay_ms")
    ),
    debug_fault: list[str] | None = typer.Option(
        None, "--debug-fault", help=_help("debug_faults") + " NAME=FAULT, repeatable."
    ),
) -> None:
    """Serve every model in the store over HTTP (see docs/serving.md)."""
    given: dict[str, Any] = {
        "store": store,
        "host": host,
        "port": port,
        "models": model or None,
        "pins": _pairs(pin, "--pin", int),
        "variant": _global_variant(variant),
        "variants": _pairs([v for v in variant or [] if "=" in v], "--variant", str),
        "device": device,
        "poll_interval_s": poll_interval_s,
        "max_batch_size": max_batch_size,
        "max_batch_tokens": max_batch_tokens,
        "batch_overhead_tokens": batch_overhead_tokens,
        "batch_wait_ms": batch_wait_ms,
        "max_queue": max_queue,
        "retry_after_s": retry_after_s,
        "intra_op_threads": intra_op_threads,
        "runner_threads": runner_threads,
        "ort_spin": ort_spin,
        "tokenizer_threads": tokenizer_threads,
        "tokenize_inline_chars": tokenize_inline_chars,
        "fast_path": fast_path,
        "max_inputs": max_inputs,
        "max_body_bytes": max_body_bytes,
        "max_text_chars": max_text_chars,
        "deadline_ms": deadline_ms,
        "ner_stride": ner_stride,
        "api_keys": api_key or None,
        "admin_keys": admin_key or None,
        "limit_concurrency": limit_concurrency,
        "body_timeout_s": body_timeout_s,
        "metrics_auth": metrics_auth,
        "warmup": warmup,
        "shutdown_grace_s": shutdown_grace_s,
        "log_level": log_level,
        "debug_runner_delay_ms": debug_runner_delay_ms,
        "debug_faults": _pairs(debug_fault, "--debug-fault", str),
    }
    from pydantic import ValidationError

    try:
        settings = Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        typer.echo(f"slimserve serve: invalid settings: {problems}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(run_server(settings))


def run_server(settings: Settings) -> int:
    """Run until SIGINT/SIGTERM; 0 after a clean drain, 1 when start-up failed."""
    import uvicorn
    from slimserve.service import logs
    from slimserve.service.app import DrainingServer, create_app

    logs.configure(settings.log_level)
    if not settings.store.is_dir():
        typer.echo(
            f"slimserve serve: the model store {settings.store} does not exist; build models with "
            "`slimserve build` or point --store / SLIMSERVE_STORE at a store",
            err=True,
        )
        return 1
    failure: list[str] = []
    server: uvicorn.Server | None = None

    def on_fatal(message: str) -> None:
        failure.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_level=settings.log_level,
        # Seconds, fractions included: 0 cancels what is in flight at once. (`int(grace) or None`
        # used to turn any grace under 1 s into None: wait for ever.)
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        limit_concurrency=settings.limit_concurrency,
        access_log=False,
    )
    server = DrainingServer(config, app.state.registry)
    # uvicorn drains on SIGTERM, then re-raises the signal with the previous handler in place; a
    # no-op handler here turns a completed drain into exit code 0 instead of death by signal.
    signal.signal(signal.SIGTERM, lambda *_: None)
    server.run()
    if failure:
        typer.echo(f"slimserve serve: could not load the store: {failure[0]}", err=True)
        return 1
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(run_server(Settings()))
