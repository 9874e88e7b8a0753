"""The frozen benchmark protocol: versioned data (``data/bench-v1.yaml``) resolved for one size and model.

A protocol file declares the interventions, compositions, the non-game control and the sizes; a
:class:`Protocol` resolves it for one size into the experiment configs of its three blocks
(:meth:`Protocol.configs`), with the model under study in the ``models`` list. Its :attr:`Protocol.hash`
is a SHA-256 of everything that changes what is measured — the resolved blocks with the model left
out — so two cards of one hash measured two models in exactly the same way, and a card of another
hash is not comparable.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contagion.errors import UserError
from contagion.experiment.config import ExperimentConfig, parse_config
from contagion.fileio import load_yaml, parse_yaml, validation_message
from contagion.steering import parse_intervention
from contagion.strict import Int

BUILTIN_VERSION = 1
MODEL_PLACEHOLDER = "<model>"
"""What stands for the model under study in the hashed form of the blocks."""
BLOCKS = ("contagion", "baselines", "control")
ROLES = ("none", "repeat-system", "placebo", "sit")


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
    control: ControlSpec
    sizes: dict[str, SizeSpec]


@dataclass(frozen=True)
class Protocol:
    """A protocol file resolved for one size (and optionally another trait inventory)."""

    data: ProtocolFile
    size: str
    inventory: str = "builtin:v2"
    source: str = "built-in"

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

    def block_dicts(self, model: str) -> dict[str, dict[str, Any]]:
        """The config mapping of each block for ``model`` (before validation)."""
        s = self.spec
        comps = self.data.compositions
        base = {
            **self.data.common, "models": [model], "rounds": s.rounds, "chat_turns": [s.chat_turns],
            "assessment": {"inventory": self.inventory, "items": s.items, "source_items": s.source_items,
                           "debias": s.debias, "seed": 0, **({"traits": list(s.traits)} if s.traits else {})},
            "generation": {"max_tokens": s.max_tokens, "temperature": 0.0},
        }
        title = f"{self.name} v{self.version} ({self.size})"
        return {
            "contagion": {**base, "name": f"{title}: contagion", "games": list(s.games),
                          "compositions": {"one-malicious": comps["one-malicious"]},
                          "interventions": [self.data.interventions[r] for r in ROLES],
                          "repetitions": s.games_per_cell},
            "baselines": {**base, "name": f"{title}: baselines", "games": list(s.games),
                          "compositions": {k: v for k, v in comps.items() if k != "one-malicious"},
                          "interventions": [self.data.interventions["none"]], "repetitions": s.games_per_cell},
            "control": {**base, "name": f"{title}: non-game control", "games": [self.data.control.game],
                        "compositions": {self.data.control.composition: comps["one-malicious"]},
                        "interventions": [self.data.interventions["none"]],
                        "repetitions": s.control_games_per_cell},
        }

    def configs(self, model: str) -> dict[str, ExperimentConfig]:
        """The validated experiment config of each block, on ``model``."""
        return {name: parse_config(d, f"bench protocol v{self.version} ({self.size}), block {name}")
                for name, d in self.block_dicts(model).items()}

    def games(self) -> int:
        """Trials in one benchmark run."""
        s = self.spec
        main = len(s.games) * s.games_per_cell
        return main * len(ROLES) + main * (len(self.data.compositions) - 1) + s.control_games_per_cell

    @property
    def hash(self) -> str:
        """SHA-256 (first 16 hex digits) of what is measured: every block with the model left out."""
        payload = {"protocol": self.name, "version": self.version, "size": self.size,
                   "effect_size": self.effect_size, "behaviour_effect_size": self.data.behaviour_effect_size,
                   "alpha": self.alpha, "target_power": self.target_power,
                   "blocks": self.block_dicts(MODEL_PLACEHOLDER)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """What a card states about its protocol."""
        s = self.spec
        return {"name": self.name, "version": self.version, "size": self.size, "hash": self.hash,
                "source": self.source, "effect_size": self.effect_size,
                "behaviour_effect_size": self.data.behaviour_effect_size, "alpha": self.alpha,
                "target_power": self.target_power, "games": list(s.games), "rounds": s.rounds,
                "chat_turns": s.chat_turns, "games_per_cell": s.games_per_cell,
                "control_games_per_cell": s.control_games_per_cell, "inventory": self.inventory,
                "items": s.items, "source_items": s.source_items, "debias": s.debias,
                **({"traits": list(s.traits)} if s.traits else {}),
                "interventions": {r: self.label(r) for r in ROLES},
                "compositions": {**self.data.compositions,
                                 self.data.control.composition: self.data.compositions["one-malicious"]},
                "control_game": self.data.control.game, "trials": self.games(), "power_note": s.power_note,
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
    return parsed


def load_protocol(size: str = "standard", path: Path | None = None, inventory: str | None = None) -> Protocol:
    """The built-in protocol (or the file at ``path``) resolved for ``size``; UserError when unusable."""
    if path is None:
        text = resources.files("contagion").joinpath(f"data/bench-v{BUILTIN_VERSION}.yaml").read_text("utf-8")
        data, source = parse_yaml(text, "built-in bench protocol"), "built-in"
    else:
        data, source = load_yaml(Path(path), "bench protocol"), str(path)
    parsed = _parse(data, source)
    if size not in parsed.sizes:
        raise UserError(f"unknown size {size!r}; this protocol has: {', '.join(parsed.sizes)}")
    protocol = Protocol(parsed, size, inventory or "builtin:v2", source)
    protocol.configs("sim:null")  # every block validates (games, compositions, interventions, inventory)
    return protocol
