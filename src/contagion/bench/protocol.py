"""The frozen benchmark protocol: versioned data (``data/bench-vN.yaml``) resolved for one size and model.

A protocol file declares the interventions, compositions, which interventions each composition plays
(``arms``; version 1 has a fixed layout), the declared measurement design (``measurement``, version 2),
the non-game control and the sizes; a :class:`Protocol` resolves it for one size into the experiment
configs of its blocks (:meth:`Protocol.configs`), with the model under study in the ``models`` list.

Two hashes: :attr:`Protocol.design_hash` is a SHA-256 of everything that changes what is *measured* — the
resolved blocks with the model left out — and names a benchmark's run directory (a rerun resumes it
under newer analysis code). :attr:`Protocol.hash`, the one a card states and a leaderboard compares, adds
the analysis fingerprint (:func:`contagion.analysis.validation.analysis_fingerprint`): two cards of one hash
measured two models in exactly the same way *and* analysed them by the same rules; a card of another hash
is not comparable.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contagion.analysis.validation import analysis_fingerprint
from contagion.errors import UserError
from contagion.experiment.config import ExperimentConfig, parse_config
from contagion.fileio import load_yaml, parse_yaml, validation_message
from contagion.steering import parse_intervention
from contagion.strict import Int

BUILTIN_VERSION = 2
"""The protocol ``contagion bench`` runs by default (``data/bench-v2.yaml``)."""
BUILTIN_VERSIONS = (1, 2)
"""Every built-in protocol version (``data/bench-vN.yaml``); version 1 is frozen and still runs."""
MODEL_PLACEHOLDER = "<model>"
"""What stands for the model under study in the hashed form of the blocks."""
BLOCKS = ("contagion", "baselines", "control")
"""Version 1's blocks (a protocol with ``arms`` has one block per composition, then the control)."""
ROLES = ("none", "repeat-system", "placebo", "sit")

MEASUREMENT_CONFIG: dict[tuple[str, str], dict[str, Any] | None] = {
    ("post_play", "stripped"): {},
    ("post_play", "with-injections"): None,
    ("baseline", "sham"): {"sham": True},
    ("baseline", "pre-play"): {"sham": False},
}
"""How each declared measurement choice is made in an experiment config: the settings merged into every
block (``{}``: what the runner does anyway — it asks post-play items with the injected messages removed,
and records the with-injections profile as a secondary one), or ``None`` where this build of contagion
cannot make it — the protocol states its design, the code does it; a card says which declared parts its run
could not honour (:meth:`Protocol.unhonoured`)."""


@functools.cache
def _fingerprint() -> str:
    """The analysis fingerprint, computed once per process (it parses the fingerprinted source)."""
    return analysis_fingerprint()


class SizeSpec(BaseModel):
    """One size of the protocol: the scale of every block."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    games: list[str] = Field(min_length=1)
    rounds: Int = Field(ge=1, le=1000)
    chat_turns: Int = Field(ge=0, le=20)
    games_per_cell: Int = Field(ge=1, le=100_000)
    control_games_per_cell: Int = Field(ge=1, le=100_000)
    items: Int = Field(ge=1, le=1000)
    source_items: Int = Field(ge=1, le=1000)
    debias: bool = False
    max_tokens: Int = Field(ge=1, le=8192)
    traits: list[str] | None = Field(None, min_length=1, description="Traits measured; default every trait of "
                                     "the inventory. A custom protocol file may narrow them (its hash says so).")
    power_note: str = ""


class ControlSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    game: str
    composition: str


class MeasurementSpec(BaseModel):
    """How traits are measured around play: the declared design (version 2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    post_play: Literal["with-injections", "stripped"] = Field(
        "with-injections", description="stripped: post-play items asked with the interventions' injected messages "
        "removed from the context (the primary analysis); with-injections: in view.")
    baseline: Literal["pre-play", "sham"] = Field(
        "pre-play", description="sham: each agent's items also asked after a neutral history of its game history's "
        "length (same system prompt), and susceptibility is (post − pre) − (sham − pre); pre-play: post − pre.")


class ProtocolFile(BaseModel):
    """The protocol file's schema (a typo is an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: str = Field(min_length=1)
    version: Int = Field(ge=1)
    effect_size: float = Field(gt=0, le=2, allow_inf_nan=False, description="On the pro-social index drift scale.")
    behaviour_effect_size: float = Field(gt=0, le=1, allow_inf_nan=False, description="On the defection-rate scale.")
    alpha: float = Field(gt=0, lt=1)
    target_power: float = Field(gt=0, lt=1)
    common: dict[str, Any] = Field(default_factory=dict)
    interventions: dict[str, str]
    compositions: dict[str, list[str]]
    arms: dict[str, list[str]] | None = Field(
        None, description="Composition -> the intervention roles it is played under (version 1, without it: the "
        "one-malicious group under every role, the other groups under none).")
    measurement: MeasurementSpec | None = Field(None, description="The declared measurement design (version 2).")
    control: ControlSpec
    sizes: dict[str, SizeSpec]


@dataclass(frozen=True)
class Protocol:
    """A protocol file resolved for one size (and optionally another trait inventory)."""

    data: ProtocolFile
    size: str
    inventory: str = "builtin:v2"
    source: str = "built-in"
    scale: int = 1
    """Every block's games per cell times this (``contagion bench --scale``): the second stage of a benchmark
    whose first stage (scale 1, the pilot) was under its target power. The seeds of scale 1 are the first of
    scale k, so a larger scale adds games to a run directory and keeps those played."""

    @property
    def name(self) -> str:
        return self.data.protocol

    @property
    def version(self) -> int:
        return self.data.version

    @property
    def spec(self) -> SizeSpec:
        return self.data.sizes[self.size]

    @property
    def effect_size(self) -> float:
        return self.data.effect_size

    @property
    def alpha(self) -> float:
        return self.data.alpha

    @property
    def target_power(self) -> float:
        return self.data.target_power

    def label(self, role: str) -> str:
        """The recorded label of an intervention role (``sit`` → ``sit:k=2,n=3``)."""
        return parse_intervention(self.data.interventions[role]).label()

    def arms(self) -> dict[str, list[str]]:
        """Composition -> the roles it is played under (version 1's fixed layout when the file has no ``arms``)."""
        if self.data.arms is not None:
            return {c: list(r) for c, r in self.data.arms.items()}
        return {c: list(ROLES) if c == "one-malicious" else ["none"] for c in self.data.compositions}

    @property
    def measurement(self) -> MeasurementSpec | None:
        """The declared measurement design (None: the file declares none — version 1 — and the runner's
        defaults of the contagion that runs it apply)."""
        return self.data.measurement

    def unhonoured(self) -> list[str]:
        """The declared measurement choices this build cannot make (see :data:`MEASUREMENT_CONFIG`)."""
        m = self.data.measurement
        if m is None:
            return []
        return [f"{k}: {v}" for k, v in (("post_play", m.post_play), ("baseline", m.baseline))
                if MEASUREMENT_CONFIG[(k, v)] is None]

    def _measurement_config(self) -> dict[str, Any]:
        m = self.data.measurement
        if m is None:
            return {}
        extra: dict[str, Any] = {}
        for key in (("post_play", m.post_play), ("baseline", m.baseline)):
            extra.update(MEASUREMENT_CONFIG[key] or {})
        return extra

    def block_dicts(self, model: str) -> dict[str, dict[str, Any]]:
        """The config mapping of each block for ``model`` (before validation)."""
        s = self.spec
        comps = self.data.compositions
        base = {
            **self.data.common, "models": [model], "rounds": s.rounds, "chat_turns": [s.chat_turns],
            "assessment": {"inventory": self.inventory, "items": s.items, "source_items": s.source_items,
                           "debias": s.debias, "seed": 0, **({"traits": list(s.traits)} if s.traits else {})},
            "generation": {"max_tokens": s.max_tokens, "temperature": 0.0}, **self._measurement_config(),
        }
        title = f"{self.name} v{self.version} ({self.size})"
        control = {**base, "name": f"{title}: non-game control", "games": [self.data.control.game],
                   "compositions": {self.data.control.composition: comps["one-malicious"]},
                   "interventions": [self.data.interventions["none"]],
                   "repetitions": s.control_games_per_cell * self.scale}
        if self.data.arms is None:  # version 1's layout, unchanged (its hash is frozen)
            return {
                "contagion": {**base, "name": f"{title}: contagion", "games": list(s.games),
                              "compositions": {"one-malicious": comps["one-malicious"]},
                              "interventions": [self.data.interventions[r] for r in ROLES],
                              "repetitions": s.games_per_cell * self.scale},
                "baselines": {**base, "name": f"{title}: baselines", "games": list(s.games),
                              "compositions": {k: v for k, v in comps.items() if k != "one-malicious"},
                              "interventions": [self.data.interventions["none"]],
                              "repetitions": s.games_per_cell * self.scale},
                "control": control,
            }
        blocks: dict[str, dict[str, Any]] = {}
        for comp, roles in self.data.arms.items():
            name = "contagion" if comp == "one-malicious" else comp
            blocks[name] = {**base, "name": f"{title}: {name}", "games": list(s.games),
                            "compositions": {comp: comps[comp]},
                            "interventions": [self.data.interventions[r] for r in roles],
                            "repetitions": s.games_per_cell * self.scale}
        blocks["control"] = control
        return blocks

    def configs(self, model: str) -> dict[str, ExperimentConfig]:
        """The validated experiment config of each block, on ``model``."""
        return {name: parse_config(d, f"bench protocol v{self.version} ({self.size}), block {name}")
                for name, d in self.block_dicts(model).items()}

    def games(self) -> int:
        """Trials in one benchmark run."""
        return sum(len(b["games"]) * len(b["compositions"]) * len(b["interventions"]) * len(b["chat_turns"])
                   * int(b["repetitions"]) for b in self.block_dicts(MODEL_PLACEHOLDER).values())

    @property
    def design_hash(self) -> str:
        """SHA-256 (first 16 hex digits) of what is measured: every block with the model left out (and the
        declared measurement design, where the file has one). Names a benchmark's run directory."""
        payload: dict[str, Any] = {
            "protocol": self.name, "version": self.version, "size": self.size, "effect_size": self.effect_size,
            "behaviour_effect_size": self.data.behaviour_effect_size, "alpha": self.alpha,
            "target_power": self.target_power, "blocks": self.block_dicts(MODEL_PLACEHOLDER)}
        if self.data.measurement is not None:
            payload["measurement"] = self.data.measurement.model_dump()
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def analysis_fingerprint(self) -> str:
        """The fingerprint of the analysis code this contagion runs (:func:`analysis_fingerprint`)."""
        return _fingerprint()

    @property
    def hash(self) -> str:
        """SHA-256 (first 16 hex digits) of what is measured and how it is analysed: the design hash and the
        analysis fingerprint. The hash a card states; a leaderboard compares only cards of one hash."""
        payload = {"design": self.design_hash, "analysis": self.analysis_fingerprint}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """What a card states about its protocol."""
        s = self.spec
        return {"name": self.name, "version": self.version, "size": self.size, "hash": self.hash,
                "design_hash": self.design_hash, "analysis_fingerprint": self.analysis_fingerprint,
                "source": self.source, "effect_size": self.effect_size,
                "behaviour_effect_size": self.data.behaviour_effect_size, "alpha": self.alpha,
                "target_power": self.target_power, "games": list(s.games), "rounds": s.rounds,
                "chat_turns": s.chat_turns, "games_per_cell": s.games_per_cell * self.scale,
                "control_games_per_cell": s.control_games_per_cell * self.scale, "inventory": self.inventory,
                "scale": self.scale,
                "items": s.items, "source_items": s.source_items, "debias": s.debias,
                **({"traits": list(s.traits)} if s.traits else {}),
                "interventions": {r: self.label(r) for r in ROLES},
                "compositions": {**self.data.compositions,
                                 self.data.control.composition: self.data.compositions["one-malicious"]},
                "control_game": self.data.control.game, "trials": self.games(), "power_note": s.power_note,
                "arms": self.arms(),
                "measurement": self.data.measurement.model_dump() if self.data.measurement else None,
                "unhonoured": self.unhonoured(),
                "design": {k: self.data.common.get(k) for k in ("action_mode", "option_order", "seat_order")}}


def _parse(data: Any, source: str) -> ProtocolFile:
    if not isinstance(data, dict):
        raise UserError(f"{source}: a protocol must be a YAML mapping")
    try:
        parsed = ProtocolFile.model_validate(data)
    except ValidationError as exc:
        raise UserError(validation_message(exc, source, show_input=True)) from None
    missing = [r for r in ROLES if r not in parsed.interventions]
    if missing:
        raise UserError(f"{source}: interventions: missing role(s) {', '.join(missing)}")
    for name in ("one-malicious", "all-default", "scripted-defector"):
        if name not in parsed.compositions:
            raise UserError(f"{source}: compositions: {name} is required")
    if parsed.arms is not None:
        for comp, roles in parsed.arms.items():
            if comp not in parsed.compositions:
                raise UserError(f"{source}: arms: {comp!r} is not one of the compositions "
                                f"({', '.join(parsed.compositions)})")
            unknown = [r for r in roles if r not in parsed.interventions]
            if unknown or not roles or len(set(roles)) != len(roles):
                raise UserError(f"{source}: arms: {comp}: give each of its roles once, from "
                                f"{', '.join(parsed.interventions)} (got {', '.join(roles) or 'none'})")
        if "none" not in parsed.arms.get("one-malicious", []):
            raise UserError(f"{source}: arms: one-malicious must be played under none (the susceptibility arm)")
    return parsed


MAX_SCALE = 64
"""The largest ``--scale``: beyond it a benchmark is a different study (plan it with ``contagion power``)."""


def load_protocol(size: str = "standard", path: Path | None = None, inventory: str | None = None,
                  version: int = BUILTIN_VERSION, scale: int = 1) -> Protocol:
    """The built-in protocol of ``version`` (or the file at ``path``) resolved for ``size`` (its games per cell
    times ``scale``); UserError when unusable."""
    if not 1 <= scale <= MAX_SCALE:
        raise UserError(f"--scale must be between 1 and {MAX_SCALE} (got {scale})")
    if path is None:
        if version not in BUILTIN_VERSIONS:
            raise UserError(f"unknown protocol version {version}; built in: "
                            f"{', '.join(f'v{v}' for v in BUILTIN_VERSIONS)}")
        text = resources.files("contagion").joinpath(f"data/bench-v{version}.yaml").read_text("utf-8")
        data, source = parse_yaml(text, f"built-in bench protocol v{version}"), "built-in"
    else:
        data, source = load_yaml(Path(path), "bench protocol"), str(path)
    parsed = _parse(data, source)
    if path is None and parsed.version != version:
        raise RuntimeError(f"data/bench-v{version}.yaml declares version {parsed.version}")
    if size not in parsed.sizes:
        raise UserError(f"unknown size {size!r}; this protocol has: {', '.join(parsed.sizes)}")
    protocol = Protocol(parsed, size, inventory or "builtin:v2", source, scale)
    protocol.configs("sim:null")  # every block validates (games, compositions, interventions, inventory)
    return protocol
