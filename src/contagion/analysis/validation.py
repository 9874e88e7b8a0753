"""Validation of the analysis code on simulated models with a known answer.

``sim:planted`` has a planted contagion effect (see :mod:`contagion.backends.sim`); ``sim:null`` is its
twin with every effect set to zero. A *run* here is a small grid played in-process (one game type,
all-default and one-malicious groups, no intervention, one chat turn per round) analysed with exactly
the code the report uses (:func:`contagion.analysis.tables.tables_from_records` and
:func:`contagion.analysis.stats.compute_contrasts`). Each run uses a different model seed, so
measurement noise, baselines and games all differ between runs.

Decision rule (what the report would claim), for two contrasts — **contagion** (post − pre of the
default agents next to a malicious player) and **amplification** (their drift minus the drift in an
all-default group):

* *detected* — the pro-social index (the primary outcome) is significant at α = 0.05 and points the
  planted way (toward anti-social);
* *false positive* (null twin) — the report would claim anything for the contrast: the index, or any
  trait (Holm across traits, gated by the index; see :mod:`contagion.analysis.stats`).

Acceptance: power ≥ 0.8 at the planted size and false positives in ≤ 5 % of the null runs, for each
contrast. :func:`run_validation` returns the figures, :func:`save_validation` writes them as JSON with
a fingerprint of the analysis source, so a report can state them and whether they are current.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from contagion import __version__
from contagion.errors import UserError

VALIDATION_FILE = "validation.json"
"""File name of saved figures: in a run directory, or shipped next to this module."""

PLANTED_CONTAGION = 0.05
"""The planted size used for validation: ``sim:planted?contagion=0.05`` (a quarter of the sim default, 0.2)."""

VALIDATED_CONTRASTS = ("contagion", "amplification")
MALICIOUS_COMPOSITION = "one-malicious"
POWER_TARGET = 0.8
FP_TARGET = 0.05


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


@dataclass
class ValidationResult:
    """The figures a report states."""

    runs: int
    planted_model: str
    null_model: str
    planted_size: float
    grid: dict[str, Any]
    power: dict[str, float]
    detected: dict[str, int]
    false_positives: dict[str, int]
    mean_planted_drift: dict[str, float]
    alpha: float
    rule: str
    seconds: float
    fingerprint: str
    contagion_version: str = __version__
    created: float = field(default_factory=time.time)

    @property
    def passed(self) -> bool:
        """Whether every contrast met both targets (power ≥ 0.8, false positives ≤ 5 %)."""
        return all(self.power[c] >= POWER_TARGET for c in self.power) and all(
            self.false_positives[c] <= FP_TARGET * self.runs for c in self.false_positives)

    def fp_rate(self, contrast: str) -> float:
        """Share of null runs with a false positive for ``contrast``."""
        return self.false_positives[contrast] / self.runs if self.runs else math.nan

    def summary_lines(self) -> list[str]:
        """One sentence per contrast: power and false positives with Wilson 95 % intervals."""
        lines = []
        for c in self.power:
            lo, hi = wilson(self.detected[c], self.runs)
            flo, fhi = wilson(self.false_positives[c], self.runs)
            lines.append(
                f"{c}: power {self.power[c]:.2f} ({self.detected[c]}/{self.runs}, 95% CI {lo:.2f}–{hi:.2f}) at planted "
                f"size contagion={self.planted_size:g} (mean pro-social drift {self.mean_planted_drift[c]:+.3f}); "
                f"false positives {self.false_positives[c]}/{self.runs} (95% CI {flo:.2f}–{fhi:.2f})")
        return lines


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def analysis_fingerprint() -> str:
    """A hash of the analysis source (tables, stats, validation): saved figures name the code they validate."""
    h = hashlib.sha256()
    pkg = resources.files("contagion.analysis")
    for name in ("tables.py", "stats.py", "validation.py"):
        h.update(pkg.joinpath(name).read_bytes())
    return h.hexdigest()[:12]


def _play(grid: ValidationGrid, model: str) -> list[Any]:
    from contagion.experiment.config import parse_config
    from contagion.experiment.execute import execute_game, measure_pre_profile, needed_profiles
    from contagion.games.record import GameRecord
    from contagion.traits.settings import AssessmentSettings

    cfg = parse_config(grid.config(model), "validation grid")

    async def play_all() -> list[GameRecord]:
        cache: dict[str, Any] = {}
        records = []
        for spec, labels in cfg.expand():
            pre: list[dict[str, Any] | None] = [None] * len(spec.players)
            for i, key, system in needed_profiles(spec, {}):
                if key not in cache:
                    cache[key] = await measure_pre_profile(spec.players[i].backend, system,
                                                           AssessmentSettings.from_spec(spec.assessment))
                pre[i] = cache[key]
            record = await execute_game(spec, labels, pre_profiles=pre)
            if record.error:
                raise RuntimeError(f"validation game failed: {record.error}")
            records.append(record)
        return records

    return asyncio.run(play_all())


def run_once(seed: int, variant: str, planted_size: float = PLANTED_CONTAGION,
             grid: ValidationGrid | None = None, alpha: float = 0.05) -> RunOutcome:
    """Play one seeded validation run and apply the decision rule to it."""
    from contagion.analysis.stats import AnalysisSettings, compute_contrasts
    from contagion.analysis.tables import PROSOCIAL, tables_from_records

    grid = grid or ValidationGrid()
    model = (f"sim:planted?contagion={planted_size:g}&seed={seed}" if variant == "planted"
             else f"sim:null?seed={seed}")
    records = _play(grid, model)
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


def save_validation(result: ValidationResult, path: Path) -> Path:
    """Write the figures as JSON (atomically) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = asdict(result)
    data["passed"] = result.passed
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_validation(path: Path) -> ValidationResult | None:
    """Saved figures, or ``None`` when the file is absent or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("passed", None)
        return ValidationResult(**data)
    except (OSError, ValueError, TypeError):
        return None


def shipped_validation() -> ValidationResult | None:
    """The figures saved with this package (``contagion check --out`` wrote them), if any."""
    try:
        path = resources.files("contagion.analysis").joinpath(VALIDATION_FILE)
        return load_validation(Path(str(path)))
    except (FileNotFoundError, ModuleNotFoundError):
        return None


def find_validation(run_dir: Path | None = None) -> tuple[ValidationResult | None, str]:
    """Figures for a report: the run directory's own ``validation.json`` first, else the shipped ones."""
    if run_dir is not None:
        own = load_validation(run_dir / VALIDATION_FILE)
        if own is not None:
            return own, str(run_dir / VALIDATION_FILE)
    shipped = shipped_validation()
    return shipped, "shipped with contagion" if shipped else ""
