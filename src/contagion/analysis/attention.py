"""Attention decay: how much of a player's attention its system prompt keeps as its history grows.

Each message of a player's history gets a segment label (:func:`segment_labels`); a white-box backend
(``hf:…``) reports, per layer, the share of attention that the position producing the player's next
reply pays to each segment (:meth:`contagion.backends.hf.HFBackend.attention_to_segments`);
:func:`history_attention_rows` does that before every turn of the player and returns tidy rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from contagion.backends import protocol as P
from contagion.backends.hf import TEMPLATE, AttentionShares
from contagion.messages import Message

SYSTEM = "system"
INJECTION = "injection"
OTHERS = "others"
OBSERVATION = "observation"
OWN = "own"
OTHER_PROMPTS = "other_prompts"

SEGMENTS = (SYSTEM, INJECTION, OTHERS, OBSERVATION, OWN, OTHER_PROMPTS, TEMPLATE)
"""Every segment, in column order; ``template`` is the chat-format tokens between message contents."""

COLUMNS = ("turn", "message_index", "tokens_so_far", "layer", *(f"share_{s}" for s in SEGMENTS))


class AttentionBackend(Protocol):
    """What :func:`history_attention_rows` needs from a backend."""

    async def attention_to_segments(
        self, messages: Sequence[Message], segment_of_message: Sequence[str], *, query: str = "last"
    ) -> AttentionShares: ...


def segment_label(message: Message, index: int) -> str:
    """The segment of one message (see :func:`segment_labels`)."""
    kind = message.meta.get(P.KIND)
    if index == 0 and message.role == "system":
        return SYSTEM
    if kind == P.INJECTION:
        return INJECTION
    if kind == P.TALK:
        return OTHERS
    if kind == P.OBSERVATION:
        return OBSERVATION
    if message.role == "assistant":
        return OWN
    return OTHER_PROMPTS


def segment_labels(messages: Sequence[Message]) -> list[str]:
    """One segment label per message, checked in this order:

    - ``system``: the first message, if its role is system (the persona's system prompt);
    - ``injection``: a steering message (meta kind ``injection``), wherever it sits;
    - ``others``: another player's chat message (meta kind ``talk``);
    - ``observation``: a round result shown to the player (meta kind ``observation``);
    - ``own``: the player's own messages (role assistant);
    - ``other_prompts``: everything else — game rules, talk and act prompts, trait questions, and
      system messages after the first that are not injections.
    """
    return [segment_label(m, i) for i, m in enumerate(messages)]


async def history_attention_rows(
    backend: AttentionBackend, messages: Sequence[Message]
) -> list[dict[str, float | int]]:
    """Tidy rows of attention shares before each of the player's turns, one row per (turn, layer).

    A turn is each assistant message after the first message; its row set describes the prompt just
    before it (``messages[:i]`` with the generation prompt), read at the position that produces the
    turn's first token. Columns: :data:`COLUMNS` — ``turn`` (1-based), ``message_index`` (index of the
    assistant message), ``tokens_so_far`` (prompt tokens), ``layer`` (0-based) and one ``share_*``
    per segment; the shares of a row sum to 1. With a prefix-caching backend each prompt extends the
    previous one, so only the new messages are encoded.
    """
    labels = segment_labels(messages)
    rows: list[dict[str, float | int]] = []
    turn = 0
    for i, message in enumerate(messages):
        if message.role != "assistant" or i == 0:
            continue
        turn += 1
        shares = await backend.attention_to_segments(messages[:i], labels[:i])
        for layer, per_label in enumerate(shares.per_layer):
            row: dict[str, float | int] = {
                "turn": turn,
                "message_index": i,
                "tokens_so_far": shares.tokens,
                "layer": layer,
            }
            for segment in SEGMENTS:
                row[f"share_{segment}"] = per_label.get(segment, 0.0)
            rows.append(row)
    return rows
