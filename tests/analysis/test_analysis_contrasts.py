"""The study's named contrasts on constructed tables with known differences: absent conditions stay absent,
constructed differences are found, traits are gated by the index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from contagion.analysis.contrasts import AnalysisSettings, compute_contrasts
from contagion.analysis.tables import PROSOCIAL, RunInfo, RunTables

TRAITS = (("agreeableness", "pro"), ("machiavellianism", "anti"))


def synthetic_tables(cells: dict[tuple[str, str, str, int], float], *, games: int = 12, seed: int = 0,
                     trait_shift: dict[str, float] | None = None) -> RunTables:
    """Drift rows for (composition, kind, intervention, chat) cells with a known mean index drift."""
    rng = np.random.default_rng(seed)
    rows = []
    for (comp, kind, iv, chat), mean in cells.items():
        for g in range(games):
            game_id = f"{comp}-{iv}-{chat}-{g}"
            seats = ("Avery", "Blake") if kind != "all-default" else ("Avery", "Blake", "Casey")
            for seat in seats:
                drifts = {}
                for trait, pol in TRAITS:
                    sign = -1 if pol == "pro" else 1
                    d = -sign * mean / 2 + (trait_shift or {}).get(trait, 0.0) + rng.normal(0, 0.01)
                    drifts[trait] = (pol, d)
                index = drifts["agreeableness"][1] - drifts["machiavellianism"][1]
                for trait, (pol, d) in [*drifts.items(), (PROSOCIAL, ("index", index))]:
                    rows.append({
                        "game_id": game_id, "cluster": game_id, "model": "m", "game": "pd", "composition": comp,
                        "composition_kind": kind, "intervention": iv, "intervention_kind": iv.split(":")[0],
                        "chat_turns": chat, "rep": g, "seed": g, "player": seat, "persona": "default",
                        "pre_key": f"pd-{seat}", "trait": trait, "polarity": pol, "pre": 0.5, "post": 0.5 + d,
                        "drift": d, "n_items": 5,
                    })
    drift = pd.DataFrame(rows)
    empty = pd.DataFrame()
    return RunTables(drift=drift, actions=empty, players=empty, games=empty, info=RunInfo())


def test_absent_conditions_are_not_in_this_run_never_invented() -> None:
    tables = synthetic_tables({("all-default", "all-default", "none", 1): -0.05})
    contrasts = compute_contrasts(tables, settings=AnalysisSettings(resamples=200, mixed=False))
    assert contrasts["contagion"].available
    for name in ("amplification", "reciprocity", "chat", "mitigation"):
        assert contrasts[name].status == "not in this run", name
        assert contrasts[name].rows.empty and contrasts[name].reason


def test_named_contrasts_find_the_constructed_differences() -> None:
    tables = synthetic_tables({
        ("all-default", "all-default", "none", 1): 0.0,
        ("one-malicious", "malicious-lm", "none", 1): -0.10,
        ("scripted-defector", "scripted-defector", "none", 1): -0.10,
        ("one-malicious", "malicious-lm", "sit", 1): -0.02,
        ("all-default", "all-default", "sit", 1): 0.0,
        ("one-malicious", "malicious-lm", "none", 0): -0.10,
        ("all-default", "all-default", "none", 0): 0.0,
    })
    c = compute_contrasts(tables, settings=AnalysisSettings(resamples=500, mixed=False))
    contagion = c["contagion"].index_rows().set_index("comparison")
    assert contagion.loc["post − pre · one-malicious", "estimate"] == pytest.approx(-0.10, abs=0.01)
    assert contagion.loc["post − pre · one-malicious", "significant"]
    assert not contagion.loc["post − pre · all-default", "significant"]
    amp = c["amplification"].index_rows().iloc[0]
    assert amp["estimate"] == pytest.approx(-0.10, abs=0.01) and amp["significant"]
    rec = c["reciprocity"].index_rows().iloc[0]
    assert abs(rec["estimate"]) < 0.01 and not rec["significant"]  # a scripted defector spreads it as much
    chat = c["chat"].index_rows()
    pooled = chat[chat["comparison"] == "chat − no chat (all compositions)"].iloc[0]
    assert abs(pooled["estimate"]) < 0.01
    mit = c["mitigation"].index_rows().set_index("comparison")
    assert mit.loc["sit − none", "estimate"] == pytest.approx(0.04, abs=0.01)  # (−0.02 − −0.10) / 2 compositions
    for row in c["amplification"].rows.itertuples():
        assert "cluster-robust" in row.test and row.ci_method.startswith("cluster-robust t")


def test_traits_are_gated_by_the_index() -> None:
    """A trait shift that leaves the index unchanged is not claimed (serial gatekeeping)."""
    shift = {"agreeableness": 0.05, "machiavellianism": 0.05}  # both up: the index does not move
    tables = synthetic_tables({("all-default", "all-default", "none", 1): 0.0}, trait_shift=shift)
    rows = compute_contrasts(tables, ("contagion",), AnalysisSettings(resamples=0, mixed=False))["contagion"].rows
    index = rows[rows["trait"] == PROSOCIAL].iloc[0]
    traits = rows[rows["trait"] != PROSOCIAL]
    assert not index["significant"]
    assert (traits["p_adj"] < 0.05).all()  # each trait alone would look significant …
    assert not traits["significant"].any()  # … but the index gates them
    assert traits["correction"].str.contains("Holm").all()
