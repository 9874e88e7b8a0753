"""White-box steering with trait directions: the vectors file and the ``vector`` intervention's arithmetic.

A vectors file (written by ``contagion vectors``, :mod:`contagion.whitebox.vectors`) holds, per trait and
per layer of one transformers model, a *direction*: the mean residual-stream activation over the trait's
high statements minus the mean over its low statements (training items only), and the layer whose
direction best separates held-out high from low statements (AUC). Its provenance (model, inventory,
items of each split, layer, AUCs, format version) travels with it.

The intervention ``vector:file=PATH,trait=T,alpha=A[,layers=L]`` adds ``A`` times the trait's direction
to the residual stream at each chosen layer, on every forward pass of the agent's generation and action
scoring; ``layers`` is ``best`` (the file's chosen layer, the default), one layer (``12``) or a range
(``10-14``, each layer with its own direction). ``alpha=1`` moves an activation by one high-minus-low
difference; negative values steer toward the trait's low pole. Only a backend that exposes activations
(``hf:…``) can be steered; any other is refused before a game starts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contagion.errors import UserError
from contagion.fileio import validation_message

VECTOR_FORMAT = "contagion-vectors/1"


class TraitDirections(BaseModel):
    """One trait's directions (one per layer) and how well each separates held-out items."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layer: int = Field(description="The chosen layer (0-based output of decoder block): best held-out AUC, "
                                   "ties broken by the larger standardised gap.")
    auc: float = Field(description="Held-out AUC at the chosen layer (the maximum over layers: optimistic).")
    separation: float = Field(description="Held-out standardised gap (Cohen's d) at the chosen layer.")
    high_items: list[str] = Field(description="Training items whose statements are high in the trait.")
    low_items: list[str] = Field(description="Training items whose statements are low in the trait.")
    held_out_items: list[str] = Field(description="Items used only to choose the layer and report the AUC.")
    auc_by_layer: list[float]
    separation_by_layer: list[float]
    norm_by_layer: list[float] = Field(description="Euclidean norm of each layer's direction.")
    directions: list[list[float]] = Field(description="Per layer: mean(high) - mean(low) residual vector.")


class VectorFile(BaseModel):
    """The content of a vectors file (JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["contagion-vectors/1"] = "contagion-vectors/1"
    model: str = Field(description="The backend spec the directions were measured on, e.g. 'hf:embedded'.")
    layers: int
    hidden_size: int
    inventory: str = Field(description="The inventory the statements came from, e.g. 'builtin:v2'.")
    contrast: str = Field(description="How the contrastive prompts were made.")
    prompt: str = Field(description="The user message each statement answers as the assistant.")
    pooling: str
    seed: int
    held_out_fraction: float
    contagion_version: str
    traits: dict[str, TraitDirections]

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON (what the record names)."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


_loaded: dict[tuple[str, float], VectorFile] = {}


def load_vectors(path: str | Path) -> VectorFile:
    """Read a vectors file; a missing, unreadable or invalid file is a UserError naming the fix."""
    where = Path(path).expanduser()
    try:
        stamp = where.stat().st_mtime
    except OSError:
        raise UserError(f"no vectors file at {where}; make one with: contagion vectors MODEL_SPEC --out {where}") \
            from None
    key = (str(where.resolve()), stamp)
    if key in _loaded:
        return _loaded[key]
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{where} is not a readable vectors file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != VECTOR_FORMAT:
        raise UserError(f"{where} is not a vectors file of format {VECTOR_FORMAT} (made by contagion vectors)")
    try:
        vf = VectorFile.model_validate(data)
    except ValidationError as exc:
        raise UserError(validation_message(exc, f"vectors file {where}")) from None
    _loaded[key] = vf
    return vf


def steering_layers(spec: str | int, vf: VectorFile, trait: str) -> list[int]:
    """The layers ``best`` / ``12`` / ``10-14`` name, checked against the file."""
    if trait not in vf.traits:
        raise UserError(f"trait {trait!r} is not in the vectors file (it has: {', '.join(vf.traits)})")
    text = str(spec).strip()
    if text == "best":
        return [vf.traits[trait].layer]
    low, dash, high = text.partition("-")
    try:
        first = int(low)
        last = int(high) if dash else first
    except ValueError:
        raise UserError(f"layers={text!r}: give best, one layer (12) or a range (10-14)") from None
    if not 0 <= first <= last < vf.layers:
        raise UserError(f"layers={text!r} is outside the file's layers 0-{vf.layers - 1} (or the range is empty)")
    return list(range(first, last + 1))


def steering_additions(vf: VectorFile, trait: str, alpha: float, layers: list[int]) -> dict[int, list[float]]:
    """Per layer, ``alpha`` times the trait's direction there."""
    rows = vf.traits[trait].directions
    return {layer: [alpha * v for v in rows[layer]] for layer in layers}
