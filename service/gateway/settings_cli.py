"""Command-line flags derived from a pydantic-settings model: one `--field-name` per field, flag > env > default.

`add_settings_flags` turns every field the parser has no flag for yet into a flag (bools become `--x/--no-x`)
whose help shows the field's description, its environment variable and its default. Values stay strings until
`build_settings` hands them to the model, so pydantic's own rules validate flags and environment alike; a broken
rule becomes one CommandError line naming the flag (or the environment variable) that carried the bad value.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings

from tlserve.console import CommandError

SettingsT = TypeVar("SettingsT", bound=BaseSettings)

_METAVARS: Mapping[object, str] = {int: "INT", float: "NUMBER", str: "TEXT", tuple[str, ...]: "A,B"}


def flag_name(field: str) -> str:
    """`max_batch_size` → `--max-batch-size`."""
    return "--" + field.replace("_", "-")


def env_name(model: type[BaseSettings], field: str) -> str:
    """`max_batch_size` → `TLSERVE_MAX_BATCH_SIZE` (the model's env_prefix + the field name)."""
    return (str(model.model_config.get("env_prefix") or "") + field).upper()


def env_and_default(model: type[BaseSettings], field: str) -> str:
    """`env TLSERVE_MAX_BATCH_SIZE; default 32`, for help texts."""
    return f"env {env_name(model, field)}; default {_shown(model.model_fields[field].default)}"


def add_settings_flags(parser: argparse.ArgumentParser, model: type[BaseSettings], *, title: str) -> None:
    """Add a flag for every field of `model`, in an argument group, except fields whose `dest` the parser already has.

    Hand-written flags (other names, types or help) therefore replace the derived ones by using the field name as dest.
    """
    hand_written = {action.dest for action in parser._actions}
    group = parser.add_argument_group(title, f"each flag overrides its environment variable ({env_name(model, '')}*)")
    for name, field in model.model_fields.items():
        if name in hand_written:
            continue
        help_text = "; ".join(filter(None, [field.description, env_and_default(model, name)])).replace("%", "%%")
        if field.annotation is bool:
            group.add_argument(flag_name(name), dest=name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            group.add_argument(flag_name(name), dest=name, metavar=_metavar(field), help=help_text)


def given_settings(args: argparse.Namespace, model: type[BaseSettings]) -> dict[str, Any]:
    """The fields whose flags were given on the command line (an absent flag leaves the env var or default)."""
    return {name: getattr(args, name) for name in model.model_fields if getattr(args, name, None) is not None}


def build_settings(model: type[SettingsT], flags: Mapping[str, Any]) -> SettingsT:
    """`model(**flags)` (flags win over the environment); a ValidationError becomes one CommandError line."""
    try:
        return model(**flags)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise CommandError(f"{_source(model, flags, error)}: {error['msg'][:1].lower()}{error['msg'][1:]}") from None


def _source(model: type[BaseSettings], flags: Mapping[str, Any], error: ErrorDetails) -> str:
    """`--max-batch-size 0` or `TLSERVE_MAX_BATCH_SIZE=0`: where the rejected value came from."""
    field = str(error["loc"][0]) if error["loc"] else ""
    if field not in model.model_fields:
        return "invalid settings"
    if field in flags:
        return f"{flag_name(field)} {error['input']}"
    return f"{env_name(model, field)}={error['input']}"


def _metavar(field: FieldInfo) -> str:
    if get_origin(field.annotation) is Literal:
        return "{" + ",".join(map(str, get_args(field.annotation))) + "}"
    return _METAVARS.get(field.annotation, "VALUE")


def _shown(default: object) -> str:
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, tuple):
        return ",".join(map(str, default)) or "none"
    if default == "":
        return "empty"
    return str(default)
