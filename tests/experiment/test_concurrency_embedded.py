"""Games side by side on the embedded model write the records they write one at a time.

The same grid (4 games with chat and trait assessment on SmolLM2 through llama.cpp) run by `contagion
run` at concurrency 1 and at concurrency 4: every record identical except the fields that measure work
rather than outcome — time, and how many prompt tokens a player's lane had to encode (what the lane
already held depends on which histories were in flight). The times are the benchmark's business
(benchmarks/bench_runner.py), not this test's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.experiment.experiment_helpers import comparable_records, run_cli, write_config

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
    "repetitions": 2,
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


def test_concurrency_4_writes_the_records_of_concurrency_1(tmp_path: Path) -> None:
    stores = {}
    for concurrency in (1, 4):
        config = write_config(tmp_path / f"grid-{concurrency}.yaml", GRID, concurrency=concurrency)
        out = tmp_path / f"run-{concurrency}"
        proc = run_cli("run", str(config), "--out", str(out), "--no-progress", timeout=1200)
        assert proc.returncode == 0, proc.stderr
        stores[concurrency] = comparable_records(out, status=None)
    one, four = stores[1], stores[4]
    assert len(one) == 4 and set(one) == set(four)
    for key in one:
        assert one[key]["error"] is None
        assert without_work(four[key]) == without_work(one[key]), key
    # the games really were played and measured: chat, actions, pre- and post-play profiles
    for record in one.values():
        for player in record["players"]:
            if player["focal"]:
                assert player["pre_profile"] and player["post_profile"]
            assert len(player["actions"]) == 2
