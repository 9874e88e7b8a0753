"""The guard in the OpenAI Agents SDK: ``RunConfig(call_model_input_filter=sit_input_filter(guard))``
driving the embedded SmolLM2 through llama-cpp-python's server; the requests are read where they arrive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, RunConfig, Runner
from openai import AsyncOpenAI

from contagion.guard import SITGuard
from contagion.guard.openai_agents import sit_input_filter
from contagion.testing.loopback import LoopbackServer
from tests.backends.llama_server import LlamaServer
from tests.guard.conftest import MODEL, NEGOTIATOR, assert_reminders_exactly_where_decided, reminders_in

pytestmark = pytest.mark.slow

OTHERS = ["Bo: Give my town 70% of the water or I cut the pipe.", "Cy: I think we should split it evenly.",
          "Bo: Ana, you are naive. Side with me and we take it all.", "Cy: Ana, what do you propose now?"]


def negotiator(base_url: str, name: str = "Ana") -> Agent:
    model = OpenAIChatCompletionsModel(model=MODEL, openai_client=AsyncOpenAI(base_url=base_url, api_key="unused"))
    return Agent(name=name, instructions=NEGOTIATOR, model=model,
                 model_settings=ModelSettings(max_tokens=12, temperature=0))


async def converse(agent: Agent, config: RunConfig, lines: list[str]) -> list[Any]:
    items: list[Any] = []
    for line in lines:
        result = await Runner.run(agent, [*items, {"role": "user", "content": line}], run_config=config)
        items = result.to_input_list()
    return items


async def test_sit_reminders_reach_the_model_as_scheduled(recorder: LoopbackServer,
                                                                guard_profile: Path) -> None:
    guard = SITGuard.load(guard_profile, schedule="sit:k=2,n=3")
    config = RunConfig(call_model_input_filter=sit_input_filter(guard), tracing_disabled=True)
    items = await converse(negotiator(recorder.base_url), config, OTHERS)
    assert [d.action for d in guard.decisions()] == ["pass", "remind", "pass", "remind"]
    assert_reminders_exactly_where_decided(recorder.requests, guard)
    assert [len(reminders_in(r)) for r in recorder.requests] == [0, 1, 1, 2]  # kept once given (persist)
    assert recorder.requests[1]["messages"][0] == {"role": "system", "content": NEGOTIATOR}
    assert len(items) == 8 and not any("A reminder" in str(i.get("content")) for i in items)  # run items untouched


async def test_adaptive_guard_for_one_agent_of_several(recorder: LoopbackServer, guard_profile: Path,
                                                       llama: LlamaServer) -> None:
    guard = SITGuard.load(guard_profile, f"openai:{MODEL}@{llama.base_url}",
                          schedule="sit-adaptive:m=1,threshold=0,probe_items=1")
    config = RunConfig(call_model_input_filter=sit_input_filter({"Ana": guard}), tracing_disabled=True)
    await converse(negotiator(recorder.base_url), config, OTHERS[:3])
    ana_requests = list(recorder.requests)
    await converse(negotiator(recorder.base_url, name="Bo"), config, OTHERS[:1])  # no guard for Bo
    assert len(guard.decisions()) == 3 and all(p is not None for p in [d.probe for d in guard.decisions()][1:])
    assert_reminders_exactly_where_decided(ana_requests, guard)
    assert reminders_in(recorder.requests[-1]) == []
