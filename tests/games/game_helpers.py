"""Helpers shared by the game-engine tests: specs from strings, records without timing, test backends."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from contagion import vocabulary as P
from contagion.backends.base import (
    Backend,
    Capabilities,
    ChoiceScore,
    Completion,
    GenerationConfig,
    ScoreMethod,
    Scores,
)
from contagion.backends.registry import resolve
from contagion.games.engine import EventSink, GameEngine, TurnHook
from contagion.games.record import GamePlay, GameSpec, PlayerSpec
from contagion.messages import Message
from contagion.personas import Persona

# Fields that measure time, not outcome: they differ between two runs of the same spec.
TIMING_FIELDS = ("wall_seconds", "model_seconds")


def make_spec(*players: str, **fields: Any) -> GameSpec:
    """A GameSpec from ``[PERSONA=]BACKEND`` strings."""
    return GameSpec(players=tuple(PlayerSpec.parse(p) for p in players), **fields)


async def play(spec: GameSpec, backends: Sequence[Backend] | None = None, *,
               hooks: Sequence[TurnHook | None] | None = None, personas: dict[str, Persona] | None = None,
               on_event: EventSink | None = None) -> GamePlay:
    """Play one game on the engine; without ``backends``, each seat's spec resolved as a trial would."""
    seats = list(backends) if backends is not None else [resolve(p.backend) for p in spec.players]
    return await GameEngine(spec, seats, hooks=hooks, personas=personas, on_event=on_event).play()


def without_timing(record: GamePlay) -> dict[str, Any]:
    """The record as JSON-ready data, minus the timing fields (everything else must be identical)."""
    data = record.model_dump(mode="json")
    for key in TIMING_FIELDS:
        data.pop(key, None)
    for player in data["players"]:
        for key in TIMING_FIELDS:
            player.pop(key, None)
    return data


def act_prompt_index(messages: Sequence[Message], round_no: int) -> int:
    """Index of the act prompt of ``round_no`` in a player's history."""
    for i, m in enumerate(messages):
        if m.meta.get("kind") == P.ACT and m.meta.get("round") == round_no:
            return i
    raise AssertionError(f"no act prompt for round {round_no}")


class Spy(Backend):
    """Wraps a backend and keeps a copy of every request (what the player had seen when it was asked)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.capabilities = inner.capabilities
        self.requests: list[tuple[str, list[Message]]] = []

    async def generate(self, messages: Sequence[Message], config: GenerationConfig) -> Completion:
        self.requests.append(("generate", list(messages)))
        return await self.inner.generate(messages, config)

    async def score_choices(self, messages: Sequence[Message], choices: Sequence[str], *, prefix: str = "") -> Scores:
        self.requests.append(("score", list(messages)))
        return await self.inner.score_choices(messages, choices, prefix=prefix)


class TextPlayer(Backend):
    """A language model without log-probabilities that replies from a script (then repeats the last reply).

    Its actions go through the engine's generate-and-parse path.
    """

    capabilities = Capabilities(language_model=True, logprobs=False, score_method=ScoreMethod.SAMPLED)

    def __init__(self, replies: Sequence[str], spec: str = "test:text") -> None:
        self.replies = list(replies)
        self.spec = spec
        self.calls = 0

    async def generate(self, messages: Sequence[Message], config: GenerationConfig) -> Completion:
        text = self.replies[min(self.calls, len(self.replies) - 1)]
        self.calls += 1
        return Completion(text=text, prompt_tokens=10 * len(messages), completion_tokens=len(text.split()))

    async def score_choices(self, messages: Sequence[Message], choices: Sequence[str], *, prefix: str = "") -> Scores:
        raise AssertionError("a backend without log-probabilities must not be asked to score")


class Garbage(TextPlayer):
    """Always answers nonsense: its actions must come out invalid."""

    def __init__(self) -> None:
        super().__init__(["blorp, the moon is made of cheese"], spec="test:garbage")


class ZeroProbability(Backend):
    """Claims log-probabilities but gives every choice probability zero."""

    spec = "test:zero"
    capabilities = Capabilities(language_model=True, logprobs=True, score_method=ScoreMethod.FULL)

    async def generate(self, messages: Sequence[Message], config: GenerationConfig) -> Completion:
        return Completion(text="hello")

    async def score_choices(self, messages: Sequence[Message], choices: Sequence[str], *, prefix: str = "") -> Scores:
        return Scores(choices=[ChoiceScore(choice=c, logprob=-math.inf) for c in choices], method=ScoreMethod.FULL)
