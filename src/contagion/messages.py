"""The one message type every layer shares.

A message is immutable: a role, its text and an optional speaker name. ``meta`` carries structured
facts the engine knows about the message (its kind, the round, the actions observed, the trait item
asked); real models never see it — only ``role`` and ``content`` are sent — but scripted players and
simulated models read it, which is how they act on the game state they are shown without parsing
prose. ``meta`` values must be JSON-serialisable.

``reasoning`` is what a reasoning model thought before it wrote ``content`` (see
:mod:`contagion.backends.reasoning`): the speaker's own, recorded with its message, never sent to a model by
:meth:`Message.wire` and never copied into another player's history. A message without reasoning
serialises exactly as it did before the field existed (it is left out when empty).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    """One chat message as one agent sees it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str
    name: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    reasoning: str | None = Field(
        None, exclude_if=lambda value: value is None,
        description="The speaker's own reasoning behind this message (recorded; never sent, never shown to others).",
    )

    def wire(self) -> dict[str, str]:
        """The OpenAI-style dict sent to a model: role and content only (never ``reasoning``)."""
        return {"role": self.role, "content": self.content}


def system(content: str, **meta: Any) -> Message:
    return Message(role="system", content=content, meta=meta)


def user(content: str, **meta: Any) -> Message:
    return Message(role="user", content=content, meta=meta)


def assistant(content: str, **meta: Any) -> Message:
    return Message(role="assistant", content=content, meta=meta)


def wire(messages: Sequence[Message]) -> list[dict[str, str]]:
    """Messages as sent to a model."""
    return [m.wire() for m in messages]
