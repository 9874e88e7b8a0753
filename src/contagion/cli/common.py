"""Parsing and file helpers the commands share."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from contagion.errors import UserError
from contagion.games.record import InterventionSpec


def parse_params(text: str) -> dict[str, Any]:
    """``k=2,n=3,source=items`` → {"k": 2, "n": 3, "source": "items"} (numbers become numbers)."""
    params: dict[str, Any] = {}
    if not text:
        return params
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise UserError(f"parameter {part!r} must look like name=value")
        params[key.strip()] = _number(value.strip())
    return params


def _number(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def parse_intervention(text: str) -> InterventionSpec:
    """``sit:k=2,n=3`` → InterventionSpec(name="sit", params={"k": 2, "n": 3}), validated."""
    name, _, rest = text.strip().partition(":")
    from contagion.steering import validate_intervention

    spec = InterventionSpec(name=name, params=parse_params(rest))
    validate_intervention(spec)
    return spec


def check_output_path(path: Path) -> None:
    """Fail early (before any work) when ``path`` cannot be written."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UserError(f"output {path} is a directory; give a file path")
    if not parent.exists():
        raise UserError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserError(f"output directory {parent} is not writable")


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
