"""SIT judged by behaviour (the ``protection`` contrast): the defection rate from each agent's first reminder on,
SIT − none and SIT − placebo, clustered as every row, in the primary family (SIT's trait rows secondary), and the
SIT × composition interaction. On a simulated model whose SIT effect on cooperation is planted it is found (and
the interaction with it: the planted SIT acts on what the agent saw, so next to a malicious LM); on a null model
whose actions never read a reminder it is not."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from contagion.analysis.contrasts import (
    DEFECTION,
    PRIMARY_FAMILY,
    AnalysisSettings,
    compute_contrasts,
    defection_after_reminder,
    sit_behavioural,
)
from contagion.analysis.estimators import interaction
from contagion.analysis.report_text import contrast_tables, headline_sentences
from contagion.analysis.tables import PROSOCIAL, RunInfo, RunTables, tables_from_records
from contagion.check import ValidationGrid, play_grid

SIT, NONE, PLACEBO = "sit:k=1,n=2", "none", "placebo:k=1,kind=neutral,n=2"
GRID = ValidationGrid(repetitions=6, rounds=5, items=2, source_items=2, interventions=(NONE, SIT, PLACEBO))
SETTINGS = AnalysisSettings(resamples=200, mixed=False)


def run(model: str) -> RunTables:
    return tables_from_records(play_grid(GRID, model, 0))


@pytest.fixture(scope="module")
def planted() -> RunTables:
    # sim:planted's SIT: shift s = contagion · E · (1 − reminder · R) lowers the cooperation probability by
    # act_gain · s, so reminders (R) keep agents cooperating where they saw defection or hostility (E > 0: next to
    # a malicious LM); act_gain 4 (default 2) makes the effect one this small grid finds
    return run("sim:planted?contagion=0.5&act_gain=4")


def rows(tables: RunTables) -> pd.DataFrame:
    c = compute_contrasts(tables, settings=SETTINGS)
    assert c["protection"].available, c["protection"].reason
    return c["protection"].rows.set_index("comparison")


def test_the_planted_sit_effect_on_cooperation_is_found_in_the_primary_family(planted: RunTables) -> None:
    r = rows(planted)
    for other in (NONE, PLACEBO):
        row = r.loc[f"{SIT} − {other}"]
        assert row["trait"] == DEFECTION and row["estimate"] < -0.1 and row["ci_high"] < 0
        assert row["significant"] and "Holm over the primary family" in row["correction"]
        assert row["mean_a"] < row["mean_b"]  # the SIT arm's defection rate is the lower one
    # the planted SIT needs something to protect against: next to a malicious LM it acts, in all-default less
    mal, alld = r.loc[f"{SIT} − {NONE} · one-malicious"], r.loc[f"{SIT} − {NONE} · all-default"]
    assert mal["estimate"] < alld["estimate"] and not mal["significant"]  # per composition: secondary
    inter = r.loc[f"({SIT} − {NONE}) × composition: one-malicious − all-default"]
    assert inter["estimate"] == pytest.approx(mal["estimate"] - alld["estimate"], abs=0.05)
    assert inter["p"] < 0.05 and inter["ci_high"] < 0
    assert not inter["significant"] and inter["correction"].startswith("secondary")


def test_a_null_model_whose_actions_never_read_a_reminder_shows_nothing() -> None:
    # sim:reciprocity defects after seeing defection (behaviour varies) but no reminder changes an action
    r = rows(run("sim:reciprocity"))
    assert np.isfinite(r["p"]).all()
    assert not r["significant"].astype(bool).any()
    assert (r["p"] > 0.05).all(), r[["estimate", "p"]]


def test_sits_trait_rows_are_secondary_and_the_report_says_so(planted: RunTables) -> None:
    c = compute_contrasts(planted, settings=SETTINGS)
    m = c["mitigation"].rows
    sit_rows = m[m.apply(sit_behavioural, axis=1)]
    assert set(sit_rows["comparison"]) == {f"{SIT} − {NONE}", f"{SIT} − {PLACEBO}"}
    index = sit_rows[sit_rows["trait"] == PROSOCIAL]
    assert (index["correction"].str.startswith("secondary")).all() and not index["significant"].any()
    assert not sit_rows["significant"].any()  # traits are gated by their (secondary) index
    others = m[(m["trait"] == PROSOCIAL) & ~m.apply(sit_behavioural, axis=1)]
    assert len(others) and others["correction"].str.startswith("Holm over the primary family").all()
    # the family: per model, the pooled protection rows in, the per-composition and interaction rows out
    pooled = c["protection"].rows
    in_family = pooled.apply(PRIMARY_FAMILY["protection"][1], axis=1)
    assert in_family.sum() == 2 and set(pooled[in_family]["comparison"]) == {f"{SIT} − {NONE}", f"{SIT} − {PLACEBO}"}
    sentences = dict((s, k) for name, s, k in headline_sentences(c) if name in ("protection", "mitigation"))
    assert any("SIT's primary outcome, significant" in s for s in sentences)
    assert sum("secondary: SIT's primary outcome is behaviour" in s for s in sentences) == 2
    index_table, _ = contrast_tables(c["mitigation"])
    assert index_table is not None and "except SIT − none and SIT − placebo" in index_table.caption


def actions_and_players(first: dict[str, float | None], arm: dict[str, str]) -> RunTables:
    """A hand-made run: agents ``a``..., 4 rounds each, defecting in rounds 1 and 3 only, one invalid action."""
    players, actions = [], []
    for name, r0 in first.items():
        cond = {"game_id": f"g-{name}", "cluster": f"g-{name}", "model": "m", "game": "pd", "composition": "c",
                "composition_kind": "all-default", "intervention": arm[name], "chat_turns": 1, "seed": 0}
        players.append({**cond, "player": name, "persona": "default", "focal": True, "lm": True,
                        "intervention_kind": arm[name].split(":")[0], "first_injection": r0})
        for rnd in (1, 2, 3, 4):
            action = "defect" if rnd in (1, 3) else "invalid" if (name, rnd) == ("b", 4) else "cooperate"
            actions.append({**cond, "player": name, "round": rnd, "action": action})
    return RunTables(drift=pd.DataFrame(), actions=pd.DataFrame(actions), players=pd.DataFrame(players),
                     games=pd.DataFrame(), info=RunInfo())


def test_the_rounds_read_start_at_each_agents_first_reminder() -> None:
    t = actions_and_players({"a": 2, "b": 3, "c": None, "d": None}, {"a": SIT, "b": SIT, "c": NONE, "d": PLACEBO})
    got = defection_after_reminder(t, [SIT, PLACEBO]).set_index("player")
    # a: rounds 2-4 (one defection of three); b: rounds 3-4, the invalid action is neither (1 of 1);
    # c and d were never reminded: from the earliest reminder of the reminder arms (round 2)
    assert got.loc["a", "defection"] == pytest.approx(1 / 3) and got.loc["a", "actions"] == 3
    assert got.loc["b", "defection"] == 1.0 and got.loc["b", "actions"] == 1
    assert got.loc["c", "start"] == got.loc["d", "start"] == 2 and got.loc["c", "defection"] == pytest.approx(1 / 3)


def test_the_interaction_estimator_recovers_a_difference_of_differences() -> None:
    rng = np.random.default_rng(0)
    n = 400
    arm, group = rng.random(n) < 0.5, rng.random(n) < 0.5
    clusters = np.arange(n) // 2
    y = 0.5 + 0.2 * group - 0.1 * arm - 0.3 * (arm & group) + rng.normal(0, 0.1, n)
    est = interaction(y, arm, group, clusters, strata=group.astype(int))
    assert est.estimate == pytest.approx(-0.3, abs=0.05) and est.p < 1e-6 and est.ci_low < -0.3 < est.ci_high
    null = interaction(0.5 + 0.2 * group - 0.1 * arm + rng.normal(0, 0.1, n), arm, group, clusters,
                       strata=group.astype(int))
    assert abs(null.estimate) < 0.05 and null.p > 0.01
    missing = interaction(y[group], arm[group], group[group], clusters[group])
    assert math.isnan(missing.estimate) and math.isnan(missing.p)
