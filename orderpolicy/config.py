"""Load dataclass configs from YAML, rejecting unknown keys with a suggestion."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds an invalid value."""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; nested dataclasses are built recursively.

    An unknown key raises :class:`ConfigError` naming the nearest valid key.
    """
    data = dict(data or {})
    types_by_name = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in types_by_name:
            close = difflib.get_close_matches(key, list(types_by_name), n=1)
            hint = f"; did you mean '{where}{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown config key '{where}{key}' for {cls.__name__}{hint} "
                f"Valid keys: {sorted(types_by_name)}"
            )
        field_type = types_by_name[key]
        if dataclasses.is_dataclass(field_type) and isinstance(value, dict):
            value = from_dict(field_type, value, where=f"{where}{key}.")
        kwargs[key] = _coerce(value, field_type, f"{where}{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid {cls.__name__} config at {where or 'top level'}: {error}") from error


def _coerce(value: Any, field_type: Any, name: str) -> Any:
    """Accept ints for float fields and reject obviously wrong scalar, list and section types."""
    if field_type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is a subclass of int, so `steps: true` would otherwise pass as 1.
    wrong_bool = field_type in (int, float) and isinstance(value, bool)
    if field_type in (int, float, str, bool) and (wrong_bool or not isinstance(value, field_type)):
        raise ConfigError(
            f"config key {name!r} must be {field_type.__name__}, got {value!r} ({type(value).__name__})"
        )
    if typing.get_origin(field_type) is list and not isinstance(value, list):
        raise ConfigError(f"config key {name!r} must be a list, got {value!r} ({type(value).__name__})")
    if dataclasses.is_dataclass(field_type) and not isinstance(value, field_type):
        raise ConfigError(
            f"config key {name!r} must be a mapping of {field_type.__name__} fields, got {value!r}"
        )
    origin = typing.get_origin(field_type)
    if origin in (typing.Union, types.UnionType) and value is not None:
        allowed = tuple(t for t in typing.get_args(field_type) if t is not type(None))
        if float in allowed and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    return value


def load_config(cls: type[T], path: str | Path | None, overrides: dict[str, Any] | None = None) -> T:
    """Read a YAML file (or nothing) into ``cls`` and apply dotted-key overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}; pass an existing YAML file")
        with path.open() as handle:
            loaded = yaml.safe_load(handle)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded or {}
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return from_dict(cls, data)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key.sub=value`` from the command line; the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, for example train.steps=100")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def to_dict(config: Any) -> dict[str, Any]:
    """Return a plain-dict copy of a dataclass config, for saving beside a run."""
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
