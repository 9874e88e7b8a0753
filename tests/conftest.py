"""Suite-wide settings: no network for model hubs, a private home directory per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def persona_dir() -> Path:
    """Anthropic's persona files shipped beside the project (../shared/data/anthropic-persona)."""
    path = SHARED_DATA / "anthropic-persona"
    assert path.is_dir(), f"missing shared test data at {path}"
    return path
