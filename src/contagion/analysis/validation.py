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

import ast
import functools
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from contagion import __version__
from contagion.experiment.rundir import RunDir

POWER_TARGET = 0.8
FP_TARGET = 0.05

FINGERPRINTED = (
    "check.py", "analysis/tables.py", "analysis/estimators.py", "analysis/contrasts.py", "analysis/validation.py",
    "messages.py", "vocabulary.py", "errors.py", "strict.py", "fileio.py", "personas.py", "redact.py",
    "backends/base.py", "backends/registry.py", "backends/robust.py", "backends/retry.py",
    "backends/response_cache.py", "backends/sim.py", "backends/scripted.py",
    "backends/reasoning.py", "backends/probe.py", "backends/server_options.py",
    "games/", "traits/", "steering/", "experiment/trial.py", "experiment/config.py", "experiment/record.py",
    "experiment/rundir.py", "experiment/profiles.py", "experiment/store.py", "experiment/store_schema.py",
    "experiment/store_recovery.py", "experiment/store_export.py", "experiment/run_lock.py", "experiment/support.py",
    "data/inventory-v1.yaml", "data/inventory-v2.yaml",
)
"""What :func:`analysis_fingerprint` hashes (paths relative to the ``contagion`` package; a path ending in
``/`` means every ``.py`` file of that folder): every module the check runs — its grid, decision rule and
games (check), the analysis it validates (tables, estimators, contrasts, this schema), the simulated and
scripted models and what they read (messages, vocabulary), the games, trait measurement and inventories,
the interventions, and the trial that assembles them. A test checks that every ``contagion`` module a
check run imports is covered."""


@dataclass
class ValidationResult:
    """The figures a report states.

    ``power``/``detected``: per planted target (``contagion``, ``amplification``, ``sit − placebo``), the
    share/count of planted runs in which the report would claim it. ``false_positives``: per
    ``VARIANT:CONTRAST`` of a null model and a contrast whose null holds on it, the runs in which the
    report would claim anything for that contrast (a family-adjusted primary row or a gated trait).
    """

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
    null_models: list[str] = field(default_factory=list)
    gate_cases: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per case of the confidence gate (``contagion.check.GATE_CASES``): ``runs``, the runs the gate claimed
    (``claimed``) and the earlier gate claimed (``old_gate``), and the bound on ``claimed`` (``min_claimed`` or
    ``max_claimed``)."""

    @property
    def passed(self) -> bool:
        """Whether every target met power ≥ 0.8, every null contrast false positives ≤ 5 %, and every gate case
        its bound."""
        return all(self.power[c] >= POWER_TARGET for c in self.power) and all(
            self.false_positives[c] <= FP_TARGET * self.runs for c in self.false_positives) and all(
            gate_case_met(case) for case in self.gate_cases.values())

    def fp_rate(self, key: str) -> float:
        """Share of null runs with a false positive for ``key`` (``VARIANT:CONTRAST``)."""
        return self.false_positives[key] / self.runs if self.runs else math.nan

    def summary_lines(self) -> list[str]:
        """One sentence per planted target (power) and per null model (false positives), with Wilson 95 %
        intervals."""
        lines = []
        for c in self.power:
            lo, hi = wilson(self.detected[c], self.runs)
            mean = self.mean_planted_drift.get(c, math.nan)
            lines.append(
                f"{c}: power {self.power[c]:.2f} ({self.detected[c]}/{self.runs}, 95% CI {lo:.2f}–{hi:.2f}) at planted "
                f"size contagion={self.planted_size:g} (mean primary estimate {mean:+.3f})")
        # keys are VARIANT:CONTRAST (figures saved before the null models: CONTRAST, on sim:null)
        split = [(k.split(":", 1) if ":" in k else ["null", k], n) for k, n in self.false_positives.items()]
        for v in dict.fromkeys(variant for (variant, _), _ in split):
            parts = []
            for (variant, contrast), k in split:
                if variant == v:
                    flo, fhi = wilson(k, self.runs)
                    parts.append(f"{contrast} {k}/{self.runs} (95% CI {flo:.2f}–{fhi:.2f})")
            lines.append(f"sim:{v}: false positives " + "; ".join(parts))
        for name, case in self.gate_cases.items():
            bound = (f"≥ {case['min_claimed']}" if "min_claimed" in case else f"≤ {case['max_claimed']}")
            lines.append(f"gate case, {name}: {case['claimed']}/{case['runs']} runs (wanted {bound}; the earlier "
                         f"gate {case['old_gate']}/{case['runs']})")
        return lines


def gate_case_met(case: dict[str, int]) -> bool:
    """Whether a gate case's claims meet its bound."""
    if "min_claimed" in case:
        return case["claimed"] >= case["min_claimed"]
    return case["claimed"] <= case.get("max_claimed", case["runs"])


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
    """A hash of what the validated source (:data:`FINGERPRINTED`) *does*: saved figures name the code they
    validate. Python files are hashed as their syntax tree without docstrings and comments, data files as
    the data they load to, so an edited comment, docstring, blank line or YAML comment keeps the figures
    current, and any change a run could notice makes them stale."""
    h = hashlib.sha256()
    for name, data in _fingerprinted_files():
        h.update(name.encode())
        h.update(_behaviour(name, data))
    return h.hexdigest()[:12]


def fingerprinted_paths() -> list[str]:
    """Every file :func:`analysis_fingerprint` hashes (relative to the package), in hashing order."""
    return [name for name, _ in _fingerprinted_files()]


@functools.lru_cache(maxsize=1024)
def _behaviour(name: str, data: bytes) -> bytes:
    """The part of a fingerprinted file that can change a result: a module's syntax tree without its bare
    string statements (docstrings, attribute docstrings) — comments and layout are not in the tree —, or a
    YAML file's loaded data (key order kept: it is the order the code sees). Cached by the file's content
    (a report asks for the fingerprint more than once; parsing ~100 modules takes about a second)."""
    if name.endswith(".py"):
        tree = ast.parse(data, filename=name)
        for node in ast.walk(tree):
            for field_name in ("body", "orelse", "finalbody"):
                block = getattr(node, field_name, None)
                if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                    kept = [s for s in block if not _is_bare_string(s)]
                    setattr(node, field_name, kept or [ast.Pass()])
        return ast.dump(tree, annotate_fields=True, include_attributes=False).encode()
    if name.endswith((".yaml", ".yml")):
        return json.dumps(yaml.safe_load(data), ensure_ascii=False, default=str).encode()
    return data


def _is_bare_string(statement: ast.stmt) -> bool:
    return (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str))


def _fingerprinted_files() -> list[tuple[str, bytes]]:
    pkg = resources.files("contagion")
    out: list[tuple[str, bytes]] = []
    for name in FINGERPRINTED:
        if name.endswith("/"):
            folder = pkg.joinpath(*name.rstrip("/").split("/"))
            for child in sorted(folder.iterdir(), key=lambda c: c.name):
                if child.name.endswith(".py"):
                    out.append((name + child.name, child.read_bytes()))
        else:
            out.append((name, pkg.joinpath(*name.split("/")).read_bytes()))
    return out


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

