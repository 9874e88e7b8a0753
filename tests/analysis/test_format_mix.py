"""The analysis refuses to mix question or action formats (issue 13, item 5)."""

from __future__ import annotations

import pytest

from contagion.analysis.tables import _one_format
from contagion.errors import UserError


def test_one_format_per_analysis() -> None:
    seen: set[int] = set()
    _one_format("question", seen, 2)
    _one_format("question", seen, 2)
    with pytest.raises(UserError, match="mix question format versions 1 and 2"):
        _one_format("question", seen, 1)
    with pytest.raises(UserError, match="mix action format versions 2 and 3"):
        _one_format("action", {2}, 3)
