"""One transformers load of the embedded model per test session (the process keeps loaded models shared by
source), and one vectors file for the cooperativeness trait made by the real ``contagion vectors``."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from contagion.backends.registry import resolve
from contagion.backends.robust import RobustBackend
from contagion.cli.app import app


@pytest.fixture(scope="session")
def hf_embedded() -> RobustBackend:
    """``hf:embedded`` (SmolLM2-135M through transformers), loaded."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    backend = resolve("hf:embedded")
    backend.inner.loaded()  # type: ignore[attr-defined]
    return backend


@pytest.fixture(scope="session")
def coop_vectors(hf_embedded: RobustBackend, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vectors file for cooperativeness on hf:embedded, written by the command itself."""
    out = tmp_path_factory.mktemp("vectors") / "coop.json"
    result = CliRunner().invoke(app, ["vectors", "hf:embedded", "--traits", "cooperativeness", "--out", str(out),
                                      "--no-progress"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    return out
