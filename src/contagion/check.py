"""``contagion check``: the statistical check of the analysis code on simulated models with a known answer.

``sim:planted`` has a planted contagion effect (see :mod:`contagion.backends.sim`); ``sim:null`` is its
twin with every effect set to zero. A *run* here is a small grid played in-process (one game type,
all-default and one-malicious groups, no intervention, one chat turn per round) analysed with exactly
the code the report uses (:func:`contagion.analysis.tables.tables_from_records` and
:func:`contagion.analysis.contrasts.compute_contrasts`). Each run uses a different model seed, so
measurement noise, baselines and games all differ between runs. The games are played by one small
function, :func:`play_grid`.

Decision rule (what the report would claim), for two contrasts — **contagion** (post − pre of the
default agents next to a malicious player) and **amplification** (their drift minus the drift in an
all-default group):

* *detected* — the pro-social index (the primary outcome) is significant at α = 0.05 and points the
  planted way (toward anti-social);
* *false positive* (null twin) — the report would claim anything for the contrast: the index, or any
  trait (Holm across traits, gated by the index; see :mod:`contagion.analysis.contrasts`).

Acceptance: power ≥ 0.8 at the planted size and false positives in ≤ 5 % of the null runs, for each
contrast. :func:`run_validation` returns the figures as a
:class:`~contagion.analysis.validation.ValidationResult`;
:func:`~contagion.analysis.validation.save_validation` writes them as JSON with a fingerprint of the
validated source, so a report can state them and whether they are current.

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

from contagion.analysis.validation import ValidationResult, analysis_fingerprint
from contagion.errors import UserError
from contagion.experiment.record import GameRecord

PLANTED_CONTAGION = 0.05
"""The planted size used for validation: ``sim:planted?contagion=0.05`` (a quarter of the sim default, 0.2)."""

VALIDATED_CONTRASTS = ("contagion", "amplification")
MALICIOUS_COMPOSITION = "one-malicious"


@dataclass(frozen=True)
class ValidationGrid:
    """What one validation run plays (small on purpose: a run takes well under a second)."""

    game: str = "prisoners-dilemma"
    repetitions: int = 8
    rounds: int = 4
    chat_turns: int = 1
    items: int = 5

    def config(self, model: str) -> dict[str, Any]:
        """The experiment config of one run on ``model``."""
        return {
            "name": "validation", "models": [model], "games": [self.game],
            "compositions": {"all-default": ["default", "default", "default"],
                             MALICIOUS_COMPOSITION: ["default", "default", "malicious"]},
            "interventions": ["none"], "chat_turns": [self.chat_turns], "rounds": self.rounds,
            "repetitions": self.repetitions, "assessment": {"items": self.items, "bootstrap": 100},
        }


@dataclass
class RunOutcome:
    """One seeded run's verdicts per contrast."""

    seed: int
    variant: str
    detected: dict[str, bool]
    any_significant: dict[str, bool]
    index_estimate: dict[str, float]
    games: int


def play_grid(grid: ValidationGrid, model: str) -> list[GameRecord]:
    """Play every trial of ``grid`` on ``model``, in order, in this process; fail on any failed game.

    The only place the check plays games, through :func:`contagion.experiment.trial.run_trial` as the
    runner does: each distinct pre-play profile is measured once and handed to every trial that needs it.
    """
    from contagion.experiment.config import parse_config
    from contagion.experiment.trial import measure_agent, needed_profiles, run_trial

    cfg = parse_config(grid.config(model), "validation grid")
    personas = cfg.persona_map()

    async def play_all() -> list[GameRecord]:
        cache: dict[str, dict[str, Any]] = {}
        records = []
        for spec, labels in cfg.expand():
            pre: list[dict[str, Any] | None] = [None] * len(spec.game.players)
            for i, key, system in needed_profiles(spec, personas):
                if key not in cache:
                    profile = await measure_agent(spec.game.players[i].backend, system, spec.assessment)
                    cache[key] = profile.to_record()
                pre[i] = cache[key]
            record = await run_trial(spec, labels=labels, personas=personas, pre_profiles=pre)
            if record.error:
                raise RuntimeError(f"validation game failed: {record.error}")
            records.append(record)
        return records

    return asyncio.run(play_all())


def run_once(seed: int, variant: str, planted_size: float = PLANTED_CONTAGION,
             grid: ValidationGrid | None = None, alpha: float = 0.05) -> RunOutcome:
    """Play one seeded validation run and apply the decision rule to it."""
    from contagion.analysis.contrasts import AnalysisSettings, compute_contrasts
    from contagion.analysis.tables import PROSOCIAL, tables_from_records

    grid = grid or ValidationGrid()
    model = (f"sim:planted?contagion={planted_size:g}&seed={seed}" if variant == "planted"
             else f"sim:null?seed={seed}")
    records = play_grid(grid, model)
    tables = tables_from_records(records)
    settings = AnalysisSettings(alpha=alpha, resamples=0, mixed=False)
    contrasts = compute_contrasts(tables, VALIDATED_CONTRASTS, settings)
    detected: dict[str, bool] = {}
    anysig: dict[str, bool] = {}
    index: dict[str, float] = {}
    for name in VALIDATED_CONTRASTS:
        rows = contrasts[name].rows
        if name == "contagion":
            rows = rows[rows["comparison"].str.endswith(MALICIOUS_COMPOSITION)]
        idx = rows[rows["trait"] == PROSOCIAL]
        est = float(idx["estimate"].iloc[0]) if len(idx) else math.nan
        sig = bool(idx["significant"].iloc[0]) if len(idx) else False
        detected[name] = sig and est < 0
        anysig[name] = bool(rows["significant"].any())
        index[name] = est
    return RunOutcome(seed, variant, detected, anysig, index, len(records))


def _run_args(args: tuple[int, str, float, ValidationGrid, float]) -> RunOutcome:
    return run_once(*args)


def run_validation(runs: int = 100, *, planted_size: float = PLANTED_CONTAGION, grid: ValidationGrid | None = None,
                   alpha: float = 0.05, workers: int = 1,
                   on_run: Callable[[RunOutcome], None] | None = None) -> ValidationResult:
    """``runs`` seeded runs of the planted model and ``runs`` of the null twin; power and false positives."""
    if runs < 1:
        raise UserError("validation needs at least one run")
    grid = grid or ValidationGrid()
    started = time.perf_counter()
    jobs = [(k, v, planted_size, grid, alpha) for k in range(runs) for v in ("planted", "null")]
    outcomes: list[RunOutcome] = []
    if workers > 1:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for out in pool.map(_run_args, jobs, chunksize=4):
                outcomes.append(out)
                if on_run:
                    on_run(out)
    else:
        for job in jobs:
            out = _run_args(job)
            outcomes.append(out)
            if on_run:
                on_run(out)
    planted = [o for o in outcomes if o.variant == "planted"]
    null = [o for o in outcomes if o.variant == "null"]
    detected = {c: sum(o.detected[c] for o in planted) for c in VALIDATED_CONTRASTS}
    fps = {c: sum(o.any_significant[c] for o in null) for c in VALIDATED_CONTRASTS}
    drift = {c: sum(o.index_estimate[c] for o in planted) / len(planted) for c in VALIDATED_CONTRASTS}
    return ValidationResult(
        runs=runs, planted_model=f"sim:planted?contagion={planted_size:g}&seed=<run>",
        null_model="sim:null?seed=<run>", planted_size=planted_size, grid=asdict(grid),
        power={c: detected[c] / runs for c in VALIDATED_CONTRASTS}, detected=detected, false_positives=fps,
        mean_planted_drift=drift, alpha=alpha,
        rule=("detected: pro-social index significant (α = 0.05, cluster-robust t) and toward anti-social; "
              "false positive: the index or any trait significant (Holm across traits, gated by the index)"),
        seconds=round(time.perf_counter() - started, 1), fingerprint=analysis_fingerprint(),
    )

