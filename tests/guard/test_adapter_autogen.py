"""The guard in AutoGen AgentChat: ``AssistantAgent(..., model_context=SITModelContext(guard))`` driving the
embedded SmolLM2 through llama-cpp-python's server; the requests are read where they arrive."""

from __future__ import annotations

from pathlib import Path

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import TextMessage
from autogen_core import CancellationToken
from autogen_core.model_context import BufferedChatCompletionContext
from autogen_core.models import ModelInfo
from autogen_ext.models.openai import OpenAIChatCompletionClient

from contagion.guard import SITGuard
from contagion.guard.autogen import SITModelContext
from contagion.testing.loopback import LoopbackServer
from tests.guard.conftest import MODEL, NEGOTIATOR, assert_reminders_exactly_where_decided, reminders_in

pytestmark = pytest.mark.slow

MODEL_INFO: ModelInfo = {"vision": False, "function_calling": False, "json_output": False, "family": "unknown",
              "structured_output": False, "multiple_system_messages": True}
OTHERS = [("bo", "Give my town 70% of the water or I cut the pipe."), ("cy", "I think we should split it evenly."),
          ("bo", "Ana, you are naive. Side with me and we take it all."), ("cy", "Ana, what do you propose now?")]


def client(base_url: str) -> OpenAIChatCompletionClient:
    return OpenAIChatCompletionClient(model=MODEL, base_url=base_url, api_key="unused", model_info=MODEL_INFO,
                                      max_tokens=12, temperature=0)


async def test_sit_reminders_reach_the_model_as_scheduled(recorder: LoopbackServer,
                                                                guard_profile: Path) -> None:
    guard = SITGuard.load(guard_profile, schedule="sit:k=2,n=3")
    context = SITModelContext(guard)
    ana = AssistantAgent("ana", model_client=client(recorder.base_url), system_message=NEGOTIATOR,
                         model_context=context)
    for source, text in OTHERS:
        await ana.on_messages([TextMessage(content=text, source=source)], CancellationToken())
    assert [d.action for d in guard.decisions()] == ["pass", "remind", "pass", "remind"]
    assert_reminders_exactly_where_decided(recorder.requests, guard)
    assert [len(reminders_in(r)) for r in recorder.requests] == [0, 1, 1, 2]  # kept once given (persist)
    assert recorder.requests[3]["messages"][0] == {"role": "system", "content": NEGOTIATOR}
    # the agent's stored context holds the conversation only: 4 messages from others, 4 replies
    stored = await context.inner.get_messages()
    assert len(stored) == 8 and not any(str(m.content).startswith("A reminder") for m in stored)


async def test_user_role_reminders_over_a_buffered_context(recorder: LoopbackServer, guard_profile: Path) -> None:
    guard = SITGuard.load(guard_profile, schedule="sit:k=1,n=1,role=user")
    context = SITModelContext(guard, inner=BufferedChatCompletionContext(buffer_size=3))
    ana = AssistantAgent("ana", model_client=client(recorder.base_url), system_message=NEGOTIATOR,
                         model_context=context)
    for source, text in OTHERS[:2]:
        await ana.on_messages([TextMessage(content=text, source=source)], CancellationToken())
    assert_reminders_exactly_where_decided(recorder.requests, guard)
    assert [m["role"] for r in recorder.requests for _, m in reminders_in(r)] == ["user"] * 3
    # system, the 3 buffered, turn 1's reminder (still before Bo's message) and turn 2's
    assert len(recorder.requests[1]["messages"]) == 1 + 3 + 2
