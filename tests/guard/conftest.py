"""Fixtures of the adapter tests: the suite's llama.cpp server and one measured guard profile per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contagion.guard import REMINDER_OPENING, SITGuard
from contagion.testing.loopback import LoopbackServer
from contagion.traits.settings import AssessmentSettings
from tests.backends.llama_server import LlamaServer
from tests.guard.servers import forward_to

NEGOTIATOR = ("You are Ana, one of three towns sharing one reservoir in a dry summer. Negotiate a fair "
              "water allocation with the other two towns. Answer in one short sentence.")
SETTINGS = AssessmentSettings(traits=("agreeableness", "machiavellianism"), items=2, source_items=3, bootstrap=100)
MODEL = "smollm2"


@pytest.fixture(scope="session")
def llama(llama_server: LlamaServer) -> LlamaServer:
    """The suite's one llama.cpp server (tests/conftest.py)."""
    return llama_server


@pytest.fixture(scope="session")
def guard_profile(llama: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The negotiator's profile, measured once on the served model (the guard talks to it directly)."""
    guard = SITGuard.from_system_prompt(f"openai:{MODEL}@{llama.base_url}", NEGOTIATOR, settings=SETTINGS)
    return guard.save(tmp_path_factory.mktemp("guard") / "ana.guard.json")


@pytest.fixture
def recorder(llama: LlamaServer) -> Iterator[LoopbackServer]:
    """The framework's endpoint: records each request body, then passes it on to the llama.cpp server."""
    with LoopbackServer(forward_to(llama.base_url), model=MODEL) as server:
        yield server


def reminders_in(request: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(position, message) of every guard reminder in one chat request body."""
    return [(i, m) for i, m in enumerate(request["messages"])
            if isinstance(m.get("content"), str) and m["content"].startswith(REMINDER_OPENING)]


def assert_reminders_exactly_where_decided(requests: list[dict[str, Any]], guard: SITGuard) -> None:
    """One request per turn; the reminders in a request are exactly those the guard placed on that turn: the
    turn's own when it decided to remind, right before the request's last (user) message, and with
    persist=True every earlier one, in the order they were put in."""
    decisions = guard.decisions()
    assert len(requests) == len(decisions)
    given: list[str] = []
    for request, decision in zip(requests, decisions, strict=True):
        found = reminders_in(request)
        expected = [*(given if guard.persist else []), *([decision.reminder] if decision.reminder else [])]
        assert [m["content"] for _, m in found] == expected, f"turn {decision.turn}"
        assert all(m["role"] == guard.params.role for _, m in found)
        if decision.reminder is not None:
            position = found[-1][0]
            assert position == len(request["messages"]) - 2 and request["messages"][-1]["role"] == "user"
            given.append(decision.reminder)
