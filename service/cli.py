"""`slimserve serve`: every setting is a flag (flags > SLIMSERVE_* environment > defaults).

Imports stay light at module level (the `slimserve` command assembles every sub-command); the
server, ONNX Runtime and the app are imported when the command runs."""

from __future__ import annotations

import inspect
import signal
import sys
import types
import typing
from typing import Any

import typer
from pydantic import SecretStr
from slimserve.service.settings import Settings

# Flags named for one item of a list or mapping setting (repeatable): --model intent --model ner.
SINGULAR = {
    "models": "model",
    "pins": "pin",
    "variants": "variant",
    "api_keys": "api-key",
    "admin_keys": "admin-key",
    "debug_faults": "debug-fault",
}
NOTES = {
    "models": " Repeat the flag.",
    "pins": " NAME=VERSION, repeatable.",
    "api_keys": " Repeatable; prefer the environment (flags show in ps).",
    "admin_keys": " Repeatable; prefer the environment (flags show in ps).",
    "debug_faults": " NAME=FAULT, repeatable.",
}
# Settings given through another setting's flag: --variant VARIANT sets `variant` (every model),
# --variant NAME=VARIANT an entry of `variants` (one model).
SHARED = {"variant": "variants"}


def _help(field: str) -> str:
    description = Settings.model_fields[field].description or ""
    text = f"{description}{NOTES.get(field, '')} [env SLIMSERVE_{field.upper()}]"
    for single, mapping in SHARED.items():
        if field == mapping:
            usage = "Give VARIANT for every model, or NAME=VARIANT for one model (repeatable):"
            text = f"{_help(single)} {usage} {text}"
    return text


def _global_variant(values: list[str] | None) -> str | None:
    """The one --variant value without NAME= (the setting for every model)."""
    plain = [v for v in values or [] if "=" not in v]
    if len(plain) > 1:
        raise typer.BadParameter(f"one variant for every model, got {plain}", param_hint="--variant")
    return plain[0] if plain else None


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


def _flag_type(annotation: Any) -> tuple[Any, str]:
    """The flag's Python type for typer, and its kind: "flag" (bool), "list", "pairs" or "value"."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_type(args[0])
    if annotation is bool:
        return bool, "flag"
    if origin is list:
        return list[str], "list"
    if origin is dict:
        return list[str], "pairs"
    if origin is typing.Literal:
        return str, "value"
    return annotation, "value"


def _options() -> list[inspect.Parameter]:
    """One option per Settings field: the flag is the field's name with dashes (a singular name for a
    repeatable list or mapping), its help the field's description. Unset flags leave the field to the
    environment and the defaults."""
    params = []
    for name, field in Settings.model_fields.items():
        if name in SHARED:
            continue
        kind_type, kind = _flag_type(field.annotation)
        flag = "--" + SINGULAR.get(name, name.replace("_", "-"))
        decls = [f"{flag}/--no-{flag[2:]}"] if kind == "flag" else [flag]
        option = typer.Option(None, *decls, help=_help(name), show_default=False)
        keyword = inspect.Parameter.KEYWORD_ONLY
        params.append(inspect.Parameter(name, keyword, default=option, annotation=kind_type | None))
    return params


def _settings_from_flags(given: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, value in given.items():
        if name in SHARED:
            continue
        field = Settings.model_fields[name]
        _, kind = _flag_type(field.annotation)
        flag = "--" + SINGULAR.get(name, name.replace("_", "-"))
        for single, mapping in SHARED.items():
            if name == mapping:  # the flag's plain values are the shared setting's
                values[single] = _global_variant(value)
                value = [v for v in value or [] if "=" in v]
        if kind == "pairs":
            value_type = typing.get_args(field.annotation)[1]
            cast = int if value_type is int else str  # the Settings validate the rest (Literals)
            value = _pairs(value, flag, cast)
        elif kind == "list" and not value:
            value = None
        if value is not None:
            values[name] = value
    return {k: v for k, v in values.items() if v is not None}


def serve(**given: Any) -> None:
    """Serve every model in the store over HTTP (see docs/serving.md)."""
    from pydantic import ValidationError

    try:
        settings = Settings(**_settings_from_flags(given))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        typer.echo(f"slimserve serve: invalid settings: {problems}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(run_server(settings))


# Typer reads the options off the signature: every setting is a flag, derived, never copied by hand.
serve.__signature__ = inspect.Signature(_options(), return_annotation=None)  # type: ignore[attr-defined]
serve.__annotations__ = {p.name: p.annotation for p in _options()} | {"return": None}
_ = SecretStr  # api_keys are SecretStr: given as plain strings, wrapped by the Settings validation


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
