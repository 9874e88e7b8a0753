"""The report's figures: each one an inline SVG, a caption and the table of the numbers it shows.

The plotting primitives are in :mod:`contagion.analysis.figures`; the numbers come from
:mod:`contagion.analysis.contrasts` and :mod:`contagion.analysis.tables`, the text of the tables from
:mod:`contagion.analysis.report_text`. The attention section reads the table that ``contagion
attention`` wrote into the run directory (:attr:`contagion.experiment.rundir.RunDir.attention_csv`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from contagion.analysis import figures
from contagion.analysis.attention import BASELINE, correlations, decay_by_agent
from contagion.analysis.contrasts import AnalysisSettings, drift_by_cell, trait_matrix
from contagion.analysis.estimators import one_sample
from contagion.analysis.monitor import black_box_drift, monitor_correlations, projection_drift_by_round
from contagion.analysis.report_text import PROSOCIAL, Table, cell_table, coop_table, fnum
from contagion.analysis.tables import RunTables, cooperation_by_round
from contagion.errors import UserError
from contagion.experiment.rundir import RunDir


@dataclass
class Figure:
    id: str
    title: str
    svg: Markup
    caption: str
    table: Table | None = None
    extra_tables: list[Table] = field(default_factory=list)



def attention_figure(run_dir: Path, tables: RunTables | None = None) -> tuple[Figure | None, str]:
    """The attention section from ``RUN_DIR/attention/attention.csv`` (None when there is none), or a note
    saying why the table cannot be shown. Each share is shown beside its dilution baseline; with ``tables``
    each agent's attention decay is set against its own drift (scatter and correlations)."""
    path = RunDir(run_dir).attention_csv
    shown = path.relative_to(run_dir)
    if not path.exists():
        return None, ""
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        return None, f"{shown} could not be read: {exc}"
    need = {"tokens_so_far", "share_system"}
    if not need <= set(df.columns):
        return None, f"{shown} lacks the columns {sorted(need - set(df.columns))}"
    if df.empty:
        return None, f"{shown} holds no rows"
    if "intervention" not in df.columns:
        df["intervention"] = "all"
    keys = [c for c in ("game", "player", "turn") if c in df.columns]
    if keys:
        df = (df.groupby(["intervention", *keys], observed=True, dropna=False)
              .agg(tokens_so_far=("tokens_so_far", "mean"), share_system=("share_system", "mean"),
                   **({"share_injection": ("share_injection", "mean")} if "share_injection" in df.columns else {}),
                   **({BASELINE: (BASELINE, "mean")} if BASELINE in df.columns else {}))
              .reset_index())
    turn_means = df.copy()
    tokens = df["tokens_so_far"].astype(float)
    distinct = sorted(tokens.unique())
    if len(distinct) <= 12:
        df["tokens"] = tokens
    else:
        # ten equal-width bins closed on the left (the last on both sides): every length lands in one
        edges = np.linspace(float(tokens.min()), float(tokens.max()), 11)
        index = np.clip(np.searchsorted(edges, tokens.to_numpy(), side="right") - 1, 0, 9)
        df["tokens"] = (edges[index] + edges[index + 1]) / 2
    agg: dict[str, Any] = {"share_system": ("share_system", "mean"), "sd": ("share_system", "std"),
                           "n": ("share_system", "size")}
    if "share_injection" in df.columns:
        agg["share_injection"] = ("share_injection", "mean")
    base = BASELINE in df.columns
    if base:
        agg[BASELINE] = (BASELINE, "mean")
    out = df.groupby(["intervention", "tokens"], observed=True).agg(**agg).reset_index()
    out["se"] = out["sd"] / out["n"].pow(0.5)
    svg = figures.attention_lines(out)
    table = Table(["intervention", "tokens so far (bin centre)", "share to system prompt", "± SE",
                   *(["dilution baseline", "share − baseline"] if base else []),
                   *(["share to injections"] if "share_injection" in out else []), "turns"],
                  [[str(r["intervention"]), f"{r['tokens']:.0f}", fnum(r["share_system"]), fnum(r["se"]),
                    *([fnum(r[BASELINE]), fnum(r["share_system"] - r[BASELINE])] if base else []),
                    *([fnum(r["share_injection"])] if "share_injection" in out else []), str(r["n"])]
                   for r in out.to_dict("records")],
                  f"From {shown} (averaged over layers per turn; the band is ± 1 SE over turns, which are not "
                  "independent within a game).")
    fig = Figure("attention", "Attention to the system prompt", Markup(svg),
                 "Mean share of the attention that the position producing a player's next reply pays to its "
                 "system prompt, against the number of tokens already in its context, by intervention."
                 + (" Dashed: the dilution baseline (system-prompt tokens ÷ all tokens, the share an even spread "
                    "would give); decay that follows it is dilution, decay below it is the prompt losing attention."
                    if base else " (This table predates the dilution baseline: re-run contagion attention.)"),
                 table)
    if tables is not None:
        fig.extra_tables += attention_drift_tables(turn_means, tables)
        scatter = attention_drift_svg(turn_means, tables)
        if scatter is not None:
            fig.svg = Markup(str(fig.svg) + scatter)
    return fig, ""


def _agent_decay_and_drift(turn_means: pd.DataFrame, tables: RunTables) -> pd.DataFrame:
    """Per measured agent: attention decay (first − last turn; beyond dilution when the baseline is there)
    beside its own pro-social index drift (post − pre; negative is toward anti-social)."""
    if not {"game", "player", "turn"} <= set(turn_means.columns) or tables.drift.empty:
        return pd.DataFrame()
    decay = decay_by_agent(turn_means)
    agents = tables.agents[["game_id", "player", "drift"]].astype({"game_id": str, "player": str})
    return decay.merge(agents.rename(columns={"game_id": "game"}), on=["game", "player"], how="inner")


def attention_drift_tables(turn_means: pd.DataFrame, tables: RunTables) -> list[Table]:
    """The correlation of each agent's attention decay with its own drift (Pearson and Spearman, Fisher CI)."""
    df = _agent_decay_and_drift(turn_means, tables)
    if df.empty:
        return []
    rows = []
    for column, what in (("decay", "decay of the share"), ("decay_beyond_dilution", "decay beyond dilution")):
        if df[column].notna().sum() == 0:
            continue
        for c in correlations(df[column], df["drift"]):
            rows.append([what, c.method, fnum(c.r), f"[{fnum(c.ci_low)}, {fnum(c.ci_high)}]", fnum(c.p), str(c.n)])
    return [Table(["attention decay (first − last turn)", "correlation", "r", "95 % CI (Fisher z)", "p", "agents"],
                  rows, "Each measured agent's attention decay against its own pro-social index drift (post − pre). "
                  "A negative r means agents whose system prompt lost more attention drifted more toward "
                  "anti-social. Agents of one game are not independent, so the interval is optimistic.")]


def attention_drift_svg(turn_means: pd.DataFrame, tables: RunTables) -> str | None:
    """A scatter of attention decay (beyond dilution when available) against drift, one point per agent."""
    df = _agent_decay_and_drift(turn_means, tables)
    if df.empty:
        return None
    column = "decay_beyond_dilution" if df["decay_beyond_dilution"].notna().any() else "decay"
    with figures.rc_context(figures._RC):
        fig = figures._figure(4.8, 3.2)
        ax = fig.add_subplot()
        for j, (name, sub) in enumerate(df.groupby("intervention", sort=True)):
            ax.scatter(sub[column], sub["drift"], s=14, color=figures.PALETTE[j % len(figures.PALETTE)],
                       label=str(name))
        ax.axhline(0, color="#999999", linewidth=0.6)
        ax.set_xlabel("attention decay " + ("beyond dilution " if column != "decay" else "") + "(first − last turn)")
        ax.set_ylabel("pro-social index drift")
        ax.set_title("Attention decay and drift, per agent", loc="left")
        ax.legend(title="intervention", fontsize=7)
        return figures.to_svg(fig)



def drift_figure(tables: RunTables, settings: AnalysisSettings) -> Figure | None:
    drift = tables.drift
    if drift.empty:
        return None
    kinds = set(drift["intervention_kind"].astype(str))
    sub = drift[drift["intervention_kind"].astype(str) == "none"] if "none" in kinds else drift
    cells = drift_by_cell(sub, ("composition", "chat_turns"), settings=settings)
    if cells.empty:
        return None
    cells["chat"] = cells["chat_turns"].map(lambda t: "no chat" if int(t) == 0 else f"chat ({int(t)} turn/round)")
    svg = figures.points_with_ci(cells, x="composition", series="chat", title="Pro-social drift of default agents",
                                 ylabel=f"{tables.info.estimand} (pro-social index)")
    every = drift_by_cell(drift, settings=settings)
    return Figure(
        "drift", "Drift by condition", Markup(svg),
        f"{tables.info.estimand.capitalize()} pro-social index of default-persona agents (negative = toward "
        "anti-social), by group "
        "composition and chat, " + ("in games without an intervention" if "none" in kinds else "over all interventions")
        + ". Bars: 95% cluster-bootstrap CIs. Hollow points: fewer than "
        f"{settings.min_games} distinct games.",
        cell_table(cells, ("composition", "chat_turns"), ""),
        [cell_table(every, ("model", "game", "composition", "intervention", "chat_turns"),
                     "Every condition cell (pro-social index drift of default agents).")],
    )


def mitigation_figure(tables: RunTables, settings: AnalysisSettings) -> Figure | None:
    drift = tables.drift
    if drift.empty or drift["intervention"].nunique() < 2:
        return None
    cells = drift_by_cell(drift, ("intervention", "composition"), settings=settings)
    if cells.empty:
        return None
    order = {k: i for i, k in enumerate(("none", "repeat-system", "sit", "sit-adaptive"))}
    kind = drift.groupby("intervention", observed=True)["intervention_kind"].first().astype(str).to_dict()
    cells["_o"] = cells["intervention"].map(lambda i: (order.get(kind.get(i, ""), 9), str(i)))
    cells = cells.sort_values(["_o", "composition"]).drop(columns="_o")
    svg = figures.points_with_ci(cells, x="intervention", series="composition",
                                 title="Mitigation: pro-social drift by intervention",
                                 ylabel=f"{tables.info.estimand} (pro-social index)")
    return Figure("mitigation", "Mitigation", Markup(svg),
                  f"{tables.info.estimand.capitalize()} pro-social index of default agents under each intervention, "
                  "per composition (pooled "
                  "over games and chat settings). Closer to zero = less drift. The mitigation contrast below tests "
                  "the differences.",
                  cell_table(cells, ("intervention", "composition"), ""))


def cooperation_figure(tables: RunTables) -> Figure | None:
    actions = tables.actions
    if actions.empty:
        return None
    kinds = set(actions["intervention_kind"].astype(str))
    sub = tables
    if "none" in kinds and len(kinds) > 1:
        sub = RunTables(tables.drift, actions[actions["intervention_kind"].astype(str) == "none"], tables.players,
                        tables.games, tables.info)
    who = "focal" if bool(sub.actions["focal"].any()) else "lm"
    coop = cooperation_by_round(sub, ("game", "composition"), who=who)
    if coop.empty:
        return None
    svg = figures.cooperation_lines(coop, title="Cooperation over rounds, by composition")
    whose = "default (measured) agents" if who == "focal" else "language-model players"
    return Figure("cooperation", "Cooperation over rounds", Markup(svg),
                  f"Share of the {whose}' actions that were cooperate, per round, per game and composition"
                  + (" (games without an intervention)" if sub is not tables else "")
                  + ". Invalid actions count as not cooperating.", coop_table(coop))


def heatmap_figure(tables: RunTables) -> Figure | None:
    means, counts = trait_matrix(tables.drift)
    if means.empty:
        return None
    # columns: compositions in order, and within each the interventions as the study orders them
    kinds = tables.drift.groupby("intervention", observed=True)["intervention_kind"].first().astype(str).to_dict()
    rank = {k: i for i, k in enumerate(("none", "repeat-system", "sit", "sit-adaptive"))}

    def column_key(col: str) -> tuple[str, int, str]:
        comp, _, iv = col.partition(" · ")
        return comp, rank.get(kinds.get(iv, ""), 9), iv

    order = sorted(means.columns, key=column_key)
    means, counts = means[order], counts[order]
    labels = tables.drift.drop_duplicates("trait").set_index("trait")["polarity"].astype(str).to_dict()
    shown = means.copy()
    shown.index = [f"{t} ({labels.get(t, '')})" if t != PROSOCIAL else "pro-social index" for t in means.index]
    svg = figures.heatmap(shown, title="Per-trait drift of default agents", colorbar="mean post − pre")
    rows = []
    for trait in means.index:
        for col in means.columns:
            v = means.loc[trait, col]
            if pd.notna(v):
                rows.append([str(trait), str(labels.get(trait, "")), str(col), fnum(v, signed=True),
                             str(int(counts.loc[trait, col]))])
    table = Table(["trait", "polarity", "composition · intervention", "mean drift", "agents"], rows,
                  "Distinct agents, pooled over games and chat settings.",
                  numeric=[False, False, False, True, True])
    return Figure("traits", "Per-trait drift", Markup(svg),
                  "Mean post − pre of each trait for default agents, by composition and intervention. For "
                  "anti-social traits red (positive) is toward anti-social; for pro-social traits blue (negative) is. "
                  "Significance per trait is in the contrast tables.", table)



def _vector_doses(tables: RunTables) -> dict[str, tuple[str, float]]:
    """intervention label -> (steered trait, alpha) for the run's ``vector`` arms; ``none`` arms are alpha 0 of
    every steered trait (an empty trait)."""
    from contagion.steering import parse_params

    kinds = tables.players.groupby("intervention", observed=True)["intervention_kind"].first().astype(str)
    out: dict[str, tuple[str, float]] = {}
    for label, kind in kinds.items():
        if kind == "none":
            out[str(label)] = ("", 0.0)
        elif kind == "vector":
            try:
                params = parse_params(str(label).partition(":")[2])
                dose = float(params.get("alpha", math.nan))
            except (UserError, TypeError, ValueError):
                continue
            if math.isfinite(dose):
                out[str(label)] = (str(params.get("trait", "?")), dose)
    return out


def dose_response_figure(tables: RunTables, settings: AnalysisSettings) -> Figure | None:
    """White-box steering at several doses (a run with ``vector`` arms at two or more alphas of one trait, a
    ``none`` arm counting as alpha 0): the agents' cooperation and pro-social drift against alpha, with 95 %
    cluster-robust intervals. None when the run has no such arms."""
    if tables.players.empty or "intervention_kind" not in tables.players:
        return None
    doses = _vector_doses(tables)
    traits = sorted({t for t, _ in doses.values() if t})
    if len(traits) != 1:  # none, or several steered traits: alpha is not one axis
        return None
    if len({a for _, a in doses.values()}) < 2:
        return None
    alpha = {label: a for label, (_, a) in doses.items()}
    agents = tables.players[tables.players["focal"].astype(bool) & tables.players["intervention"].isin(alpha)]
    agents = agents.dropna(subset=["cooperation"])
    if agents.empty:
        return None
    rows = []
    for (label, comp), sub in agents.groupby(["intervention", "composition"], observed=True, sort=True):
        est = one_sample(sub["cooperation"].to_numpy(float), sub["cluster"].astype(str).to_numpy(), resamples=0)
        rows.append({"alpha": alpha[str(label)], "composition": comp, "estimate": est.estimate,
                     "ci_low": est.ci_low, "ci_high": est.ci_high, "n_agents": len(sub), "n_games": est.n_games,
                     "warning": _weak(est.n_games, settings)})
    coop = pd.DataFrame(rows).sort_values(["alpha", "composition"])
    coop["α"] = coop["alpha"].map(lambda a: f"{a:+g}" if a else "0 (none)")
    svg = figures.points_with_ci(coop, x="α", series="composition", title=f"Cooperation vs steering ({traits[0]})",
                                 ylabel="share of actions: cooperate", xlabel="alpha")
    table = Table(["alpha", "composition", "cooperation", "95 % CI", "agents", "clusters"],
                  [[r["α"], str(r["composition"]), fnum(r["estimate"]), f"[{fnum(r['ci_low'])}, {fnum(r['ci_high'])}]",
                    str(r["n_agents"]), str(r["n_games"])] for r in coop.to_dict("records")],
                  "Per agent, the share of its actions that were cooperate (invalid ones count as not cooperating); "
                  "mean over agents with the cluster-robust t interval (linked games as clusters).")
    extra = []
    drift = tables.drift[tables.drift["intervention"].isin(alpha)] if not tables.drift.empty else tables.drift
    if not drift.empty:
        cells = drift_by_cell(drift, ("intervention", "composition"), settings=settings)
        if not cells.empty:
            cells["alpha"] = cells["intervention"].map(lambda label: alpha[str(label)])
            cells = cells.sort_values(["alpha", "composition"])
            cells["α"] = cells["alpha"].map(lambda a: f"{a:+g}" if a else "0 (none)")
            svg += figures.points_with_ci(cells, x="α", series="composition",
                                          title=f"Pro-social drift vs steering ({traits[0]})",
                                          ylabel=f"{tables.info.estimand} (pro-social index)", xlabel="alpha")
            extra.append(Table(["alpha", "composition", f"pro-social drift ({tables.info.estimand})", "95 % CI",
                                "agents", "games"],
                               [[r["α"], str(r["composition"]), fnum(r["estimate"], signed=True),
                                 f"[{fnum(r['ci_low'])}, {fnum(r['ci_high'])}]", str(r["n_agents"]),
                                 str(r["n_games"])] for r in cells.to_dict("records")],
                               "The index drift of the same agents (measured unsteered after play)."))
    return Figure("dose-response", "Steering dose-response", Markup(svg),
                  f"White-box steering along {traits[0]} at each alpha of the run (the arm without an intervention "
                  "is alpha 0): the agents' cooperation in the games and the drift of their pro-social index, with "
                  "95 % intervals. Hollow points: fewer than "
                  f"{settings.min_games} distinct games. The profiles are measured without steering, so the index "
                  "shows what stays after the steered game, not the steered model's answers.", table, extra)


def _weak(games: int, settings: AnalysisSettings) -> str:
    return f"fewer than {settings.min_games} games" if games < settings.min_games else ""


def monitor_figure(tables: RunTables) -> Figure | None:
    """The white-box monitor (a monitored run): projection change per round beside the questionnaire drift of
    the same traits, and the correlation of the two across agents (None when the run was not monitored)."""
    by = ("composition", "intervention")
    rounds = projection_drift_by_round(tables, by)
    if rounds.empty:
        return None
    traits = list(dict.fromkeys(rounds["trait"].astype(str)))
    box = black_box_drift(tables, traits, by)

    def condition(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(condition=df["composition"].astype(str) + " · " + df["intervention"].astype(str))

    rounds, box = condition(rounds), condition(box)
    svg = figures.monitor_panels(rounds, box)
    table = Table(["trait", "condition", "round", "projection − round 1", "95 % CI", "agents", "clusters"],
                  [[str(r["trait"]), str(r["condition"]), str(int(r["round"])), fnum(r["estimate"], signed=True),
                    f"[{fnum(r['ci_low'])}, {fnum(r['ci_high'])}]", str(int(r["agents"])), str(int(r["clusters"]))]
                   for r in rounds.to_dict("records")],
                  "Each agent's readings of a round averaged, minus its round-1 average; the interval is the "
                  "cluster-robust t interval (linked games as clusters).")
    extra = []
    if not box.empty:
        extra.append(Table(["trait", "condition", f"questionnaire drift ({tables.info.estimand})", "95 % CI",
                            "agents"],
                           [[str(r["trait"]), str(r["condition"]), fnum(r["estimate"], signed=True),
                             f"[{fnum(r['ci_low'])}, {fnum(r['ci_high'])}]", str(int(r["agents"]))]
                            for r in box.to_dict("records")],
                           "The same agents' trait drift as the questionnaire measured it."))
    corr = monitor_correlations(tables)
    if corr:
        extra.append(Table(
            ["trait", "Pearson r", "95 % CI (clusters resampled)", "95 % CI (Fisher z)", "p", "agents", "clusters"],
            [[c.trait, fnum(c.r), f"[{fnum(c.boot_low)}, {fnum(c.boot_high)}]",
              f"[{fnum(c.fisher_low)}, {fnum(c.fisher_high)}]", fnum(c.p), str(c.agents), str(c.clusters)]
             for c in corr],
            "Across agents: projection change (last round − round 1) against the questionnaire drift of the same "
            "trait. A positive r means the monitor moved with the questionnaire. The cluster-bootstrap interval "
            "resamples whole linked games (quote it); the Fisher-z interval treats agents as independent and is "
            "optimistic."))
    return Figure("monitor", "White-box monitor", Markup(svg),
                  "Left: the mean projection of the agents' residual stream (the prompt's last token, at each "
                  "trait's chosen layer) on the trait's direction, as a change since round 1, per round; band: 95 % "
                  "interval. + is toward the statements high in the trait. Right: the same agents' questionnaire "
                  "drift of that trait, numbered as in the legend. The monitor reads the forward passes the turns "
                  "made anyway; its direction was found on the inventory's own statements, so it is a proxy, "
                  "not a measurement of the trait.", table, extra)


def report_figures(tables: RunTables, settings: AnalysisSettings, run_dir: Path) -> tuple[list[Figure], str]:
    """The report's figures in order (those the run has data for), and a note when the attention table of
    ``run_dir`` exists but cannot be shown."""
    figs = [f for f in (drift_figure(tables, settings), cooperation_figure(tables),
                        mitigation_figure(tables, settings), heatmap_figure(tables),
                        dose_response_figure(tables, settings), monitor_figure(tables))
            if f is not None]
    attention, attention_note = attention_figure(run_dir, tables)
    if attention is not None:
        figs.append(attention)
    return figs, attention_note
