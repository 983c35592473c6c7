"""JSON training configs: one object per section, each read into its dataclass; any problem names file and field."""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

from hear_embed.config import config_from_dict, config_to_dict


class ConfigError(ValueError):
    """A training config that cannot be used; the message names the file, section and field."""


def _type_problem(expected, value) -> str | None:
    """Why ``value`` (from JSON) does not fit a field annotated ``expected``; None when it fits (or is not checked)."""
    if expected is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if expected is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
    if expected is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "must be a number"
    if expected is str:
        return None if isinstance(value, str) else "must be a string"
    if typing.get_origin(expected) is tuple:
        return None if isinstance(value, list) else "must be a list"
    return None


def read_section(path: Path, name: str, cls: type, values) -> object:
    """One section's JSON object -> ``cls`` instance, with the field and its problem named on error."""
    if not isinstance(values, dict):
        raise ConfigError(f"config {path}: section {name!r} must be a JSON object, got {values!r}")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        problem = _type_problem(hints.get(key), value)
        if problem:
            raise ConfigError(f"config {path}: {name}.{key} {problem}, got {value!r}")
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}
    try:
        return config_from_dict(cls, values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"config {path}, section {name!r}: {error}") from error


def read_sections(path: str | Path, sections: dict[str, type], extra: tuple[str, ...] = ()) -> dict:
    """Read ``path`` (JSON object) into ``{section: dataclass instance}``; sections in ``extra`` stay raw.

    Lists become tuples (the dataclasses are frozen); a missing section gets its defaults.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"config {path} cannot be read: {error.strerror or error}") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"config {path} is not valid JSON: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must hold a JSON object of sections, got a {type(raw).__name__}")
    unknown = sorted(set(raw) - set(sections) - set(extra) - {"comment"})
    if unknown:
        raise ConfigError(f"config {path} has unknown section(s) {unknown}; known: {sorted(sections) + list(extra)}")
    result = {name: read_section(path, name, cls, raw.get(name, {})) for name, cls in sections.items()}
    for name in extra:
        result[name] = raw.get(name)
    return result


def run_record(sections: dict) -> dict:
    """{section: {field: value}} of a run's sections (dataclasses as dicts, raw sections as they are), for checkpoints."""
    return {name: config_to_dict(value) if dataclasses.is_dataclass(value) else value for name, value in sections.items()}
