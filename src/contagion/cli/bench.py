"""``contagion bench`` and ``contagion leaderboard``."""

# No ``from __future__ import annotations``: typer reads the option types at run time.

import shlex
from pathlib import Path

import typer

from contagion.cli.app import app, console, err_console, user_errors
from contagion.errors import UserError
from contagion.redact import redact

BENCH_HELP = """Benchmark one model: run the frozen contagion protocol and write its contagion card.

MODEL_SPEC is any backend spec (embedded, gguf:PATH, openai:MODEL@URL, inspect:PROVIDER/MODEL, hf:…,
sim:planted …). The protocol (built-in, versioned and hashed; version 2 by default) plays a
one-malicious group under no intervention, system-prompt repetition, a placebo and SIT; an all-default
group under no intervention, the placebo and SIT (version 1: no intervention only); a scripted
always-defect co-player; and a non-game conversation control — with sampled actions, counterbalanced
option order, shuffled seats and held-out trait items. Sizes: smoke (the embedded model in minutes;
supports no claim), standard, paper.

Writes OUT/card.json and OUT/card.html (headline numbers with CIs, p-values, power, warnings, each read
from the full report's rows), the full report OUT/report.html, and the store. Rerunning the same
command resumes. Before the first game the model answers `contagion doctor`'s probes; one the
instrument cannot measure is refused (--no-preflight runs it anyway).

When a primary headline's test is under the protocol's target power, the command says so and prints its
second stage: the same command with --scale K (K times the games per cell, K chosen from the first
stage's standard errors), which adds the new seeds to the same OUT.
"""


@app.command(help=BENCH_HELP)
@user_errors
def bench(
    model: str = typer.Argument(..., help="Backend spec of the model under study."),
    size: str = typer.Option("standard", "--size", "-s", help="smoke, standard or paper."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory for the benchmark (created; reused to resume)."),
    executor: str = typer.Option("local", "--executor", help="local (this machine) or ray."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (with --executor ray)."),
    inventory: str | None = typer.Option(None, "--inventory",
                                         help="Trait inventory instead of the protocol's built-in v2: hub, or a "
                                              "path to persona JSONL (a different protocol hash)."),
    protocol_file: Path | None = typer.Option(None, "--protocol", help="A protocol file instead of the built-in one."),
    protocol_version: int = typer.Option(2, "--protocol-version",
                                         help="Built-in protocol version: 2 (default) or 1 (frozen; its cards are "
                                              "refused next to version 2 ones)."),
    scale: int = typer.Option(1, "--scale", min=1,
                              help="Games per cell times this: the second stage of a benchmark whose card said a "
                                   "primary headline was under its target power (it prints the scale it needs). "
                                   "Give the same --out: the games played are kept and only the new seeds run."),
    no_report: bool = typer.Option(False, "--no-report", help="Write the card only, not the full report."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Do not draw the progress bar."),
    no_preflight: bool = typer.Option(False, "--no-preflight",
                                      help="Run without first probing the model (contagion doctor's quick part)."),
) -> None:
    from contagion.bench.power import under_powered
    from contagion.bench.protocol import MAX_SCALE, load_protocol
    from contagion.bench.run import run_bench
    from contagion.cli.run import check_executor, run_preflight

    check_executor(executor)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a run directory (created, or reused to resume)")
    protocol = load_protocol(size, protocol_file, inventory, version=protocol_version, scale=scale)
    protocol.configs(model)  # the model's spec is checked (a key in it is refused) before anything is printed
    if not no_preflight:
        run_preflight([model])
    console.print(f"contagion bench: {redact(model)} · protocol {protocol.name} v{protocol.version} ({protocol.size}, "
                  f"hash {protocol.hash}: design {protocol.design_hash}, analysis {protocol.analysis_fingerprint}) · "
                  f"{protocol.games()} trials into {out}", highlight=False)
    result = run_bench(model, protocol, out, executor=executor, address=address, progress=not no_progress,
                       report=not no_report)
    if result.card is None:
        resume = f"contagion bench {shlex.quote(redact(model))} --size {size} --out {shlex.quote(str(out))}"
        console.print(f"Interrupted. Resume with:\n  {resume}", highlight=False, markup=False)
        raise typer.Exit(130)
    card = result.card
    for h in card["headlines"]:
        if not h.get("available"):
            line = f"  {h['title']}: not in this run"
        else:
            est = h.get("estimate")
            lo, hi = h.get("ci_low"), h.get("ci_high")
            ci = f"[{lo:+.3f}, {hi:+.3f}]" if lo is not None and hi is not None else "[—]"
            p = h.get("p_holm") if h.get("p_holm") is not None else h.get("p")
            mark = " detected" if h.get("detected") else ""
            if h.get("confidence_gated"):
                mark = " not claimed: the arms' movement toward ½ explains it (lost confidence?)"
            est_text = f"{est:+.3f}" if est is not None else "—"
            p_text = f"{p:.3g}" if p is not None else "—"
            line = f"  {h['title']}: {est_text} {ci} p={p_text}{mark}"
        console.print(line, highlight=False, markup=False)
    console.print(f"Verdict: {card['verdict']}", highlight=False, markup=False)
    weak = under_powered(card, limit=MAX_SCALE)
    if weak:
        worst = [k for _, _, k in weak]
        parts = "; ".join(f"{title} {pw:.2f}" + (f" (needs --scale {k})" if k else f" (not within --scale {MAX_SCALE})")
                          for title, pw, k in weak)
        console.print(f"Under-powered at the protocol's effect sizes (target {card['protocol']['target_power']:g}): "
                      f"{parts}.", highlight=False, markup=False)
        needed = [k for k in worst if k is not None]
        if len(needed) == len(worst):
            extra = ((f" --protocol {shlex.quote(str(protocol_file))}" if protocol_file else "")
                     + (f" --inventory {shlex.quote(inventory)}" if inventory else "")
                     + (f" --protocol-version {protocol_version}" if protocol_version != 2 else ""))
            again = (f"contagion bench {shlex.quote(redact(model))} --size {size}{extra} --scale {max(needed)} "
                     f"--out {shlex.quote(str(out))}")
            console.print(f"Second stage (keeps the {protocol.games()} games played, adds the rest):\n  {again}",
                          highlight=False, markup=False)
    if result.failed:
        err_console.print(f"{result.failed} game(s) failed; they are left out (see the report).")
    console.print(f"Card: {result.card_html.resolve() if result.card_html else ''}  ({result.seconds:.0f} s)",
                  highlight=False, markup=False)
    if result.report:
        console.print(f"Report: {result.report.resolve()}", highlight=False, markup=False)


@app.command()
@user_errors
def leaderboard(
    cards: list[Path] = typer.Argument(..., help="card.json files (or benchmark directories holding one)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for leaderboard.html and leaderboard.csv."),
) -> None:
    """Compare contagion cards: one self-contained HTML page (a table, a forest plot per headline) and a CSV.

    Cards measured under different protocols (version, size or design) or analysed by different analysis code
    (fingerprint), and version-1 cards next to newer ones, are refused.
    """
    from contagion.bench.render import load_card, write_leaderboard

    if not cards:
        raise UserError("give at least one card")
    html, csv_path = write_leaderboard([load_card(c) for c in cards], out)
    console.print(f"Leaderboard: {html.resolve()}\nCSV: {csv_path.resolve()}", highlight=False, markup=False)
