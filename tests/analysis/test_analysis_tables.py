"""Tidy tables streamed from a real (simulated) run's store."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from contagion.analysis.tables import (
    PROSOCIAL,
    cooperation_by_round,
    games_per_cell,
    injections_by_condition,
    invalid_rates,
    load_tables,
    payoffs_by_condition,
    tables_from_records,
)
from contagion.experiment.record import GameRecord
from contagion.experiment.store import Store


def test_one_row_per_focal_agent_and_trait(sim_run_dir: Path) -> None:
    t = load_tables(sim_run_dir)
    games = t.games
    assert len(games) == 54 and (games["status"] == "ok").all()
    assert t.info.counts == {"ok": 54, "failed": 0}
    traits = t.traits
    assert len(traits) == 11  # builtin:v2: 9 traits + 2 neutral controls
    # focal = default-persona LM players: 3 in all-default, 2 in the other two compositions
    per_game = t.agents.groupby("composition", observed=True)["game_id"].count() / 18
    assert dict(per_game) == {"all-default": 3, "one-malicious": 2, "scripted-defector": 2}
    assert len(t.drift) == len(t.agents) * (len(traits) + 1)
    assert set(t.drift["persona"].astype(str)) == {"default"}
    # the run has sham profiles: drift is post − sham (the primary estimand); post − pre is kept beside it
    assert t.info.estimand == "post − sham" and t.info.sham_missing == 0
    row = t.drift.iloc[0]
    assert row["drift"] == pytest.approx(row["post"] - row["sham"])
    assert row["raw_drift"] == pytest.approx(row["post"] - row["pre"])
    assert (t.drift["sham"] != t.drift["pre"]).any()
    assert set(t.agents["trait"].astype(str)) == {PROSOCIAL}
    assert {"game", "composition", "intervention", "model", "chat_turns", "rep", "seed", "player", "persona",
            "trait", "pre", "post", "drift"} <= set(t.drift.columns)


def test_composition_kinds_and_info(sim_run_dir: Path) -> None:
    t = load_tables(sim_run_dir)
    assert t.info.compositions == {"all-default": "all-default", "one-malicious": "malicious-lm",
                                   "scripted-defector": "scripted-defector"}
    assert t.info.methods and set(t.info.methods) == {"simulated"}
    assert t.info.items_per_trait and set(t.info.items_per_trait.values()) == {4}
    assert t.info.config is not None and t.info.config["name"] == "sim test run"


def test_replayed_games_share_a_cluster(sim_run_dir: Path) -> None:
    """A deterministic model without chat replays the same all-default game for every seed."""
    g = load_tables(sim_run_dir).games
    nochat = g[(g["chat_turns"] == 0) & (g["composition"] == "all-default") & (g["intervention"] == "none")]
    chat = g[(g["chat_turns"] == 1) & (g["composition"] == "all-default") & (g["intervention"] == "none")]
    assert nochat["cluster"].nunique() == 1 and len(nochat) == 3
    assert chat["cluster"].nunique() == 3


def test_derived_tables(sim_run_dir: Path) -> None:
    t = load_tables(sim_run_dir)
    coop = cooperation_by_round(t, ("composition",))
    assert set(coop["round"]) == {1, 2, 3} and coop["rate"].between(0, 1).all()
    first = coop[(coop["composition"] == "all-default") & (coop["round"] == 1)]["rate"].iloc[0]
    last = coop[(coop["composition"] == "one-malicious") & (coop["round"] == 3)]["rate"].iloc[0]
    assert first > last  # the planted reciprocity: defaults stop cooperating next to a malicious player
    pay = payoffs_by_condition(t)
    assert {"default", "malicious", "scripted:always-defect"} <= set(pay["seat"])
    inv = invalid_rates(t)
    assert (inv["invalid"] == 0).all()  # actions are scored, never invalid
    inj = injections_by_condition(t).set_index(["intervention", "chat_turns"])
    assert inj.loc[("none", 1), "injections"] == 0
    assert inj.loc[("sit:k=1,n=2", 1), "injections"] > 0
    cells = games_per_cell(t)
    assert cells["ok"].sum() == 54 and len(cells) == 18


def test_streaming_keeps_no_records(sim_run_dir: Path) -> None:
    """Records are decoded one at a time and dropped: only tidy rows stay in memory. (Records other tests of
    this process keep — a cached fixture — are counted before and left out.)"""
    def records_alive() -> set[int]:
        gc.collect()
        return {id(o) for o in gc.get_objects() if isinstance(o, GameRecord)}

    before = records_alive()
    streamed = 0

    def stream() -> Iterator[GameRecord]:
        nonlocal streamed
        with Store.open_existing(sim_run_dir) as store:
            for record in store.iter_records():
                streamed += 1
                yield record

    tables = tables_from_records(stream())
    assert not records_alive() - before
    assert streamed == len(tables.games) == 54


def test_failed_games_are_listed_not_analysed(payload_run_dir: tuple[Path, str]) -> None:
    run_dir, _ = payload_run_dir
    t = load_tables(run_dir)
    failed = t.games[t.games["status"] == "failed"]
    assert len(failed) == 1 and "RuntimeError" in failed["error"].iloc[0]
    assert t.info.counts["failed"] == 1 and len(t.info.failures) == 1
    assert failed["game_id"].iloc[0] not in set(t.drift["game_id"])
