"""The report's text: number formatting, sentences, paragraphs and tables (as display strings).

Everything here returns plain strings or :class:`Table` objects of strings; the template escapes
them (see :mod:`contagion.analysis.report`). The figures are built in
:mod:`contagion.analysis.report_figures`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from scipy import stats

from contagion import __version__
from contagion.analysis.contrasts import (
    ALPHA,
    DEFECTION_RATE,
    MIN_GAMES,
    AnalysisSettings,
    Contrast,
    sit_behavioural,
)
from contagion.analysis.coverage_figures import coverage_lines
from contagion.analysis.estimators import PAIRED_SCORE_CI
from contagion.analysis.tables import (
    PROSOCIAL,
    RAW_ESTIMAND,
    SHAM_ESTIMAND,
    RunTables,
    games_per_cell,
    injections_by_condition,
    invalid_rates,
    payoffs_by_condition,
)
from contagion.analysis.validation import (
    FP_TARGET,
    POWER_TARGET,
    ValidationResult,
    analysis_fingerprint,
)
from contagion.experiment.rundir import RunDir
from contagion.experiment.support import low_support

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
    "cluster-robust t (CR1, linked games as clusters, df = G−1), paired by baseline and seed":
        "CR\u2011t\u00a0paired\u00a0by\u00a0seed",
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


def action_method_text(method: str) -> str:
    """How an action method reads in the report (``score:first-token-top-logprobs`` → log-probability scoring)."""
    if method == "score:sampled-fallback":
        return "the sampled fallback (answer frequencies, no log-probabilities)"
    if method.startswith("score:"):
        name = method.removeprefix("score:")
        if name in ("scripted", "simulated"):
            return f"a {name} player's rule ({name})"
        return f"log-probability scoring ({name})"
    return "parsing generated text" if method.startswith("generate") else method


def configs_text(configs: list[dict[str, Any]]) -> str | None:
    """A paragraph describing every config of an extended run (None for a run of one config)."""
    if len(configs) < 2:
        return None
    parts = []
    for i, entry in enumerate(configs, 1):
        cfg = entry.get("config") or {}

        def listed(key: str, cfg: dict[str, Any] = cfg) -> str:
            return _join([str(v) for v in cfg.get(key) or []])

        parts.append(f"{i}. grid {entry.get('grid_hash', '?')}: models {listed('models')}; games {listed('games')}; "
                     f"compositions {listed('compositions')}; interventions {listed('interventions')}; rounds "
                     f"{cfg.get('rounds', '?')}; chat turns {listed('chat_turns')}; repetitions "
                     f"{cfg.get('repetitions', '?')}")
    return (f"This run directory holds {len(configs)} configs (extended with --extend); the games of all of them "
            "are analysed together, and the design described above is the first one's: " + "; ".join(parts) + ".")


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
    extended = configs_text(info.configs)
    if extended:
        paras.append(extended)
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
            + _join([f"{n} by {action_method_text(m)}" for m, n in info.action_methods.most_common()])
            + " (action mode "
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
            f"players before play (context: the system prompt) and after play (context: the player's game "
            f"history with the interventions' injected messages removed), with yes/no persona statements from the "
            f"{_join(list(info.inventories)) or '?'} inventory "
            f"({_join([str(i) for i in items]) or '?'} item(s) per trait, item seed {assess.get('seed', '?')}). "
            f"Traits (polarity): {trait_txt}. The pro-social index is the mean of the pro-social trait means minus "
            f"the mean of the anti-social ones. Scoring method: {methods}; {deb_txt}; "
            f"{_join([str(b) for b in sorted(info.bootstrap)]) or '?'} bootstrap resamples for per-profile CIs."
        )
        paras += estimand_paragraphs(tables)
    if info.record_methods:
        paras.append("Scoring methods per finished game record (actions and profiles): "
                     + _join([f"{m}: {n}" for m, n in info.record_methods.most_common()]) + ".")
    dup = duplicates(tables)
    paras.append(
        "Statistics. Drift = post − pre per trait, paired over the items both profiles scored. Games are the "
        "unit of analysis: agents of one game share a conversation, and a grid plays every cell on common seeds, "
        "so games of one seed share its random draws (and whatever a seed's history does to the model) across "
        "compositions, interventions and game types. Every estimator therefore clusters on linked games — the "
        "connected components of games sharing a seed or a transcript, per model; a deterministic model without "
        "chat replays the same game for every seed, and identical transcripts are one game"
        + (f" ({dup} game record(s) in this run replay another exactly)" if dup else "") + " — and p-values come "
        "from cluster-robust (CR1) t-tests with G − 1 degrees of freedom (G linked clusters), the 95% interval "
        "being the same test's t interval. Two-condition comparisons played on common seeds pair the arms by seed "
        "as well as by baseline (fixed effects per baseline × seed; the within-seed difference cancels what a "
        "seed shares), where the strata both arms share keep at least 80% of the agents; otherwise by baseline "
        "alone. "
        "A pre-play profile is measured once per model and system prompt and shared by every agent with that "
        "prompt: comparisons between conditions pair agents by that baseline (and by the other design factors), "
        "so its error cancels; a single condition's post − pre adds the baseline's error variance, estimated from "
        "the between-game spread of post-play readings (conservative). The pro-social index is the primary "
        f"outcome (α = 0.05); traits are Holm-adjusted across traits and called significant only when the index "
        f"is. SIT's primary outcome is behaviour (the protection contrast): the default agents' defection rate "
        f"from their first reminder on, SIT − none and SIT − each placebo, within game × composition × chat "
        f"blocks, clustered on linked games; its trait rows against none and the placebos are secondary. "
        f"Confidence gate: a two-condition index difference is claimed only when it also exceeds what the arms' "
        f"movement toward ½ explains — each agent's index drift net of I_pre·(k − 1), with k the ratio of its "
        f"control (neutral) items' mean |score − ½| after and before play, compared between the arms as the index "
        f"is, significant at α in the same direction; the arms' answer-mass drift is reported with an equivalence "
        f"test (TOST) against a margin of ±0.02. Effect sizes: Cohen's d_z (post − pre) and d (two conditions), "
        f"over agents. Cells with fewer than {MIN_GAMES} independent clusters (linked games) are flagged: too few "
        f"to support a claim. A linear mixed model (game random "
        "intercept) cross-checks each two-condition index contrast."
    )
    if info.versions:
        paras.append("Games played by contagion " + _join([f"{v} ({n})" for v, n in info.versions.most_common()])
                     + f"; report written by contagion {__version__}.")
    return paras


def estimand_paragraphs(tables: RunTables) -> list[str]:
    """What the drift rows estimate, one sentence each (primary first), and how well the sham matched."""
    info = tables.info
    out: list[str] = []
    if info.estimand == SHAM_ESTIMAND:
        out.append(
            "Estimands. Primary — susceptibility: (post − pre) − (sham − pre) = post − sham per agent, the drift "
            "beyond what a neutral conversation of the same length does, where the sham profile asks the same "
            "items after a scripted neutral history with the same system prompt and, message by message, the same "
            "roles and length in characters as the game history it stands in for. Secondary — raw post − pre: the "
            "drift before subtracting the sham (labelled as such; never called significant). Secondary — post − "
            "pre net of flattening: post − k · pre for the pro-social index, where k, the root-mean-square distance "
            "from ½ of the agent's control-trait answers after play over before, measures how far its answers "
            "moved toward ½ (its CI adds k's jackknife error over the control items). Secondary — post-play with "
            "injections in view: recorded for agents that received injections (post_profile_injected), not "
            "analysed here.")
        if info.sham_match:
            chars = [b / a for a, b, _, _ in info.sham_match if a]
            toks = [d / c for _, _, c, d in info.sham_match if c and d]
            out.append(
                f"Sham length match: {len(info.sham_match)} agent(s); sham/post-play context characters "
                f"{min(chars):.3f}–{max(chars):.3f}" + (
                    f"; prompt tokens per question {min(toks):.3f}–{max(toks):.3f} (mean {sum(toks) / len(toks):.3f})"
                    if toks else "; prompt tokens not reported by the backend") + ".")
    else:
        out.append(
            "Estimands. Primary: post − pre per agent (the drift between the pre-play and the post-play profile)"
            + (f"; {info.sham_missing} measured agent(s) have no sham profile (recorded before the sham baseline "
               "or with sham: false), so this run cannot subtract a length-matched baseline and post − pre "
               "includes whatever a long context alone does" if info.sham_missing else "")
            + ". Secondary — post − pre net of flattening: post − k · pre for the pro-social index, k measuring how "
            "far the control-trait answers moved toward ½.")
    return out


def duplicates(tables: RunTables) -> int:
    ok = tables.ok_games
    if ok.empty:
        return 0
    distinct = ok.drop_duplicates(["model", "game", "composition", "intervention", "chat_turns", "cluster"])
    return len(ok) - len(distinct)


def contrast_tables(contrast: Contrast) -> tuple[Table | None, Table | None]:
    """The index rows (headline) and all trait rows of one contrast."""
    if not contrast.available or contrast.rows.empty:
        return None, None
    two = contrast.name not in ("contagion", "answer_mass")
    ci = ("95% CI (cluster-robust t; protection: scaled by discordance)" if contrast.name == "protection"
          else "95% CI (cluster-robust t)")
    cols = ["comparison", "model", "trait", "estimate", ci, "p", "test",
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

    if contrast.name == "protection":
        return make(contrast.rows, "Defection from the first reminder on (SIT's primary outcome; per-composition "
                                   "and SIT × composition rows secondary)"), None
    index = contrast.rows[contrast.rows["trait"] == PROSOCIAL]
    if index.empty:  # a contrast of another outcome (slopes, defection rates, answer mass): its own rows
        primary = contrast.index_rows()
        return make(primary if not primary.empty else contrast.rows, "Primary outcome" if not primary.empty
                    else "Outcome (a caveat, outside the primary family)"), None
    caption = "Pro-social index (primary outcome)"
    if contrast.name == "mitigation" and any(sit_behavioural(r) for _, r in index.iterrows()):
        caption = ("Pro-social index (primary outcome, except SIT − none and SIT − placebo: secondary, SIT's "
                   "primary outcome is behaviour, see protection)")
    return make(index, caption), make(contrast.rows, "Every trait")


TEST_LEGEND = ("Tests: CR-t = cluster-robust t-test (CR1, df = G−1; clusters are linked games: games sharing a seed "
               "or a transcript count once; games columns count these clusters); “+B” adds the shared "
               "baseline's measurement error; “paired” compares agents with the same baseline measurement, “by seed” "
               "also on the same seed; the 95% CI is the test's t interval (SIT's protection rows paired by seed: "
               "the same t-test inverted with its SE scaled, at each hypothesised difference, by the number of "
               "paired actions that differ between the arms it needs, so it excludes 0 exactly when the test "
               "rejects). p adj. = "
               "index unadjusted (primary outcome), traits Holm-adjusted across traits and gated by the index. "
               "Rows in bold are significant at α = 0.05; shaded rows have too few games to support a claim. "
               "Effect: Cohen's d_z (post − pre) or d (two conditions).")


def contagion_sentence(comparison: str) -> str:
    """A contagion row's label as a reader's phrase: ``post − sham · C`` -> "default agents in C (post − sham)"."""
    for estimand in (SHAM_ESTIMAND, RAW_ESTIMAND):
        if comparison.startswith(estimand + " · "):
            return f"default agents in {comparison.removeprefix(estimand + ' · ')} ({estimand})"
    return comparison


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
            if name == "behaviour":  # a slope of defection, not a drift of the index
                out.append((name, _behaviour_sentence(r), "sig" if r.significant else "ns"))
                continue
            if str(r.trait) == DEFECTION_RATE:  # a difference of defection rates, not a drift of the index
                out.append((name, _rate_sentence(r), "sig" if r.significant else "ns"))
                continue
            if name == "protection":
                if "·" not in str(r.comparison) and "×" not in str(r.comparison):  # the rest: in its table
                    out.append((name, _protection_sentence(r), "sig" if r.significant else "ns"))
                continue
            direction = ("toward anti-social" if r.estimate < 0 else "toward pro-social") if math.isfinite(
                r.estimate) else ""
            if name == "contagion":
                what = f"{contagion_sentence(str(r.comparison))}: pro-social drift"
            else:
                what = f"{r.comparison}: difference in pro-social drift"
            games = f"{r.n_games} games" if name == "contagion" else f"{r.games_a} vs {r.games_b} games"
            after = (" (secondary: SIT's primary outcome is behaviour, see protection)"
                     if name == "mitigation" and sit_behavioural(r._asdict()) else "")
            text = _row_sentence(r, f"{what} {fnum(r.estimate, signed=True)} {direction}",
                                 f"{short_test(str(r.test))}; {r.effect_name} = {fnum(r.effect, 2)}; {games}",
                                 after=after)
            out.append((name, text, "sig" if r.significant else "ns"))
    return out


def _row_sentence(r: Any, head: str, details: str, *, role: str = "", after: str = "") -> str:
    """A row's headline: ``head`` (what and how much), its 95 % interval and p, ``details`` (test, sizes), the
    model, then the verdict at α (``role`` before it: "SIT's primary outcome, "), ``after`` it, and the row's
    caution if it has one."""
    p = fp(r.p)
    verdict = "significant" if r.significant else "not significant"
    how = ("cluster-robust t scaled by discordance" if str(getattr(r, "ci_method", "")) == PAIRED_SCORE_CI
           else "cluster-robust t")
    text = (f"{head} (95% CI {fci(r.ci_low, r.ci_high)}, {how}; p {p if p.startswith('<') else '= ' + p}, "
            f"{details}; model {r.model}) — {role}{verdict} at α = {ALPHA:g}{after}")
    if r.warning:
        text += f"; caution: {r.warning}"
    return text + "."


def _protection_sentence(r: Any) -> str:
    """The headline of a protection row: SIT's difference in defection from the first reminder on."""
    reading = ""
    if math.isfinite(r.estimate) and r.estimate:
        reading = " (less defection with SIT)" if r.estimate < 0 else " (more defection with SIT)"
    details = f"{short_test(str(r.test))}; {r.games_a} vs {r.games_b} games"
    discordant = getattr(r, "discordant", math.nan)
    if discordant is not None and isinstance(discordant, int | float) and math.isfinite(discordant):
        details += f"; {int(discordant):,} paired actions differ between the arms"
    return _row_sentence(r, f"{r.comparison}: difference in defection rate from the first reminder on "
                            f"{fnum(r.estimate, signed=True)}{reading}", details, role="SIT's primary outcome, ")


def _behaviour_sentence(r: Any) -> str:
    """The headline of a behaviour row: the slope of defecting on the defection seen the round before."""
    reading = ""
    if math.isfinite(r.estimate):
        reading = " (more defection after seeing defection)" if r.estimate > 0 else (
            " (less defection after seeing defection)" if r.estimate < 0 else "")
    return _row_sentence(r, f"{r.comparison}: slope {fnum(r.estimate, signed=True)}{reading}",
                         f"{short_test(str(r.test))}; {r.n_games} games")


_KIND_WORDS = {"malicious-lm": "next to a malicious LM co-player", "all-default": "in an all-default group",
               "scripted-defector": "next to a scripted always-defect co-player"}


def estimand(contrast: Contrast, comparison: str, drift: str = RAW_ESTIMAND) -> str:
    """What one comparison of a contrast estimates, in one sentence (the report's contrast section and the
    benchmark card's headlines both state it). ``drift``: the run's primary drift (:attr:`RunInfo.estimand`),
    which every drift comparison compares."""
    name = contrast.name
    a, b = contrast.arms.get(comparison, ("", ""))
    a_words, b_words = _KIND_WORDS.get(a, a or "arm A"), _KIND_WORDS.get(b, b or "arm B")
    what = (f"{SHAM_ESTIMAND} pro-social index drift (post-play minus the same items after a length-matched neutral "
            "history)" if drift == SHAM_ESTIMAND else f"{RAW_ESTIMAND} pro-social index drift")
    post = "post-play asked with the interventions' injected messages removed"
    if name == "contagion":
        comp = comparison.rpartition(" · ")[2]
        if comparison.startswith(SHAM_ESTIMAND + " · "):
            return (f"The mean over default agents in {comp} games without an intervention of their post-play "
                    "pro-social index minus the same items after a neutral history of their game history's length "
                    f"((post − pre) − (sham − pre); {post}).")
        if comparison.startswith(RAW_ESTIMAND + " · "):
            return (f"The mean over default agents in {comp} games without an intervention of their post − pre "
                    f"pro-social index on the held-out measured items ({post}; no length-matched baseline).")
        if comparison.startswith("raw "):
            return (f"Secondary: the mean over default agents in {comp} games without an intervention of their raw "
                    f"post − pre pro-social index, before subtracting the sham ({post}).")
        return (f"Secondary: the mean over default agents in {comp} games without an intervention of their post − "
                "k · pre pro-social index, k measuring how far their control-trait answers moved toward ½.")
    if name in ("amplification", "reciprocity"):
        return (f"The mean {what} of default agents {a_words} minus {b_words}, compared within baseline "
                "measurement, game, chat setting and intervention.")
    if name == "mitigation":
        a, _, b = comparison.partition(" − ")  # the interventions' labels (the arms hold their kinds only)
        return (f"The mean {what} of default agents under {a} minus under {b}, compared within baseline "
                "measurement, game, composition and chat setting, pooled over the compositions that played both.")
    if name == "chat":
        return (f"The mean {what} of default agents with chat minus without, compared within baseline measurement "
                "and the other design factors.")
    if name == "behaviour":
        return ("The change in an agent's probability of defecting per unit share of defection it saw the round "
                "before, within game type, intervention, chat setting and round (a slope).")
    if name == "protection":
        if "×" in comparison:
            return ("SIT − none in defection rate from the first reminder on next to a malicious LM co-player minus "
                    "the same in an all-default group (the SIT × composition interaction).")
        arm_a, _, rest = comparison.partition(" − ")
        arm_b, _, comp = rest.partition(" · ")
        where = f"in {comp} games" if comp else "pooled over the compositions that played both"
        return (f"The mean defection rate of default agents from their first reminder on under {arm_a} minus under "
                f"{arm_b}, within game × composition × chat blocks, {where}.")
    if name == "defection":
        return ("The mean defection rate from round 2 of focal default agents next to a malicious LM co-player "
                "minus next to a scripted always-defect co-player, within game type, in games without an "
                "intervention.")
    if name == "answer_mass":
        comp = comparison.removeprefix("post − pre · ")
        return (f"The mean over default agents in {comp} games without an intervention of their post − pre answer "
                "mass p(Yes) + p(No) on the measured items.")
    return f"{comparison} ({contrast.question})"


def _rate_sentence(r: Any) -> str:
    """The headline of a defection-rate row: a difference of two arms' defection rates."""
    return _row_sentence(r, f"{r.comparison}: difference in defection rate {fnum(r.estimate, signed=True)}",
                         f"{short_test(str(r.test))}; {r.games_a} vs {r.games_b} games")


def run_notices(tables: RunTables, cells: pd.DataFrame, settings: AnalysisSettings) -> list[tuple[str, str]]:
    """(kind, text) of what a reader must know before reading any number of this run, shown above the
    summary: ``simulated`` when its models are simulated (numbers from a planted rule, not a language
    model) and ``too-small`` when no condition has the games to support a claim."""
    out: list[tuple[str, str]] = []
    # every backend that answered: the grid's models and any seat played by another backend
    models = sorted({str(m) for m in tables.games.get("model", [])}
                    | {str(b) for b in tables.players.get("backend", [])})
    simulated = [m for m in models if _simulated(tables, m)]
    if simulated:
        every = len(simulated) == len([m for m in models if _language_model(tables, m)])
        out.append(("simulated", (
            f"{'Every language model in this run is' if every else 'Some models in this run are'} simulated "
            f"({', '.join(simulated)}), not a language model: answers follow a known rule (sim:planted plants "
            "contagion from hostile and defecting co-players, which SIT's reminders undo; the null models, sim:null "
            "and the others, plant none). The numbers show what the analysis finds when the truth is known, not "
            "how any real model behaves.")))
    if not cells.empty and bool((cells["n_games"] < settings.min_games).all()):
        most = int(cells["n_games"].max())
        out.append(("too-small", (
            f"This run is too small to support any claim: every condition has fewer than {settings.min_games} "
            f"distinct games (at most {most}). The numbers below show the pipeline working end to end; a "
            "'significant' row among them means nothing. A study needs more games per condition and a capable model "
            "(`contagion power CONFIG` says how many games a design needs).")))
    return out


SIMULATED_METHOD = "simulated"
"""The method a simulated model's scores record (the records' own word; analysis asks no backend)."""


def _simulated(tables: RunTables, spec: str) -> bool:
    """Whether the records say ``spec`` is a simulated model: every score it gave was made by a simulated
    model's rule (the method each score records), not asked of a language model."""
    methods = tables.info.backend_methods.get(spec)
    return bool(methods) and set(methods or ()) == {SIMULATED_METHOD}


def _language_model(tables: RunTables, spec: str) -> bool:
    """Whether the records say ``spec`` played as a language model (a scripted strategy does not)."""
    players = tables.players
    if players.empty or "backend" not in players.columns:
        return True
    rows = players[players["backend"].astype(str) == spec]
    return rows.empty or bool(rows["lm"].astype(bool).any())


VALIDATION_SCOPE = ("These figures are on simulated models (answers that follow a known rule, planted or null): they "
                    "say how often this analysis finds an effect that is there and claims one that is not, not how "
                    "any language model behaves.")
"""Said with the validation figures wherever they are shown (report, card): they come from simulated models."""


COVERAGE_READING = (f"With few clusters a cluster-robust t interval is exact only for normal cluster totals; where a "
                    f"seed's total is a sum of a few rare events (SIT's protection rows: the arms' actions differ "
                    f"only where a reminder flips a draw) a t interval misses mostly with the interval between the "
                    f"truth and zero, so those rows' interval scales its SE by the discordant action pairs each "
                    f"hypothesised difference needs. Rows on fewer than {MIN_GAMES} clusters carry a warning and "
                    f"support no claim.")
"""Said with the coverage figures: what limits them (``benchmarks/bench_few_clusters.py`` measures it)."""


def validation_lines(result: ValidationResult | None, source: str) -> tuple[list[str], list[str]]:
    """Sentences about the validation figures, and warnings."""
    if result is None:
        return ([f"No validation figures were found for this analysis code. Run `contagion check --out "
                 f"RUN_DIR/{RunDir.VALIDATION}` to produce them."], ["the analysis code has no validation figures"])
    lines = [f"Validation of this analysis code on simulated models, {line}." for line in result.summary_lines()]
    lines.append(f"Targets: power ≥ {POWER_TARGET}, false positives ≤ {FP_TARGET:.0%}.")
    lines.append(f"{result.runs} seeded runs of {result.planted_model} and of {result.null_model}, each "
                 f"{result.grid.get('repetitions')} games per composition ({result.grid.get('game')}, all-default and "
                 f"one-malicious, {result.grid.get('rounds')} rounds, {result.grid.get('items')} items per trait). "
                 f"Rule: {result.rule}. Source: {source}; analysis code {result.fingerprint}.")
    c_lines, c_warnings = coverage_lines(analysis_fingerprint())
    lines += c_lines
    if c_lines:
        lines.append(COVERAGE_READING)
    lines.append(VALIDATION_SCOPE)
    warnings = []
    if result.fingerprint != analysis_fingerprint():
        warnings.append(f"the validation figures are for analysis code {result.fingerprint}, not this code "
                        f"({analysis_fingerprint()}); rerun `contagion check`")
    if not result.passed:
        warnings.append("the analysis code did not meet its validation targets (see Validation)")
    return lines, warnings + c_warnings


def coop_table(coop: pd.DataFrame) -> Table:
    return Table(["game", "composition", "round", "cooperation", "invalid", "actions", "games"],
                 [[str(r.game), str(r.composition), str(r.round), fpct(r.rate), fpct(r.invalid), str(r.n),
                   str(r.games)] for r in coop.itertuples(index=False)], "",
                 numeric=[False, False, True, True, True, True, True])


def cell_table(cells: pd.DataFrame, by: tuple[str, ...], caption: str) -> Table:
    rows, classes = [], []
    for r in cells.to_dict("records"):
        rows.append([*(str(r[b]) for b in by), fnum(r["estimate"], signed=True), fci(r["ci_low"], r["ci_high"]),
                     fp(r["p"]), short_test(str(r["test"])), fnum(r["effect"], 2), str(r["n_games"]),
                     str(r["records"]), str(r["n_agents"]), str(r["warning"])])
        classes.append("weak" if r["warning"] else "")
    return Table([*(b.replace("_", " ") for b in by), "drift", "95% CI (cluster-robust t)", "p", "test", "d_z",
                  "distinct games", "records", "agents", "note"], rows, caption, classes,
                 [False] * len(by) + [True, True, True, False, True, True, True, True, False], TEST_LEGEND)



def game_tables(tables: RunTables) -> list[Table]:
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


def _mean_ci(values: pd.Series) -> tuple[float | None, float | None, float | None, int]:
    """Mean and a 95 % t interval over agents (descriptive: agents of one game are not independent)."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    n = len(v)
    if n == 0:
        return None, None, None, 0
    mean = float(v.mean())
    if n < 2:
        return mean, None, None, n
    half = float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


INSTRUMENT_LEGEND = ("Means over agents with a 95 % t interval that treats agents as independent (descriptive; "
                     "the contrasts above use the cluster-aware tests).")


def instrument_tables(tables: RunTables) -> list[Table]:
    """What the trait scores rest on: held-out vs SIT-quoted items, Yes- vs No-keyed items, answer mass,
    flattening toward ½, left-out items and the neutral control traits."""
    out: list[Table] = []
    agents = tables.agents
    sets = tables.drift_sets
    by = ["composition", "intervention"]
    if not agents.empty and not sets.empty:
        rows = []
        for key, group in agents.groupby(by, observed=True, sort=True):
            cond = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
            src = sets[(sets["set"] == "source") & (sets["composition"] == cond["composition"])
                       & (sets["intervention"] == cond["intervention"])]
            m, lo, hi, n = _mean_ci(group["drift"])
            sm, slo, shi, sn = _mean_ci(src["drift"])
            rows.append([cond["composition"], cond["intervention"], fnum(m, signed=True), fci(lo, hi), str(n),
                         fnum(sm, signed=True), fci(slo, shi), str(sn),
                         fnum(None if m is None or sm is None else sm - m, signed=True)])
        out.append(Table(["composition", "intervention", "drift, held-out items (primary)", "95% CI", "agents",
                          "drift, SIT source items", "95% CI", "agents", "source − held-out (echo)"], rows,
                         "Pro-social index drift on the measured items, which no intervention ever quotes, and "
                         "on SIT's own source items: where SIT looks better on its source items, that part of "
                         "its effect is echo of its own words.",
                         numeric=[False, False, True, True, True, True, True, True, True], legend=INSTRUMENT_LEGEND))
    keyed = sets[sets["set"].isin(["yes-keyed", "no-keyed"])] if not sets.empty else sets
    if not keyed.empty:
        rows = []
        for comp, group in keyed.groupby("composition", observed=True, sort=True):
            y = _mean_ci(group[group["set"] == "yes-keyed"]["drift"])
            nk = _mean_ci(group[group["set"] == "no-keyed"]["drift"])
            rows.append([str(comp), fnum(y[0], signed=True), fci(y[1], y[2]), fnum(nk[0], signed=True),
                         fci(nk[1], nk[2]), str(max(y[3], nk[3]))])
        out.append(Table(["composition", "drift, Yes-keyed items", "95% CI", "drift, No-keyed items", "95% CI",
                          "agents"], rows,
                         "Pro-social index drift by how items are keyed. A change of trait moves both the same way; "
                         "a growing (or shrinking) tendency to answer Yes moves them apart.",
                         numeric=[False, True, True, True, True, True], legend=INSTRUMENT_LEGEND))
    inst = tables.instrument
    if not inst.empty:
        rows = []
        for key, group in inst.groupby(by, observed=True, sort=True):
            cond = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
            mass = _mean_ci(group["mass_drift"])
            half = _mean_ci(group["toward_half_drift"])
            measured = int(group["measured_items"].sum())
            rows.append([cond["composition"], cond["intervention"], fnum(group["mass_pre"].mean()),
                         fnum(group["mass_post"].mean()), fnum(mass[0], signed=True), fci(mass[1], mass[2]),
                         fnum(half[0], signed=True), fci(half[1], half[2]),
                         f"{int(group['excluded_pre'].sum())} / {int(group['excluded_post'].sum())} of {measured}",
                         str(len(group))])
        out.append(Table(["composition", "intervention", "answer mass pre", "post", "mass drift", "95% CI",
                          "toward-½ drift", "95% CI", "items left out pre / post", "agents"], rows,
                         "Answer mass (p(Yes) + p(No)) and flattening: a falling mass is lost confidence, not a "
                         "change of trait, and a negative toward-½ drift (scores closer to 0.5) lowers high "
                         "pro-social and raises low anti-social scores — the contagion signature without any "
                         "contagion. Items under the mass threshold or with a floored answer are left out of "
                         "every primary score.",
                         numeric=[False, False, True, True, True, True, True, True, True, True],
                         legend=INSTRUMENT_LEGEND))
    neutral = tables.drift[tables.drift["polarity"] == "neutral"] if not tables.drift.empty else tables.drift
    if not neutral.empty:
        rows = []
        for key, group in neutral.groupby(["composition", "trait"], observed=True, sort=True):
            m, lo, hi, n = _mean_ci(group["drift"])
            rows.append([str(key[0]), str(key[1]), fnum(m, signed=True), fci(lo, hi), str(n)])
        out.append(Table(["composition", "control trait", "drift", "95% CI", "agents"], rows,
                         "Neutral control traits (no social valence): under real contagion they should not move; "
                         "if they drift as much as the social traits, the drift is the instrument, not the agent.",
                         numeric=[False, False, True, True, True], legend=INSTRUMENT_LEGEND))
    return out


def instrument_warnings(tables: RunTables) -> list[str]:
    """Warnings about what the trait scores rest on."""
    out: list[str] = []
    inst = tables.instrument
    if inst.empty:
        return out
    left_out = int(inst["excluded_pre"].sum() + inst["excluded_post"].sum())
    total = int(inst["measured_items"].sum()) * 2
    if left_out:
        out.append(f"{left_out} of {total} measured item scores were left out of the primary scores (answer mass "
                   "under the threshold, or an answer the server did not return); see the instrument tables")
    drop = pd.to_numeric(inst["mass_drift"], errors="coerce").mean()
    if pd.notna(drop) and drop < -0.05:
        out.append(f"answer mass fell by {abs(drop):.2f} on average after play: part of any drift may be lost "
                   "confidence rather than a change of trait")
    return out


def report_warnings(tables: RunTables, contrasts: dict[str, Contrast], cells: pd.DataFrame,
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
    dup = duplicates(tables)
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
    for backend, methods in sorted(info.backend_methods.items()):
        if len(methods) > 1:  # the same model measured two ways within one run: its records are not comparable
            out.append(f"The scoring method of {backend} changed within this run: "
                       + _join([f"{m} in {n} record(s)" for m, n in methods.most_common()])
                       + ". Compare its records only within one method.")
    for line in low_support(info.support):
        out.append(line[0].upper() + line[1:])
    if any(m.startswith("score:sampled") for m in info.action_methods):
        out.append(f"{info.action_methods['score:sampled-fallback']} action(s) were chosen by the sampled fallback "
                   "(no log-probabilities), not by log-probability scoring.")
    inv = invalid_rates(tables)
    if not inv.empty and float(inv["invalid"].max()) > 0.1:
        out.append("Some conditions have more than 10% invalid actions (see the invalid-action table).")
    if tables.drift.empty:
        out.append("No agent has both a pre-play and a post-play profile: drift cannot be analysed "
                   "(measure_traits was off, or no default-persona LM played).")
    return out



def contrast_view(contrast: Contrast, drift: str = RAW_ESTIMAND) -> dict[str, Any]:
    """What the template shows for one contrast: its question, status, tables and mixed-model cross-check."""
    index_table, all_table = contrast_tables(contrast)
    mixed = None
    if contrast.mixed:
        mixed = Table(["comparison", "model", "estimate", "95% CI (Wald)", "p", "test", "note"],
                      [[str(m["comparison"]), str(m["model"]), fnum(m["estimate"], signed=True),
                        fci(m["ci_low"], m["ci_high"]), fp(m["p"]), str(m["test"]), str(m["note"])]
                       for m in contrast.mixed],
                      "Cross-check of the index rows with a linear mixed model (statsmodels MixedLM).",
                      numeric=[False, False, True, True, True, False, False])
    estimands: list[tuple[str, str]] = []
    if contrast.available:
        shown = contrast.index_rows() if not contrast.index_rows().empty else contrast.rows
        for comparison in dict.fromkeys(str(c) for c in shown["comparison"]):
            estimands.append((comparison, estimand(contrast, comparison, drift)))
    return {"name": contrast.name, "question": contrast.question, "status": contrast.status,
            "reason": contrast.reason, "note": contrast.note, "index": index_table, "all": all_table,
            "mixed": mixed, "estimands": estimands}
