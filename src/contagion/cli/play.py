"""``contagion play``: one game, printed as it happens, written as a record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.table import Table
from rich.text import Text

from contagion.backends.base import GenerationConfig, run_sync
from contagion.backends.reasoning import REASONING_MODES
from contagion.backends.registry import build, kind_of
from contagion.backends.robust import track_usage
from contagion.cli.app import app, console, user_errors
from contagion.cli.common import check_output_path, parse_intervention
from contagion.errors import UserError
from contagion.experiment.record import focal_seats
from contagion.experiment.support import low_support, tally_records
from contagion.experiment.trial import TrialSpec, run_trial
from contagion.fileio import validation_message, write_atomic
from contagion.games.dilemmas import is_conversation, load_dilemma
from contagion.games.record import GameSpec, PlayerSpec
from contagion.personas import Persona, load_personas, resolve_persona
from contagion.redact import redact
from contagion.steering.monitor import MonitorSpec

# schema field -> the option that sets it, so a validation error names what the user typed
_OPTION = {"rounds": "--rounds", "chat_turns": "--chat-turns", "max_tokens": "--max-tokens",
           "temperature": "--temperature", "seed": "--seed"}


def _printer(show_talk: bool) -> Any:
    def on_event(kind: str, data: dict[str, Any]) -> None:
        if kind == "talk" and show_talk:
            line = Text.assemble((f"  {data['player']}: ", "bold cyan"), data["text"])
            console.print(line, highlight=False)
        elif kind == "injection":
            console.print(Text.assemble(("  [steering → ", "magenta"), (data["player"], "magenta bold"),
                                        ("] ", "magenta"), data["text"]), highlight=False)
        elif kind == "round":
            table = Table(title=f"Round {data['round']}", title_justify="left", show_edge=False)
            table.add_column("player")
            table.add_column("action")
            table.add_column("payoff", justify="right")
            table.add_column("total", justify="right")
            for name, label, pay, tot in zip(data["players"], data["labels"], data["payoffs"], data["totals"],
                                             strict=True):
                style = "red" if label == "invalid" else ""
                table.add_row(name, Text(label, style=style), f"{pay:g}", f"{tot:g}")
            console.print(table)
            console.print()

    return on_event


@app.command()
@user_errors
def play(
    player: list[str] = typer.Option(
        ..., "--player", "-p",
        help="A seat at the table as [PERSONA=]BACKEND_SPEC; repeat for each player (at least 2). "
             "Examples: embedded, malicious=embedded, scripted:always-defect, "
             "default=openai:qwen2.5-7b@http://localhost:8000/v1",
    ),
    game: str = typer.Option("prisoners-dilemma", "--game", "-g",
                             help="prisoners-dilemma, chicken, stag-hunt, a YAML game file, or conversation "
                                  "(the non-game control: talk only, no actions or payoffs)."),
    rounds: int = typer.Option(5, "--rounds", "-r", help="Rounds to play (≥ 1)."),
    chat_turns: int = typer.Option(1, "--chat-turns", help="Chat messages per player per round; 0 = no chat."),
    hide_horizon: bool = typer.Option(False, "--hide-horizon", help="Do not tell players how many rounds."),
    seed: int = typer.Option(0, "--seed", help="Seed for talk order and sampling."),
    temperature: float = typer.Option(0.0, "--temperature", help="Sampling temperature for chat (0 = greedy)."),
    max_tokens: int = typer.Option(60, "--max-tokens", help="Upper bound on each chat message's tokens."),
    intervention: str = typer.Option(
        "none", "--intervention", "-i",
        help="Steering of the default-persona players (of every LM player when none is default): "
             "none, repeat-system[:k=2], sit[:k=2,n=3], sit-adaptive[:m=1,threshold=0.05], "
             "placebo[:kind=neutral|generic|yoked,k=2,n=3] (SIT's schedule and length, without its content; "
             "yoked: SIT's own form with another agent's statements), "
             "vector:file=FILE,trait=T,alpha=A[,layers=best] (white-box steering along a direction from "
             "`contagion vectors`; hf: players only). SIT and the placebo measure each agent's pre-play traits "
             "first.",
    ),
    monitor: Path | None = typer.Option(
        None, "--monitor",
        help="A vectors file from `contagion vectors`: watch the steered (default-persona) players from the inside "
             "— at every turn their residual stream projected on each trait's direction, recorded and printed "
             "per round (hf: players only; the game plays exactly as without it).",
    ),
    persona_file: Path | None = typer.Option(None, "--personas", help="YAML file of extra personas (name, text)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the game record (JSON) here."),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="Hide the chat messages (round tables and the result still print)."),
    reasoning: str = typer.Option(
        "strip", "--reasoning",
        help="What a reasoning model's own history keeps of its reasoning: strip (its answers; the reasoning "
             "is recorded with each message) or keep (inline, as it wrote it). Co-players never see it.",
    ),
) -> None:
    """Play one conversational social dilemma and print it as it happens.

    Example: contagion play --game chicken --player embedded --player embedded
    --player malicious=embedded --rounds 5 --chat-turns 1 --seed 7 --out game.json
    """
    if len(player) < 2:
        raise UserError("a game needs at least 2 players: repeat --player")
    if rounds < 1:
        raise UserError(f"--rounds must be at least 1 (got {rounds})")
    if chat_turns < 0:
        raise UserError(f"--chat-turns must be 0 or more (got {chat_turns})")
    if is_conversation(game) and chat_turns == 0:
        raise UserError("--game conversation is only talk: with --chat-turns 0 nothing would be played; "
                        "give --chat-turns 1 or more")
    if reasoning not in REASONING_MODES:
        raise UserError(f"--reasoning must be one of {', '.join(REASONING_MODES)} (got {reasoning!r})")
    if out is not None:
        check_output_path(out)
    extra: dict[str, Persona] = load_personas(persona_file) if persona_file else {}
    title = "Conversation" if is_conversation(game) else load_dilemma(game).title
    seats = focal_seats([PlayerSpec.parse(p) for p in player])  # who is steered: the one rule of the grids
    for s in seats:
        resolve_persona(s.persona, extra)
    for backend_spec in dict.fromkeys(s.backend for s in seats):
        build(backend_spec)  # every option checked (no model loaded, no network) before anything is printed
    try:
        generation = GenerationConfig(temperature=temperature, max_tokens=max_tokens, seed=seed)
    except ValidationError as exc:
        raise UserError(validation_message(exc, "bad generation settings", _OPTION, show_input=True)) from None
    ispec = parse_intervention(intervention)
    try:
        game_spec = GameSpec(game=game, players=tuple(seats), rounds=rounds, chat_turns=chat_turns,
                             reveal_horizon=not hide_horizon, seed=seed, generation=generation,
                             reasoning=reasoning)
    except ValidationError as exc:  # e.g. --rounds above the schema's bound
        raise UserError(validation_message(exc, "bad game settings", _OPTION, show_input=True)) from None
    watch = None
    if monitor is not None:
        watch = MonitorSpec(file=str(monitor))
        watch.directions()  # the file checked before anything is printed
        for s in seats:
            if s.focal and kind_of(s.backend).language_model and not build(s.backend).capabilities.activations:
                raise UserError(f"--monitor needs players with activations (hf:embedded or hf:PATH_OR_ID); "
                                f"{s.backend} has none")
    spec = TrialSpec(game=game_spec, intervention=ispec, measure=False, monitor=watch)

    console.print(Text.assemble(("contagion play: ", "bold"), f"{title}, {len(seats)} players, "
                                f"{rounds} rounds, {chat_turns} chat turn(s), intervention {ispec.label()}"))
    for i, s in enumerate(seats):
        console.print(f"  player {i + 1}: {redact(s.label())}", highlight=False)
    with track_usage() as usage:
        record = run_sync(run_trial(spec, personas=extra, on_event=_printer(not quiet)))
    summary = Table(title="Result", title_justify="left")
    for col in ("player", "persona", "backend", "cooperation", "invalid", "total"):
        summary.add_column(col)
    for p in record.players:
        coop = sum(a.action == "cooperate" for a in p.actions)
        summary.add_row(p.name, p.persona, p.backend, f"{coop}/{len(p.actions)}",
                        f"{p.invalid_rate:.0%}", f"{p.total:g}")
    console.print(summary)
    watched = [p for p in record.players if p.monitor]
    if watched:
        readings = Table(title="Monitor: projection on each trait's direction, per round (mean of the turns)",
                         title_justify="left")
        traits = list(dict.fromkeys(t for p in watched for r in p.monitor for t in r.values))
        for col in ("player", "round", *traits):
            readings.add_column(col)
        for p in watched:
            for rnd in sorted({r.round for r in p.monitor}):
                turns = [r for r in p.monitor if r.round == rnd]
                readings.add_row(p.name, str(rnd), *(f"{sum(r.values[t] for r in turns) / len(turns):+.3f}"
                                                     for t in traits))
        console.print(readings)
    for line in low_support(tally_records([record])):
        console.print(f"Warning: {line}", style="yellow", highlight=False, markup=False)
    if usage.retries or usage.failures:
        console.print(f"{usage.retries} model call(s) retried after transient failures"
                      + (f", {usage.failures} failed after their last attempt" if usage.failures else ""),
                      highlight=False)
    if record.error:
        console.print(Text(f"The game failed: {record.error}", style="red"))
    if out is not None:
        write_atomic(out, record.model_dump_json(indent=1))
        console.print(f"record written to {out}")
    if record.error:
        raise typer.Exit(1)
