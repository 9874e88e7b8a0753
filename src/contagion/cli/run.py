"""``contagion run`` and ``contagion export`` (``contagion demo`` is in :mod:`contagion.cli.demo`)."""

from __future__ import annotations

import importlib.util
import shlex
from collections.abc import Iterable
from pathlib import Path

import typer
from rich.table import Table

from contagion.cli.app import app, console, err_console, user_errors
from contagion.errors import BackendError, MissingExtraError, UserError
from contagion.experiment.config import ExperimentConfig, load_config
from contagion.experiment.rundir import RunDir
from contagion.experiment.runner import Runner, RunSummary
from contagion.experiment.store import Store
from contagion.experiment.support import low_support

RUN_HELP = """Run an experiment grid from a YAML config into RUN_DIR (resumable).

The config declares models, games, group compositions, interventions, rounds, chat turns,
repetitions, the trait inventory and generation settings, and the design controls (action_mode:
sample by default, option_order: counterbalanced, seat_order: shuffled, framing, horizon; the game
conversation is the non-game control); see examples/ and docs/reference/config.md in the repository.
Rerunning the same command runs only the games that are missing (or failed). A run directory
belongs to one config: a config with a different grid is refused unless --extend is given, which
adds its games to the same run (only the new games are played; the report describes every config).
One `contagion run` writes to a directory at a time; a second one refuses. Ctrl-C stops after the
games in flight.

Before the first game, every real model (not simulated, not scripted) answers `contagion doctor`'s
fixed probes as the grid will score it; a model whose answers hold less than a quarter of the scored
position's probability is refused, with the settings to try (--no-preflight runs it anyway).
"""


def _print_summary(summary: RunSummary, run_dir: Path, resume: str) -> None:
    table = Table(title="Run summary", title_justify="left")
    table.add_column("games")
    table.add_column("count", justify="right")
    table.add_row("already stored (skipped)", str(summary.skipped))
    table.add_row("finished now", str(summary.finished))
    table.add_row("failed now", str(summary.failed))
    table.add_row("not started (interrupted)",
                  str(summary.planned - summary.finished - summary.failed) if summary.interrupted else "0")
    console.print(table)
    if summary.replays:
        console.print(
            f"Note: {summary.replays} of the {summary.finished} games finished now replayed another one exactly "
            "(the same transcript). Without chat, actions chosen by comparing log-probabilities do not depend "
            "on the seed, so repetitions of such cells add compute but no information; the report counts each "
            "distinct game once. Give such conditions chat turns or action_mode: sample (the default), or run them "
            "from a config with repetitions: 1.",
            style="yellow", highlight=False, markup=False,
        )
    for line in low_support(summary.support):
        console.print(f"Warning: {line}", style="yellow", highlight=False, markup=False)
    if summary.failures:
        err_console.print(f"{len(summary.failures)} game(s) failed; first errors:")
        for line in summary.failures[:5]:
            err_console.print(f"  {line}", highlight=False, markup=False)
    if summary.interrupted:
        console.print(f"Interrupted. The store in {run_dir} keeps every finished game; resume with:\n  {resume}",
                      highlight=False, markup=False)


EXECUTORS = ("local", "ray")


def run_preflight(specs: Iterable[str]) -> None:
    """``contagion doctor``'s quick part on every real model of a grid, before anything is written: a model
    the instrument cannot measure as the grid would score it is refused (UserError, exit 2)."""
    from contagion.backends.base import run_sync
    from contagion.doctor import preflight

    try:
        results = run_sync(preflight(specs))
    except BackendError as exc:
        raise UserError(f"preflight: a model failed while being probed, so nothing was run: {exc} "
                        "(--no-preflight skips the probe)") from None
    for result in results:
        console.print(f"preflight: {result.spec}: its answers hold {result.mass:.0%} of the scored position's "
                      f"probability ({result.method})", highlight=False, markup=False)


def check_executor(executor: str) -> None:
    """Fail before anything is written when the executor is unknown or cannot run here (Ray not installed)."""
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r}; choose {' or '.join(EXECUTORS)}")
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise MissingExtraError("--executor ray", "cluster", "ray")


def execute_run(config: ExperimentConfig, out: Path, executor: str, address: str | None, progress: bool,
                resume: str | None = None, *, extend: bool = False) -> RunSummary:
    check_executor(executor)
    summary = Runner(config, out, executor=executor, address=address, progress=progress, extend=extend).run()
    _print_summary(summary, out, resume or "the same command")
    if summary.failure_rate > config.max_failure_rate:
        err_console.print(f"Failure rate {summary.failure_rate:.1%} exceeds max_failure_rate "
                          f"{config.max_failure_rate:.1%}.", markup=False)
        raise typer.Exit(1)
    if summary.interrupted:
        raise typer.Exit(130)
    return summary


@app.command(help=RUN_HELP)
@user_errors
def run(
    config: Path = typer.Argument(..., help="Experiment config (YAML)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (created; reused to resume)."),
    executor: str = typer.Option("local", "--executor", help="local (this machine) or ray."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (with --executor ray)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Do not draw the progress bar."),
    extend: bool = typer.Option(False, "--extend",
                                help="Add this config's games to a run directory that holds another config's."),
    no_preflight: bool = typer.Option(False, "--no-preflight",
                                      help="Run without first probing each real model (contagion doctor's quick "
                                           "part), even one the instrument cannot measure."),
) -> None:
    check_executor(executor)
    cfg = load_config(config)
    if not no_preflight:
        run_preflight(cfg.backend_specs())
    resume = f"contagion run {shlex.quote(str(config))} --out {shlex.quote(str(out))}"
    if executor != "local":
        resume += f" --executor {shlex.quote(executor)}" + (f" --address {shlex.quote(address)}" if address else "")
    execute_run(cfg, out, executor, address, not no_progress, resume, extend=extend)
    console.print(f"Results: {out}  (next: contagion report {out})")


@app.command()
@user_errors
def export(
    run_dir: Path = typer.Argument(..., help="Run directory."),
    fmt: str = typer.Option("jsonl", "--format", "-f", help="jsonl (full records) or parquet (one row per player)."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Output file, or a directory to write games.<ext> into "
                                         "(default RUN_DIR/games.<ext>)."),
) -> None:
    """Export a run's game records to JSONL or Parquet (written whole or not at all)."""
    if fmt not in RunDir.EXPORT_FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose jsonl or parquet")
    target = out or RunDir(run_dir).export(fmt)
    if target.is_dir():
        target = target / RunDir(target).export(fmt).name
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.exists():
        raise UserError(f"cannot write {target}: the directory {parent} does not exist")
    if not parent.is_dir():
        raise UserError(f"cannot write {target}: {parent} is not a directory")
    with Store.open_existing(run_dir) as store:
        n = store.export_jsonl(target) if fmt == "jsonl" else store.export_parquet(target)
    console.print(f"{n} rows written to {target}")
