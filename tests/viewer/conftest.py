"""Fixtures of the viewer tests: the simulated runs of tests/analysis/sim_runs.py, made once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.analysis.sim_runs import browser_fixture, payload_run, sim_run


@pytest.fixture(scope="session")
def sim_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sim_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def payload_run_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return payload_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from browser_fixture()
