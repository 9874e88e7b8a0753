"""The SIT guard in LangGraph: a pre-model hook for a graph's agent.

``create_react_agent(model, tools, prompt=SYSTEM_PROMPT, pre_model_hook=pre_model_hook(guard))`` runs
the guard before every call of the agent's model. The hook returns ``llm_input_messages``: the reminders
go into the model's input and never into the graph's ``messages`` state (with ``persist=True`` the guard
puts each earlier reminder back at its place on every later call, as if the state kept it). It works in any graph
whose state has a ``messages`` list, as a node placed before the node that calls the model (which then
reads ``llm_input_messages``); :func:`steer_messages` / :func:`asteer_messages` steer a list of LangChain
messages directly.

A turn is one model call: in a tool loop, each call of the model counts. Install with
``pip install 'contagion[langgraph]'``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from contagion.errors import MissingExtraError
from contagion.guard.core import GuardDecision, Placement, SITGuard, place

try:
    from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage, convert_to_openai_messages
    from langchain_core.runnables import RunnableLambda
except ImportError:  # pragma: no cover - depends on the environment
    raise MissingExtraError("contagion.guard.langgraph", "langgraph", "langchain-core") from None

__all__ = ["asteer_messages", "pre_model_hook", "steer_messages"]


def _view(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    # one OpenAI-style dict per message, so the guard's insert position indexes the LangChain list
    return [convert_to_openai_messages(m) for m in messages]


def _reminder(placement: Placement) -> BaseMessage:
    cls = SystemMessage if placement.role == "system" else HumanMessage
    return cls(content=placement.text, name="sit_guard")


def _insert(messages: Sequence[BaseMessage], decision: GuardDecision) -> list[BaseMessage]:
    return place(list(messages), decision.placements, _reminder)


def steer_messages(guard: SITGuard, messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """LangChain messages for this turn's model call, with the guard's reminder when due."""
    return _insert(messages, guard.decide(_view(messages)))


async def asteer_messages(guard: SITGuard, messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """:func:`steer_messages`, awaited."""
    return _insert(messages, await guard.adecide(_view(messages)))


def _state_messages(state: Any, key: str) -> Sequence[BaseMessage]:
    messages = state.get(key) if isinstance(state, Mapping) else getattr(state, key, None)
    if messages is None:
        raise ValueError(f"the SIT guard's hook needs the graph state's {key!r} list")
    return messages


def pre_model_hook(guard: SITGuard, *, key: str = "messages") -> RunnableLambda:
    """A pre-model hook (sync and async) returning ``{"llm_input_messages": steered messages}``."""

    def hook(state: Any) -> dict[str, Any]:
        return {"llm_input_messages": steer_messages(guard, _state_messages(state, key))}

    async def ahook(state: Any) -> dict[str, Any]:
        return {"llm_input_messages": await asteer_messages(guard, _state_messages(state, key))}

    return RunnableLambda(hook, afunc=ahook, name="sit_guard")
