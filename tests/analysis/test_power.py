"""The power planner: its arithmetic on synthetic pilots, and ``contagion power`` on a simulated run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from contagion.analysis import power as P
from contagion.analysis.tables import load_tables
from contagion.cli import app

Z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)


def test_closed_form_normal_sample_size() -> None:
    # two arms of one cell each, σ² = 0.01 each: SE² = 0.02 / n; n = z² · 0.02 / δ²
    assert P.normal_games(0.02, 0.05) == pytest.approx(Z ** 2 * 0.02 / 0.0025)
    # a fixed (baseline) error: n = var / (δ²/z² − fixed); out of reach when fixed ≥ δ²/z²
    assert P.normal_games(0.01, 0.05, fixed_var=0.0001) == pytest.approx(0.01 / (0.0025 / Z ** 2 - 0.0001))
    assert math.isinf(P.normal_games(0.01, 0.05, fixed_var=1.01 * 0.0025 / Z ** 2))


def test_monte_carlo_power_matches_the_noncentral_t() -> None:
    m = P.Member("amplification", "a − b", "m", cells_a=1, cells_b=1, var_a=0.01, var_b=0.01)
    n = 40
    se = math.sqrt(m.se2(n))
    df = m.games(n) - 1
    crit = sps.t.ppf(0.975, df)
    exact = sps.nct.sf(crit, df, 0.05 / se)
    got = P.member_power([m], n, 0.05, correction="none", draws=20000)[0]
    assert got == pytest.approx(exact, abs=0.02)


def test_games_needed_alone_is_the_normal_formula_up_to_the_t_df() -> None:
    m = P.Member("amplification", "a − b", "m", cells_a=1, cells_b=1, var_a=0.01, var_b=0.01)
    closed = P.normal_games(0.02, 0.05)  # 31.4
    (n,) = P.games_needed([m], 0.05, correction="none", draws=20000)
    assert math.ceil(closed) <= n <= math.ceil(closed) + 2  # t quantiles need a game or two more than z


def test_more_cells_and_a_larger_family_change_n_as_they_should() -> None:
    one = P.Member("mitigation", "x − none", "m", cells_a=1, cells_b=1, var_a=0.01, var_b=0.01)
    four = P.Member("mitigation", "x − none", "m", cells_a=4, cells_b=4, var_a=0.01, var_b=0.01)
    (n1,) = P.games_needed([one], 0.05, correction="none")
    (n4,) = P.games_needed([four], 0.05, correction="none")
    assert n4 == pytest.approx(n1 / 4, abs=1.5)  # four cells per arm: a quarter of the games per cell
    alone = P.games_needed([one], 0.05, correction="holm")[0]
    with_nulls = P.games_needed([one], 0.05, correction="holm", extra_null=6)[0]
    bonferroni = P.games_needed([one], 0.05, correction="bonferroni", extra_null=6)[0]
    assert alone < with_nulls <= bonferroni  # six null tests beside it: Holm at α/7 for this one


def test_post_minus_pre_is_out_of_reach_when_the_baseline_error_is_too_large() -> None:
    m = P.Member("contagion", "post − pre · g", "m", cells_a=1, var_a=0.01, baseline_var=0.03 ** 2)
    plan = P.plan([m], 0.05, correction="none")
    assert math.isinf(plan.rows["games_per_cell"].iloc[0]) and math.isinf(plan.rows["games_uncorrected"].iloc[0])


def test_variance_of_a_synthetic_pilot_is_within_strata() -> None:
    rng = np.random.default_rng(0)
    strata = np.repeat(["a", "b", "c"], 200)
    values = np.repeat([0.0, 1.0, -1.0], 200) + rng.normal(0, 0.1, 600)  # stratum means differ a lot
    assert P.within_strata_variance(values, strata) == pytest.approx(0.01, rel=0.15)
    assert math.isnan(P.within_strata_variance(np.array([1.0, 2.0]), np.array(["a", "b"])))


def test_family_structure_of_a_grid_mirrors_the_contrasts() -> None:
    rows = []
    for comp, kind in (("all-default", "all-default"), ("one-malicious", "malicious-lm")):
        for iv, ivk in (("none", "none"), ("sit:k=1,n=2", "sit"), ("placebo:kind=neutral", "placebo")):
            rows.append({"model": "m", "game": "pd", "composition": comp, "composition_kind": kind,
                         "intervention": iv, "intervention_kind": ivk, "chat_turns": 1})
    fam = P.family_structure(pd.DataFrame(rows))
    names = [(c, comp) for c, comp, *_ in fam]
    # named by the primary drift as the contrast's rows are (post − sham; post − pre in a run without the sham)
    assert ("contagion", "post − sham · all-default") in names and ("contagion", "post − sham · one-malicious") in names
    raw = [(c, comp) for c, comp, *_ in P.family_structure(pd.DataFrame(rows), "post − pre")]
    assert ("contagion", "post − pre · one-malicious") in raw
    assert ("amplification", "one-malicious − all-default") in names
    assert ("mitigation", "sit:k=1,n=2 − placebo:kind=neutral") in names
    amp = next(f for f in fam if f[0] == "amplification")
    assert len(amp[3]) == 1 and len(amp[4]) == 1  # games without an intervention only, as the contrast does
    sit_none = next(f for f in fam if f[1] == "sit:k=1,n=2 − none")
    assert len(sit_none[3]) == 2  # mitigation pools over compositions


def test_members_from_a_simulated_pilot(sim_run_dir: Path) -> None:
    tables = load_tables(sim_run_dir)
    members = P.members_from_pilot(tables)
    kinds = {m.contrast for m in members}
    assert {"contagion", "amplification", "reciprocity", "chat", "mitigation"} <= kinds
    means = P.game_means(tables)
    for m in members:
        assert m.pilot_games > 0 and m.var_a >= 0
    amp = next(m for m in members if m.contrast == "amplification")
    assert amp.two_sample and amp.baseline_var == 0.0
    assert len(means) == means["cluster"].nunique()
    plan = P.plan(members, 0.05, extra_null=P.unplanned_members(tables, means))
    assert len(plan.rows) == len(members)
    assert (plan.rows["games_per_cell"].dropna() >= 2).all()


# -- the command ------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    from contagion.cli.app import console

    monkeypatch.setattr(console, "width", 250)  # the table is not folded into a narrow test terminal


def _power(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["power", *args])
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def test_cli_on_a_pilot_run(sim_run_dir: Path) -> None:
    code, out = _power(str(sim_run_dir), "--effect", "0.05")
    assert code == 0, out
    assert "amplification" in out and "n family" in out and "pilot variance" in out


def test_cli_on_a_config_states_its_default_variance(tmp_path: Path) -> None:
    cfg = tmp_path / "grid.yaml"
    cfg.write_text("name: t\nmodels: ['sim:planted']\ngames: [prisoners-dilemma]\n"
                   "compositions: {all-default: [default, default, default], one: [default, default, malicious]}\n"
                   "interventions: [none]\nrounds: 2\nrepetitions: 3\nassessment: {inventory: builtin}\n")
    code, out = _power(str(cfg), "--effect", "0.05", "--sd", "0.2")
    assert code == 0, out
    assert "default variance" in out and "0.2" in out and "amplification" in out


@pytest.mark.parametrize("kind", ["missing", "empty", "failed", "bad-config", "bad-effect"])
def test_cli_errors_are_one_line_exit_2(kind: str, tmp_path: Path, failed_run_dir: Path) -> None:
    args = {"missing": [str(tmp_path / "nope")], "empty": [str(tmp_path)], "failed": [str(failed_run_dir)],
            "bad-effect": [str(tmp_path), "--effect", "0"]}.get(kind)
    if kind == "bad-config":
        bad = tmp_path / "bad.yaml"
        bad.write_text("models: [nope:x]\n")
        args = [str(bad)]
    assert args is not None
    code, out = _power(*args)
    assert code == 2 and "Traceback" not in out and out.strip().startswith("Error"), out


def test_achieved_power_is_the_rows_own_test_at_the_effect() -> None:
    """The power a card states comes from the report row's own SE and df (linked clusters − 1)."""
    from contagion.analysis.power import achieved_power
    from contagion.bench.power import power

    row = {"estimate": 0.03, "se": 0.01, "df": 5}
    assert achieved_power(row, 0.05) == pytest.approx(power(0.05, 0.01, 5), abs=1e-12)
    assert 0.8 < achieved_power(row, 0.05) < 1
    # fewer independent clusters, less power at the same SE
    assert achieved_power({**row, "df": 2}, 0.05) < achieved_power(row, 0.05)
    assert math.isnan(achieved_power({"se": None, "df": 5}, 0.05))
    assert math.isnan(achieved_power({"se": 0.01, "df": 0}, 0.05))


@pytest.fixture(scope="module")
def common_seed_pilot() -> tuple:
    """One replication of the coverage test's three-game common-seed grid (6 seeds, a game-level effect of SD 0.10
    that a seed's games share across cells) and the report's contrasts of it."""
    from contagion.analysis.contrasts import AnalysisSettings, compute_contrasts
    from contagion.analysis.tables import tables_from_records
    from contagion.check import play_grid
    from contagion.coverage import MODEL, CoverageGrid, seeded

    tables = tables_from_records(play_grid(CoverageGrid(), seeded(MODEL, 0), 0))
    return tables, compute_contrasts(tables, settings=AnalysisSettings(resamples=0, mixed=False))


@pytest.mark.slow
def test_a_pilot_on_common_seeds_plans_the_standard_error_the_report_will_have(common_seed_pilot: tuple) -> None:
    """The planner's SE at the pilot's own size is the report row's SE on that pilot (within 25 %) for every
    planned comparison: games of one seed are one cluster, as the report counts them. Treating the games as
    independent is wrong both ways on such a grid — a seed's games move together, so a contagion row's SE was
    half the report's, and pairing by seed cancels what two arms share, so a mitigation row's was ~6× it."""
    tables, contrasts = common_seed_pilot
    members = P.members_from_pilot(tables)
    rows = {(c, str(r["comparison"])): r for c, con in contrasts.items() if con.available
            for _, r in con.index_rows().iterrows()}
    checked = {}
    for m in members:
        row = rows.get((m.contrast, m.comparison))
        if row is None or not np.isfinite(row["se"]):
            continue
        planned, independent = math.sqrt(m.se2(m.pilot_games)), math.sqrt(
            m.independent_var / m.pilot_games + (0.0 if m.two_sample else m.baseline_var))
        print(f"{m.contrast} · {m.comparison}: report SE {row['se']:.4f}, planned {planned:.4f}, as if independent "
              f"{independent:.4f}, design effect {m.design_effect:.2f}")
        assert m.linked and m.games(m.pilot_games) == m.pilot_games == 6
        assert 0.8 <= planned / row["se"] <= 1.25, m.comparison
        checked[m.contrast] = [*checked.get(m.contrast, []), independent / row["se"]]
    assert {"contagion", "amplification", "mitigation"} <= set(checked)
    assert max(checked["contagion"]) < 0.7  # independent games: too optimistic for a one-sample row
    assert min(checked["mitigation"]) > 3  # and far too pessimistic for a paired one


def test_a_config_plan_takes_the_seeds_as_its_clusters() -> None:
    """Without a pilot, games of one seed are taken as uncorrelated (the same SE as independent games) but the test
    still has seeds − 1 df, as the report's clustered rows do."""
    cells = pd.DataFrame([{"model": "m", "game": "g", "composition": c, "composition_kind": k, "intervention": "none",
                           "intervention_kind": "none", "chat_turns": 0}
                          for c, k in (("d", "all-default"), ("x", "malicious-lm"))], columns=list(P.CELL_COLUMNS))
    members = P.members_from_cells(cells, sd=0.1)
    for m in members:
        assert m.linked and m.design_effect == pytest.approx(1.0) and m.games(10) == 10
        assert m.se2(10) == pytest.approx(m.independent_var / 10 + (0.0 if m.two_sample else m.baseline_var))
