"""A trial's spec and its stored record: one self-contained, versioned, JSON-serialisable record per game."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contagion.backends.registry import is_language_model, kind_of, strategy_of
from contagion.errors import BackendSpecError
from contagion.games.record import GamePlay, GameSpec, PlayerSpec
from contagion.steering import InterventionSpec
from contagion.steering.monitor import MonitorSpec
from contagion.traits.settings import AssessmentSettings

RECORD_SCHEMA_VERSION = 3
"""2: the spec is a trial (game + intervention + assessment); players state ``language_model``. 3: players
state their scripted ``strategy`` (None for a language model). Older records are upgraded as they load
(:func:`upgrade_record`), so a stored run of any version reads the same."""
SPEC_HASH_VERSION = 2
"""Bumped whenever what goes into a spec's hash changes (2: the trial layout)."""


FocalRule = Literal["default", "all-lm"]
"""Who is under study at a table: the default-persona language models, or every language model."""


def focal_seats(seats: Sequence[PlayerSpec], rule: FocalRule = "default") -> tuple[PlayerSpec, ...]:
    """The seats with ``focal`` set by the one rule of who is under study (steered by the intervention, and
    measured when traits are): the language-model players with the default persona (``rule="default"``)
    or every language-model player (``"all-lm"``). At a table with no default-persona language model,
    ``default`` studies every language-model player. Scripted players are never under study."""
    lm = [kind_of(s.backend).language_model for s in seats]
    focal = [is_lm and (rule == "all-lm" or s.persona == "default") for s, is_lm in zip(seats, lm, strict=True)]
    if not any(focal):
        focal = lm
    return tuple(s.model_copy(update={"focal": f}) for s, f in zip(seats, focal, strict=True))


class TrialSpec(BaseModel):
    """Everything that changes a trial's outcome: the game, the intervention, how traits are measured.

    Its :meth:`stable_hash` identifies the trial in a store; workers, retries and the executor are not
    part of it and never change the hash.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    game: GameSpec = Field(description="The game: rules, seats, rounds, chat, sampling, seed.")
    intervention: InterventionSpec = Field(default_factory=InterventionSpec,
                                           description="Steering of the agents under study (focal players).")
    assessment: AssessmentSettings = Field(default_factory=AssessmentSettings,
                                           description="Which trait items are asked and how.")
    measure: bool = Field(True, description="Measure the focal players' traits before and after play "
                                            "(an intervention that needs a profile measures it either way).")
    sham: bool = Field(
        True, exclude_if=lambda v: v is True,
        description="With ``measure``: also measure each agent's sham baseline (the same items after a neutral "
                    "history as long as its game history), the analysis's primary reference. Left out of the "
                    "spec (and its hash) when on, so specs written before it keep their hash.",
    )

    monitor: MonitorSpec | None = Field(
        None, exclude_if=lambda v: v is None,
        description="The white-box drift monitor (trait directions every agent's turns are projected on); left out "
                    "of the spec (and its hash) when off.",
    )

    def agents(self) -> list[int]:
        """The seats under study: focal language-model players (measured, and the only ones steered)."""
        return [i for i, p in enumerate(self.game.players) if p.focal and kind_of(p.backend).language_model]

    def stable_hash(self) -> str:
        payload = json.dumps(
            {"v": SPEC_HASH_VERSION, "spec": self.model_dump(mode="json")}, sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def upgrade_record(data: Any) -> Any:
    """A stored record of an older schema as this version writes it (applied whenever a record loads).

    Before version 3 a player did not state its scripted strategy, and before version 2 not whether it was a
    language model: both are read from the recorded backend, asked of the backend registry (an identity that
    is no spec, a model's name, is a language model).
    """
    if not isinstance(data, dict) or int(data.get("schema_version", 1)) >= RECORD_SCHEMA_VERSION:
        return data
    players = []
    for p in data.get("players") or []:
        if isinstance(p, dict) and isinstance(p.get("backend"), str):
            try:
                lm = is_language_model(p["backend"])
            except BackendSpecError:
                lm = True
            p = {**p, "language_model": p.get("language_model", lm), "strategy": strategy_of(p["backend"])}
        players.append(p)
    return {**data, "players": players}


class GameRecord(GamePlay):
    """What the store keeps of one trial: the game as played (every player's view, rounds, profiles,
    costs, an error if it failed) with the trial's spec, its hash and the condition labels."""

    @model_validator(mode="before")
    @classmethod
    def upgrade_older_schema(cls, data: Any) -> Any:
        return upgrade_record(data)

    schema_version: int = RECORD_SCHEMA_VERSION
    spec: TrialSpec
    spec_hash: str
    contagion_version: str = ""
    labels: dict[str, Any] = Field(
        default_factory=dict,
        description="Condition labels set by the experiment (model, composition, intervention, ...); not hashed.",
    )

    def transcript_key(self) -> str:
        """An id of what was played: games with identical transcripts (and models) share it.

        Every player's backend, persona and messages (role and content, in order) are hashed; seeds and
        labels are not. Without chat, actions chosen by comparing log-probabilities do not depend on the
        seed, so a deterministic model replays the very same game for every repetition: such replays
        share this key. A failed game keeps its own id (its ``spec_hash``).
        """
        if self.error or not self.players:
            return self.spec_hash
        h = hashlib.blake2b(digest_size=8)
        for p in self.players:
            h.update(f"\x00{p.backend}\x00{p.persona}\x00".encode())
            for m in p.messages:
                h.update(m.role.encode())
                h.update(b"\x01")
                h.update(m.content.encode())
                h.update(b"\x02")
        return h.hexdigest()

