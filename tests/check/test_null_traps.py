"""Two traps the statistical check's null models set, each met on the very run that first fell into it:

* common seeds: a grid plays every cell on the same seeds, and a sampled action's draw depends on the
  seed, round and seat only, so cells of one seed repeat the same draws. Clustered on single games,
  the behaviour slope "found reciprocity" on ``sim:null`` (seed 0: p = 0.007); clustered on the games
  a seed links, it does not, while ``sim:reciprocity`` is still found.
* lost confidence: on ``sim:flatten`` every injection lengthens the context, answers drift toward ½
  and "placebo − none" and "SIT − none" came out significant (seed 3) when post-play was measured with the
  injections in view. The confidence gate holds them back because the arms' answer mass differs; on the
  planted model the gate never fires. Measured with the injections removed, there is nothing to hold back.
* length alone: a model whose answers drift from a pro-social baseline toward ½ as its context grows
  (``sim:flatten?lean=0.25``, and ``sim:flatten-keep?lean=0.25``, which keeps the answer mass) makes raw
  post − pre "contagion" significant on every seed; post − sham, the sham as long as the game, does not,
  while on ``sim:planted?lean=0.25`` post − sham still finds the planted contagion.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from contagion.analysis.contrasts import (
    RAW_ROW,
    AnalysisSettings,
    behaviour,
    compute_contrasts,
    linked_clusters,
    seen_defection,
)
from contagion.analysis.estimators import slope
from contagion.analysis.tables import PROSOCIAL, tables_from_records
from contagion.check import ValidationGrid, check_models, model_spec, play_grid
from contagion.experiment.record import GameRecord

SETTINGS = AnalysisSettings(resamples=0, mixed=False)


@functools.cache
def records(variant: str, seed: int, interventions: tuple[str, ...] | None = None) -> tuple[GameRecord, ...]:
    grid = ValidationGrid() if interventions is None else ValidationGrid(interventions=interventions)
    return tuple(play_grid(grid, model_spec(variant, seed), seed))


def old_design(played: tuple[GameRecord, ...]) -> list[GameRecord]:
    """The records as the analysis before the sham baseline read them: post-play with the injected messages in
    view (the secondary profile, where there were injections), no sham profile."""
    out = []
    for record in played:
        record = record.model_copy(deep=True)
        for p in record.players:
            if p.post_profile_injected is not None:
                p.post_profile = p.post_profile_injected
            p.sham_profile = None
        out.append(record)
    return out


def tables(variant: str, seed: int, *, old: bool = False,  # type: ignore[no-untyped-def]
           interventions: tuple[str, ...] | None = None):
    played = records(variant, seed, interventions)
    return tables_from_records(old_design(played) if old else list(played))


def default_slope(t) -> dict:  # type: ignore[no-untyped-def]
    rows = behaviour(t, SETTINGS).rows
    (row,) = rows[rows["comparison"].str.endswith("· default")].to_dict("records")
    return row


def test_behaviour_slope_clusters_on_the_games_a_seed_links() -> None:
    t = tables("null", 0)
    row = default_slope(t)
    grid = ValidationGrid()
    # 2 compositions x 3 interventions share each of the 6 seeds: 6 clusters, not 36 games
    assert row["n_games"] == grid.repetitions
    assert row["p"] > 0.05
    # the trap is real: the same slope clustered on single games is "significant"
    df = seen_defection(t.actions)
    sub = df[df["persona"].astype(str) == "default"]
    strata = sub[["game", "intervention", "chat_turns", "round"]].astype(str).agg("|".join, axis=1)
    naive = slope(sub["defect"].to_numpy(), sub["seen"].to_numpy(), sub["game_id"].to_numpy(),
                  strata=strata.to_numpy())
    assert naive.n_games == 2 * len(grid.played_interventions()) * grid.repetitions
    assert naive.estimate == pytest.approx(row["estimate"]) and naive.p < 0.05


def test_reciprocity_is_still_found_with_linked_clusters() -> None:
    row = default_slope(tables("reciprocity", 0))
    assert row["estimate"] > 0.3 and row["p"] < 0.01 and row["significant"]


def test_linked_clusters_join_shared_seeds_and_shared_transcripts() -> None:
    import pandas as pd

    df = pd.DataFrame({"model": ["m"] * 5 + ["n"], "seed": [1, 1, 2, 3, 4, 1],
                       "cluster": ["a", "b", "b", "c", "d", "a"]})
    got = linked_clusters(df).tolist()
    # seed 1 links a and b; transcript b links seed 2; seed 3 and 4 stand alone; model n is its own
    assert got[0] == got[1] == got[2] and len({got[0], got[3], got[4], got[5]}) == 4
    assert linked_clusters(df.drop(columns="seed")).tolist() == df["cluster"].tolist()


def test_the_confidence_gate_holds_back_what_flattening_makes() -> None:
    c = compute_contrasts(tables("flatten", 3, old=True), settings=SETTINGS)["mitigation"].rows
    index = c[c["trait"] == PROSOCIAL].set_index("comparison")
    gated = index.loc["sit:k=1,n=2 − none"]
    assert gated["p"] < 0.05 and gated["mass_p"] < 0.05 and gated["mass_estimate"] < 0
    assert not gated["significant"] and "answer mass differs" in gated["warning"]
    # nothing in the flattening model's mitigation contrast is claimed, traits included
    assert not c["significant"].astype(bool).any()
    # measured with the injections removed (and against the sham), the reminders' length is gone altogether
    now = compute_contrasts(tables("flatten", 3), settings=SETTINGS)["mitigation"].rows
    row = now[now["trait"] == PROSOCIAL].set_index("comparison").loc["sit:k=1,n=2 − none"]
    assert row["p"] > 0.05 and not now["significant"].astype(bool).any()


NONE = ("none",)


def _contagion_index(t, label: str) -> dict:  # type: ignore[no-untyped-def]
    rows = compute_contrasts(t, settings=SETTINGS)["contagion"].rows
    (row,) = rows[(rows["trait"] == PROSOCIAL) & (rows["comparison"] == label)].to_dict("records")
    return row


@pytest.mark.parametrize(("variant", "seed"), [("flatten?lean=0.25", 0), ("flatten?lean=0.25", 1),
                                               ("flatten-keep?lean=0.25", 2)])
def test_length_alone_fools_raw_post_minus_pre_and_not_the_sham(variant: str, seed: int) -> None:
    old = _contagion_index(tables(variant, seed, old=True, interventions=NONE), "post − pre · one-malicious")
    assert old["estimate"] < -0.1 and old["significant"]  # the old analysis claims contagion
    new_tables = tables(variant, seed, interventions=NONE)
    assert new_tables.info.estimand == "post − sham"
    new = _contagion_index(new_tables, "post − sham · one-malicious")
    assert abs(new["estimate"]) < 0.03 and not new["significant"]
    contrasts = compute_contrasts(new_tables, settings=SETTINGS)
    assert not contrasts["contagion"].rows["significant"].astype(bool).any()
    assert not contrasts["amplification"].rows["significant"].astype(bool).any()
    # the raw drift is still reported beside it, labelled secondary and never claimed
    raw = _contagion_index(new_tables, f"{RAW_ROW} · one-malicious")
    assert raw["estimate"] == pytest.approx(old["estimate"]) and raw["p"] < 0.05 and not raw["significant"]
    assert raw["correction"].startswith("secondary")


@pytest.mark.parametrize("seed", [0, 1])
def test_the_sham_still_finds_planted_contagion_from_a_pro_social_baseline(seed: int) -> None:
    row = _contagion_index(tables("planted?lean=0.25", seed, interventions=NONE), "post − sham · one-malicious")
    assert row["estimate"] < -0.03 and row["significant"]


def test_the_check_runs_the_lean_flatteners() -> None:
    assert {"flatten?lean=0.25", "flatten-keep?lean=0.25"} <= set(check_models())
    assert model_spec("flatten?lean=0.25", 4) == "sim:flatten?lean=0.25&seed=4"


def test_the_gate_never_fires_on_a_model_whose_mass_does_not_move() -> None:
    c = compute_contrasts(tables("planted", 0), settings=SETTINGS)["mitigation"].rows
    index = c[c["trait"] == PROSOCIAL]
    assert index["mass_p"].isna().all() or not (index["mass_p"] < 0.05).any()
    assert np.isfinite(index["p"]).all()
    sit_placebo = index[index["comparison"] == "sit:k=1,n=2 − placebo:k=1,kind=neutral,n=2"]
    assert len(sit_placebo) == 1
