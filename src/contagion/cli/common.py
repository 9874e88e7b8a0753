"""Parsing and file helpers the commands share."""

from __future__ import annotations

import os
from pathlib import Path

from contagion.errors import UserError
from contagion.fileio import write_atomic
from contagion.steering import parse_intervention, parse_params

__all__ = ["check_output_path", "parse_intervention", "parse_params", "write_atomic"]


def check_output_path(path: Path) -> None:
    """Fail early (before any work) when ``path`` cannot be written."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UserError(f"output {path} is a directory; give a file path")
    if not parent.exists():
        raise UserError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserError(f"output directory {parent} is not writable")
