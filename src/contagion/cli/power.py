"""``contagion power``: games per cell each primary contrast needs, from a pilot run or a config.

The arithmetic is :mod:`contagion.analysis.power` (normal approximation on the between-game variance of
the per-game mean drift, Holm over the primary family); this module reads the input and prints a table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from contagion.cli.app import app, console, user_errors
from contagion.errors import UserError

if TYPE_CHECKING:
    from contagion.analysis.power import Member

DEFAULT_SD = 0.10
"""Mirrors :data:`contagion.analysis.power.DEFAULT_GAME_SD` (the analysis stack loads only when the command runs)."""


def _fmt(x: float, digits: int = 4) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "out of reach"
    return f"{x:.{digits}g}"


def _members_from_config(path: Path, sd: float, baseline_sd: float) -> tuple[list[Member], dict[str, int], str]:
    import pandas as pd

    from contagion.analysis import power as P
    from contagion.analysis.tables import Seat, composition_kind
    from contagion.backends.registry import is_language_model, strategy_of
    from contagion.experiment.config import load_config

    cfg = load_config(path)
    cells = []
    for spec, labels in cfg.expand():
        if int(labels.get("rep", 0)) != 0:
            continue
        players = spec.game.players
        cells.append({"model": str(labels["model"]), "game": str(labels["game"]),
                      "composition": str(labels["composition"]),
                      "composition_kind": composition_kind(Seat(p.persona, is_language_model(p.backend),
                                                                strategy_of(p.backend)) for p in players),
                      "intervention": str(labels["intervention"]), "intervention_kind": spec.intervention.name,
                      "chat_turns": int(labels["chat_turns"])})
    frame = pd.DataFrame(cells, columns=list(P.CELL_COLUMNS))
    members = P.members_from_cells(frame, sd, baseline_sd)
    return members, P.unplanned_members(None, frame, cfg.rounds), (
        f"default variance: between-game SD of the per-game mean drift {sd:g} in every arm, games of one seed "
        f"uncorrelated, baseline error SD {baseline_sd:g} (assumed, not measured: run a pilot and give its run "
        "directory instead)")


def _members_from_run(run_dir: Path) -> tuple[list[Member], dict[str, int], str]:
    from contagion.analysis import power as P
    from contagion.analysis.tables import load_tables

    tables = load_tables(run_dir)
    if tables.info.counts.get("ok", 0) == 0:
        raise UserError(f"run {run_dir} has no finished games: nothing to estimate a variance from")
    members = P.members_from_pilot(tables)
    if not members:
        raise UserError(f"run {run_dir} has no default agents with pre- and post-play profiles: no primary contrast "
                        "to plan")
    if not any(math.isfinite(m.var_a) for m in members):
        raise UserError(f"run {run_dir} has too few games (fewer than 2 per arm) to estimate a between-game variance")
    flat = [m for m in members if m.se2(1.0) == 0]
    if flat:
        raise UserError(
            f"run {run_dir} shows no between-game variance for {flat[0].contrast} · {flat[0].comparison} (every game "
            "of its arms drifted exactly alike, e.g. a model without noise or sampling), so the games a test needs "
            "cannot be estimated from it; run a pilot whose games vary, or give a config with --sd")
    return members, P.unplanned_members(tables, P.game_means(tables)), (
        f"pilot variance from {run_dir} (of the per-game mean drift of default agents: across seeds, as the report "
        "clusters, where the pilot's games name their seeds; deff: that variance over that of independent games)")


@app.command()
@user_errors
def power(
    source: Path = typer.Argument(
        ..., metavar="RUN_DIR_OR_CONFIG", show_default=False,
        help="A pilot run directory (its variance is measured) or an experiment config YAML (a default variance is "
             "assumed, see --sd).",
    ),
    effect: float = typer.Option(
        0.05, "--effect", "-e",
        help="Smallest effect to detect, on the pro-social index drift scale (the estimate column of the report's "
             "contrasts; the check plants 0.05).",
    ),
    target: float = typer.Option(0.8, "--power", help="Power wanted for each contrast."),
    alpha: float = typer.Option(0.05, "--alpha", help="Family-wise error rate of the primary family."),
    correction: str = typer.Option(
        "holm", "--correction",
        help="holm: as the report corrects the primary family; bonferroni: a bound; none: each test alone at α.",
    ),
    sd: float = typer.Option(
        DEFAULT_SD, "--sd",
        help="With a config only: the assumed between-game SD of the per-game mean drift.",
    ),
    baseline_sd: float = typer.Option(
        0.0, "--baseline-sd",
        help="With a config only: the assumed SD of the shared baseline's measurement error (post − pre tests).",
    ),
) -> None:
    """Estimate the games per cell each primary contrast needs for power 0.8, before a paper-scale run.

    For each primary comparison (contagion per composition, amplification, reciprocity, chat, mitigation
    pairs; per model), the standard error with n games per cell (n seeds: a grid plays every cell on the same
    seeds, and the report clusters on the games a seed links) is SE² = V/n, plus σ²_baseline for post − pre
    (the shared baseline's measurement error, which more games never remove: such a contrast can be out of
    reach). From a pilot, V is the variance across seeds of the seed's mean drift of default agents in the
    arm, or of its paired difference between two arms; "deff" is V over what independent games would give
    (σ²_a/k_a + σ²_b/k_b, k = cells in an arm, σ² = between-game variance within strata): above 1 when a
    seed's games move together, below 1 when pairing by seed cancels what two arms share. From a config, V
    assumes independent games (σ = --sd). The table gives the uncorrected normal-approximation
    n = (z₁₋α/₂ + z_power)²·SE²₁/δ², and the n
    at which the test reaches the power inside the primary family, Holm-corrected as the report does
    (Monte Carlo; every planned comparison assumed to have the effect, the behaviour slope none).

    Examples:

      contagion power runs/pilot --effect 0.05

      contagion power examples/paper-grid.yaml --effect 0.05 --sd 0.08
    """
    from contagion.analysis import power as P

    if not (math.isfinite(effect) and effect > 0):
        raise UserError(f"--effect must be a positive number (got {effect:g})")
    if not 0 < target < 1 or not 0 < alpha < 1:
        raise UserError("--power and --alpha must lie strictly between 0 and 1")
    if correction not in P.CORRECTIONS:
        raise UserError(f"--correction must be one of {', '.join(P.CORRECTIONS)} (got {correction!r})")
    if not (math.isfinite(sd) and sd > 0) or not (math.isfinite(baseline_sd) and baseline_sd >= 0):
        raise UserError(f"--sd must be a positive number and --baseline-sd a number not below 0 (got {sd:g} and "
                        f"{baseline_sd:g})")
    if not source.exists():
        raise UserError(f"{source} does not exist: give a pilot run directory or an experiment config YAML")
    if source.is_dir():
        members, extra, basis = _members_from_run(source)
        kind = "pilot"
    else:
        members, extra, basis = _members_from_config(source, sd, baseline_sd)
        kind = "default variance"
        if not members:
            raise UserError(f"config {source} holds no primary contrast (it needs default agents in some composition)")
    result = P.plan(members, effect, power=target, alpha=alpha, correction=correction, extra_null=extra, source=kind)
    for model in dict.fromkeys(result.rows["model"]):
        table = Table(title=f"{model}: games per cell for power {target:g} at effect {effect:g} "
                            f"(α = {alpha:g}, {correction} over the primary family)")
        cols = ["contrast", "comparison", "cells", "SD a / b", "baseline SD", "pilot n", "pilot est.", "pilot deff",
                "n alone", "n family", "games"]
        pilot = kind == "pilot"
        for col in cols if pilot else [c for c in cols if not c.startswith("pilot")]:
            table.add_column(col, justify="left" if col in ("contrast", "comparison") else "right",
                             overflow="fold")
        for _, r in result.rows[result.rows["model"] == model].iterrows():
            sds = _fmt(r["sd_a"], 2) + ("" if r["test"] != "two-sample" else " / " + _fmt(r["sd_b"], 2))
            cells = [r["contrast"], r["comparison"], str(r["cells"]), sds, _fmt(r["baseline_sd"], 2)]
            if pilot:
                cells += [_fmt(r["pilot_games_per_cell"], 3), _fmt(r["pilot_estimate"], 2),
                          _fmt(r["design_effect"], 2)]
            table.add_row(*cells, _fmt(float(r["games_uncorrected"])), _fmt(float(r["games_per_cell"])),
                          _fmt(float(r["total_games"])))
        console.print(table)
    console.print("n alone: normal approximation, the test alone at α; n family: within the Holm-corrected family "
                  "(every planned contrast at the effect); games: n family × cells.", highlight=False)
    console.print(f"Variance: {basis}.", highlight=False)
    for note in result.notes:
        console.print(f"Note: {note}.", highlight=False)
    worst = result.rows["games_per_cell"].astype(float)
    finite = worst[worst.map(math.isfinite)]
    if len(finite):
        console.print(f"Games per cell for every reachable contrast: {int(finite.max())}.", highlight=False)
    if (worst == math.inf).any():
        console.print("Out of reach: a post − pre contrast whose baseline error alone exceeds what the effect allows; "
                      "measure more items (assessment.items) rather than more games.", highlight=False)
