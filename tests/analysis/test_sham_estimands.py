"""The estimands the sham baseline brings: post − sham primary, raw post − pre and the index net of flattening
secondary, the fallback to post − pre without sham profiles, and the flattening factor itself."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from contagion.analysis.contrasts import FLAT_ROW, RAW_ROW, AnalysisSettings, compute_contrasts
from contagion.analysis.report_text import methods_section
from contagion.analysis.tables import PROSOCIAL, flattening_factor, load_tables, tables_from_records
from contagion.check import ValidationGrid, model_spec, play_grid


def _profile(scores: dict[tuple[str, str], float], polarity: dict[str, str]) -> dict:
    return {"items": [{"trait": t, "item_id": i, "score": s, "role": "measure", "included": True}
                      for (t, i), s in scores.items()],
            "traits": {t: {"polarity": p} for t, p in polarity.items()}}


def test_flattening_factor_reads_how_far_control_answers_moved_toward_half() -> None:
    polarity = {"ctrl": "neutral", "agree": "pro"}
    pre_scores = {("ctrl", "a"): 0.8, ("ctrl", "b"): 0.3, ("ctrl", "c"): 0.6, ("agree", "d"): 0.9}
    pre = _profile(pre_scores, polarity)
    half_way = _profile({k: 0.5 + (v - 0.5) * 0.5 for k, v in pre_scores.items()}, polarity)
    k, var = flattening_factor(pre, half_way)
    assert k == pytest.approx(0.5) and var == pytest.approx(0.0, abs=1e-12)
    assert flattening_factor(pre, pre)[0] == pytest.approx(1.0)
    assert flattening_factor(pre, _profile({k_: 0.5 for k_ in pre_scores}, polarity))[0] == pytest.approx(0.0)
    # the pro-social item never enters k; with one control item there is nothing to estimate
    only_one = _profile({("ctrl", "a"): 0.8, ("agree", "d"): 0.9}, polarity)
    assert math.isnan(flattening_factor(only_one, only_one)[0])


def test_the_methods_state_each_estimand_and_the_length_match(sim_run_dir: Path) -> None:
    tables = load_tables(sim_run_dir)
    text = " ".join(methods_section(tables))
    assert "Primary — susceptibility: (post − pre) − (sham − pre) = post − sham per agent" in text
    assert "Secondary — raw post − pre" in text and "Secondary — post − pre net of flattening" in text
    assert "Sham length match:" in text and "context characters 1.000–1.000" in text
    rows = compute_contrasts(tables, ("contagion",), AnalysisSettings(resamples=0, mixed=False))["contagion"].rows
    index = rows[rows["trait"] == PROSOCIAL]
    comparisons = set(index["comparison"])
    assert {"post − sham · one-malicious", f"{RAW_ROW} · one-malicious", f"{FLAT_ROW} · one-malicious"} <= comparisons
    secondary = index[index["comparison"].str.startswith((RAW_ROW, FLAT_ROW))]
    assert not secondary["significant"].any() and secondary["correction"].str.startswith("secondary").all()
    assert secondary["p"].notna().all() and secondary["estimate"].notna().all()


def test_without_sham_profiles_the_run_falls_back_to_post_minus_pre_and_says_so() -> None:
    records = play_grid(ValidationGrid(repetitions=2, interventions=("none",)), model_spec("null", 1), 1)
    with_sham = tables_from_records(records)
    for r in records:
        for p in r.players:
            p.sham_profile = None
    without = tables_from_records(records)
    assert with_sham.info.estimand == "post − sham" and without.info.estimand == "post − pre"
    assert without.info.sham_missing == 2 * (3 + 2)  # 2 reps × (3 all-default + 2 one-malicious) agents
    row = without.drift.iloc[0]
    assert row["drift"] == pytest.approx(row["post"] - row["pre"])
    text = " ".join(methods_section(without))
    assert "Estimands. Primary: post − pre per agent" in text and "have no sham profile" in text
    rows = compute_contrasts(without, ("contagion",), AnalysisSettings(resamples=0, mixed=False))["contagion"].rows
    assert "post − pre · one-malicious" in set(rows["comparison"])
    assert not rows["comparison"].str.startswith(RAW_ROW).any()
