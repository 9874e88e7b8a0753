"""Fixtures of the analysis tests: simulated runs made once per session, and a headless chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.analysis.sim_runs import browser_fixture, failed_only_run, payload_run, sim_run


@pytest.fixture(scope="session")
def sim_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sim_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def payload_run_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return payload_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def failed_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return failed_only_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from browser_fixture()
