"""SIT and placebo arms in all-default groups, through the real runner: a config of all-default groups only takes
SIT and both placebos (yoked included), the runner measures the yokes' profiles once with the agents' own, before
any game, and keeps them in the store; every agent's yoked placebo names a stored profile; the analysis reads
SIT's behaviour there."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from contagion.analysis.contrasts import AnalysisSettings, compute_contrasts
from contagion.analysis.tables import load_tables
from contagion.experiment.config import parse_config
from contagion.experiment.profiles import needed_profiles
from contagion.experiment.runner import Runner
from contagion.experiment.store import Store

CONFIG = {
    "name": "all-default arms",
    "models": ["sim:planted"],
    "games": ["prisoners-dilemma"],
    "compositions": {"all-default": ["default", "default", "default"]},
    "interventions": ["none", "sit:k=1,n=2", "placebo:kind=neutral,k=1,n=2", "placebo:kind=yoked,k=1,n=2"],
    "chat_turns": [1],
    "rounds": 3,
    "repetitions": 2,
    "assessment": {"items": 3, "source_items": 4, "bootstrap": 100},
}


def test_sit_and_both_placebos_run_in_all_default_groups(tmp_path: Path) -> None:
    config = parse_config(CONFIG)
    specs = [spec for spec, _ in config.expand()]
    assert len(specs) == 8
    planned = {r.key: r for spec in specs for r in needed_profiles(spec, config.persona_map())}
    yokes = {k for k, r in planned.items() if r.system.meta.get("persona") == "benevolent"}
    # three default seats (their names differ) and their three benevolent yokes, each measured once
    assert len(planned) == 6 and len(yokes) == 3
    run_dir = tmp_path / "run"
    Runner(config, run_dir, progress=False, console=Console(quiet=True)).run()
    store = Store.open_existing(run_dir)
    records = list(store.iter_records(status=None))
    assert len(records) == 8 and all(r.error is None for r in records)
    assert all(store.get_profile(k) is not None for k in planned)  # planned, measured and kept
    store.close()
    yoked = [r for r in records if r.spec.intervention.params.get("kind") == "yoked"]
    for record in yoked:
        for p in record.players:
            logs = [x for x in p.intervention_log if x["event"] == "placebo"]
            assert p.injections and len(logs) == len(p.injections)
            assert {x["yoke"]["profile"] for x in logs} <= yokes
    tables = load_tables(run_dir)
    c = compute_contrasts(tables, settings=AnalysisSettings(resamples=100, mixed=False))["protection"]
    assert c.available
    comparisons = set(c.rows["comparison"])
    assert {"sit:k=1,n=2 − none", "sit:k=1,n=2 − placebo:k=1,kind=yoked,n=2",
            "sit:k=1,n=2 − placebo:k=1,kind=neutral,n=2"} <= comparisons
    assert not any("×" in x for x in comparisons)  # one composition: no SIT × composition row
