"""Suite-wide settings: no network for model hubs; the persona JSONL fixtures of tests/fixtures/.

Nothing here reads outside the repository. Anthropic's persona files beside the project
(``../shared/data/anthropic-persona``) are used only by tests that ask for ``anthropic_persona_dir``,
which skip with a reason when the folder is absent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.backends.llama_server import LlamaServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TESTS = Path(__file__).resolve().parent
PERSONA_FIXTURES = TESTS / "fixtures" / "persona-jsonl"
"""The project's own persona JSONL files: six traits of 12 items each, keys alternating Yes/No."""
ANTHROPIC_PERSONA = TESTS.parent.parent / "shared" / "data" / "anthropic-persona"
"""Anthropic's persona files beside a checkout (optional; not part of the repository)."""


@pytest.fixture(scope="session")
def persona_dir() -> Path:
    """The project's own persona JSONL fixtures (tests/fixtures/persona-jsonl)."""
    assert PERSONA_FIXTURES.is_dir(), PERSONA_FIXTURES
    return PERSONA_FIXTURES


@pytest.fixture(scope="session")
def anthropic_persona_dir() -> Path:
    """Anthropic's persona files beside the project; the test is skipped when they are absent."""
    if not (ANTHROPIC_PERSONA / "agreeableness.jsonl").is_file():
        pytest.skip(f"Anthropic's persona files are not beside this checkout ({ANTHROPIC_PERSONA})")
    return ANTHROPIC_PERSONA


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LlamaServer]:
    """llama-cpp-python's own OpenAI-compatible server on the embedded GGUF (float32 file), on 127.0.0.1.

    One per test session, shared by every test that needs a real llama.cpp server (one-format, guard
    adapters, Inspect): each start pays the model load, so the suite starts it once, when a test first
    asks for it, and stops it when the session ends. The server answers one request at a time; tests
    that share it do not depend on each other's requests.
    """
    from tests.backends.llama_server import LlamaServer

    with LlamaServer() as server:
        yield server
