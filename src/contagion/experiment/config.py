"""Experiment configs (YAML, validated; a typo is an error) and their expansion into game specs.

A config declares a grid: models × games × group compositions × interventions × chat turns ×
repetitions. Each cell-repetition becomes one :class:`~contagion.games.record.GameSpec` whose stable
hash identifies it in the store, so a rerun skips what is stored and a changed parameter runs only
the new specs. Workers, retries and the executor are not part of the spec and never change a hash.

Compositions list the seats at the table. Each seat is a persona name (``default``, ``benevolent``,
``malicious`` or one from ``personas``), played by each model in ``models`` in turn; or a full player
``[PERSONA=]BACKEND_SPEC`` (``malicious=embedded``, ``scripted:always-defect``,
``scripted:random?p=0.3``): only a leading name before ``=`` and before any ``:`` is a persona.
Repetition ``r`` uses seed ``seed + r`` in every cell, so conditions are compared on common seeds.

Design controls, resolved per game from its seed (the same in every cell, so they are balanced across
conditions and recorded in the spec and the labels): ``option_order: counterbalanced`` lists the
cooperative action first in games of even seed and the other first in games of odd seed (both in the
act prompt and in the scored order); ``seat_order: shuffled`` permutes the composition's seats with a
shuffle seeded by the game's seed (label ``seats``: the composition's seat index now in each place), so
the malicious or scripted co-player's seat varies. ``action_mode: sample`` (the default) draws each
action from the two actions' probabilities, so repetitions without chat are different games.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contagion.backends.base import GenerationConfig
from contagion.backends.registry import kind_of
from contagion.backends.server_options import with_options
from contagion.errors import UserError
from contagion.experiment.record import FocalRule, TrialSpec, focal_seats
from contagion.fileio import load_yaml, validation_message
from contagion.games.dilemmas import game_key, is_conversation, load_dilemma, tie_problem
from contagion.games.record import MAX_PLAYERS, GameSpec, PlayerSpec, split_seat
from contagion.personas import BUILTIN as BUILTIN_PERSONAS
from contagion.personas import Persona, check_personas
from contagion.steering.monitor import MonitorSpec
from contagion.strict import INT64_MAX, Int, Seed, seed_field
from contagion.traits.settings import AssessmentSettings


class ExperimentConfig(BaseModel):
    """A grid of games. Every field is optional except ``models``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("experiment", description="A name for the run (shown in the report).")
    models: list[str] = Field(min_length=1, description="Backend specs of the language models under study.")
    model_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Backend options per model (a key of models → its options), written into the model's spec "
                    "after '?': e.g. {extra_body: {chat_template_kwargs: {enable_thinking: false}}, "
                    "system_role: merge, score: auto} for an openai: model. Part of the backend's identity "
                    "in every record; the report's model label stays the spec as listed in models.",
    )
    games: list[str] = Field(
        default_factory=lambda: ["prisoners-dilemma", "chicken", "stag-hunt"],
        description="Built-in game names or YAML game files.",
    )
    compositions: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "all-default": ["default", "default", "default"],
            "one-malicious": ["default", "default", "malicious"],
            "scripted-defector": ["default", "default", "scripted:always-defect"],
        },
        description="Named seatings; each seat is a persona, PERSONA=BACKEND or a scripted backend.",
    )
    interventions: list[str] = Field(
        default_factory=lambda: ["none"], description="e.g. none, repeat-system:k=2, sit:k=2,n=3, sit-adaptive."
    )
    rounds: Int = Field(5, ge=1, le=1000, description="Rounds per game.")
    chat_turns: list[Int] = Field(
        default_factory=lambda: [0, 1], description="Chat turns per round; 0 = no chat (the no-chat control)."
    )
    reveal_horizon: bool = Field(True, description="Tell players how many rounds there are (also: horizon).")
    horizon: Literal["revealed", "hidden"] = Field(
        "revealed", description="revealed: players are told the number of rounds; hidden: they are not "
                                "(the same setting as reveal_horizon, which it must agree with when both are given)."
    )
    framing: Literal["standard", "neutral"] = Field(
        "standard", description="neutral: rules without the game's name, story or moral words, actions 'J' and 'K'."
    )
    option_order: Literal["counterbalanced", "cooperate-first", "defect-first"] = Field(
        "counterbalanced", description="Which action the act prompt lists first; counterbalanced: by seed parity."
    )
    seat_order: Literal["shuffled", "fixed"] = Field(
        "shuffled", description="shuffled: each game permutes the composition's seats (seeded by its seed)."
    )
    repetitions: Int = Field(1, ge=1, le=100000, description="Games per cell (seeds seed .. seed+repetitions-1).")
    seed: Seed = seed_field(0, le=INT64_MAX - 100000, description="Base seed (repetition r uses seed + r).")
    focal: FocalRule = Field(
        "default", description="The agents under study (steered by the intervention, measured when "
                               "measure_traits is on): LM players with the default persona (every LM player "
                               "where a composition has none), or every LM player (experiment.record.focal_seats)."
    )
    assessment: AssessmentSettings = Field(default_factory=AssessmentSettings)
    measure_traits: bool = Field(True, description="Measure focal players' traits before and after play.")
    sham: bool = Field(True, description="With measure_traits: also measure each agent's sham baseline — the same "
                                         "items after a neutral conversation as long (in characters) as its game "
                                         "history — which the analysis's primary estimand subtracts (post − sham). "
                                         "Off: no sham profiles, and the analysis falls back to raw post − pre.")
    monitor: MonitorSpec | None = Field(
        None, description="White-box drift monitor: a vectors file (made by `contagion vectors` for the model) or "
                          "{file, traits}; every agent's turns are projected on the traits' directions and "
                          "recorded (transformers backends only).")
    generation: GenerationConfig = Field(default_factory=lambda: GenerationConfig(max_tokens=60))
    action_mode: Literal["sample", "auto", "score", "generate"] = Field(
        "sample", description="sample: draw each action from the two actions' probabilities (seeded, recorded); "
                              "auto/score: the more likely action; generate: reply text parsed."
    )
    reasoning: Literal["strip", "keep"] = Field(
        "strip", description="What a reasoning model's own history keeps of its reasoning: strip (answers only; "
                             "the reasoning is recorded with each message) or keep (inline, so it sees its "
                             "earlier thoughts). Co-players never see it either way."
    )
    personas: list[Persona] = Field(default_factory=list, description="Extra personas (name, text).")
    max_failure_rate: float = Field(0.05, ge=0.0, le=1.0, description="Exit non-zero above this failure rate.")
    concurrency: Int | None = Field(None, ge=1, le=1024, description="Games in flight (default: by backend).")

    @model_validator(mode="before")
    @classmethod
    def _horizon(cls, data: Any) -> Any:
        """``horizon`` and ``reveal_horizon`` are one setting: either sets both, and they must agree."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        horizon, reveal = data.get("horizon"), data.get("reveal_horizon")
        if horizon in ("revealed", "hidden") and isinstance(reveal, bool) and (horizon == "revealed") != reveal:
            raise ValueError(f"horizon: {horizon} contradicts reveal_horizon: {str(reveal).lower()} (give one of them)")
        if horizon in ("revealed", "hidden") and "reveal_horizon" not in data:
            data["reveal_horizon"] = horizon == "revealed"
        elif isinstance(reveal, bool) and "horizon" not in data:
            data["horizon"] = "revealed" if reveal else "hidden"
        return data

    @field_validator("models")
    @classmethod
    def _models(cls, models: list[str]) -> list[str]:
        for m in models:
            try:
                kind_of(m)
            except UserError as exc:
                raise ValueError(str(exc)) from None
        if len(set(models)) != len(models):
            raise ValueError("models are listed twice")
        return models

    @model_validator(mode="after")
    def _model_options(self) -> ExperimentConfig:
        unknown = [m for m in self.model_options if m not in self.models]
        if unknown:
            raise ValueError(f"model_options: {unknown[0]!r} is not one of models (each key names a model as "
                             "listed there)")
        for model, options in self.model_options.items():
            for key, value in options.items():
                if not isinstance(value, str | int | float | bool | dict | list) or value is None:
                    raise ValueError(f"model_options.{model}.{key}: give a value, a mapping or a list")
        return self

    def model_spec(self, model: str) -> str:
        """The backend spec a model is played with: as listed in ``models``, with its ``model_options``."""
        return with_options(model, self.model_options.get(model))

    @field_validator("games")
    @classmethod
    def _games(cls, games: list[str]) -> list[str]:
        if not games:
            raise ValueError("at least one game is needed")
        seen: dict[str, str] = {}
        for g in games:
            key = game_key(g)
            if key in seen:
                same = "" if seen[key] == g else f", the same game as {seen[key]!r}"
                raise ValueError(f"a game is listed twice ({g!r}{same}): it would be played twice")
            seen[key] = g
            if is_conversation(g):  # the non-game control
                continue
            try:
                load_dilemma(g)
            except UserError as exc:
                raise ValueError(str(exc)) from None
        return games

    @field_validator("chat_turns")
    @classmethod
    def _chat(cls, turns: list[int]) -> list[int]:
        if not turns:
            raise ValueError("at least one chat_turns value is needed")
        if any(t < 0 or t > 20 for t in turns):
            raise ValueError("chat_turns values must be between 0 and 20")
        if len(set(turns)) != len(turns):
            raise ValueError("a chat_turns value is listed twice")
        return turns

    @field_validator("interventions")
    @classmethod
    def _interventions(cls, items: list[str]) -> list[str]:
        from contagion.steering import parse_intervention

        if not items:
            raise ValueError("at least one intervention is needed (use 'none')")
        labels = []
        for text in items:
            try:
                labels.append(parse_intervention(text).label())
            except UserError as exc:
                raise ValueError(str(exc)) from None
        if len(set(labels)) != len(labels):
            raise ValueError("an intervention is listed twice (with the same parameters)")
        return items

    @model_validator(mode="after")
    def _seats(self) -> ExperimentConfig:
        # messages start with the key (compositions.NAME): a model validator has no location of its own
        if not self.compositions:
            raise ValueError("compositions: at least one composition is needed")
        if any(is_conversation(g) for g in self.games) and not any(t > 0 for t in self.chat_turns):
            raise ValueError("games: the conversation game needs chat_turns above 0 (it is only talk)")
        try:
            check_personas(self.personas, "personas")
        except UserError as exc:
            raise ValueError(str(exc)) from None
        known = set(BUILTIN_PERSONAS) | {p.name for p in self.personas}
        seatings: dict[tuple[str, ...], str] = {}
        for name, seats in self.compositions.items():
            twin = seatings.setdefault(tuple(s.strip() for s in seats), name)
            if twin != name:
                raise ValueError(f"compositions.{name}: the same seats as {twin!r} (every game would be played twice)")
            where = f"compositions.{name}"
            if len(seats) < 2:
                raise ValueError(f"{where}: composition {name!r} needs at least 2 seats")
            if len(seats) > MAX_PLAYERS:
                raise ValueError(f"{where}: composition {name!r} has {len(seats)} seats; a game takes at most "
                                 f"{MAX_PLAYERS} players")
            for seat in seats:
                persona, backend = _seat(seat)
                if persona is not None and persona not in known:
                    raise ValueError(f"{where}: unknown persona {persona!r}; known: {sorted(known)}")
                if backend is not None:
                    try:
                        kind_of(backend)
                    except UserError as exc:
                        raise ValueError(f"{where}: {exc}") from None
            for game in self.games:
                if not is_conversation(game):
                    problem = tie_problem(load_dilemma(game), len(seats))
                    if problem:
                        raise ValueError(f"{where}: {problem}")
        return self

    # -- expansion ------------------------------------------------------------------------------
    def players_for(self, composition: list[str], model: str) -> tuple[PlayerSpec, ...]:
        seats = [PlayerSpec(backend=backend or self.model_spec(model), persona=persona or "default")
                 for persona, backend in map(_seat, composition)]
        return focal_seats(seats, self.focal)  # the agents under study: steered, and measured when asked

    def expand(self) -> Iterator[tuple[TrialSpec, dict[str, Any]]]:
        """Every game of the grid, with its condition labels."""
        from contagion.steering import parse_intervention

        interventions = [parse_intervention(i) for i in self.interventions]
        for model in self.models:
            for game in self.games:
                for comp_name, seats in self.compositions.items():
                    players = self.players_for(seats, model)
                    for iv in interventions:
                        for turns in self.turns_for(game):
                            for rep in range(self.repetitions):
                                seed = self.seed + rep
                                order = self.seating(seed, len(players))
                                options = self.options_for(seed)
                                spec = TrialSpec(
                                    game=GameSpec(
                                        game=game, players=tuple(players[i] for i in order), rounds=self.rounds,
                                        chat_turns=turns, reveal_horizon=self.reveal_horizon, seed=seed,
                                        generation=self.generation, action_mode=self.action_mode,
                                        option_order=options, framing=self.framing, reasoning=self.reasoning,
                                    ),
                                    intervention=iv, assessment=self.assessment, measure=self.measure_traits,
                                    sham=self.sham, monitor=self.monitor,
                                )
                                labels = {"model": model, "game": game, "composition": comp_name,
                                          "intervention": iv.label(), "chat_turns": turns, "rep": rep,
                                          "option_order": options, "seats": order}
                                yield spec, labels

    def seating(self, seed: int, n: int) -> list[int]:
        """The composition's seat index in each place of a game with this seed: a seeded shuffle
        (``seat_order: shuffled``), or the identity (``fixed``)."""
        order = list(range(n))
        if self.seat_order == "shuffled":
            random.Random(f"seats:{seed}").shuffle(order)
        return order

    def options_for(self, seed: int) -> Literal["cooperate-first", "defect-first"]:
        """The act prompt's option order of a game with this seed (``counterbalanced``: by seed parity)."""
        if self.option_order == "counterbalanced":
            return "cooperate-first" if seed % 2 == 0 else "defect-first"
        return self.option_order

    def turns_for(self, game: str) -> list[int]:
        """The chat settings a game is played with: all of ``chat_turns``, but only those above 0 for the
        conversation control (without talk it would be nothing at all)."""
        return [t for t in self.chat_turns if t > 0] if is_conversation(game) else list(self.chat_turns)

    def size(self) -> int:
        cells = sum(len(self.turns_for(g)) for g in self.games)
        return len(self.models) * cells * len(self.compositions) * len(self.interventions) * self.repetitions

    def persona_map(self) -> dict[str, Persona]:
        return {p.name: p for p in self.personas}

    def backend_specs(self) -> dict[str, str]:
        """Every backend spec the grid uses, with the config key that names it."""
        out = {self.model_spec(m): ("model_options" if m in self.model_options else "models") for m in self.models}
        for name, seats in self.compositions.items():
            for seat in seats:
                _, backend = _seat(seat)
                if backend is not None:
                    out.setdefault(backend, f"compositions.{name}")
        return out

    def check_resources(self, source: str = "config") -> None:
        """What schema validation cannot see: every backend spec builds (without loading a model or
        touching the network) and the trait inventory loads. Raises UserError naming the key, so a run
        fails before it writes anything."""
        from contagion.backends.registry import build
        from contagion.steering import needs_profile, parse_intervention

        built = {}
        for spec, key in self.backend_specs().items():
            try:
                built[spec] = build(spec)
            except UserError as exc:
                raise UserError(f"{source}: {key}: {exc}") from None
        vector = [i for i in self.interventions if parse_intervention(i).name == "vector"]
        for m in self.models if vector else ():
            model = built.get(self.model_spec(m))
            if model is not None and model.capabilities.language_model and not model.capabilities.activations:
                raise UserError(f"{source}: interventions: {vector[0]} steers activations, which {m} does not expose; "
                                "use a transformers backend (hf:embedded or hf:PATH_OR_ID)")
        if self.monitor is not None:
            try:
                self.monitor.directions()
            except UserError as exc:
                raise UserError(f"{source}: monitor: {exc}") from None
            for m in self.models:
                model = built.get(self.model_spec(m))
                if model is not None and model.capabilities.language_model and not model.capabilities.activations:
                    raise UserError(f"{source}: monitor: {m} exposes no activations to monitor; use a transformers "
                                    "backend (hf:embedded or hf:PATH_OR_ID)")
        needs_inventory = self.measure_traits or any(
            needs_profile(spec) for spec in (parse_intervention(i) for i in self.interventions)
        )
        if needs_inventory:
            try:
                self.assessment.inventory_sample()
                source_set = self.assessment.inventory_source()
            except UserError as exc:
                raise UserError(f"{source}: assessment: {exc}") from None
            sit = [i for i in self.interventions if needs_profile(parse_intervention(i))]
            if sit and source_set is None:
                raise UserError(
                    f"{source}: assessment: {sit[0]} draws its reminders from SIT's source set (source_items: "
                    f"{self.assessment.source_items} per trait, held out from the measured items), but "
                    f"items: {self.assessment.items} leaves no item over for it; ask fewer items per trait")

    def notes(self) -> list[str]:
        """What the run will take other than the config says, stated before it starts: items per trait asked
        beyond what the inventory has (the run measures every item there is, and holds back fewer or none for
        SIT's source set)."""
        from contagion.steering import needs_profile, parse_intervention

        a = self.assessment
        sit = any(needs_profile(parse_intervention(i)) for i in self.interventions)
        if not (self.measure_traits or sit):
            return []
        full = a.inventory_full()
        measured, source_set = a.inventory_sample(), a.inventory_source()
        notes = []
        traits = list(a.traits) if a.traits is not None else full.traits()
        short = [(t, len(full.by_trait(t)), len(measured.by_trait(t))) for t in traits
                 if a.items is not None and len(measured.by_trait(t)) < a.items]
        if short:
            shown = ", ".join(f"{t} ({m} of {n})" for t, n, m in short[:3]) + (" …" if len(short) > 3 else "")
            notes.append(f"assessment.items: {a.items} per trait asked, but the inventory {full.source} has fewer: "
                         f"{len(short)} trait(s) are measured on every item they have (measured of all: {shown})")
        if a.source_items and sit:
            held = [(t, len(source_set.by_trait(t)) if source_set is not None else 0) for t in traits]
            few = [(t, k) for t, k in held if k < a.source_items]
            if few:
                shown = ", ".join(f"{t} ({k})" for t, k in few[:3]) + (" …" if len(few) > 3 else "")
                notes.append(f"assessment.source_items: {a.source_items} per trait asked for SIT's source set, but "
                             f"{len(few)} trait(s) have fewer items left after the measured ones: {shown}")
        return notes


def _seat(text: str) -> tuple[str | None, str | None]:
    """A composition seat → (persona or None, backend spec or None). A bare name is a persona played by
    the grid's models; anything else follows the player grammar (:func:`~contagion.games.record.split_seat`)."""
    persona, spec = split_seat(text)
    if persona is None and ":" not in spec and "?" not in spec and "=" not in spec:
        return spec, None  # e.g. "default", "malicious"
    return persona, spec


def parse_config(data: Any, source: str = "config") -> ExperimentConfig:
    if not isinstance(data, dict):
        raise UserError(f"{source}: the config must be a YAML mapping of keys to values")
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(validation_message(exc, source, keys_help="see `contagion run --help` for the keys")) from None
    config.check_resources(source)
    return config


def load_config(path: Path) -> ExperimentConfig:
    """Read and validate a YAML config; every problem is a UserError naming the file and key."""
    return parse_config(load_yaml(path, "config file"), str(path))
