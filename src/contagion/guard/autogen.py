"""The SIT guard in AutoGen AgentChat: a model context for an ``AssistantAgent``.

``AssistantAgent(name, model_client, system_message=SYSTEM_PROMPT, model_context=SITModelContext(guard))``
runs the guard each time the agent reads its context to call the model. The history is kept by an inner
context (``UnboundedChatCompletionContext`` by default; pass any other, e.g. a buffered one), and the
reminders are added to what the model gets, never stored (with ``persist=True`` the guard puts each earlier
reminder back at its place while the inner context keeps the messages before it).

A system-role reminder sits in the middle of the conversation: AutoGen's OpenAI client accepts that only
when the model's ``model_info`` says ``multiple_system_messages: True`` (OpenAI's models do; for your own
server, set it, or schedule ``role=user`` reminders). Install with ``pip install 'contagion[autogen]'``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from contagion.errors import MissingExtraError
from contagion.guard.core import Placement, SITGuard, place

try:
    from autogen_core.model_context import ChatCompletionContext, UnboundedChatCompletionContext
    from autogen_core.models import (
        AssistantMessage,
        FunctionExecutionResultMessage,
        LLMMessage,
        SystemMessage,
        UserMessage,
    )
except ImportError:  # pragma: no cover - depends on the environment
    raise MissingExtraError("contagion.guard.autogen", "autogen", "autogen-agentchat") from None

__all__ = ["SITModelContext", "to_openai"]

SOURCE = "sit_guard"


def to_openai(message: LLMMessage) -> dict[str, Any]:
    """One AutoGen model message as an OpenAI-style dict (what the guard reads)."""
    if isinstance(message, SystemMessage):
        return {"role": "system", "content": message.content}
    if isinstance(message, UserMessage):
        content = message.content
        text = content if isinstance(content, str) else "\n".join(c for c in content if isinstance(c, str))
        return {"role": "user", "content": text}
    if isinstance(message, AssistantMessage):
        if isinstance(message.content, str):
            return {"role": "assistant", "content": message.content}
        calls = [{"type": "function", "id": c.id, "function": {"name": c.name, "arguments": c.arguments}}
                 for c in message.content]
        return {"role": "assistant", "content": None, "tool_calls": calls}
    if isinstance(message, FunctionExecutionResultMessage):
        return {"role": "tool", "content": json.dumps([r.content for r in message.content])}
    raise TypeError(f"unknown AutoGen message type {type(message).__name__}")


def _reminder(placement: Placement) -> LLMMessage:
    if placement.role == "system":
        return SystemMessage(content=placement.text)
    return UserMessage(content=placement.text, source=SOURCE)


class SITModelContext(ChatCompletionContext):
    """A chat completion context that steers what the model gets with a :class:`SITGuard`."""

    def __init__(self, guard: SITGuard, inner: ChatCompletionContext | None = None,
                 initial_messages: list[LLMMessage] | None = None) -> None:
        super().__init__(initial_messages)
        self.guard = guard
        self.inner = inner if inner is not None else UnboundedChatCompletionContext(initial_messages)

    async def add_message(self, message: LLMMessage) -> None:
        await self.inner.add_message(message)

    async def get_messages(self) -> list[LLMMessage]:
        """The inner context's messages, with the guard's reminders (this turn's, and the kept ones)."""
        messages = list(await self.inner.get_messages())
        decision = await self.guard.adecide([to_openai(m) for m in messages])
        return place(messages, decision.placements, _reminder)

    async def clear(self) -> None:
        await self.inner.clear()

    async def save_state(self) -> Mapping[str, Any]:
        return await self.inner.save_state()

    async def load_state(self, state: Mapping[str, Any]) -> None:
        await self.inner.load_state(state)
