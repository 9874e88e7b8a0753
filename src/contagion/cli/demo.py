"""``contagion demo``: every stage of a study, small, then the report and what to do next."""

from __future__ import annotations

import shlex
import time
import webbrowser
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from contagion.cli.app import app, console, err_console, user_errors
from contagion.cli.run import execute_run
from contagion.experiment.config import ExperimentConfig, parse_config
from contagion.fileio import parse_yaml

if TYPE_CHECKING:
    from contagion.analysis.report import ReportData

SIMULATED_MODEL = "sim:planted"
"""The model of ``contagion demo --simulated``: a simulated model with a planted contagion effect."""
SIMULATED_REPETITIONS = 12
"""Games per condition of the simulated demo: enough for the report to detect the planted effect (10 or
more distinct games per condition, so no estimate is flagged as too few to support a claim)."""

DEMO_HELP = """A small real experiment on the embedded model, then the report (about 3 minutes on 2 cores).

Every stage of a study, once: each default agent's trait profile before play; Prisoner's Dilemma
with chat (3 rounds, 1 chat turn), in all-default groups and next to a malicious co-player; no
intervention vs SIT vs its length-matched placebo; the profiles after play; the HTML report and the
transcript viewer. 6 games, 4 traits: far too few to support any claim, and the embedded model
(SmolLM2-135M) is tiny — the demo shows the machinery working end to end, not the paper's effect
(the report and the summary say so). The first run on a machine also writes the model's float32
weights once (540 MB, ~10 s) to ~/.cache/contagion (or $CONTAGION_CACHE_DIR).

--simulated runs the same design on sim:planted, a simulated model with a planted contagion effect,
with 12 games per condition, in seconds: what a detected effect looks like in the report (labelled
simulated everywhere). Real experiments use a real model: see `contagion run --help` and
examples/paper-grid.yaml.
"""


def demo_config(*, simulated: bool = False) -> ExperimentConfig:
    """The built-in demo (``contagion/data/demo.yaml``); ``simulated``: the same design on
    :data:`SIMULATED_MODEL` with :data:`SIMULATED_REPETITIONS` games per condition."""
    text = resources.files("contagion").joinpath("data/demo.yaml").read_text(encoding="utf-8")
    data = parse_yaml(text, "built-in demo config")
    if simulated:
        data = {**data, "name": f"SIMULATED demo ({SIMULATED_MODEL}: a planted effect, not a language model)",
                "models": [SIMULATED_MODEL], "repetitions": SIMULATED_REPETITIONS}
    return parse_config(data, "built-in demo config")


@app.command(help=DEMO_HELP)
@user_errors
def demo(
    out: Path | None = typer.Option(None, "--out", "-o", show_default=False,
                                    help="Run directory for the demo (default contagion-demo, or "
                                         "contagion-demo-simulated with --simulated)."),
    simulated: bool = typer.Option(False, "--simulated",
                                   help="Run the same design on a simulated model with a planted effect "
                                        "(seconds): what a detected effect looks like."),
    open_report: bool = typer.Option(False, "--open", help="Open the report in a web browser when it is written."),
    repetitions: int = typer.Option(0, "--repetitions", min=0,
                                    help=f"Override games per condition (0 = the demo's: 1, or "
                                         f"{SIMULATED_REPETITIONS} with --simulated)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Do not draw the progress bar."),
    extend: bool = typer.Option(False, "--extend",
                                help="Add games to a demo directory run with other --repetitions."),
) -> None:
    started = time.perf_counter()
    cfg = demo_config(simulated=simulated)
    if repetitions:
        cfg = cfg.model_copy(update={"repetitions": repetitions})
    out = out or Path("contagion-demo-simulated" if simulated else "contagion-demo")
    if simulated:
        console.print(f"contagion demo --simulated: SIMULATED — {cfg.size()} games on {SIMULATED_MODEL}, a simulated "
                      f"model with a planted contagion effect (not a language model), into {out}",
                      highlight=False, markup=False)
    else:
        console.print(f"contagion demo: {cfg.size()} games on the embedded model (SmolLM2-135M) into {out} "
                      "(about 3 minutes on 2 cores)", highlight=False, markup=False)
    flags = (" --simulated" if simulated else "") + (f" --repetitions {repetitions}" if repetitions else "")
    resume = f"contagion demo --out {shlex.quote(str(out))}{flags}"
    summary = execute_run(cfg, out, "local", None, not no_progress, resume, extend=extend)
    report, data = _finish_with_report(out)
    _print_summary(cfg, out, report, data, time.perf_counter() - started, simulated=simulated,
                   played=summary.finished + summary.failed)
    if open_report:
        open_in_browser(report if report is not None else out)


def _finish_with_report(out: Path) -> tuple[Path | None, ReportData | None]:
    """The transcript viewer and the HTML report (or, without the analysis extra, a plain-text summary)."""
    from contagion.backends.registry import free_local_models

    free_local_models()  # the games are over: the report's libraries need the model's memory more
    from contagion.viewer import write_viewer

    write_viewer(out)  # before the report, which links to it
    try:
        from contagion.analysis.report import build_report, write_report
    except ImportError:
        from contagion.analysis.summary import print_summary

        print_summary(out, console)
        return None, None
    data = build_report(out)
    return write_report(out, data=data), data


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _print_summary(cfg: ExperimentConfig, out: Path, report: Path | None, data: ReportData | None,
                   seconds: float, *, simulated: bool, played: int) -> None:
    """What ran, what it can and cannot show, where the report is, what to do next."""
    from contagion.steering import parse_intervention

    interventions = ", ".join(parse_intervention(i).name for i in cfg.interventions)
    traits = ", ".join(cfg.assessment.traits) if cfg.assessment.traits else "every trait of the inventory"
    model = f"{SIMULATED_MODEL} (SIMULATED: a rule with a planted effect)" if simulated else "embedded (SmolLM2-135M)"
    per_cell = cfg.repetitions
    lines = [
        "",
        f"Demo finished in {_minutes(seconds)}"
        + (" (its games were stored already: only the report was written)." if not played else "."),
        f"What ran: {cfg.size()} games of {', '.join(cfg.games)} on {model}: groups {', '.join(cfg.compositions)} "
        f"× interventions {interventions}; {cfg.rounds} rounds, {', '.join(map(str, cfg.chat_turns))} chat turn(s) "
        f"a round; traits {traits} ({cfg.assessment.items} items each) measured before and after play.",
    ]
    too_small = any(kind == "too-small" for kind, _ in data.notices) if data else not simulated
    if simulated:
        lines.append("Simulated: no language model played. sim:planted's answers drift after hostile and defecting "
                     "co-players and SIT's reminders undo part of it, so this is what a detected effect looks like: "
                     "in the report's summary, each line gives the estimate, its 95% CI, the test and the verdict; "
                     "the placebo, which quotes nothing of the agent's own, should find nothing. A real model's "
                     "effects are for a real study to find.")
    if too_small:
        lines.append(f"No claim: {per_cell} game(s) per condition are far too few to support any claim"
                     + ("" if simulated else ", and the embedded model is tiny")
                     + ". The demo shows every stage working, not an effect.")
    elif simulated:
        found = [text for _, text, cls in (data.summary if data else []) if cls == "sig"]
        if found:
            lines.append(f"The report detects the planted effect ({len(found)} significant rows):")
            lines += [f"  - {_short(text)}" for text in found[:6]]
        else:
            lines.append("The report detects no effect in this run.")
    if report is not None:
        lines.append(f"Report:      {report.resolve()}")
    viewer = out / "viewer.html"
    if viewer.exists():
        lines.append(f"Transcripts: {viewer.resolve()}  (the chat, actions and reminders of every game)")
    steps = [("contagion demo", "the same design on a real (tiny) language model (~3 min)") if simulated else
             ("contagion demo --simulated", "the same report where an effect is planted and found (seconds)"),
             (f"contagion view {shlex.quote(str(out))} --serve", "browse the transcripts in a local web page"),
             ("contagion run examples/paper-grid.yaml --out runs/paper",
              "a real study: name your model (an OpenAI-compatible server) in its models: line; "
              "`contagion power` says how many games it needs")]
    width = max(len(command) for command, _ in steps[:2]) + 3
    lines.append("Next:")
    for command, what in steps:
        lines += ([f"  {command.ljust(width)}{what}"] if len(command) < width else
                  [f"  {command}", f"  {' ' * width}{what}"])
    console.print("\n".join(lines), highlight=False, markup=False)


def _short(sentence: str) -> str:
    """A report headline without its test details: what was compared, the estimate and the verdict."""
    head = sentence.split(" (95% CI", 1)[0]
    return f"{head} — significant"


def open_in_browser(path: Path) -> bool:
    """Open ``path`` in the user's web browser (``$BROWSER`` first); say so either way. No browser is not
    an error: the file is written, and where it is was printed."""
    try:
        opened = webbrowser.open(path.resolve().as_uri())
    except webbrowser.Error:
        opened = False
    if opened:
        console.print(f"Opened {path} in a web browser.", highlight=False, markup=False)
    else:
        err_console.print(f"No web browser could be started here (none found, or $BROWSER failed); open "
                          f"{path.resolve()} in a browser yourself.", highlight=False, markup=False)
    return opened
