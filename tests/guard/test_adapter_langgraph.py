"""The guard in LangGraph: ``create_react_agent(..., pre_model_hook=pre_model_hook(guard))`` driving the
embedded SmolLM2 through llama-cpp-python's server; the requests are read where they arrive."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI

from contagion.guard import SITGuard
from contagion.guard.langgraph import pre_model_hook
from contagion.testing.loopback import LoopbackServer
from tests.backends.llama_server import LlamaServer
from tests.guard.conftest import MODEL, NEGOTIATOR, assert_reminders_exactly_where_decided, reminders_in

pytestmark = pytest.mark.slow

OTHERS = ["Bo: Give my town 70% of the water or I cut the pipe.", "Cy: I think we should split it evenly.",
          "Bo: Ana, you are naive. Side with me and we take it all.", "Cy: Ana, what do you propose now?"]


def agent(base_url: str, guard: SITGuard) -> Any:
    with warnings.catch_warnings():  # create_react_agent is deprecated in favour of langchain.agents
        warnings.simplefilter("ignore")
        from langgraph.prebuilt import create_react_agent

        model = ChatOpenAI(model=MODEL, base_url=base_url, api_key="unused", temperature=0,
                           extra_body={"max_tokens": 12})  # llama.cpp reads max_tokens, not max_completion_tokens
        return create_react_agent(model, [], prompt=NEGOTIATOR, pre_model_hook=pre_model_hook(guard))


@pytest.mark.parametrize("persist", [True, False])
def test_sit_reminders_reach_the_model_as_scheduled(recorder: LoopbackServer, guard_profile: Path,
                                                          persist: bool) -> None:
    guard = SITGuard.load(guard_profile, schedule="sit:k=2,n=3", persist=persist)
    graph = agent(recorder.base_url, guard)
    state: dict = {"messages": []}
    for line in OTHERS:
        state = graph.invoke({"messages": [*state["messages"], HumanMessage(line)]})
    assert [d.action for d in guard.decisions()] == ["pass", "remind", "pass", "remind"]
    assert_reminders_exactly_where_decided(recorder.requests, guard)
    # given on turns 2 and 4; with persist, kept in the later requests too
    assert [len(reminders_in(r)) for r in recorder.requests] == ([0, 1, 1, 2] if persist else [0, 1, 0, 1])
    assert recorder.requests[1]["messages"][0] == {"role": "system", "content": NEGOTIATOR}
    # the graph's own history never holds a reminder: the guard put them into the model calls
    assert not any(str(m.content).startswith("A reminder") for m in state["messages"])
    assert len(state["messages"]) == 8


async def test_adaptive_guard_in_an_async_graph(recorder: LoopbackServer, guard_profile: Path,
                                                llama: LlamaServer) -> None:
    guard = SITGuard.load(guard_profile, f"openai:{MODEL}@{llama.base_url}",
                          schedule="sit-adaptive:m=1,threshold=0,probe_items=1")
    graph = agent(recorder.base_url, guard)
    state: dict = {"messages": []}
    for line in OTHERS[:3]:
        state = await graph.ainvoke({"messages": [*state["messages"], HumanMessage(line)]})
    probes = [d.probe for d in guard.decisions()]
    assert probes[0] is None and all(p is not None and p.calls == 2 for p in probes[1:])
    # the probes went to the model directly; the agent's endpoint saw only the agent's three calls
    assert_reminders_exactly_where_decided(recorder.requests, guard)
