"""The game record: one self-contained, versioned, JSON-serialisable record per game."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from contagion.backends.base import GenerationConfig
from contagion.messages import Message

RECORD_SCHEMA_VERSION = 1
SPEC_HASH_VERSION = 1

ActionName = Literal["cooperate", "defect", "invalid"]


class PlayerSpec(BaseModel):
    """One seat at the table: a backend spec and a persona (``[PERSONA=]BACKEND_SPEC``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: str = Field(description="Backend spec, e.g. 'embedded' or 'scripted:always-defect'.")
    persona: str = Field("default", description="Persona name; scripted players have none.")
    focal: bool = Field(True, description="Whether this player is measured (trait profiles).")

    @classmethod
    def parse(cls, text: str, *, focal: bool = True) -> PlayerSpec:
        text = text.strip()
        persona, eq, backend = text.partition("=")
        # a persona is a plain name; an '=' after ':' or '?' belongs to the backend spec's parameters
        # (scripted:random?seed=3, sim:planted?contagion=0.3)
        if not eq or any(c in persona for c in ":?@/"):
            persona, backend = "default", text
        if not backend or not persona:
            from contagion.errors import UserError

            raise UserError(f"player {text!r} must look like [PERSONA=]BACKEND_SPEC, e.g. malicious=embedded")
        return cls(backend=backend.strip(), persona=persona.strip(), focal=focal)

    def label(self) -> str:
        return self.backend if self.persona == "default" else f"{self.persona}={self.backend}"


class InterventionSpec(BaseModel):
    """Which intervention runs, with its exact parameters (recorded verbatim)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "none"
    params: dict[str, Any] = Field(default_factory=dict)

    def label(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))


class GameSpec(BaseModel):
    """Everything that changes a game's outcome. Its hash identifies the game in the store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    game: str = Field("prisoners-dilemma", description="Built-in game name or YAML path.")
    players: tuple[PlayerSpec, ...]
    rounds: int = Field(5, ge=1, le=1000)
    chat_turns: int = Field(1, ge=0, le=20, description="Chat messages per player per round; 0 = no chat.")
    reveal_horizon: bool = Field(True, description="Whether players are told the number of rounds.")
    seed: int = 0
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    action_mode: Literal["auto", "score", "generate"] = Field(
        "auto", description="auto: score actions by log-prob when the backend can, else generate and parse."
    )
    max_reasks: int = Field(2, ge=0, le=10, description="Re-asks after an unparseable action (generate mode).")
    intervention: InterventionSpec = Field(default_factory=InterventionSpec)
    assessment: dict[str, Any] = Field(
        default_factory=dict, description="Trait assessment settings (set by the experiment layer)."
    )

    def stable_hash(self) -> str:
        payload = json.dumps(
            {"v": SPEC_HASH_VERSION, "spec": self.model_dump(mode="json")}, sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class ActionRecord(BaseModel):
    round: int
    action: ActionName
    label: str | None = Field(None, description="The game's label of the chosen action, e.g. 'swerve'.")
    method: str = Field(description="'score:<method>' or 'generate' (text parsed).")
    logprobs: dict[str, float] | None = None
    raw: list[str] = Field(default_factory=list, description="Reply texts when the action was generated.")
    attempts: int = 1


class InjectionEvent(BaseModel):
    round: int
    phase: str
    role: str
    text: str
    intervention: str
    reason: str


class PlayerRecord(BaseModel):
    index: int
    name: str
    backend: str
    persona: str
    persona_text: str
    focal: bool
    system_prompt: str
    messages: list[Message] = Field(description="Everything this player saw and wrote, in order.")
    actions: list[ActionRecord] = Field(default_factory=list)
    payoffs: list[float] = Field(default_factory=list)
    total: float = 0.0
    injections: list[InjectionEvent] = Field(default_factory=list)
    intervention_log: list[dict[str, Any]] = Field(
        default_factory=list, description="Intervention-specific trajectory (e.g. adaptive SIT probes)."
    )
    pre_profile: dict[str, Any] | None = None
    post_profile: dict[str, Any] | None = None
    prompt_tokens: int = 0
    prompt_tokens_encoded: int = 0
    completion_tokens: int = 0
    model_seconds: float = 0.0

    @computed_field  # type: ignore[prop-decorator]  # serialised: the JSON record states it too
    @property
    def invalid_rate(self) -> float:
        """Share of this player's actions that were invalid (unparseable; never counted as cooperation)."""
        return sum(a.action == "invalid" for a in self.actions) / len(self.actions) if self.actions else 0.0


class RoundRecord(BaseModel):
    round: int
    actions: list[ActionName]
    payoffs: list[float]
    talk: list[tuple[str, str]] = Field(default_factory=list, description="(speaker, text) in order.")


class GameRecord(BaseModel):
    schema_version: int = RECORD_SCHEMA_VERSION
    spec: GameSpec
    spec_hash: str
    game: dict[str, Any] = Field(description="The dilemma as played (its payoff data).")
    players: list[PlayerRecord]
    rounds: list[RoundRecord] = Field(default_factory=list)
    wall_seconds: float = 0.0
    error: str | None = None
    contagion_version: str = ""
    labels: dict[str, Any] = Field(
        default_factory=dict,
        description="Condition labels set by the experiment (model, composition, intervention, ...); not hashed.",
    )

    @computed_field  # type: ignore[prop-decorator]  # serialised: the JSON record states it too
    @property
    def invalid_rate(self) -> float:
        """Share of all actions in the game that were invalid."""
        acts = [a for r in self.rounds for a in r.actions]
        return sum(a == "invalid" for a in acts) / len(acts) if acts else 0.0

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

    def to_json(self) -> str:
        return self.model_dump_json()
