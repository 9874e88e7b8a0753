"""``contagion report``, ``contagion view`` and ``contagion check``."""

# No ``from __future__ import annotations``: typer reads the option types at run time.

import time
from pathlib import Path

import typer

from contagion.cli.app import app, console, err_console, user_errors
from contagion.errors import UserError
from contagion.experiment.rundir import RunDir

LARGE_VIEWER_BYTES = 80_000_000


def _check_out(out: Path | None) -> None:
    if out is None:
        return
    if out.exists() and out.is_dir():
        return  # the file goes inside it
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output directory {parent} does not exist")


@app.command()
@user_errors
def report(
    run_dir: Path = typer.Argument(..., help="Run directory (written by `contagion run`)."),
    out: Path | None = typer.Option(None, "--out", "-o", help=f"Output HTML file (default RUN_DIR/{RunDir.REPORT})."),
) -> None:
    """Write the run's HTML report: methods, figures, contrasts with their tests, warnings.

    One self-contained file (inline CSS and SVG figures) that opens offline in any browser.
    """
    from contagion.analysis.report import write_report

    _check_out(out)
    started = time.perf_counter()
    path = write_report(run_dir, out)
    console.print(f"Report: {path.resolve()}  ({time.perf_counter() - started:.1f} s)")


@app.command()
@user_errors
def view(
    run_dir: Path = typer.Argument(..., help="Run directory (written by `contagion run`)."),
    out: Path | None = typer.Option(None, "--out", "-o", help=f"Output HTML file (default RUN_DIR/{RunDir.VIEWER})."),
    serve: bool = typer.Option(False, "--serve", help="Serve on 127.0.0.1 instead of writing a file."),
    port: int = typer.Option(8765, "--port", help="Port for --serve (0 = any free port).", min=0, max=65535),
) -> None:
    """Browse the run's transcripts: filter games; read each player's conversation.

    Shows actions, payoffs, injected steering messages and each measured agent's trait changes.
    Everything a model wrote is shown as text, never run. Without --serve, writes one
    self-contained HTML file; --serve loads games on demand (better for very large runs).
    """
    from contagion.viewer import ViewerServer, write_viewer

    if serve:
        if out is not None:
            raise UserError("give either --out (write a file) or --serve, not both")
        server = ViewerServer(run_dir, port)
        console.print(f"Serving the transcripts of {run_dir} at {server.url}  (Ctrl-C to stop)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            console.print("Stopped.")
        finally:
            server.server_close()
        return
    _check_out(out)
    path = write_viewer(run_dir, out)
    size = path.stat().st_size
    console.print(f"Viewer: {path.resolve()}  ({size / 1e6:.1f} MB)")
    if size > LARGE_VIEWER_BYTES:
        console.print(f"That is a large page for a browser; `contagion view {run_dir} --serve` loads games on demand.")


@app.command()
@user_errors
def check(
    runs: int = typer.Option(100, "--runs", min=1, max=10000, help="Seeded runs of each simulated model."),
    quick: bool = typer.Option(False, "--quick", help="40 runs (a faster, rougher check)."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                       help=f"Save the figures as JSON (e.g. RUN_DIR/{RunDir.VALIDATION}; the "
                                            "report of that run then states them)."),
    workers: int = typer.Option(2, "--workers", min=1, max=64, help="Processes to run in parallel."),
) -> None:
    """Validate the analysis code on simulated models with a known answer.

    Plays seeded small grids on sim:planted (planted contagion and content-driven mitigation), on
    sim:planted?lean=0.25 (the same from a pro-social baseline), on every null model (null, flatten,
    acquiescence, echo, reciprocity) and on the traps made to fool a careless analysis (flatten?lean=0.25
    and flatten-keep?lean=0.25: answers drift toward 1/2 as the context grows; trait-echo: agrees more
    with a trait its context names). Each run is analysed with the report's own code. Prints the power for
    contagion, amplification and SIT - placebo on both planted models, the false-positive rate of every
    contrast whose null holds on each null model, and the confidence gate's two cases (10 runs each: a
    slightly flattening real SIT effect must be claimed in >= 8, a mass-keeping flattener called harmful
    in <= 1). Targets: power >= 0.8, false positives <= 5%. Exits 1 when a target is missed.

    The figures shipped with contagion (what reports state) were made with
    contagion check --out src/contagion/analysis/validation.json
    """
    from contagion.analysis.validation import save_validation
    from contagion.check import run_validation

    n = 40 if quick else runs
    _check_out(out)
    from contagion.check import check_models

    models = check_models()
    console.print(f"Validating the analysis on {n} seeded runs of each of sim:{', sim:'.join(models)} "
                  f"({workers} worker(s))…")
    done = [0]

    def progress(_: object) -> None:
        done[0] += 1
        if done[0] % 20 == 0:
            err_console.print(f"  {done[0]}/{len(models) * n} runs", highlight=False)

    def progress_gates(_: object) -> None:
        progress(_)
        if done[0] == len(models) * n:
            err_console.print("  then the confidence gate's two cases (10 runs each)…", highlight=False)

    result = run_validation(n, workers=workers, on_run=progress_gates)
    for line in result.summary_lines():
        console.print(line, highlight=False, markup=False)
    console.print(f"Rule: {result.rule}. {result.seconds:.0f} s; analysis code {result.fingerprint}.",
                  highlight=False)
    if out is not None:
        target = RunDir(out).validation if out.is_dir() else out
        save_validation(result, target)
        console.print(f"Figures saved to {target}")
    if result.passed:
        console.print("[green]Validation passed.[/]")
    else:
        err_console.print("Validation FAILED: a target was missed.")
        raise typer.Exit(1)
