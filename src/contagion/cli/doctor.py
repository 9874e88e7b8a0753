"""``contagion doctor``: can the instrument measure a model, how, and at what cost."""

# No ``from __future__ import annotations``: typer reads the option types at run time.

from pathlib import Path

import typer
from rich.table import Table

from contagion.backends.base import run_sync
from contagion.cli.app import app, console, user_errors
from contagion.errors import BackendError, UserError
from contagion.experiment.config import ExperimentConfig, load_config

DOCTOR_HELP = """Probe a model for about a minute and say whether and how the instrument can measure it.

Reports: whether the server returns logprobs; where the answer sits in a reply (the first token, or after
reasoning or a markdown or wordy opener) and how much of that position's probability the answers hold;
whether the model reasons first; whether its chat template accepts a system message; latency, a
generation's tokens per second, and scoring calls per second at 1, 4 and 16 requests in flight. Given a
CONFIG (a run config file, or a benchmark size: smoke, standard, paper), also the games, requests,
tokens and wall time it will take with this model.

Ends with the settings to use (the spec, and the same as a config's model_options), or refuses with the
reason and what to try (exit 2). `contagion run` and `contagion bench` run its quick part (the probes)
on every real model before the first game.

Example: contagion doctor openai:qwen3-8b@http://localhost:8000/v1 grid.yaml
"""


def _configs(model: str, target: str | None) -> list[ExperimentConfig]:
    if target is None:
        return []
    path = Path(target)
    if path.suffix in (".yaml", ".yml") or path.exists():
        config = load_config(path)
        return [config.model_copy(update={"models": [model], "model_options": {}})]
    from contagion.bench.protocol import load_protocol

    return list(load_protocol(target).configs(model).values())


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


@app.command(help=DOCTOR_HELP)
@user_errors
def doctor(
    model: str = typer.Argument(..., help="Backend spec of the model to examine."),
    config: str | None = typer.Argument(None, help="A run config (YAML) or a benchmark size, to estimate its cost."),
    in_flight: int | None = typer.Option(None, "--in-flight",
                                         help="Requests in flight for the wall-time estimate (default: the "
                                              "config's concurrency, else 8)."),
) -> None:
    from contagion.doctor import Reading, diagnose

    if in_flight is not None and in_flight < 1:
        raise UserError(f"--in-flight must be at least 1 (got {in_flight})")
    configs = _configs(model, config)
    console.print(f"contagion doctor: {model}", highlight=False, markup=False)
    try:
        verdict = run_sync(diagnose(model, configs, in_flight=in_flight))
    except BackendError as exc:
        raise UserError(f"{model} failed while being probed: {exc}") from None

    table = Table(title="Where the answer sits (fixed probes)", title_justify="left")
    for col in ("probe", "first token: answers' share", "where the answer is", "share there", "before it"):
        table.add_column(col)
    answers: list[Reading | None] = list(verdict.answer_readings) or [None] * len(verdict.readings)
    for first, at in zip(verdict.readings, answers, strict=True):
        where = "n/a" if at is None else ("none found" if at.position is None else f"token {at.position}")
        table.add_row("/".join(first.choices), _pct(first.mass), where, _pct(None if at is None else at.mass),
                      "" if at is None else repr(at.skipped[-30:]))
    console.print(table)
    lines = [
        f"logprobs returned: {'yes' if verdict.logprobs else 'no (scores are sampled estimates)'}",
        f"reasoning seen: {verdict.reasoning or 'no'}",
        f"system role: {verdict.system_role}",
        f"latency of one scoring call: {verdict.latency:.2f} s" if verdict.latency is not None else "",
    ]
    if verdict.generation_seconds:
        rate = verdict.generation_tokens / verdict.generation_seconds if verdict.generation_tokens else None
        lines.append(f"a generation: {verdict.generation_tokens} tokens in {verdict.generation_seconds:.2f} s"
                     + (f" ({rate:.0f} tokens/s)" if rate else ""))
    if verdict.pace:
        lines.append("scoring calls per second: " + ", ".join(f"{v:.1f} at {k} in flight"
                                                               for k, v in verdict.pace.items()))
    for line in filter(None, lines):
        console.print(line, highlight=False, markup=False)
    if verdict.estimate is not None and verdict.estimate_seconds is not None:
        e = verdict.estimate
        console.print(f"cost of {config} with this model: {e.games} games, {e.requests:,} requests "
                      f"({e.scores:,} scores, {e.generations:,} generations), ~{e.prompt_tokens:,.0f} prompt and "
                      f"~{e.completion_tokens:,.0f} generated tokens, ~{_duration(verdict.estimate_seconds)} "
                      f"at {verdict.estimate_level} in flight (prompt tokens at ~4 characters each; "
                      + "; ".join(e.notes) + ")", highlight=False, markup=False)
    for note in verdict.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    if verdict.refusal is not None:
        raise UserError(f"the instrument cannot measure {model}: {verdict.refusal}.")
    console.print(f"Verdict: measurable by {verdict.method}, the answers holding {verdict.mass:.0%} of the scored "
                  "position's probability.", highlight=False, markup=False)
    console.print(f"Settings to use: {verdict.settings}", highlight=False, markup=False)
    if verdict.options:
        options = ", ".join(f"{k}: {v}" for k, v in verdict.options.items())
        console.print(f"  in a config: model_options: {{{model!r}: {{{options}}}}}", highlight=False, markup=False)
