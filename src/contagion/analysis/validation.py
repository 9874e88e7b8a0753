"""Validation figures of the analysis code: what ``contagion check`` found, saved, found again by a report.

:mod:`contagion.check` plays seeded grids on ``sim:planted`` (a planted contagion effect) and on its
null twin ``sim:null``, analyses each with the report's own code, and returns a
:class:`ValidationResult`: the power to detect the planted effect and the false positives on the null
twin, per contrast. This module holds that result, the targets it is held to, and how it is saved
(:func:`save_validation`), read back (:func:`load_validation`) and found for a report
(:func:`find_validation`: the run directory's own ``validation.json``, else the figures shipped with
the package). Saved figures carry :func:`analysis_fingerprint`, a hash of the source they validate, so
a report can say whether they are current.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from contagion import __version__
from contagion.experiment.rundir import RunDir

POWER_TARGET = 0.8
FP_TARGET = 0.05

FINGERPRINTED = ("analysis/tables.py", "analysis/estimators.py", "analysis/contrasts.py", "analysis/validation.py",
                 "check.py")
"""The source files (relative to the ``contagion`` package) whose bytes make :func:`analysis_fingerprint`:
the tables, estimators and contrasts the check validates, this result schema, and the check itself
(its grid, its decision rule and how it plays the games)."""


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
    """A hash of the validated source (:data:`FINGERPRINTED`): saved figures name the code they validate."""
    h = hashlib.sha256()
    pkg = resources.files("contagion")
    for name in FINGERPRINTED:
        h.update(pkg.joinpath(*name.split("/")).read_bytes())
    return h.hexdigest()[:12]


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
        path = resources.files("contagion.analysis").joinpath(RunDir.VALIDATION)
        return load_validation(Path(str(path)))
    except (FileNotFoundError, ModuleNotFoundError):
        return None


def find_validation(run_dir: Path | None = None) -> tuple[ValidationResult | None, str]:
    """Figures for a report: the run directory's own ``validation.json`` first, else the shipped ones."""
    if run_dir is not None:
        path = RunDir(run_dir).validation
        own = load_validation(path)
        if own is not None:
            return own, str(path)
    shipped = shipped_validation()
    return shipped, "shipped with contagion" if shipped else ""

