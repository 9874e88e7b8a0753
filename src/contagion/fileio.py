"""The one copy of each file helper: atomic writes, strict YAML loading, readable validation errors.

Ground floor (imports nothing of the project but :mod:`contagion.errors`), so every layer can use it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from contagion.errors import UserError


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a hidden temporary file and a rename.

    A reader never sees half a file, and the temporary file is removed on every failure path. The file
    gets the mode a plain ``open(path, "w")`` would give (0666 minus the umask), not ``mkstemp``'s 0600.
    OS errors (missing directory, full disk, no permission) become a :class:`UserError` naming the file.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    tmp = parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


CSV_FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet reads as the start of a formula in a text cell (CSV injection)."""


def csv_cell(value: Any) -> Any:
    """A CSV cell safe to open in a spreadsheet: text that begins like a formula (``=``, ``+``, ``-``, ``@``, a
    tab or a carriage return) gets a leading apostrophe, so ``=HYPERLINK(…)`` is shown, never run. Numbers and
    other values pass unchanged (a negative number is written by the CSV writer, not as text)."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_LEADS):
        return "'" + value
    return value


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys in a mapping (YAML itself keeps the last silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen[key] = True
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=deep))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error as one line: what is wrong, and where."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text strictly (duplicate keys refused); errors are UserErrors naming ``source``."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise UserError(f"{source} is not valid YAML: {yaml_problem(exc)}") from None


def load_yaml(path: Path, what: str = "file") -> Any:
    """Read a YAML file strictly; a missing file, bad encoding or bad YAML is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist" if not path.exists() else f"{what} {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    return parse_yaml(text, f"{what} {path}")


def validation_message(exc: ValidationError, source: str | None = None,
                       names: Mapping[str, str] | None = None, *, show_input: bool = False,
                       keys_help: str | None = None) -> str:
    """The first problem of a pydantic error as one line: ``source: field.path: message``.

    ``names`` maps a field path to what the user typed for it (e.g. ``rounds`` → ``--rounds``);
    ``keys_help`` says where the valid keys are listed (for an unknown key).
    """
    first = exc.errors()[0]
    loc = ".".join(str(x) for x in first["loc"])
    loc = (names or {}).get(loc, loc)
    msg = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = f"unknown key (check the spelling; {keys_help})" if keys_help else "unknown key (check the spelling)"
    if show_input and "input" in first and first["type"] != "extra_forbidden" \
            and not isinstance(first["input"], dict | list | tuple):
        shown = repr(first["input"])
        msg = f"{msg} (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    parts = [p for p in (source, loc) if p]
    return ": ".join([*parts, msg])
