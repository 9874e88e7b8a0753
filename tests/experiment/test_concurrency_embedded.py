"""Games on the embedded model: `concurrency: 4` runs them one at a time and says so; played side by side
anyway (straight through run_trial), they write the records they write one at a time.

llama.cpp computes one call at a time, so the runner caps the games in flight at the backend's declared
``parallel_games`` (1) and prints a note (more at once were measured slower: benchmarks/bench_concurrency.py).
The backend must still give the same answers to callers that do send it several games at once: the same
grid (2 games, one per composition, with chat and trait assessment on SmolLM2 through llama.cpp) played side
by side in one process gives every record the runner stored, except the fields that measure work rather than outcome —
time, and how many prompt tokens a player's lane had to encode (what the lane already held depends on
which histories were in flight).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from contagion.experiment.config import ExperimentConfig, load_config
from contagion.experiment.trial import run_trial
from tests.experiment.experiment_helpers import comparable_records, run_cli, squash, strip_timing, write_config

pytestmark = pytest.mark.slow

GRID: dict[str, Any] = {
    "name": "side-by-side",
    "models": ["embedded"],
    "games": ["prisoners-dilemma"],
    "compositions": {"all-default": ["default", "default", "default"],
                     "one-malicious": ["default", "default", "malicious"]},
    "interventions": ["none"],
    "rounds": 2,
    "chat_turns": [1],
    "repetitions": 1,
    "assessment": {"items": 2, "source_items": 1, "traits": ["agreeableness", "machiavellianism"],
                   "bootstrap": 100},
    "generation": {"max_tokens": 12},
}


def without_work(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_work(v) for k, v in value.items() if k != "prompt_tokens_encoded"}
    if isinstance(value, list):
        return [without_work(v) for v in value]
    return value


async def _side_by_side(config: ExperimentConfig) -> dict[str, Any]:
    """Every game of the grid at once in this process (pre-play profiles measured inside each trial)."""
    jobs = list(config.expand())
    records = await asyncio.gather(*(run_trial(spec, labels=labels, personas=config.persona_map())
                                     for spec, labels in jobs))
    return {r.spec_hash: strip_timing(json.loads(r.model_dump_json())) for r in records}


def test_concurrency_4_runs_one_game_at_a_time_and_side_by_side_writes_the_same_records(tmp_path: Path) -> None:
    config = write_config(tmp_path / "grid-4.yaml", GRID, concurrency=4)
    out = tmp_path / "run-4"
    proc = run_cli("run", str(config), "--out", str(out), "--no-progress", timeout=1200)
    assert proc.returncode == 0, proc.stderr
    note = squash(proc.stdout + proc.stderr)
    assert squash("embedded computes one model call at a time") in note
    assert squash("games run 1 at a time here (concurrency: 4 in the config)") in note
    one = comparable_records(out, status=None)
    four = asyncio.run(_side_by_side(load_config(config)))
    assert len(one) == 2 and set(one) == set(four)
    for key in one:
        assert one[key]["error"] is None
        assert without_work(four[key]) == without_work(one[key]), key
    # the games really were played and measured: chat, actions, pre- and post-play profiles
    for record in one.values():
        for player in record["players"]:
            if player["focal"]:
                assert player["pre_profile"] and player["post_profile"]
            assert len(player["actions"]) == 2
