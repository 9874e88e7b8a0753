"""Traps the statistical check's null models set, each met on the very run that first fell into it:

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
* the gate of the answer mass failed both ways (issue 26): a significance test of the arms' mass difference,
  unadjusted and with no size, held back the planted model's real SIT effect when it flattened slightly
  (``flatten=0.02``: the arms' mass differed by −0.004, "significant") and passed the mass-keeping flattener
  (``sim:flatten-keep?lean=0.25``), whose "SIT − none" and "placebo − none" it let through as harmful. The gate
  tied to size (index net of what the control items' movement toward ½ explains) claims the first and holds the
  second. The first traps were met without a game-level effect and are kept there (``game_sd=0``); the gate
  cases run at the check's ``game_sd`` (0.10), on the records as the old design measured them (post-play
  with the injections in view, no sham): measured with them removed, the reminders' length is gone and there
  is nothing for a gate to hold back.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from contagion.analysis.contrasts import (
    RAW_ROW,
    AnalysisSettings,
    behaviour,
    compute_contrasts,
    confidence_gated,
    linked_clusters,
    seen_defection,
)
from contagion.analysis.estimators import slope
from contagion.analysis.tables import PROSOCIAL, tables_from_records
from contagion.check import (
    GAME_SD,
    GATE_CASES,
    SIT,
    ValidationGrid,
    check_models,
    gate_case,
    gate_rows,
    injected_view,
    model_spec,
    play_grid,
)
from contagion.experiment.record import GameRecord

SETTINGS = AnalysisSettings(resamples=0, mixed=False)


@functools.cache
def records(variant: str, seed: int, interventions: tuple[str, ...] | None = None) -> tuple[GameRecord, ...]:
    grid = ValidationGrid() if interventions is None else ValidationGrid(interventions=interventions)
    return tuple(play_grid(grid, model_spec(variant, seed, game_sd=0), seed))


def tables(variant: str, seed: int, *, old: bool = False,  # type: ignore[no-untyped-def]
           interventions: tuple[str, ...] | None = None):
    played = records(variant, seed, interventions)
    return tables_from_records(injected_view(list(played)) if old else list(played))


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
    # the trap is real: the slope across games (within game type × intervention × chat × round, as the row was
    # first estimated) clustered on single games is "significant"
    df = seen_defection(t.actions)
    sub = df[df["persona"].astype(str) == "default"]
    strata = sub[["game", "intervention", "chat_turns", "round"]].astype(str).agg("|".join, axis=1)
    naive = slope(sub["defect"].to_numpy(), sub["seen"].to_numpy(), sub["game_id"].to_numpy(),
                  strata=strata.to_numpy())
    assert naive.n_games == 2 * len(grid.played_interventions()) * grid.repetitions
    assert naive.p < 0.05


def test_reciprocity_is_still_found_with_linked_clusters() -> None:
    row = default_slope(tables("reciprocity", 0))
    assert row["estimate"] > 0.3 and row["p"] < 0.05  # within each game: fewer comparisons, still found


def test_linked_clusters_join_shared_seeds_and_shared_transcripts() -> None:

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
    assert not gated["significant"] and "movement toward ½" in gated["warning"]
    # what the arms' flattening explains has the difference's sign; net of it nothing is left
    assert np.sign(gated["flat_estimate"]) == np.sign(gated["estimate"]) and gated["net_p"] > 0.05
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
    assert model_spec("flatten?lean=0.25", 4) == f"sim:flatten?lean=0.25&game_sd={GAME_SD:g}&seed=4"
    assert model_spec("flatten?lean=0.25", 4, game_sd=0) == "sim:flatten?lean=0.25&seed=4"


def test_the_gate_never_fires_on_a_model_that_does_not_flatten() -> None:
    c = compute_contrasts(tables("planted", 0), settings=SETTINGS)["mitigation"].rows
    index = c[c["trait"] == PROSOCIAL]
    assert np.isfinite(index["p"]).all()
    assert not any(confidence_gated(r) for _, r in index.iterrows() if r["p"] < 0.05)  # nothing held back
    assert (index["flat_estimate"].abs() < 0.005).all()
    sit_placebo = index[index["comparison"] == "sit:k=1,n=2 − placebo:k=1,kind=neutral,n=2"]
    assert len(sit_placebo) == 1


# -- the gate tied to size (issue 26): the two runs that fooled the mass gate ---------------------------------

SLIGHT_FLATTENING = GATE_CASES["slight flattening, real SIT effect claimed"][0]
MASS_KEEPING = GATE_CASES["mass-keeping flattener claimed harmful"][0]


def test_slight_flattening_no_longer_hides_a_real_sit_effect() -> None:
    row = gate_rows(SLIGHT_FLATTENING, 0).loc[f"{SIT} − none"]
    assert row["estimate"] > 0 and row["p_adj"] < 0.05
    # the mass gate held it back for a trivial mass difference...
    assert row["mass_p"] < 0.05 and abs(row["mass_estimate"]) < 0.01 and not row["old_gate"]
    # ...which the equivalence test shows is within the margin; flattening explains next to nothing of it
    assert row["mass_tost_p"] < 0.05 and abs(row["flat_estimate"]) < 0.005
    assert row["claimed"] and "movement toward ½" not in row["warning"]


def test_a_mass_keeping_flattener_is_not_called_harmful() -> None:
    rows = gate_rows(MASS_KEEPING, 0)
    for comparison in (f"{SIT} − none", "placebo:k=1,kind=neutral,n=2 − none"):
        row = rows.loc[comparison]
        assert row["estimate"] < -0.03 and row["p_adj"] < 0.05
        assert not row["mass_p"] < 0.05 and row["old_gate"]  # the mass does not move: the earlier gate let it through
        assert row["flat_estimate"] < -0.03 and row["net_p"] > 0.05  # flattening explains it
        assert not row["claimed"] and "movement toward ½" in row["warning"]


def test_one_run_of_each_gate_case_is_what_the_shipped_figures_count() -> None:
    """The check's gate cases (10 runs each, shipped in validation.json and held to their bounds by
    tests/check/test_check.py) count exactly the rows the tests above examine."""
    real = gate_case("slight flattening, real SIT effect claimed", 0)
    harmful = gate_case("mass-keeping flattener claimed harmful", 0)
    assert real == {"claimed": True, "old_gate": False}
    assert harmful == {"claimed": False, "old_gate": True}


def test_a_model_that_echoes_its_reminders_shows_no_sit_effect() -> None:
    """``sim:trait-echo`` has no contagion and no mitigation; it only agrees more with items of a trait its context
    mentions. With SIT's reminders in view (the old design), SIT − placebo on the pro-social index is "found"; the
    new design measures with the reminders removed and judges SIT by behaviour, where there is nothing to echo."""
    old = compute_contrasts(tables("trait-echo", 0, old=True), settings=SETTINGS)["mitigation"].rows
    old = old[old["trait"] == PROSOCIAL].set_index("comparison").loc[f"{SIT} − placebo:k=1,kind=neutral,n=2"]
    assert old["estimate"] > 0.02 and old["p"] < 0.05  # self-report with its own words in view
    new = compute_contrasts(tables("trait-echo", 0), settings=SETTINGS)
    for name in ("mitigation", "contagion", "amplification"):
        assert not new[name].rows["significant"].astype(bool).any(), name
    row = new["mitigation"].rows
    row = row[row["trait"] == PROSOCIAL].set_index("comparison").loc[f"{SIT} − placebo:k=1,kind=neutral,n=2"]
    assert abs(row["estimate"]) < 0.02 and row["p"] > 0.05
    # SIT's primary outcome, against the placebo: nothing (its false-positive rate over 100 seeds at the check's
    # game SD is in the shipped figures, key trait-echo:protection)
    row = new["protection"].rows.set_index("comparison").loc[f"{SIT} − placebo:k=1,kind=neutral,n=2"]
    assert row["p"] > 0.05 and not row["significant"]
