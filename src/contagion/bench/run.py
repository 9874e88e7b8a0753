"""``run_bench``: play a protocol on one model into a run directory, then write its card (and the report).

The blocks of the protocol are run into one store, one after another, by the experiment runner
(:class:`contagion.experiment.runner.Runner`, resumable, any executor); the run directory remembers the
protocol (its design hash) and model it belongs to (``bench.json``), so a rerun resumes it and another protocol or model
is refused rather than mixed in.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from contagion.bench.card import compute_card
from contagion.bench.protocol import Protocol
from contagion.bench.render import write_card
from contagion.errors import UserError
from contagion.experiment.rundir import RunDir
from contagion.experiment.runner import Runner, RunSummary
from contagion.fileio import write_atomic

MARKER = "bench.json"
"""The file in a benchmark's run directory naming its protocol (hash) and model."""


@dataclass
class BenchResult:
    """What one ``run_bench`` did."""

    card: dict[str, Any] | None
    card_json: Path | None
    card_html: Path | None
    report: Path | None
    summaries: dict[str, RunSummary] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.summaries.values())

    @property
    def interrupted(self) -> bool:
        return any(s.interrupted for s in self.summaries.values())


def claim(out: Path, protocol: Protocol, model: str) -> None:
    """Mark ``out`` as this benchmark's run directory, or refuse one that holds something else. The same
    benchmark at a larger ``scale`` (its second stage) takes the directory over: the games played are the
    first seeds of every cell, and the runner adds the rest."""
    marker = out / MARKER
    # the design hash (what is measured), not the card's hash: newer analysis code resumes the same games
    mine = {"protocol": protocol.name, "version": protocol.version, "size": protocol.size,
            "hash": protocol.design_hash, "model": model, **({"scale": protocol.scale} if protocol.scale > 1 else {})}
    if marker.exists():
        try:
            held = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{marker} is damaged ({exc}); use another --out") from None
        same_design = {k: v for k, v in held.items() if k not in ("hash", "scale")} == {
            k: v for k, v in mine.items() if k not in ("hash", "scale")}
        if held != mine and same_design and isinstance(held.get("scale", 1), int):
            if protocol.scale < held.get("scale", 1):
                raise UserError(f"{out} holds this benchmark at --scale {held.get('scale', 1)}; a smaller scale "
                                f"({protocol.scale}) would leave games out of its card. Give --scale "
                                f"{held.get('scale', 1)} or more, or another --out.")
            write_atomic(marker, json.dumps(mine, indent=2) + "\n")  # the second stage: more seeds per cell
            return
        if held != mine:
            raise UserError(f"{out} holds a benchmark of {held.get('model')!r} under protocol v{held.get('version')} "
                            f"({held.get('size')}, hash {held.get('hash')}); this one is {model!r} under "
                            f"v{protocol.version} ({protocol.size}, hash {protocol.design_hash}). Use another --out.")
        return
    if RunDir(out).holds_run():
        raise UserError(f"{out} holds a run that is not a benchmark of this protocol; use another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(marker, json.dumps(mine, indent=2) + "\n")


def run_bench(model: str, protocol: Protocol, out: Path, *, executor: str = "local", address: str | None = None,
              progress: bool = True, console: Console | None = None, report: bool = True) -> BenchResult:
    """Run (or resume) the benchmark of ``model`` into ``out`` and write ``card.json`` and ``card.html``."""
    console = console or Console(stderr=True)
    configs = protocol.configs(model)  # validates before anything is written
    made_dirs = [d for d in (out, *out.parents) if not d.exists()]
    made_marker = not (out / MARKER).exists()
    claim(out, protocol, model)
    started = time.perf_counter()
    summaries: dict[str, RunSummary] = {}
    try:
        for name, config in configs.items():
            console.print(f"[bold]{name}[/]: {config.size()} game(s)")
            summary = Runner(config, out, executor=executor, address=address, console=console, progress=progress,
                             extend=True).run()
            summaries[name] = summary
            if summary.interrupted:
                break
    except BaseException:
        # a start that failed before anything was stored (the runner removed its store): remove the marker
        # too, and the directories made for it, so the failed command leaves nothing behind
        if made_marker and not RunDir(out).holds_run():
            (out / MARKER).unlink(missing_ok=True)
            for d in made_dirs:
                with contextlib.suppress(OSError):
                    d.rmdir()
        raise
    seconds = time.perf_counter() - started
    if any(s.interrupted for s in summaries.values()):
        return BenchResult(None, None, None, None, summaries, seconds)
    card = compute_card(out, protocol, model, seconds=round(seconds, 1))
    js, html = write_card(card, out)
    report_path = None
    if report:
        from contagion.analysis.contrasts import AnalysisSettings
        from contagion.analysis.report import build_report, write_report

        # the report at the protocol's α: the card's numbers and verdicts are this report's rows
        report_path = write_report(out, data=build_report(out, AnalysisSettings(alpha=protocol.alpha)))
    return BenchResult(card, js, html, report_path, summaries, seconds)
