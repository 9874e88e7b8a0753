"""``contagion vectors``: trait directions in a transformers model's residual stream.

**Contrast.** For each trait, the inventory's own statements (``builtin`` = ``builtin:v2``: 12 statements a
person high in the trait would say, 12 a person low in it would say, per trait) are put in the model's
mouth: the user asks :data:`PROMPT`, the assistant answers with the statement. The residual stream of each
layer is averaged over the statement's tokens. The trait's direction at a layer is the mean over its
high statements minus the mean over its low statements. Statements rather than benevolent/malicious
personas: they give one direction *per trait* (the intervention steers a named trait), two dozen
contrastive items per trait instead of two prompts, and keyed-balanced halves, so a held-out split is
possible at all; the personas differ in many things at once (length, instructions, the game's words).

**Layer.** Per trait, a seeded, key-stratified split holds out ``held_out`` of the items (4 + 4 of 24 at
the default third). Directions come from the training items only; each held-out statement is projected
on each layer's direction and the layer with the best held-out AUC (high vs low) is chosen, ties broken
by the larger standardised gap (Cohen's d). That AUC is the maximum over layers, so it is optimistic;
every layer's AUC is kept in the file.

The file (:class:`contagion.steering.vector.VectorFile`) keeps every layer's direction, so the
``vector`` intervention can steer at other layers than the chosen one.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from contagion import __version__
from contagion.backends.base import Backend
from contagion.backends.hf_steer import ResidualAccess
from contagion.backends.registry import build
from contagion.errors import BackendError, UserError
from contagion.experiment.record import TrialSpec
from contagion.experiment.trial import run_trial
from contagion.games.record import GameSpec, PlayerSpec
from contagion.messages import Message
from contagion.steering import parse_intervention
from contagion.steering.vector import TraitDirections, VectorFile
from contagion.traits.inventory import Inventory, Item

PROMPT = "Tell me one thing about yourself, in one sentence."
"""The user turn every statement answers (as the assistant)."""
CONTRAST = "inventory statements: keyed high (trait-matching 'Yes') vs keyed low (trait-matching 'No')"
POOLING = "mean over the statement's tokens of the output of each decoder block"


def vectors_backend(spec: str) -> Backend:
    """The backend for ``spec`` (built, not loaded); a backend without activations is a UserError."""
    backend = build(spec.strip())
    if not backend.capabilities.activations or not isinstance(backend, ResidualAccess):
        raise UserError(f"contagion vectors needs a white-box model: use hf:embedded or hf:PATH_OR_ID "
                        f"(got {spec.strip()!r}, which exposes no activations)")
    return backend


def split_items(items: Sequence[Item], held_out: float, seed: int, trait: str) -> tuple[list[Item], list[Item]]:
    """(training, held-out) items of one trait: a seeded draw of ``held_out`` of each key's items."""
    rng = random.Random(int.from_bytes(hashlib.blake2b(f"vectors:{seed}:{trait}".encode(), digest_size=8).digest(),
                                       "big"))
    groups = [[i for i in items if i.matching == key] for key in ("Yes", "No")]
    if any(len(g) < 2 for g in groups):
        raise UserError(f"trait {trait!r} needs at least 2 high and 2 low statements for a held-out split")
    held: set[str] = set()
    for group in groups:  # at least one of each key held out, at least one left to train on
        held.update(i.id for i in rng.sample(group, min(max(round(held_out * len(group)), 1), len(group) - 1)))
    return [i for i in items if i.id not in held], [i for i in items if i.id in held]


def auc(high: np.ndarray, low: np.ndarray) -> float:
    """P(a high item projects above a low one), ties counted half (Mann-Whitney)."""
    diff = high[:, None] - low[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def cohens_d(high: np.ndarray, low: np.ndarray) -> float:
    pooled = np.sqrt((high.var(ddof=1) * (len(high) - 1) + low.var(ddof=1) * (len(low) - 1))
                     / max(len(high) + len(low) - 2, 1))
    return float((high.mean() - low.mean()) / pooled) if pooled > 0 else 0.0


def trait_directions(acts: dict[str, np.ndarray], train: Sequence[Item], held: Sequence[Item]) -> TraitDirections:
    """Directions per layer from the training items, AUC and gap on the held-out ones, the chosen layer."""
    high = np.stack([acts[i.id] for i in train if i.matching == "Yes"])  # (n, layers, hidden)
    low = np.stack([acts[i.id] for i in train if i.matching == "No"])
    directions = high.mean(axis=0) - low.mean(axis=0)  # (layers, hidden)
    held_high = np.stack([acts[i.id] for i in held if i.matching == "Yes"])
    held_low = np.stack([acts[i.id] for i in held if i.matching == "No"])
    aucs, gaps = [], []
    for layer in range(directions.shape[0]):
        d = directions[layer]
        ph, pl = held_high[:, layer, :] @ d, held_low[:, layer, :] @ d
        aucs.append(auc(ph, pl))
        gaps.append(cohens_d(ph, pl))
    best = max(range(len(aucs)), key=lambda layer: (aucs[layer], gaps[layer]))
    return TraitDirections(
        layer=best, auc=round(aucs[best], 6), separation=round(gaps[best], 6),
        high_items=[i.id for i in train if i.matching == "Yes"], low_items=[i.id for i in train if i.matching == "No"],
        held_out_items=[i.id for i in held], auc_by_layer=[round(a, 6) for a in aucs],
        separation_by_layer=[round(g, 6) for g in gaps],
        norm_by_layer=[round(float(np.linalg.norm(row)), 6) for row in directions],
        directions=[[float(f"{v:.6g}") for v in row] for row in directions],
    )


async def extract_vectors(
    backend: Backend, inventory: Inventory, *, held_out: float = 1 / 3, seed: int = 0,
    on_item: Callable[[str], None] | None = None,
) -> VectorFile:
    """One direction per trait of ``inventory`` and layer of the model, and each trait's chosen layer.

    ``on_item`` is called with the trait after each statement's forward pass (for a progress bar).
    """
    if not 0 < held_out < 1:
        raise UserError(f"--held-out must be between 0 and 1 (got {held_out})")
    if not isinstance(backend, ResidualAccess):
        raise UserError(f"{backend.identity} exposes no activations")
    splits = {t: split_items(inventory.by_trait(t), held_out, seed, t) for t in inventory.traits()}
    prompt = [Message(role="user", content=PROMPT)]
    traits: dict[str, TraitDirections] = {}
    for trait, (train, held) in splits.items():
        acts: dict[str, np.ndarray] = {}
        for item in [*train, *held]:
            acts[item.id] = await backend.reply_activations(prompt, item.statement)
            if on_item is not None:
                on_item(trait)
        traits[trait] = trait_directions(acts, train, held)
    layers, hidden = backend.residual_shape()
    return VectorFile(
        model=backend.spec, layers=layers, hidden_size=hidden, inventory=inventory.source, contrast=CONTRAST,
        prompt=PROMPT, pooling=POOLING, seed=seed, held_out_fraction=round(held_out, 6),
        contagion_version=__version__, traits=traits,
    )


# -- dose-response: the scored cooperation probability of a steered agent on fixed game prompts ----------

ACT_GAMES = ("prisoners-dilemma", "chicken", "stag-hunt")
ORDERS: tuple[Literal["cooperate-first", "defect-first"], ...] = ("cooperate-first", "defect-first")


def act_trials(model: str, intervention: str, *, games: Sequence[str] = ACT_GAMES,
               personas: Sequence[str] = ("default",), seed: int = 0) -> list[TrialSpec]:
    """Fixed one-round, no-chat games whose first seat is ``model`` (focal, with ``intervention``) beside two
    scripted tit-for-tat players: one per game, option order and persona. Its round-1 act prompt is the
    game's system prompt and act prompt, the same for every ``intervention``."""
    specs = []
    for game in games:
        for order in ORDERS:
            for persona in personas:
                players = (PlayerSpec.parse(f"{persona}={model}"),
                           PlayerSpec.parse("scripted:tit-for-tat", focal=False),
                           PlayerSpec.parse("scripted:tit-for-tat", focal=False))
                specs.append(TrialSpec(
                    game=GameSpec(game=game, players=players, rounds=1, chat_turns=0, seed=seed, option_order=order),
                    intervention=parse_intervention(intervention), measure=False,
                ))
    return specs


async def cooperation_probability(spec: TrialSpec) -> float | None:
    """The first seat's scored p(cooperate) in round 1 (the game's own action scoring), or None when the
    action was invalid (e.g. both actions floored: steered too hard to answer); an error if the trial
    failed or the action was not scored."""
    record = await run_trial(spec)
    if record.error is not None and not record.players:
        raise BackendError(f"trial failed: {record.error}")
    action = record.players[0].actions[0]
    if not action.method.startswith("score:"):
        raise BackendError(f"the action was not scored ({action.method})")
    return None if action.p_cooperate is None else float(action.p_cooperate)
