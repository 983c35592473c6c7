"""JSON training configs: one object per section, each read into its dataclass with unknown keys named."""
from __future__ import annotations

import json
from pathlib import Path

from hear_embed.config import config_from_dict


def read_sections(path: str | Path, sections: dict[str, type], extra: tuple[str, ...] = ()) -> dict:
    """Read ``path`` (JSON object) into ``{section: dataclass instance}``; sections in ``extra`` stay raw.

    Lists become tuples (the dataclasses are frozen); a missing section gets its defaults.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"config {path} is not valid JSON: {error}") from error
    unknown = sorted(set(raw) - set(sections) - set(extra) - {"comment"})
    if unknown:
        raise ValueError(f"config {path} has unknown section(s) {unknown}; known: {sorted(sections) + list(extra)}")
    result = {}
    for name, cls in sections.items():
        values = {key: tuple(value) if isinstance(value, list) else value for key, value in raw.get(name, {}).items()}
        try:
            result[name] = config_from_dict(cls, values)
        except (TypeError, ValueError) as error:
            raise ValueError(f"config {path}, section {name!r}: {error}") from error
    for name in extra:
        result[name] = raw.get(name)
    return result
