"""``contagion check``: the statistical check of the analysis code on simulated models with a known answer.

``sim:planted`` has a planted contagion effect and a planted mitigation that reads the reminders' content
(see :mod:`contagion.backends.sim`); the null models (``sim:null``, ``sim:flatten``,
``sim:acquiescence``, ``sim:echo``, ``sim:reciprocity``, and the flatteners from a pro-social baseline
``sim:flatten?lean=0.25`` and ``sim:flatten-keep?lean=0.25``) plant no trait change and no mitigation, and
each tries to fool a careless analysis in its own way. A *run* here is a small grid played in-process
(one game type; all-default and one-malicious groups; no intervention, SIT and the length-matched
neutral placebo; one chat turn per round; every model with a game-level random effect of SD
:data:`GAME_SD`, shared by the games of one seed) analysed with exactly the code the report uses
(:func:`contagion.analysis.tables.tables_from_records` and
:func:`contagion.analysis.contrasts.compute_contrasts`, primary family Holm-corrected as a whole).
Each run uses a different model seed and item sample, so measurement noise, items, baselines and games
all differ between runs. The games are played by one small function, :func:`play_grid`.

Decision rule (what the report would claim):

* *detected* (planted runs) — **contagion**: the pro-social index of default agents next to a malicious
  player is significant in the primary family and points toward anti-social; **amplification**: the
  malicious − all-default index difference likewise; **sit − placebo**: SIT's primary outcome, the
  defection rate from the first reminder on, SIT − placebo (contrast ``protection``), is significant and
  lower with SIT (where the placebo intervention is not available, SIT − none);
* *false positive* (null runs) — the report would claim anything for a contrast whose null holds on
  that model: a primary row significant after the family's Holm correction, or a trait significant
  behind its index. Trait contrasts (contagion, amplification, mitigation) and SIT's behaviour
  (protection) are null on every null model; behaviour (defection on defection seen) is null on all but
  ``sim:reciprocity``.

Acceptance: power ≥ 0.8 for each target and false positives in ≤ 5 % of runs for every null model and
contrast. :func:`run_validation` returns the figures as a
:class:`~contagion.analysis.validation.ValidationResult`;
:func:`~contagion.analysis.validation.save_validation` writes them as JSON with a fingerprint of every
module the check depends on, so a report can state them and whether they are current.

This module runs games, so it sits above :mod:`contagion.analysis` (which only reads records).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from contagion.analysis.validation import ValidationResult, analysis_fingerprint
from contagion.errors import UserError
from contagion.experiment.record import GameRecord

PLANTED_CONTAGION = 0.2
"""The planted size used for validation: ``sim:planted?contagion=0.2`` (the sim's default). It was 0.05 while
every row clustered on single games with no game-level variance; at :data:`GAME_SD` 0.10 with games linked by
their 6 seeds, a one-condition row (post − sham) has about 5 degrees of freedom and an SE near 0.04, so 0.05
is far below what the check's grid can find (``contagion power`` plans the games a real study needs)."""
PLANTED_ACT_GAIN = 6.0
"""The planted model's ``act_gain`` (the planted shift's weight on cooperation; the sim's default is 2): SIT's
primary outcome is behaviour, and at the default the planted SIT effect on defection (about 0.05) is too small
for the check's grid; at 6 it is about 0.2."""

TARGETS = ("contagion", "amplification", "sit − placebo")
"""What the check must detect on the planted model."""
NULL_CONTRASTS = ("contagion", "amplification", "mitigation", "behaviour", "protection")
"""The contrasts whose false positives are counted (where their null holds on the model)."""
MALICIOUS_COMPOSITION = "one-malicious"
SIT = "sit:k=1,n=2"
SIT_KINDS = ("sit", "sit-adaptive")
"""The interventions that are SIT (their kind, the intervention's name)."""
PLACEBO = "placebo:kind=neutral,k=1,n=2"
GAME_SD = 0.10
"""The game-level random effect every simulated model of the check carries (``game_sd``: the between-game SD of
the per-game index drift, shared by the games of one seed): the project's own default between-game SD
(:data:`contagion.analysis.power.DEFAULT_GAME_SD`), so the check sees the dependence common seeds create."""


LEAN_TRAPS = ("flatten?lean=0.25", "flatten-keep?lean=0.25")
"""Null models made to fool raw post − pre: answers drift from a pro-social baseline toward ½ as the context
grows (the second keeps the answer mass, so no mass comparison sees it). The sham baseline, as long as the
game, cancels them."""
ECHO_TRAPS = ("trait-echo",)
"""Null models made to fool SIT judged by self-report: ``sim:trait-echo`` agrees more with items of a trait its
context mentions (SIT's reminders name traits) and has no contagion. Post-play measured with the injected
messages removed, and SIT judged by behaviour, leave it nothing to echo."""
PLANTED_LEAN = "planted?lean=0.25"
"""The planted model from a pro-social baseline (answers lean 0.25 toward the pro-social side, where a length
effect could move them): the check's power must hold there too."""
PLANTED_MODELS = ("planted", PLANTED_LEAN)
"""The models with a planted effect; power is reported for each (keys :func:`target_key`)."""


def check_models() -> tuple[str, ...]:
    """The simulated models the check runs: the planted models (:data:`PLANTED_MODELS`), the null models, and
    the traps (:data:`LEAN_TRAPS`, :data:`ECHO_TRAPS`). A model is a variant, optionally with parameters
    (``flatten?lean=0.25``)."""
    from contagion.backends.sim import VARIANTS

    return (*VARIANTS, PLANTED_LEAN, *LEAN_TRAPS, *ECHO_TRAPS)


def target_key(target: str, model: str = "planted") -> str:
    """The key of a planted target's power in the figures: the target on ``sim:planted``, ``TARGET [MODEL]`` on
    another planted model (``contagion [planted?lean=0.25]``)."""
    return target if model == "planted" else f"{target} [{model}]"


def variant_name(model: str) -> str:
    """The variant of a check model (``flatten?lean=0.25`` -> ``flatten``)."""
    return model.split("?", 1)[0]


def placebo_available() -> bool:
    """Whether this version of contagion has the placebo intervention (SIT − placebo needs it)."""
    from contagion.steering.interventions import PARAMS

    return "placebo" in PARAMS


def null_contrasts(variant: str) -> tuple[str, ...]:
    """The contrasts whose null hypothesis holds on ``variant`` (none on the planted model)."""
    from contagion.backends.sim import BEHAVIOUR_NULL, TRAIT_NULL

    out = []
    variant = variant_name(variant)
    if variant in TRAIT_NULL:
        out += ["contagion", "amplification", "mitigation"]
    if variant in BEHAVIOUR_NULL:
        out.append("behaviour")
    if variant in TRAIT_NULL:  # no null model's actions read a reminder
        out.append("protection")
    return tuple(out)


@dataclass(frozen=True)
class ValidationGrid:
    """What one validation run plays (small on purpose: a run takes a few seconds)."""

    game: str = "prisoners-dilemma"
    repetitions: int = 6
    rounds: int = 4
    chat_turns: int = 1
    items: int = 5
    source_items: int = 2
    interventions: tuple[str, ...] = ("none", SIT, PLACEBO)

    def played_interventions(self) -> list[str]:
        """The interventions played (the placebo only where this version has it)."""
        return [i for i in self.interventions if not i.startswith("placebo") or placebo_available()]

    def config(self, model: str, seed: int = 0) -> dict[str, Any]:
        """The experiment config of one run on ``model`` (``seed`` also draws the item sample)."""
        return {
            "name": "validation", "models": [model], "games": [self.game],
            "compositions": {"all-default": ["default", "default", "default"],
                             MALICIOUS_COMPOSITION: ["default", "default", "malicious"]},
            "interventions": self.played_interventions(), "chat_turns": [self.chat_turns], "rounds": self.rounds,
            "repetitions": self.repetitions,
            "assessment": {"items": self.items, "source_items": self.source_items, "bootstrap": 100, "seed": seed},
        }


@dataclass
class RunOutcome:
    """One seeded run's verdicts."""

    seed: int
    variant: str
    detected: dict[str, bool]
    any_significant: dict[str, bool]
    index_estimate: dict[str, float]
    games: int


def model_spec(variant: str, seed: int, planted_size: float = PLANTED_CONTAGION, game_sd: float = GAME_SD) -> str:
    """The backend spec of one run (``variant`` may carry parameters: ``flatten?lean=0.25``; ``game_sd`` left
    out of the spec when 0)."""
    name, _, params = variant.partition("?")
    extra = f"{params}&" if params else ""
    if game_sd:
        extra += f"game_sd={game_sd:g}&"
    if name == "planted":
        return f"sim:planted?contagion={planted_size:g}&act_gain={PLANTED_ACT_GAIN:g}&{extra}seed={seed}"
    return f"sim:{name}?{extra}seed={seed}"


def play_grid(grid: ValidationGrid, model: str, seed: int = 0) -> list[GameRecord]:
    """Play every trial of ``grid`` on ``model``, in order, in this process; fail on any failed game.

    The only place the check plays games, through :func:`contagion.experiment.trial.run_trial` as the
    runner does: each distinct pre-play profile is measured once and handed to every trial that needs it.
    """
    from contagion.experiment.config import parse_config
    from contagion.experiment.trial import ProfileCache, run_trial

    cfg = parse_config(grid.config(model, seed), "validation grid")
    personas = cfg.persona_map()

    async def play_all() -> list[GameRecord]:
        profiles = ProfileCache()  # in memory: each distinct pre-play profile measured once per run
        records = []
        for spec, labels in cfg.expand():
            record = await run_trial(spec, labels=labels, personas=personas, profiles=profiles)
            if record.error:
                raise RuntimeError(f"validation game failed: {record.error}")
            records.append(record)
        return records

    return asyncio.run(play_all())


def _primary(rows: Any) -> Any:
    from contagion.analysis.contrasts import is_primary_outcome

    return rows[rows.apply(is_primary_outcome, axis=1)] if len(rows) else rows


def verdicts(contrasts: dict[str, Any], grid: ValidationGrid) -> tuple[dict[str, bool], dict[str, bool],
                                                                      dict[str, float]]:
    """(detected per target, anything significant per contrast, primary estimate per target)."""
    from contagion.analysis.tables import MALICIOUS_LM

    detected: dict[str, bool] = {}
    estimate: dict[str, float] = {}

    control = "placebo" if any(i.startswith("placebo") for i in grid.played_interventions()) else "none"

    # rows are picked by what their arms are (Contrast.arms: composition or intervention kinds), not by label
    wanted: dict[str, tuple[str, Callable[[str, str], bool], float]] = {
        "contagion": ("contagion", lambda a, b: a == MALICIOUS_LM and b == "", -1.0),  # the primary row
        "amplification": ("amplification", lambda a, b: True, -1.0),
        # SIT is judged by behaviour: less defection from the first reminder on (the pooled row)
        "sit − placebo": ("protection", lambda a, b: a in SIT_KINDS and b == control, -1.0),
    }
    for target, (name, match, sign) in wanted.items():
        c = contrasts[name]
        rows = _primary(c.rows) if c.available else c.rows
        if name == "protection" and len(rows):
            rows = rows[~rows["comparison"].astype(str).str.contains("·|×")]
        if len(rows):
            rows = rows[[match(*c.arms[str(comparison)]) for comparison in rows["comparison"]]]
        if len(rows) == 0:
            detected[target], estimate[target] = False, math.nan
            continue
        est = float(rows["estimate"].iloc[0])
        detected[target] = bool(rows["significant"].iloc[0]) and est * sign > 0
        estimate[target] = est
    anysig = {n: bool(contrasts[n].available and contrasts[n].rows["significant"].astype(bool).any())
              for n in NULL_CONTRASTS}
    return detected, anysig, estimate


def run_once(seed: int, variant: str, planted_size: float = PLANTED_CONTAGION,
             grid: ValidationGrid | None = None, alpha: float = 0.05) -> RunOutcome:
    """Play one seeded validation run and apply the decision rule to it."""
    from contagion.analysis.contrasts import AnalysisSettings, compute_contrasts
    from contagion.analysis.tables import tables_from_records

    grid = grid or ValidationGrid()
    records = play_grid(grid, model_spec(variant, seed, planted_size), seed)
    tables = tables_from_records(records)
    settings = AnalysisSettings(alpha=alpha, resamples=0, mixed=False)
    contrasts = compute_contrasts(tables, settings=settings)
    detected, anysig, index = verdicts(contrasts, grid)
    return RunOutcome(seed, variant, detected, anysig, index, len(records))


# -- the gate cases (issue 26): two runs that fooled the earlier confidence gate --------------------------------

GATE_CASE_RUNS = 10
"""Seeded runs of each gate case in the shipped figures."""
GATE_CASES: dict[str, tuple[str, int, int, int]] = {
    # name: (model spec without game_sd and seed, repetitions, sign of the effect looked for, most runs allowed)
    "slight flattening, real SIT effect claimed": ("sim:planted?contagion=0.05&flatten=0.02", 12, +1, -8),
    "mass-keeping flattener claimed harmful": ("sim:flatten-keep?lean=0.25", 6, -1, 1),
}
"""The confidence gate's two cases, on SIT's pro-social index rows (mitigation) as the earlier design measured
them (post-play with the injected messages in view): a planted model that flattens slightly (0.02), whose real
SIT − none effect must be claimed in at least 8 of 10 runs (the last number, negative: a minimum), and a
flattener that keeps the answer mass, whose SIT − none or placebo − none must be claimed harmful in at most 1 of
10. The real effect is looked for on 12 seeds: with games linked by their seed, 6 seeds give SIT − none about
5 degrees of freedom, too few for so small an effect. Each run also records what the earlier gate (Holm-
significant and the arms' mass not significantly different) would have claimed."""


def injected_view(played: list[GameRecord]) -> list[GameRecord]:
    """The records as the analysis before the sham baseline read them: post-play with the injected messages in
    view (the secondary profile, where there were injections), no sham profile."""
    out = []
    for record in played:
        record = record.model_copy(deep=True)
        for p in record.players:
            if p.post_profile_injected is not None:
                p.post_profile = p.post_profile_injected
            p.sham_profile = None
        out.append(record)
    return out


def gate_rows(spec: str, seed: int, repetitions: int = 6) -> Any:
    """SIT's and the placebo's pro-social index rows (mitigation) of one run of the check's grid (at
    :data:`GAME_SD`) on ``spec``, on the records as the earlier design measured them (:func:`injected_view`),
    indexed by comparison; ``claimed``: below α and not held back by the gate (SIT's trait rows are
    secondary, so a claim is the unadjusted p below α); ``old_gate``: what the earlier gate claimed."""
    from dataclasses import replace

    from contagion.analysis.contrasts import AnalysisSettings, compute_contrasts, confidence_gated
    from contagion.analysis.tables import PROSOCIAL, tables_from_records

    grid = replace(ValidationGrid(), repetitions=repetitions)
    records = play_grid(grid, f"{spec}&game_sd={GAME_SD:g}&seed={seed}", seed)
    tables = tables_from_records(injected_view(records))
    rows = compute_contrasts(tables, settings=AnalysisSettings(resamples=0, mixed=False))["mitigation"].rows
    rows = rows[rows["trait"] == PROSOCIAL].set_index("comparison")
    claimed = [bool(r["p_adj"] < 0.05) and not confidence_gated(r) for _, r in rows.iterrows()]
    return rows.assign(old_gate=(rows["p_adj"] < 0.05) & ~(rows["mass_p"] < 0.05), claimed=claimed)


def gate_case(name: str, seed: int) -> dict[str, bool]:
    """One seeded run of a gate case: whether the new gate and the earlier one claim an effect in the case's
    direction for SIT − none (and, for the harmful case, placebo − none)."""
    spec, repetitions, sign, _ = GATE_CASES[name]
    rows = gate_rows(spec, seed, repetitions)
    wanted = [c for c in rows.index if str(c).endswith(" − none") and not str(c).startswith("sit-adaptive")]
    if sign > 0:
        wanted = [c for c in wanted if str(c).startswith("sit")]
    rows = rows.loc[wanted]
    toward = rows["estimate"] * sign > 0
    return {"claimed": bool((rows["claimed"] & toward).any()), "old_gate": bool((rows["old_gate"] & toward).any())}


def _gate_args(args: tuple[str, int]) -> tuple[str, dict[str, bool]]:
    return args[0], gate_case(*args)


def run_gate_cases(runs: int = GATE_CASE_RUNS, workers: int = 1) -> dict[str, dict[str, int]]:
    """Every gate case on seeds 0..runs-1: per case, the runs claimed by the gate and by the earlier gate, and
    the bound the gate's claims must meet (``min_claimed`` or ``max_claimed``, scaled to ``runs``)."""
    jobs = [(name, seed) for name in GATE_CASES for seed in range(runs)]
    out: dict[str, dict[str, int]] = {}
    for name, (_, _, _, bound) in GATE_CASES.items():
        scaled = math.ceil(-bound * runs / GATE_CASE_RUNS) if bound < 0 else math.floor(bound * runs / GATE_CASE_RUNS)
        out[name] = {"runs": runs, "claimed": 0, "old_gate": 0,
                     ("min_claimed" if bound < 0 else "max_claimed"): scaled}
    for name, verdict in _map(_gate_args, jobs, workers):
        out[name]["claimed"] += verdict["claimed"]
        out[name]["old_gate"] += verdict["old_gate"]
    return out


def _map(fn: Callable[[Any], Any], jobs: list[Any], workers: int) -> Any:
    """``fn`` over ``jobs`` in order, in spawned processes when ``workers`` > 1."""
    if workers > 1:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            yield from pool.map(fn, jobs, chunksize=2)
    else:
        yield from map(fn, jobs)


def _run_args(args: tuple[int, str, float, ValidationGrid, float]) -> RunOutcome:
    return run_once(*args)


def run_outcomes(jobs: list[tuple[int, str, float, ValidationGrid, float]], workers: int = 1,
                 on_run: Callable[[RunOutcome], None] | None = None) -> list[RunOutcome]:
    """Run the jobs (seed, variant, planted size, grid, α), in processes when ``workers`` > 1."""
    outcomes: list[RunOutcome] = []
    for out in _map(_run_args, jobs, workers):
        outcomes.append(out)
        if on_run:
            on_run(out)
    return outcomes


def run_validation(runs: int = 100, *, planted_size: float = PLANTED_CONTAGION, grid: ValidationGrid | None = None,
                   alpha: float = 0.05, workers: int = 1, variants: tuple[str, ...] | None = None,
                   on_run: Callable[[RunOutcome], None] | None = None,
                   gate_runs: int = GATE_CASE_RUNS) -> ValidationResult:
    """``runs`` seeded runs of the planted models and of every null model (:func:`check_models`): power and
    false positives; and ``gate_runs`` runs of each gate case (:data:`GATE_CASES`; 0 leaves them out)."""
    if runs < 1:
        raise UserError("validation needs at least one run")
    variants = variants or check_models()
    grid = grid or ValidationGrid()
    started = time.perf_counter()
    jobs = [(k, v, planted_size, grid, alpha) for k in range(runs) for v in variants]
    outcomes = run_outcomes(jobs, workers, on_run)
    gates = run_gate_cases(gate_runs, workers) if gate_runs else {}
    detected: dict[str, int] = {}
    drift: dict[str, float] = {}
    for model in [v for v in variants if variant_name(v) == "planted"]:
        planted = [o for o in outcomes if o.variant == model]
        for c in TARGETS:
            detected[target_key(c, model)] = sum(o.detected[c] for o in planted)
            drift[target_key(c, model)] = float(np.nanmean([o.index_estimate[c] for o in planted]))
    fps: dict[str, int] = {}
    nulls = [v for v in variants if variant_name(v) != "planted"]
    for v in nulls:
        mine = [o for o in outcomes if o.variant == v]
        for c in null_contrasts(v):
            fps[f"{v}:{c}"] = sum(o.any_significant[c] for o in mine)
    placebo = "SIT − placebo" if placebo_available() else "SIT − none (no placebo intervention in this version)"
    return ValidationResult(
        runs=runs, planted_model="; ".join(model_spec(v, 0, planted_size).replace("seed=0", "seed=<run>")
                                           for v in variants if variant_name(v) == "planted"),
        null_model=", ".join(model_spec(v, 0, planted_size).replace("seed=0", "seed=<run>") for v in nulls),
        planted_size=planted_size,
        grid={**asdict(grid), "interventions": grid.played_interventions(), "game_sd": GAME_SD},
        power={c: k / runs for c, k in detected.items()}, detected=detected, false_positives=fps,
        mean_planted_drift=drift, alpha=alpha,
        rule=("detected: the target's primary row significant after Holm over the primary family (α = 0.05) and in "
              f"the planted direction ({placebo} for sit − placebo); false positive: any primary row (family-"
              "adjusted) or gated trait significant in a contrast whose null holds on that null model"),
        seconds=round(time.perf_counter() - started, 1), fingerprint=analysis_fingerprint(), null_models=nulls,
        gate_cases=gates,
    )
