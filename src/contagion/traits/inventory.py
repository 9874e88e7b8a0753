"""Trait inventories: yes/no persona statements, where they come from, and which traits count as what.

An :class:`Item` is a first-person statement, the trait it measures and the answer (``"Yes"`` or
``"No"``) that matches the trait. Reversed items (matching answer ``"No"``) let a profile separate a
trait from a plain tendency to say yes.

Sources (:func:`load_inventory`):

* ``builtin`` — the project's own inventory, written for this project, the offline default. Versioned:
  ``builtin`` is the latest (``builtin:v2``, ``contagion/data/inventory-v2.yaml``: 11 traits × 24
  items, keys balanced 12 Yes / 12 No per trait, no game vocabulary, two neutral control traits);
  ``builtin:v1`` (``inventory-v1.yaml``: 9 traits × 24 items, 18 Yes / 6 No) stays loadable so older
  records can be re-measured alike.
* ``hub`` — Anthropic's model-written evaluations (Perez et al. 2022), the Hugging Face dataset
  ``Anthropic/model-written-evals``, files ``persona/<trait>.jsonl``, read through ``datasets``
  (``pip install 'contagion[hub]'``). :envvar:`CONTAGION_HUB_DATASET` (or the ``hub_dataset``
  argument) names a local copy — a directory holding ``persona/<trait>.jsonl`` — or another dataset id.
* a directory of persona JSONL files in Anthropic's format (trait = file stem), a single ``.jsonl``
  file, or a ``.yaml`` file in the built-in format.

Which traits are pro-social and which anti-social is configurable (:class:`TraitSets`); the default
(:data:`DEFAULT_TRAIT_SETS`) covers the built-in traits and the relevant Anthropic persona traits.
Every other trait is ``neutral``: measured and reported, but left out of the pro-social index. The
built-in control traits (:data:`BUILTIN_NEUTRAL`) are declared neutral explicitly, so they can never be
put in the pro- or anti-social set of the same :class:`TraitSets` by mistake.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from contagion.errors import MissingExtraError, UserError

Answer = Literal["Yes", "No"]
Polarity = Literal["pro", "anti", "neutral"]

HUB_DATASET = "Anthropic/model-written-evals"
HUB_DATASET_ENV = "CONTAGION_HUB_DATASET"
BUILTIN_FORMAT = "contagion-inventory/1"
BUILTIN_VERSIONS: dict[int, str] = {1: "data/inventory-v1.yaml", 2: "data/inventory-v2.yaml"}
"""Built-in inventory versions and their files (inside the package); ``builtin`` is the highest."""
BUILTIN_LATEST = max(BUILTIN_VERSIONS)


class Item(BaseModel):
    """One yes/no persona statement."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="Unique within an inventory, stable across runs (e.g. 'narcissism-y03').")
    statement: str = Field(description="A first-person statement, asked as 'something you would say?'.")
    trait: str = Field(description="The trait the statement measures, e.g. 'machiavellianism'.")
    matching: Answer = Field(description="The answer that matches the trait ('No' for a reversed item).")

    def reversed(self) -> Item:
        """The same statement with the other answer keyed as trait-matching."""
        return self.model_copy(update={"id": f"{self.id}~r", "matching": "No" if self.matching == "Yes" else "Yes"})


class TraitSets(BaseModel):
    """Which traits are pro-social and which anti-social; every other trait is neutral.

    ``neutral`` names control traits explicitly (they would be neutral anyway, being in neither set);
    naming a trait in two of the three sets is an error.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    pro_social: tuple[str, ...] = Field(description="Traits whose rise is pro-social (e.g. agreeableness).")
    anti_social: tuple[str, ...] = Field(description="Traits whose rise is anti-social (e.g. narcissism).")
    neutral: tuple[str, ...] = Field(
        (), description="Declared valence-free control traits (e.g. liking-for-mathematics); never in the index."
    )

    @model_validator(mode="after")
    def _disjoint(self) -> TraitSets:
        both = set(self.pro_social) & set(self.anti_social)
        if both:
            raise ValueError(f"traits cannot be both pro- and anti-social: {sorted(both)}")
        for name, group in (("pro", self.pro_social), ("anti", self.anti_social)):
            clash = set(group) & set(self.neutral)
            if clash:
                raise ValueError(f"traits cannot be both {name}-social and neutral: {sorted(clash)}")
        return self

    def polarity(self, trait: str) -> Polarity:
        """``pro``, ``anti`` or ``neutral``."""
        if trait in self.pro_social:
            return "pro"
        if trait in self.anti_social:
            return "anti"
        return "neutral"


BUILTIN_PRO_SOCIAL = ("agreeableness", "conscientiousness", "honesty", "cooperativeness")
BUILTIN_ANTI_SOCIAL = (
    "machiavellianism",
    "narcissism",
    "psychopathy",
    "willingness-to-deceive",
    "power-seeking",
)
BUILTIN_NEUTRAL = ("liking-for-mathematics", "preference-for-cold-weather")
"""The built-in control traits (v2 on): valence-free, so their drift should be zero under contagion."""

DEFAULT_TRAIT_SETS = TraitSets(
    pro_social=(
        *BUILTIN_PRO_SOCIAL,
        # Anthropic persona traits (agreeableness and conscientiousness share the built-in names)
        "subscribes-to-virtue-ethics",
        "desire-to-persuade-people-to-be-less-harmful-to-others",
        "desire-to-persuade-people-to-be-more-helpful-to-others",
        "desire-to-persuade-people-to-be-more-honest-to-others",
    ),
    anti_social=(
        *BUILTIN_ANTI_SOCIAL,
        "desire-for-acquiring-power",
        "desire-for-discreetly-acquiring-power",
        "ends-justify-means",
        "okay-with-deceiving-a-user-to-help-them",
        "willingness-to-use-social-engineering-to-achieve-its-goals",
        "willingness-to-manipulate-overseers-to-think-it-is-HHH",
        "acts-like-it-wants-to-help-humans-but-does-not-care-about-that",
        "very-small-harm-justifies-very-large-benefit",
    ),
    neutral=BUILTIN_NEUTRAL,
)

# What ``hub`` loads when no traits are named: the big-five/dark-triad anchors of the paper plus a few
# anti-social traits, balanced between the two sides.
HUB_DEFAULT_TRAITS = (
    "agreeableness",
    "conscientiousness",
    "subscribes-to-virtue-ethics",
    "desire-to-persuade-people-to-be-more-honest-to-others",
    "machiavellianism",
    "narcissism",
    "psychopathy",
    "desire-for-acquiring-power",
)


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class Inventory(BaseModel):
    """A list of items from one source. Item order is meaningful: it is the order items are asked in."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="Where the items came from, e.g. 'builtin:v2' or a path.")
    items: list[Item]

    @model_validator(mode="after")
    def _unique_ids(self) -> Inventory:
        seen: set[str] = set()
        for item in self.items:
            if item.id in seen:
                raise ValueError(f"duplicate item id {item.id!r}")
            seen.add(item.id)
        return self

    def __len__(self) -> int:
        return len(self.items)

    def traits(self) -> list[str]:
        """The traits present, in order of first appearance."""
        return list(dict.fromkeys(item.trait for item in self.items))

    def by_trait(self, trait: str) -> list[Item]:
        return [item for item in self.items if item.trait == trait]

    def sample(self, traits: Sequence[str] | None = None, per_trait: int | None = None, seed: int = 0) -> Inventory:
        """A seeded sample of ``per_trait`` items from each of ``traits`` (all traits / items when None).

        Stratified: each trait gets its own draw (from a generator seeded by ``seed`` and the trait name,
        so adding a trait does not change another's sample), split between Yes- and No-keyed items in
        proportion to what the trait has, so reversed items stay in the sample. Items keep the
        inventory's order. A trait with fewer items than ``per_trait`` contributes all it has.
        """
        known = self.traits()
        wanted = list(dict.fromkeys(traits)) if traits is not None else known
        unknown = [t for t in wanted if t not in known]
        if unknown:
            raise UserError(
                f"unknown trait(s) {', '.join(unknown)} in inventory {self.source}; "
                f"known traits: {', '.join(known) or '(none)'}"
            )
        if per_trait is not None and per_trait < 1:
            raise UserError(f"items per trait must be at least 1 (got {per_trait})")
        chosen: set[str] = set()
        for trait in wanted:
            pool = self.by_trait(trait)
            if per_trait is None or per_trait >= len(pool):
                chosen.update(item.id for item in pool)
                continue
            rng = random.Random(_stable_int(f"{seed}:{trait}"))
            groups = [[i for i in pool if i.matching == key] for key in ("Yes", "No")]
            quotas = _proportional([len(g) for g in groups], per_trait)
            for group, quota in zip(groups, quotas, strict=True):
                chosen.update(item.id for item in rng.sample(group, quota))
        order = {t: i for i, t in enumerate(wanted)}
        items = sorted(
            (item for item in self.items if item.id in chosen),
            key=lambda item: order[item.trait],  # stable: keeps the inventory order within a trait
        )
        if not items:
            raise UserError(f"inventory {self.source} has no items for the chosen traits")
        return Inventory(source=self.source, items=items)


def _proportional(sizes: Sequence[int], total: int) -> list[int]:
    """Split ``total`` across groups in proportion to their sizes (largest remainder), never over a size."""
    whole = sum(sizes)
    exact = [total * s / whole for s in sizes]
    quotas = [int(x) for x in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (exact[i] - quotas[i], sizes[i]), reverse=True)
    for i in by_remainder[: total - sum(quotas)]:
        quotas[i] += 1
    return [min(q, s) for q, s in zip(quotas, sizes, strict=True)]


# -- loaders -------------------------------------------------------------------------------------


def load_inventory(
    source: str | Path,
    *,
    traits: Sequence[str] | None = None,
    hub_dataset: str | Path | None = None,
) -> Inventory:
    """An inventory from ``builtin`` (``builtin:vN`` for a given version), ``hub``, a directory of persona
    JSONL files or one file.

    ``traits`` restricts loading to those traits (for ``hub`` and directories only those files are
    read; for ``hub`` the default is :data:`HUB_DEFAULT_TRAITS`). Unknown traits, unreadable or
    malformed files and empty results raise :class:`UserError` naming the file and line.
    ``hub_dataset`` overrides the hub dataset (a local copy or another dataset id; also settable with
    :envvar:`CONTAGION_HUB_DATASET`).
    """
    text = str(source).strip()
    if text == "builtin" or text.startswith("builtin:"):
        inventory = load_builtin(_builtin_version(text))
    elif text == "hub":
        return load_hub(traits, dataset=hub_dataset)
    else:
        path = Path(text).expanduser()
        if path.is_dir():
            return load_persona_dir(path, traits)
        if not path.exists():
            raise UserError(
                f"inventory {text!r} not found: give 'builtin', 'hub', a directory of persona .jsonl files "
                "or a .jsonl / .yaml file"
            )
        if path.suffix.lower() in (".yaml", ".yml"):
            inventory = load_yaml_inventory(path)
        else:
            inventory = Inventory(source=str(path), items=load_persona_jsonl(path))
    return inventory.sample(traits) if traits is not None else inventory


def _parse_answer(value: Any) -> Answer | None:
    if not isinstance(value, str):
        return None
    stripped = value.strip()
    if stripped == "Yes":
        return "Yes"
    if stripped == "No":
        return "No"
    return None


def parse_persona_rows(rows: Iterable[tuple[int, Any]], trait: str, where: str) -> list[Item]:
    """Items from Anthropic persona rows ``(line number, parsed JSON)``; errors name ``where`` and line."""
    items: list[Item] = []
    for line_no, row in rows:
        loc = f"{where}, line {line_no}"
        if not isinstance(row, dict):
            raise UserError(f"{loc}: expected a JSON object with 'statement' and 'answer_matching_behavior'")
        for key in ("statement", "answer_matching_behavior"):
            if key not in row:
                raise UserError(f"{loc}: missing field {key!r}")
        statement = row["statement"]
        if not isinstance(statement, str) or not statement.strip():
            raise UserError(f"{loc}: 'statement' must be a non-empty string")
        matching = _parse_answer(row["answer_matching_behavior"])
        if matching is None:
            raise UserError(
                f"{loc}: 'answer_matching_behavior' must be 'Yes' or 'No' (got {row['answer_matching_behavior']!r})"
            )
        if "answer_not_matching_behavior" in row:
            other = _parse_answer(row["answer_not_matching_behavior"])
            if other is None or other == matching:
                raise UserError(
                    f"{loc}: 'answer_not_matching_behavior' must be the other answer of Yes/No "
                    f"(got {row['answer_not_matching_behavior']!r})"
                )
        items.append(Item(id=f"{trait}/{line_no}", statement=statement.strip(), trait=trait, matching=matching))
    if not items:
        raise UserError(f"{where}, line 1: the file holds no items")
    return items


def load_persona_jsonl(path: Path, trait: str | None = None) -> list[Item]:
    """Items from one Anthropic persona JSONL file (trait = file stem). Blank lines are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read inventory file {path}: {exc}") from None

    def rows() -> Iterable[tuple[int, Any]]:
        for line_no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}, line {line_no}: not valid JSON ({exc.msg})") from None

    return parse_persona_rows(rows(), trait or path.stem, str(path))


def load_persona_dir(path: Path, traits: Sequence[str] | None = None) -> Inventory:
    """A directory of ``<trait>.jsonl`` files in Anthropic's persona format."""
    files = {f.stem: f for f in sorted(path.glob("*.jsonl"))}
    if not files:
        raise UserError(f"inventory directory {path} holds no .jsonl files")
    wanted = list(dict.fromkeys(traits)) if traits is not None else list(files)
    unknown = [t for t in wanted if t not in files]
    if unknown:
        raise UserError(f"unknown trait(s) {', '.join(unknown)} in inventory {path}; known traits: {', '.join(files)}")
    items = [item for trait in wanted for item in load_persona_jsonl(files[trait], trait)]
    return Inventory(source=str(path), items=items)


def load_hub(traits: Sequence[str] | None = None, *, dataset: str | Path | None = None) -> Inventory:
    """Anthropic persona files from the Hugging Face hub (or a local copy) through ``datasets``."""
    try:
        import datasets
    except ImportError:
        raise MissingExtraError("The hub inventory", "hub", "datasets") from None
    name = str(dataset or os.environ.get(HUB_DATASET_ENV) or HUB_DATASET)
    if name.startswith((".", "/", "~")):  # a path, not a dataset id
        local = Path(name).expanduser()
        if not local.is_dir():
            raise UserError(
                f"local copy of the hub dataset {local} is not a directory; it should hold persona/<trait>.jsonl "
                f"(check {HUB_DATASET_ENV} or --inventory)"
            )
        name = str(local)
    wanted = list(dict.fromkeys(traits)) if traits is not None else list(HUB_DEFAULT_TRAITS)
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    items: list[Item] = []
    for trait in wanted:
        rel = f"persona/{trait}.jsonl"
        try:
            ds = datasets.load_dataset(name, data_files={"train": rel}, split="train")
        except FileNotFoundError:
            raise UserError(
                f"trait {trait!r} not found in hub dataset {name} (no file {rel}); trait names are the "
                "file stems of its persona/ folder, e.g. agreeableness, machiavellianism"
            ) from None
        except ConnectionError as exc:
            raise UserError(
                f"cannot reach the Hugging Face hub for dataset {name} ({exc}). Connect to the network, or "
                f"point {HUB_DATASET_ENV} at a local copy (a directory with persona/<trait>.jsonl), or measure with "
                "the builtin inventory or a directory of persona .jsonl files (--inventory, or the config's "
                "assessment.inventory)"
            ) from None
        except Exception as exc:  # datasets raises many types (schema, cast, HTTP); all mean a bad source
            raise UserError(f"cannot load {rel} from hub dataset {name}: {type(exc).__name__}: {exc}") from None
        # datasets reads every non-blank line as one row, so row i is the i-th non-blank line
        rows = ((i, dict(row)) for i, row in enumerate(ds, 1))
        items.extend(parse_persona_rows(rows, trait, f"{name}/{rel}"))
    return Inventory(source=f"hub:{name}", items=items)


# -- the built-in YAML format ----------------------------------------------------------------------


def _builtin_version(text: str) -> int:
    """``builtin`` → the latest version; ``builtin:v1`` / ``builtin:1`` → 1; anything else a UserError."""
    if text == "builtin":
        return BUILTIN_LATEST
    tag = text.removeprefix("builtin:").strip().lower().removeprefix("v")
    if tag.isdigit() and int(tag) in BUILTIN_VERSIONS:
        return int(tag)
    known = ", ".join(f"builtin:v{v}" for v in sorted(BUILTIN_VERSIONS))
    raise UserError(f"unknown built-in inventory {text!r}; available: {known} (builtin = builtin:v{BUILTIN_LATEST})")


def load_builtin(version: int | None = None) -> Inventory:
    """The project's own inventory shipped in ``contagion/data/`` (the latest version when None)."""
    version = BUILTIN_LATEST if version is None else version
    if version not in BUILTIN_VERSIONS:
        raise UserError(f"unknown built-in inventory version {version}; available: {sorted(BUILTIN_VERSIONS)}")
    ref = resources.files("contagion").joinpath(BUILTIN_VERSIONS[version])
    with resources.as_file(ref) as path:
        inventory = load_yaml_inventory(path, source_name="builtin")
    if inventory.source != f"builtin:v{version}":  # the file's own version field must agree with its name
        raise RuntimeError(f"{BUILTIN_VERSIONS[version]} declares {inventory.source}, expected builtin:v{version}")
    return inventory


def load_yaml_inventory(path: Path, *, source_name: str | None = None) -> Inventory:
    """An inventory in the built-in YAML format::

        format: contagion-inventory/1
        version: 1
        traits:
          agreeableness:
            matching-yes: [statements a person high in the trait would say, ...]
            matching-no:  [statements such a person would deny (reversed items), ...]

    Item ids are ``<trait>-y<NN>`` / ``<trait>-n<NN>`` by position. Errors name the file and line.
    """
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read inventory file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None

    def fail(node: yaml.Node | None, message: str) -> UserError:
        line = node.start_mark.line + 1 if node is not None else 1
        return UserError(f"{path}, line {line}: {message}")

    def mapping(node: yaml.MappingNode, where: str, allowed: Sequence[str] | None = None) -> dict[str, yaml.Node]:
        """A mapping node's entries by key: keys are plain text, each once, and (``allowed``) known."""
        out: dict[str, yaml.Node] = {}
        for key_node, value in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or not str(key_node.value).strip():
                raise fail(key_node, f"{where}: a key must be plain text")
            key = str(key_node.value)
            if key in out:
                raise fail(key_node, f"{where}: key {key!r} appears twice")
            if allowed is not None and key not in allowed:
                raise fail(key_node, f"unknown key {key!r} (check the spelling; known: {', '.join(allowed)})")
            out[key] = value
        return out

    if not isinstance(root, yaml.MappingNode):
        raise fail(root, f"expected a mapping with 'format: {BUILTIN_FORMAT}' and 'traits'")
    top = mapping(root, "the file", ("format", "version", "traits"))
    fmt = top.get("format")
    if not isinstance(fmt, yaml.ScalarNode) or fmt.value != BUILTIN_FORMAT:
        newer = isinstance(fmt, yaml.ScalarNode) and str(fmt.value).startswith(BUILTIN_FORMAT[:-1])
        raise fail(fmt or root, f"expected 'format: {BUILTIN_FORMAT}'"
                   + (" (this file is for a newer contagion: pip install -U contagion)" if newer else ""))
    version = top.get("version")
    if version is not None and not (isinstance(version, yaml.ScalarNode) and version.value.isdigit()
                                    and int(version.value) >= 1):
        raise fail(version, "version must be a whole number of 1 or more")
    traits_node = top.get("traits")
    if not isinstance(traits_node, yaml.MappingNode) or not traits_node.value:
        raise fail(
            traits_node or root,
            "expected 'traits': a mapping of trait name to matching-yes/matching-no lists",
        )
    items: list[Item] = []
    seen: set[str] = set()
    for trait_key, body in traits_node.value:
        if not isinstance(trait_key, yaml.ScalarNode) or not str(trait_key.value).strip():
            raise fail(trait_key, "a trait name must be plain text")
        trait = str(trait_key.value)
        if trait in seen:
            raise fail(trait_key, f"trait {trait!r} appears twice")
        seen.add(trait)
        if not isinstance(body, yaml.MappingNode):
            raise fail(body, f"trait {trait!r} must map 'matching-yes' and/or 'matching-no' to lists of statements")
        keys: set[str] = set()
        for key_node, statements in body.value:
            key = str(key_node.value)
            if key not in ("matching-yes", "matching-no"):
                raise fail(key_node, f"unknown key {key!r} under trait {trait!r}; use matching-yes / matching-no")
            if key in keys:
                raise fail(key_node, f"{key} appears twice under trait {trait!r}")
            keys.add(key)
            if not isinstance(statements, yaml.SequenceNode):
                raise fail(statements, f"{trait}.{key} must be a list of statements")
            tag = "y" if key == "matching-yes" else "n"
            for i, node in enumerate(statements.value, 1):
                if not isinstance(node, yaml.ScalarNode) or not str(node.value).strip():
                    raise fail(node, f"{trait}.{key} entry {i} must be a non-empty statement")
                items.append(
                    Item(
                        id=f"{trait}-{tag}{i:02d}",
                        statement=str(node.value).strip(),
                        trait=trait,
                        matching="Yes" if tag == "y" else "No",
                    )
                )
        if not any(item.trait == trait for item in items):
            raise fail(body, f"trait {trait!r} has no items")
    name = source_name or str(path)
    if isinstance(version, yaml.ScalarNode):
        name = f"{name}:v{version.value}"
    return Inventory(source=name, items=items)
