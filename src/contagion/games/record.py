"""The game record: one self-contained, versioned, JSON-serialisable record per game."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from contagion.backends.base import GenerationConfig
from contagion.messages import Message
from contagion.strict import Seed, seed_field

ActionName = Literal["cooperate", "defect", "invalid"]
MAX_PLAYERS = 12
"""The most players one game seats (the paper plays 3): every player reads every other's messages, so a game's
cost grows with the square of its size."""


_PERSONA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def split_seat(text: str) -> tuple[str | None, str]:
    """A seat ``[PERSONA=]SPEC`` → (persona or None, spec). The one grammar of seats and players.

    Only a leading plain name followed by ``=`` before any ``:`` is a persona: ``malicious=embedded`` and
    ``malicious=scripted:random?p=0.3`` have one; ``scripted:random?p=0.3``,
    ``openai:m@http://127.0.0.1:9/v1?timeout=5`` and ``embedded?n_threads=1`` do not (their ``=`` belongs to
    the backend's parameters). A bare word (``default``) comes back as the spec; a config reads it as a
    persona played by its models.
    """
    text = text.strip()
    head, eq, rest = text.partition("=")
    if eq and ":" not in head and _PERSONA_NAME.fullmatch(head.strip()):
        return head.strip(), rest.strip()
    return None, text


class PlayerSpec(BaseModel):
    """One seat at the table: a backend spec and a persona (``[PERSONA=]BACKEND_SPEC``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: str = Field(description="Backend spec, e.g. 'embedded' or 'scripted:always-defect'.")
    persona: str = Field("default", description="Persona name; scripted players have none.")
    focal: bool = Field(True, description="Whether this player is measured (trait profiles).")

    @classmethod
    def parse(cls, text: str, *, focal: bool = True) -> PlayerSpec:
        """``[PERSONA=]BACKEND_SPEC``; see :func:`split_seat` for the one grammar."""
        persona, backend = split_seat(text)
        if not backend:
            from contagion.errors import UserError

            raise UserError(f"player {text.strip()!r} must look like [PERSONA=]BACKEND_SPEC, e.g. malicious=embedded")
        return cls(backend=backend, persona=persona or "default", focal=focal)

    def label(self) -> str:
        return self.backend if self.persona == "default" else f"{self.persona}={self.backend}"


class GameSpec(BaseModel):
    """The game itself: rules, seats, rounds, chat and sampling. A trial adds the intervention and how
    traits are measured (:class:`contagion.experiment.trial.TrialSpec`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    game: str = Field("prisoners-dilemma", description="Built-in game name or YAML path.")
    players: tuple[PlayerSpec, ...] = Field(max_length=MAX_PLAYERS, description=f"The seats (2 to {MAX_PLAYERS}).")
    rounds: int = Field(5, ge=1, le=1000)
    chat_turns: int = Field(1, ge=0, le=20, description="Chat messages per player per round; 0 = no chat.")
    reveal_horizon: bool = Field(True, description="Whether players are told the number of rounds.")
    seed: Seed = seed_field(0, description="Seed of the talk order, sampling and everything random in the game.")
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    action_mode: Literal["auto", "score", "sample", "generate"] = Field(
        "auto", description="auto: the more likely action by log-prob when the backend can score, else generate "
                            "and parse; sample: drawn from the two actions' renormalised probabilities with a "
                            "recorded seed (generate and parse when the backend cannot score)."
    )
    max_reasks: int = Field(2, ge=0, le=10, description="Re-asks after an unparseable action (generate mode).")
    option_order: Literal["cooperate-first", "defect-first"] = Field(
        "cooperate-first", description="Which action the act prompt lists (and scores) first; configs "
                                       "counterbalance it by seed parity."
    )
    framing: Literal["standard", "neutral"] = Field(
        "standard", description="neutral: rules without the game's name, story or moral words; the actions "
                                "are the labels 'J' (cooperative) and 'K'."
    )
    reasoning: Literal["strip", "keep"] = Field(
        "strip", exclude_if=lambda value: value == "strip",
        description="What a reasoning model's own history keeps of its reasoning: strip (its answers only; "
                    "the reasoning is recorded with each message) or keep (inline, as it wrote it, so it "
                    "sees its earlier thoughts). Co-players never see another player's reasoning. Left out "
                    "of the spec (and its hash) at the default, so specs written before it keep their hash.",
    )


class ActionRecord(BaseModel):
    round: int
    action: ActionName
    label: str | None = Field(None, description="The game's label of the chosen action, e.g. 'swerve'.")
    method: str = Field(description="'score:<method>' or 'generate' (text parsed).")
    logprobs: dict[str, float] | None = None
    raw: list[str] = Field(default_factory=list, description="Reply texts when the action was generated.")
    mass: float | None = Field(None, description="Scored actions: p(cooperate) + p(defect), raw; a floored "
                                              "action counts at its floor, so the mass is then an upper bound.")
    floored: list[str] = Field(default_factory=list, description="Action names a server did not return (floors).")
    attempts: int = 1
    format_version: int | None = Field(
        None, description="Action format (games.engine.ACTION_FORMAT_VERSION); None in records made before it."
    )
    selection: Literal["argmax", "sample"] | None = Field(
        None, description="Scored actions: the more likely action (argmax) or a draw from p_cooperate (sample)."
    )
    p_cooperate: float | None = Field(None, description="Scored actions: p(cooperate) renormalised over the two.")
    sample_seed: int | None = Field(None, description="Sampled actions: the seed of the draw (uniform < p_cooperate "
                                                      "is cooperate).")
    problem: str | None = Field(None, exclude_if=lambda v: v is None,
                                description="Why the action's scores were invalid (the model reported no "
                                            "log-probability: NaN, +inf, above 0); the action is then invalid.")


class InjectionEvent(BaseModel):
    round: int
    phase: str
    role: str
    text: str
    intervention: str
    reason: str


class MonitorReading(BaseModel):
    """One turn of a monitored player (white-box monitor): before it spoke or acted, the residual stream of its
    prompt's last token projected on each trait's unit direction."""

    round: int
    phase: Literal["talk", "act"]
    turn: int = Field(0, description="The chat turn within the round (0 for the action).")
    values: dict[str, float] = Field(description="Trait -> projection (residual-stream units).")


class PlayerRecord(BaseModel):
    index: int
    name: str
    backend: str
    persona: str
    persona_text: str
    focal: bool
    language_model: bool = Field(True, description="False for a scripted strategy (it has no traits).")
    strategy: str | None = Field(None, description="A scripted player's strategy (e.g. 'always-defect'); None for "
                                                   "a language model.")
    system_prompt: str
    messages: list[Message] = Field(description="Everything this player saw and wrote, in order.")
    actions: list[ActionRecord] = Field(default_factory=list)
    payoffs: list[float] = Field(default_factory=list)
    total: float = 0.0
    injections: list[InjectionEvent] = Field(default_factory=list)
    intervention_log: list[dict[str, Any]] = Field(
        default_factory=list, description="Intervention-specific trajectory (e.g. adaptive SIT probes)."
    )
    monitor: list[MonitorReading] = Field(
        default_factory=list, exclude_if=lambda v: not v,
        description="Per turn, the white-box monitor's projections (a trial with a monitor, on a backend with "
                    "activations); empty otherwise.")
    pre_profile: dict[str, Any] | None = None
    post_profile: dict[str, Any] | None = Field(
        None, description="The post-play profile of record: measured after the agent's game history with the "
                          "messages an intervention injected removed (before this field said so, with them in view)."
    )
    post_profile_injected: dict[str, Any] | None = Field(
        None, exclude_if=lambda v: v is None,
        description="Secondary: the post-play profile measured after the whole history, injections in view; "
                    "recorded only for an agent that received injections.",
    )
    sham_profile: dict[str, Any] | None = Field(
        None, exclude_if=lambda v: v is None,
        description="The sham baseline: the same items asked after a neutral history of the same roles and "
                    "length in characters as the stripped game history (contagion.traits.sham), same system prompt.",
    )
    sham_context: dict[str, Any] | None = Field(
        None, exclude_if=lambda v: v is None,
        description="How well the sham matches: characters and messages of the post-play and the sham contexts, "
                    "and the mean prompt tokens per question of each where the backend reports them (else None).",
    )
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


class GamePlay(BaseModel):
    """What the engine returns: the game as played, each player's view, the rounds, and an error if it
    stopped early. The experiment layer wraps it into the stored record with the trial's spec."""

    game: dict[str, Any] = Field(description="The dilemma as played (its payoff data).")
    players: list[PlayerRecord]
    rounds: list[RoundRecord] = Field(default_factory=list)
    wall_seconds: float = 0.0
    error: str | None = None

    @computed_field  # type: ignore[prop-decorator]  # serialised: the JSON record states it too
    @property
    def invalid_rate(self) -> float:
        """Share of all actions in the game that were invalid."""
        acts = [a for r in self.rounds for a in r.actions]
        return sum(a == "invalid" for a in acts) / len(acts) if acts else 0.0

    def to_json(self) -> str:
        return self.model_dump_json()
