"""The HTML report: one self-contained file (inline CSS and SVG figures, no network) about one run.

:func:`build_report` reads the run's store through :mod:`contagion.analysis.tables`, computes the
named contrasts of :mod:`contagion.analysis.contrasts`, lays out the text of
:mod:`contagion.analysis.report_text` and the figures of :mod:`contagion.analysis.report_figures`;
:func:`render_report` renders ``templates/report.html.j2`` with Jinja2 autoescaping: every string from
the store (condition names, errors, anything a model wrote) is escaped. The only markup inserted
unescaped is the SVG matplotlib produced (it escapes its own text). :func:`write_report` writes the
file (default ``RUN_DIR/report.html``).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from contagion import __version__
from contagion.analysis.contrasts import AnalysisSettings, compute_contrasts, drift_by_cell
from contagion.analysis.report_figures import Figure, report_figures
from contagion.analysis.report_text import (
    TEST_LEGEND,
    Table,
    contrast_view,
    game_tables,
    headline_sentences,
    instrument_tables,
    instrument_warnings,
    methods_section,
    report_warnings,
    run_notices,
    validation_lines,
)
from contagion.analysis.tables import load_tables
from contagion.analysis.validation import find_validation
from contagion.errors import UserError
from contagion.experiment.rundir import RunDir
from contagion.fileio import write_atomic


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
    notices: list[tuple[str, str]] = field(default_factory=list)
    """(kind, text) shown above everything: ``simulated`` models, a run ``too-small`` to support a claim."""

    @property
    def simulated(self) -> bool:
        return any(kind == "simulated" for kind, _ in self.notices)


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
    figs, attention_note = report_figures(tables, settings, run_dir)
    contrast_views = [contrast_view(c, info.estimand) for c in contrasts.values()]
    warnings = (report_warnings(tables, contrasts, cells, settings)
                + [f"Instrument: {w}." for w in instrument_warnings(tables)]
                + [f"Validation: {w}." for w in v_warn])
    if attention_note:
        warnings.append(attention_note + ".")
    viewer = RunDir.VIEWER if RunDir(run_dir).viewer.exists() else None
    cfg = info.config or {}
    notices = run_notices(tables, cells, settings)
    title = f"contagion report — {cfg.get('name', run_dir.name)}"
    if any(kind == "simulated" for kind, _ in notices) and "simulated" not in title.lower():
        title += " [simulated]"
    return ReportData(
        title=title, run_dir=str(run_dir),
        generated=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"), version=__version__,
        summary=headline_sentences(contrasts), warnings=warnings, validation=v_lines,
        validation_ok=None if validation is None else validation.passed, methods=methods_section(tables),
        figures=figs, contrasts=contrast_views, tables=game_tables(tables) + instrument_tables(tables),
        failures=info.failures[:50],
        failure_count=len(info.failures), attention_note=attention_note, viewer=viewer, test_legend=TEST_LEGEND,
        notices=notices,
    )


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("contagion.analysis", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_report(data: ReportData) -> str:
    return _environment().get_template("report.html.j2").render(r=data)


def write_report(run_dir: Path, out: Path | None = None, *, data: ReportData | None = None) -> Path:
    """Write the run's HTML report (default ``RUN_DIR/report.html``) and return its path (``data``: the
    run's :func:`build_report`, when the caller has it already)."""
    run_dir = Path(run_dir)
    data = data if data is not None else build_report(run_dir)
    html = render_report(data)
    target = Path(out) if out is not None else RunDir(run_dir).report
    if target.exists() and target.is_dir():
        target = target / RunDir.REPORT
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write the report to {target}: {exc.strerror or exc}") from None
    write_atomic(target, html)  # whole or not at all; no temporary file left on any failure
    return target
