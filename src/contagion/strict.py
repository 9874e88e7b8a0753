"""Field types for settings read from files: a number where a number belongs, and nothing wider than 64 bits.

YAML reads ``rounds: true`` as a boolean and pydantic would quietly take it as 1; a seed of 2**70 would
pass validation and fail later in a random generator or SQLite. These types refuse both at the door.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, Strict

INT64_MAX = 2**63 - 1

Int = Annotated[int, Strict()]
"""An integer, not a boolean or a string of digits. Give its range with the field (``Field(ge=…, le=…)``)."""

Seed = Annotated[int, Strict()]
"""A seed: declare it with ``seed_field()`` so it is a non-negative 64-bit integer."""


def seed_field(default: int = 0, *, description: str, le: int = INT64_MAX) -> Any:
    """A seed field: non-negative and within 64 bits (what SQLite and numpy take)."""
    return Field(default, ge=0, le=le, description=description)
