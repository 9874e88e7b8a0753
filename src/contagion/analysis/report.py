"""The HTML report: one self-contained file (inline CSS and SVG figures, no network) about one run.

:func:`write_report` reads the run's store through :mod:`contagion.analysis.tables`, computes the
named contrasts of :mod:`contagion.analysis.stats`, draws the figures of
:mod:`contagion.analysis.figures`, and renders ``templates/report.html.j2`` with Jinja2 autoescaping:
every string from the store (condition names, errors, anything a model wrote) is escaped. The only
markup inserted unescaped is the SVG matplotlib produced (it escapes its own text).
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from contagion import __version__
from contagion.analysis import figures
from contagion.analysis.stats import (
    MIN_GAMES,
    AnalysisSettings,
    Contrast,
    compute_contrasts,
    drift_by_cell,
    trait_matrix,
)
from contagion.analysis.tables import (
    PROSOCIAL,
    RunTables,
    cooperation_by_round,
    games_per_cell,
    injections_by_condition,
    invalid_rates,
    load_tables,
    payoffs_by_condition,
)
from contagion.analysis.validation import (
    FP_TARGET,
    POWER_TARGET,
    ValidationResult,
    analysis_fingerprint,
    find_validation,
    wilson,
)
from contagion.errors import UserError

REPORT_FILE = "report.html"
ATTENTION_CSV = Path("attention") / "attention.csv"


# -- formatting -------------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is missing, not a number, NaN or infinite."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fnum(value: Any, digits: int = 3, signed: bool = False) -> str:
    """A number for a table: '—' when missing."""
    v = _finite(value)
    if v is None:
        return "—"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def fp(value: Any) -> str:
    """A p-value: '< 0.001' below a thousandth."""
    v = _finite(value)
    if v is None:
        return "—"
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def fci(low: Any, high: Any) -> str:
    a, b = fnum(low, signed=True), fnum(high, signed=True)
    return "—" if a == "—" or b == "—" else f"[{a}, {b}]"


def fpct(value: Any) -> str:
    """A share as a whole percentage: '—' when missing."""
    v = _finite(value)
    return "—" if v is None else f"{v:.0%}"


SHORT_TESTS = {
    "cluster-robust t (CR1, games as clusters, df = G−1) + baseline measurement error": "CR\u2011t+B",
    "cluster-robust t (CR1, games as clusters, df = G−1), paired by baseline": "CR\u2011t\u00a0paired",
    "cluster-robust t (CR1, games as clusters, df = G−1)": "CR\u2011t",
}
"""Short names in table cells; the legend under each table spells them out."""


def short_test(name: str) -> str:
    return SHORT_TESTS.get(name, name)


@dataclass
class Table:
    """A table for the template: header, rows of display strings, and per-row CSS classes."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    row_classes: list[str] = field(default_factory=list)
    numeric: list[bool] = field(default_factory=list)
    legend: str = ""

    def __post_init__(self) -> None:
        if not self.row_classes:
            self.row_classes = [""] * len(self.rows)
        if not self.numeric:
            self.numeric = [False] * len(self.columns)


@dataclass
class Figure:
    id: str
    title: str
    svg: Markup
    caption: str
    table: Table | None = None
    extra_tables: list[Table] = field(default_factory=list)


# -- sections -----------------------------------------------------------------------------------------


def _planned(config: dict[str, Any] | None) -> int | None:
    if not config:
        return None
    try:
        n = 1
        for key in ("models", "games", "interventions", "chat_turns"):
            n *= len(config.get(key) or [])
        n *= len(config.get("compositions") or {})
        return n * int(config.get("repetitions", 1))
    except (TypeError, ValueError):
        return None


def _join(items: list[str]) -> str:
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def methods_section(tables: RunTables) -> list[str]:
    """The methods, as paragraphs of plain text (autoescaped by the template)."""
    info = tables.info
    cfg = info.config or {}
    ok, failed = info.counts.get("ok", 0), info.counts.get("failed", 0)
    planned = _planned(cfg)
    paras: list[str] = []
    models = cfg.get("models") or sorted({str(m) for m in tables.games["model"].astype(str)})
    games = cfg.get("games") or sorted({str(g) for g in tables.games["game"].astype(str)})
    paras.append(
        f"Run “{cfg.get('name', 'unnamed')}”: {ok} finished game(s)"
        + (f" of {planned} planned" if planned is not None else "")
        + (f", {failed} failed" if failed else ", none failed")
        + f". Models: {_join(list(models))}. Games: {_join(list(games))}."
    )
    comps = []
    for name, seats in (cfg.get("compositions") or {}).items():
        kind = info.compositions.get(name, "")
        comps.append(f"{name} ({', '.join(map(str, seats))}{'; ' + kind if kind and kind != name else ''})")
    if comps:
        paras.append("Group compositions (seats; what the analysis treats them as): " + "; ".join(comps) + ".")
    ivs = cfg.get("interventions") or sorted({str(i) for i in tables.games["intervention"].astype(str)})
    chat = cfg.get("chat_turns", [])
    paras.append(
        f"Interventions: {_join(list(ivs))}. Rounds per game: {cfg.get('rounds', '?')}; chat turns per round: "
        f"{_join([str(c) for c in chat])} (0 = the no-chat control); players "
        f"{'are' if cfg.get('reveal_horizon', True) else 'are not'} told the number of rounds. "
        f"Repetitions per cell: {cfg.get('repetitions', '?')} (seeds {min(info.seeds) if info.seeds else '?'}–"
        f"{max(info.seeds) if info.seeds else '?'}, common to every cell)."
    )
    gen = cfg.get("generation") or {}
    if gen:
        paras.append(
            f"Generation: temperature {gen.get('temperature', '?')}, top-p {gen.get('top_p', '?')}, at most "
            f"{gen.get('max_tokens', '?')} tokens per reply, generation seed {gen.get('seed', '?')}. Actions: "
            + _join([f"{n} by {'log-probability scoring' if m == 'score' else 'parsing generated text'}"
                     for m, n in info.action_methods.most_common()]) + " (action mode "
            f"{cfg.get('action_mode', 'auto')}); an unparseable action is recorded as invalid, never as cooperation."
        )
    assess = cfg.get("assessment") or {}
    traits = tables.traits
    polarity = (tables.drift.drop_duplicates("trait").set_index("trait")["polarity"].astype(str).to_dict()
                if len(tables.drift) else {})
    trait_txt = ", ".join(f"{t} ({polarity.get(t, '?')})" for t in traits) or "none"
    methods = ", ".join(f"{m} ({n} profiles)" for m, n in info.methods.most_common()) or "—"
    debiased = info.debiased.get(True, 0)
    deb_txt = ("both answer orders asked and averaged (position bias cancelled)" if debiased and not
               info.debiased.get(False, 0) else "answers asked in one order only (position bias not cancelled)"
               if not debiased else "mixed: some profiles debiased, some not")
    items = sorted(set(info.items_per_trait.values()))
    if not cfg.get("measure_traits", True) or tables.drift.empty:
        paras.append("Traits: not measured in this run"
                     + (" (measure_traits: false)." if not cfg.get("measure_traits", True) else
                        " (no default-persona language-model player has both profiles)."))
    else:
        paras.append(
            f"Traits: measured for {'default-persona' if cfg.get('focal', 'default') == 'default' else 'every LM'} "
            f"players before play (context: the system prompt) and after play (context: the player's whole game "
            f"history), with yes/no persona statements from the {_join(list(info.inventories)) or '?'} inventory "
            f"({_join([str(i) for i in items]) or '?'} item(s) per trait, item seed {assess.get('seed', '?')}). "
            f"Traits (polarity): {trait_txt}. The pro-social index is the mean of the pro-social trait means minus "
            f"the mean of the anti-social ones. Scoring method: {methods}; {deb_txt}; "
            f"{_join([str(b) for b in sorted(info.bootstrap)]) or '?'} bootstrap resamples for per-profile CIs."
        )
    dup = _duplicates(tables)
    paras.append(
        "Statistics. Drift = post − pre per trait, paired over the items both profiles scored. Games are the "
        "unit of analysis: agents of one game share a conversation, so p-values come from cluster-robust (CR1) "
        "t-tests with G − 1 degrees of freedom (G games) and confidence intervals from a cluster bootstrap that "
        "resamples whole games (2,000 resamples). Games whose transcripts are identical (a deterministic model "
        "without chat replays the same game for every seed) count as one game"
        + (f" — {dup} game record(s) in this run replay another exactly" if dup else "") + ". "
        "A pre-play profile is measured once per model and system prompt and shared by every agent with that "
        "prompt: comparisons between conditions pair agents by that baseline (and by the other design factors), "
        "so its error cancels; a single condition's post − pre adds the baseline's error variance, estimated from "
        "the between-game spread of post-play readings (conservative). The pro-social index is the primary "
        f"outcome (α = 0.05); traits are Holm-adjusted across traits and called significant only when the index "
        f"is. Effect sizes: Cohen's d_z (post − pre) and d (two conditions), over agents. Cells with fewer than "
        f"{MIN_GAMES} distinct games are flagged: too few to support a claim. A linear mixed model (game random "
        "intercept) cross-checks each two-condition index contrast."
    )
    if info.versions:
        paras.append("Games played by contagion " + _join([f"{v} ({n})" for v, n in info.versions.most_common()])
                     + f"; report written by contagion {__version__}.")
    return paras


def _duplicates(tables: RunTables) -> int:
    ok = tables.ok_games
    if ok.empty:
        return 0
    distinct = ok.drop_duplicates(["model", "game", "composition", "intervention", "chat_turns", "cluster"])
    return len(ok) - len(distinct)


def contrast_tables(contrast: Contrast) -> tuple[Table | None, Table | None]:
    """The index rows (headline) and all trait rows of one contrast."""
    if not contrast.available or contrast.rows.empty:
        return None, None
    two = contrast.name != "contagion"
    cols = ["comparison", "model", "trait", "estimate", "95% CI (cluster bootstrap)", "p", "test",
            "p adj.", "effect", "games" if not two else "games A / B", "agents", "note"]

    def make(rows: pd.DataFrame, caption: str) -> Table:
        body, classes = [], []
        for r in rows.itertuples(index=False):
            games = str(r.n_games) if not two else f"{r.games_a} / {r.games_b}"
            body.append([str(r.comparison), str(r.model), f"{r.trait} ({r.polarity})" if r.trait != PROSOCIAL
                         else "pro\u2011social\u00a0index", fnum(r.estimate, signed=True), fci(r.ci_low, r.ci_high),
                         fp(r.p), short_test(str(r.test)), fp(r.p_adj), f"{r.effect_name} {fnum(r.effect, 2)}",
                         games, str(r.n_agents), str(r.warning)])
            classes.append(" ".join(c for c in ("sig" if r.significant else "", "weak" if r.warning else "")
                                    if c))
        return Table(cols, body, caption, classes,
                     [False, False, False, True, True, True, False, True, True, True, True, False])

    index = contrast.rows[contrast.rows["trait"] == PROSOCIAL]
    return make(index, "Pro-social index (primary outcome)"), make(contrast.rows, "Every trait")


TEST_LEGEND = ("Tests: CR-t = cluster-robust t-test (CR1, games as clusters, df = G−1); “+B” adds the shared "
               "baseline's measurement error; “paired” compares agents with the same baseline measurement. p adj. = "
               "index unadjusted (primary outcome), traits Holm-adjusted across traits and gated by the index. "
               "Rows in bold are significant at α = 0.05; shaded rows have too few games to support a claim. "
               "Effect: Cohen's d_z (post − pre) or d (two conditions).")


def headline_sentences(contrasts: dict[str, Contrast]) -> list[tuple[str, str, str]]:
    """(contrast, sentence, css class) for each index row, and a line for contrasts not in this run."""
    out: list[tuple[str, str, str]] = []
    for name, c in contrasts.items():
        if not c.available:
            out.append((name, f"not in this run — {c.reason}.", "absent"))
            continue
        for r in c.index_rows().itertuples(index=False):
            if name == "chat" and "·" in str(r.comparison):
                continue  # per-composition chat rows are in the contrast table
            direction = ("toward anti-social" if r.estimate < 0 else "toward pro-social") if math.isfinite(
                r.estimate) else ""
            if name == "contagion":
                what = f"{r.comparison.replace('post − pre · ', 'default agents in ')}: pro-social drift"
            else:
                what = f"{r.comparison}: difference in pro-social drift"
            games = f"{r.n_games} games" if name == "contagion" else f"{r.games_a} vs {r.games_b} games"
            verdict = "significant" if r.significant else "not significant"
            text = (f"{what} {fnum(r.estimate, signed=True)} {direction} (95% CI {fci(r.ci_low, r.ci_high)}, "
                    f"cluster bootstrap; p {fp(r.p) if fp(r.p).startswith('<') else '= ' + fp(r.p)}, "
                    f"{short_test(str(r.test))}; {r.effect_name} = {fnum(r.effect, 2)}; {games}; model {r.model}) "
                    f"— {verdict} at α = 0.05")
            if r.warning:
                text += f"; caution: {r.warning}"
            out.append((name, text + ".", "sig" if r.significant else "ns"))
    return out


def validation_lines(result: ValidationResult | None, source: str) -> tuple[list[str], list[str]]:
    """Sentences about the validation figures, and warnings."""
    if result is None:
        return (["No validation figures were found for this analysis code. Run `contagion check --out "
                 "RUN_DIR/validation.json` to produce them."], ["the analysis code has no validation figures"])
    lines: list[str] = []
    for c in result.power:
        lo, hi = wilson(result.detected[c], result.runs)
        flo, fhi = wilson(result.false_positives[c], result.runs)
        lines.append(
            f"Validation of this analysis code, {c}: power {result.power[c]:.2f} (95% CI {lo:.2f}–{hi:.2f}) at planted "
            f"size contagion={result.planted_size:g} (mean pro-social drift {result.mean_planted_drift[c]:+.3f}); "
            f"false positives {result.false_positives[c]}/{result.runs} on the null twin (95% CI {flo:.2f}–{fhi:.2f})."
            f" Targets: power ≥ {POWER_TARGET}, false positives ≤ {FP_TARGET:.0%}.")
    lines.append(f"{result.runs} seeded runs of {result.planted_model} and of {result.null_model}, each "
                 f"{result.grid.get('repetitions')} games per composition ({result.grid.get('game')}, all-default and "
                 f"one-malicious, {result.grid.get('rounds')} rounds, {result.grid.get('items')} items per trait). "
                 f"Rule: {result.rule}. Source: {source}; analysis code {result.fingerprint}.")
    warnings = []
    if result.fingerprint != analysis_fingerprint():
        warnings.append(f"the validation figures are for analysis code {result.fingerprint}, not this code "
                        f"({analysis_fingerprint()}); rerun `contagion check`")
    if not result.passed:
        warnings.append("the analysis code did not meet its validation targets (see Validation)")
    return lines, warnings


def _coop_table(coop: pd.DataFrame) -> Table:
    return Table(["game", "composition", "round", "cooperation", "invalid", "actions", "games"],
                 [[str(r.game), str(r.composition), str(r.round), fpct(r.rate), fpct(r.invalid), str(r.n),
                   str(r.games)] for r in coop.itertuples(index=False)], "",
                 numeric=[False, False, True, True, True, True, True])


def _cell_table(cells: pd.DataFrame, by: tuple[str, ...], caption: str) -> Table:
    rows, classes = [], []
    for r in cells.to_dict("records"):
        rows.append([*(str(r[b]) for b in by), fnum(r["estimate"], signed=True), fci(r["ci_low"], r["ci_high"]),
                     fp(r["p"]), short_test(str(r["test"])), fnum(r["effect"], 2), str(r["n_games"]),
                     str(r["records"]), str(r["n_agents"]), str(r["warning"])])
        classes.append("weak" if r["warning"] else "")
    return Table([*(b.replace("_", " ") for b in by), "drift", "95% CI (cluster bootstrap)", "p", "test", "d_z",
                  "distinct games", "records", "agents", "note"], rows, caption, classes,
                 [False] * len(by) + [True, True, True, False, True, True, True, True, False], TEST_LEGEND)


def _attention(run_dir: Path) -> tuple[Figure | None, str]:
    path = run_dir / ATTENTION_CSV
    if not path.exists():
        return None, ""
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        return None, f"{ATTENTION_CSV} could not be read: {exc}"
    need = {"tokens_so_far", "share_system"}
    if not need <= set(df.columns):
        return None, f"{ATTENTION_CSV} lacks the columns {sorted(need - set(df.columns))}"
    if df.empty:
        return None, f"{ATTENTION_CSV} holds no rows"
    if "intervention" not in df.columns:
        df["intervention"] = "all"
    keys = [c for c in ("game", "player", "turn") if c in df.columns]
    if keys:
        df = (df.groupby(["intervention", *keys], observed=True, dropna=False)
              .agg(tokens_so_far=("tokens_so_far", "mean"), share_system=("share_system", "mean"),
                   **({"share_injection": ("share_injection", "mean")} if "share_injection" in df.columns else {}))
              .reset_index())
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
    out = df.groupby(["intervention", "tokens"], observed=True).agg(**agg).reset_index()
    out["se"] = out["sd"] / out["n"].pow(0.5)
    svg = figures.attention_lines(out)
    table = Table(["intervention", "tokens so far (bin centre)", "share to system prompt", "± SE",
                   *(["share to injections"] if "share_injection" in out else []), "turns"],
                  [[str(r["intervention"]), f"{r['tokens']:.0f}", fnum(r["share_system"]), fnum(r["se"]),
                    *([fnum(r["share_injection"])] if "share_injection" in out else []), str(r["n"])]
                   for r in out.to_dict("records")],
                  f"From {ATTENTION_CSV} (averaged over layers per turn; the band is ± 1 SE over turns, which are not "
                  "independent within a game).")
    fig = Figure("attention", "Attention to the system prompt", Markup(svg),
                 "Mean share of the attention that the position producing a player's next reply pays to its "
                 "system prompt, against the number of tokens already in its context, by intervention.", table)
    return fig, ""


@dataclass
class ReportData:
    """Everything the template renders."""

    title: str
    run_dir: str
    generated: str
    version: str
    summary: list[tuple[str, str, str]]
    warnings: list[str]
    validation: list[str]
    validation_ok: bool | None
    methods: list[str]
    figures: list[Figure]
    contrasts: list[dict[str, Any]]
    tables: list[Table]
    failures: list[tuple[str, str]]
    failure_count: int
    attention_note: str
    viewer: str | None
    test_legend: str = ""


def _drift_figure(tables: RunTables, settings: AnalysisSettings) -> Figure | None:
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
                                 ylabel="post − pre (pro-social index)")
    every = drift_by_cell(drift, settings=settings)
    return Figure(
        "drift", "Drift by condition", Markup(svg),
        "Post − pre pro-social index of default-persona agents (negative = toward anti-social), by group "
        "composition and chat, " + ("in games without an intervention" if "none" in kinds else "over all interventions")
        + ". Bars: 95% cluster-bootstrap CIs. Hollow points: fewer than "
        f"{settings.min_games} distinct games.",
        _cell_table(cells, ("composition", "chat_turns"), ""),
        [_cell_table(every, ("model", "game", "composition", "intervention", "chat_turns"),
                     "Every condition cell (pro-social index drift of default agents).")],
    )


def _mitigation_figure(tables: RunTables, settings: AnalysisSettings) -> Figure | None:
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
                                 ylabel="post − pre (pro-social index)")
    return Figure("mitigation", "Mitigation", Markup(svg),
                  "Post − pre pro-social index of default agents under each intervention, per composition (pooled "
                  "over games and chat settings). Closer to zero = less drift. The mitigation contrast below tests "
                  "the differences.",
                  _cell_table(cells, ("intervention", "composition"), ""))


def _cooperation_figure(tables: RunTables) -> Figure | None:
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
                  + ". Invalid actions count as not cooperating.", _coop_table(coop))


def _heatmap_figure(tables: RunTables) -> Figure | None:
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


def _game_tables(tables: RunTables) -> list[Table]:
    out: list[Table] = []
    pay = payoffs_by_condition(tables)
    if not pay.empty:
        out.append(Table(["game", "composition", "intervention", "seat", "mean total payoff", "cooperation",
                          "players"],
                         [[str(r.game), str(r.composition), str(r.intervention), str(r.seat), fnum(r.payoff, 2),
                           fpct(r.cooperation), str(r.players)] for r in pay.itertuples(index=False)],
                         "Payoffs per player by seat (persona, or the scripted strategy).",
                         numeric=[False, False, False, False, True, True, True]))
    inv = invalid_rates(tables)
    if not inv.empty:
        out.append(Table(["model", "game", "composition", "intervention", "invalid actions", "actions", "games"],
                         [[str(r.model), str(r.game), str(r.composition), str(r.intervention), fpct(r.invalid),
                           str(r.actions), str(r.games)] for r in inv.itertuples(index=False)],
                         "Invalid-action rate of language-model players (unparseable actions; never counted as "
                         "cooperation).", numeric=[False, False, False, False, True, True, True]))
    inj = injections_by_condition(tables)
    if not inj.empty:
        out.append(Table(["intervention", "chat turns", "injections per game", "games"],
                         [[str(r.intervention), str(r.chat_turns), fnum(r.injections, 2), str(r.games)]
                          for r in inj.itertuples(index=False)],
                         "Steering messages injected per game (all players).", numeric=[False, True, True, True]))
    cells = games_per_cell(tables)
    if not cells.empty:
        out.append(Table(["model", "game", "composition", "intervention", "chat turns", "finished", "failed"],
                         [[str(r.model), str(r.game), str(r.composition), str(r.intervention), str(r.chat_turns),
                           str(r.ok), str(r.failed)] for r in cells.itertuples(index=False)],
                         "Games per condition cell.", numeric=[False] * 5 + [True, True]))
    return out


def _warnings(tables: RunTables, contrasts: dict[str, Contrast], cells: pd.DataFrame,
              settings: AnalysisSettings) -> list[str]:
    out: list[str] = []
    info = tables.info
    if info.counts.get("failed"):
        out.append(f"{info.counts['failed']} game(s) failed and are left out of every figure (see Failures).")
    if not cells.empty:
        weak = int((cells["warning"].astype(str) != "").sum())
        if weak:
            out.append(f"{weak} of {len(cells)} condition cells have fewer than {settings.min_games} distinct games: "
                       "their estimates cannot support a claim (hollow points, shaded rows).")
    dup = _duplicates(tables)
    if dup:
        out.append(f"{dup} game record(s) replay another game of the same cell exactly (deterministic model); "
                   "each distinct game counts once, so those cells have fewer independent games than records.")
    for c in contrasts.values():
        if c.available:
            weak_rows = c.index_rows()
            weak_rows = weak_rows[weak_rows["warning"].astype(str) != ""]
            for r in weak_rows.itertuples(index=False):
                out.append(f"{c.name} ({r.comparison}): {r.warning}.")
    if info.debiased.get(False) and not info.debiased.get(True):
        out.append("Answer-order debiasing was off: position bias in the yes/no answers is not cancelled, and it "
                   "can be as large as the trait effects (set assessment.debias: true).")
    if any("sampled" in m for m in info.methods):
        out.append("Some profiles were scored by the sampled fallback (no log-probabilities): they are noisier.")
    if len({m for m in info.methods}) > 1:
        out.append("Profiles were scored by more than one method: " + ", ".join(sorted(info.methods)) + ".")
    inv = invalid_rates(tables)
    if not inv.empty and float(inv["invalid"].max()) > 0.1:
        out.append("Some conditions have more than 10% invalid actions (see the invalid-action table).")
    if tables.drift.empty:
        out.append("No agent has both a pre-play and a post-play profile: drift cannot be analysed "
                   "(measure_traits was off, or no default-persona LM played).")
    return out


def build_report(run_dir: Path, settings: AnalysisSettings | None = None) -> ReportData:
    """Load, analyse and lay out a run (no file written); raises UserError for unusable runs."""
    settings = settings or AnalysisSettings()
    tables = load_tables(run_dir)
    info = tables.info
    ok, failed = info.counts.get("ok", 0), info.counts.get("failed", 0)
    if ok == 0 and failed == 0:
        raise UserError(f"{run_dir} holds no games yet; run `contagion run CONFIG --out {run_dir}` first")
    if ok == 0:
        first = info.failures[0][1].splitlines()[0] if info.failures and info.failures[0][1] else "unknown error"
        raise UserError(f"every game in {run_dir} failed ({failed} game(s)); nothing to report. First error: "
                        f"{first[:300]}")
    contrasts = compute_contrasts(tables, settings=settings)
    cells = drift_by_cell(tables.drift, settings=settings)
    validation, source = find_validation(run_dir)
    v_lines, v_warn = validation_lines(validation, source)
    figs = [f for f in (_drift_figure(tables, settings), _cooperation_figure(tables),
                        _mitigation_figure(tables, settings), _heatmap_figure(tables)) if f is not None]
    attention, attention_note = _attention(run_dir)
    if attention is not None:
        figs.append(attention)
    contrast_views = []
    for c in contrasts.values():
        index_table, all_table = contrast_tables(c)
        mixed = None
        if c.mixed:
            mixed = Table(["comparison", "model", "estimate", "95% CI (Wald)", "p", "test", "note"],
                          [[str(m["comparison"]), str(m["model"]), fnum(m["estimate"], signed=True),
                            fci(m["ci_low"], m["ci_high"]), fp(m["p"]), str(m["test"]), str(m["note"])]
                           for m in c.mixed],
                          "Cross-check of the index rows with a linear mixed model (statsmodels MixedLM).",
                          numeric=[False, False, True, True, True, False, False])
        contrast_views.append({"name": c.name, "question": c.question, "status": c.status, "reason": c.reason,
                               "note": c.note, "index": index_table, "all": all_table, "mixed": mixed})
    warnings = _warnings(tables, contrasts, cells, settings) + [f"Validation: {w}." for w in v_warn]
    if attention_note:
        warnings.append(attention_note + ".")
    viewer = "viewer.html" if (run_dir / "viewer.html").exists() else None
    cfg = info.config or {}
    return ReportData(
        title=f"contagion report — {cfg.get('name', run_dir.name)}", run_dir=str(run_dir),
        generated=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"), version=__version__,
        summary=headline_sentences(contrasts), warnings=warnings, validation=v_lines,
        validation_ok=None if validation is None else validation.passed, methods=methods_section(tables),
        figures=figs, contrasts=contrast_views, tables=_game_tables(tables), failures=info.failures[:50],
        failure_count=len(info.failures), attention_note=attention_note, viewer=viewer, test_legend=TEST_LEGEND,
    )


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("contagion.analysis", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_report(data: ReportData) -> str:
    return _environment().get_template("report.html.j2").render(r=data)


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the run's HTML report (default ``RUN_DIR/report.html``) and return its path."""
    run_dir = Path(run_dir)
    data = build_report(run_dir)
    html = render_report(data)
    target = Path(out) if out is not None else run_dir / REPORT_FILE
    if target.exists() and target.is_dir():
        target = target / REPORT_FILE
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(target)
    except OSError as exc:
        raise UserError(f"cannot write the report to {target}: {exc.strerror or exc}") from None
    return target
