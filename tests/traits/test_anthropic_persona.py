"""Anthropic's persona files, when they are beside the checkout (``../shared/data/anthropic-persona``).

Every test here asks for ``anthropic_persona_dir`` and is skipped, with the reason, on a clone with nothing
beside it; the loaders themselves are tested on the project's own fixtures in test_trait_inventory.py.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from contagion.traits.inventory import load_inventory


def _statements(folder: Path) -> set[str]:
    return {
        json.loads(line)["statement"].lower().rstrip(".")
        for path in folder.glob("*.jsonl")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    }


def test_whole_anthropic_directory_loads(anthropic_persona_dir: Path) -> None:
    inv = load_inventory(anthropic_persona_dir)
    assert len(inv.traits()) == 24
    assert {"agreeableness", "machiavellianism", "narcissism", "psychopathy"} <= set(inv.traits())
    assert len(inv) == 23760


def test_anthropic_traits_keep_their_order_and_keys(anthropic_persona_dir: Path) -> None:
    inv = load_inventory(anthropic_persona_dir, traits=["agreeableness", "machiavellianism"])
    assert inv.traits() == ["agreeableness", "machiavellianism"]
    assert len(inv) == 2000
    assert inv.items[0].id == "agreeableness/1"
    assert Counter(i.matching for i in inv.by_trait("machiavellianism")) == {"Yes": 500, "No": 500}


def test_sampling_anthropic_files_keeps_key_balance(anthropic_persona_dir: Path) -> None:
    inv = load_inventory(anthropic_persona_dir, traits=["psychopathy", "agreeableness"])
    sample = inv.sample(None, per_trait=40, seed=0)
    assert len(sample) == 80
    for trait in ("psychopathy", "agreeableness"):
        assert Counter(i.matching for i in sample.by_trait(trait)) == {"Yes": 20, "No": 20}


def test_fixtures_are_not_copied_from_anthropic(persona_dir: Path, anthropic_persona_dir: Path) -> None:
    """The persona fixtures of tests/fixtures are the project's own statements, in Anthropic's format only."""
    ours = _statements(persona_dir)
    assert len(ours) == 72
    assert not ours & _statements(anthropic_persona_dir)
    theirs_keys = set(json.loads((anthropic_persona_dir / "agreeableness.jsonl").open().readline()))
    for path in persona_dir.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            assert set(json.loads(line)) == theirs_keys, path.name  # the same shape as the real files
