"""Two traps the statistical check's null models set, each met on the very run that first fell into it:

* common seeds: a grid plays every cell on the same seeds, and a sampled action's draw depends on the
  seed, round and seat only, so cells of one seed repeat the same draws. Clustered on single games,
  the behaviour slope "found reciprocity" on ``sim:null`` (seed 0: p = 0.007); clustered on the games
  a seed links, it does not, while ``sim:reciprocity`` is still found.
* lost confidence: on ``sim:flatten`` every injection lengthens the context, answers drift toward ½
  and "placebo − none" and "SIT − none" came out significant (seed 3). The confidence gate holds them
  back because the arms' answer mass differs; on the planted model the gate never fires.
"""

from __future__ import annotations

import numpy as np
import pytest

from contagion.analysis.contrasts import (
    AnalysisSettings,
    behaviour,
    compute_contrasts,
    linked_clusters,
    seen_defection,
)
from contagion.analysis.estimators import slope
from contagion.analysis.tables import PROSOCIAL, tables_from_records
from contagion.check import ValidationGrid, model_spec, play_grid

SETTINGS = AnalysisSettings(resamples=0, mixed=False)


def tables(variant: str, seed: int):  # type: ignore[no-untyped-def]
    return tables_from_records(play_grid(ValidationGrid(), model_spec(variant, seed), seed))


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
    c = compute_contrasts(tables("flatten", 3), settings=SETTINGS)["mitigation"].rows
    index = c[c["trait"] == PROSOCIAL].set_index("comparison")
    gated = index.loc["sit:k=1,n=2 − none"]
    assert gated["p"] < 0.05 and gated["mass_p"] < 0.05 and gated["mass_estimate"] < 0
    assert not gated["significant"] and "answer mass differs" in gated["warning"]
    # nothing in the flattening model's mitigation contrast is claimed, traits included
    assert not c["significant"].astype(bool).any()


def test_the_gate_never_fires_on_a_model_whose_mass_does_not_move() -> None:
    c = compute_contrasts(tables("planted", 0), settings=SETTINGS)["mitigation"].rows
    index = c[c["trait"] == PROSOCIAL]
    assert index["mass_p"].isna().all() or not (index["mass_p"] < 0.05).any()
    assert np.isfinite(index["p"]).all()
    sit_placebo = index[index["comparison"] == "sit:k=1,n=2 − placebo:k=1,kind=neutral,n=2"]
    assert len(sit_placebo) == 1
