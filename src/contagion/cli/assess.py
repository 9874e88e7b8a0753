"""``contagion assess``: one trait profile of one model with one persona, printed as a table."""

# No ``from __future__ import annotations``: typer reads the option types at run time.

import json
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.table import Table

from contagion.backends.base import run_sync
from contagion.backends.registry import kind_of, resolve
from contagion.backends.robust import track_usage
from contagion.cli.app import app, console, user_errors
from contagion.errors import BackendError, UserError
from contagion.experiment.support import Support, describe
from contagion.experiment.trial import measure_agent
from contagion.fileio import validation_message, write_atomic
from contagion.games.dilemmas import load_dilemma
from contagion.games.engine import system_messages
from contagion.games.record import GameSpec, PlayerSpec
from contagion.personas import load_personas, resolve_persona
from contagion.traits.assess import bare_context
from contagion.traits.profile import Profile
from contagion.traits.settings import AssessmentSettings, measure

PLAYERS = 3
ROUNDS = 5
# schema field -> the option that sets it, so a validation error names what the user typed
_OPTION = {"seed": "--seed", "bootstrap": "--bootstrap", "items": "--items", "traits": "--traits",
           "inventory": "--inventory"}
CONTEXTS = ("pre", "bare")


def _split_traits(text: str | None) -> list[str] | None:
    if text is None:
        return None
    traits = [t.strip() for t in text.split(",") if t.strip()]
    if not traits:
        raise UserError("--traits needs at least one trait name, e.g. --traits agreeableness,machiavellianism")
    return traits


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def render_profile(profile: Profile, *, title: str) -> None:
    """Print a profile: one row per trait, then the pro-social index and how it was measured."""
    table = Table(title=title, title_justify="left")
    table.add_column("trait")
    table.add_column("polarity")
    table.add_column("mean", justify="right")
    table.add_column("95% CI", justify="right")
    table.add_column("n", justify="right")
    for t in profile.traits.values():
        table.add_row(t.trait, t.polarity, _fmt(t.mean), f"[{_fmt(t.ci_low)}, {_fmt(t.ci_high)}]", str(t.n))
    console.print(table)
    if profile.prosocial_index is None:
        console.print("pro-social index: n/a (needs at least one pro-social and one anti-social trait)")
    else:
        console.print(
            f"pro-social index: {_fmt(profile.prosocial_index, True)} "
            f"[95% CI {_fmt(profile.prosocial_ci_low, True)}, {_fmt(profile.prosocial_ci_high, True)}]"
            "  (mean of pro-social trait means − mean of anti-social trait means; range −1..1)",
            highlight=False,
        )
    console.print(
        f"scoring method: {profile.method}; answer-order debiasing: {'on' if profile.debiased else 'off'}; "
        f"question format v{profile.question_format_version}; inventory {profile.inventory}; "
        f"bootstrap seed {profile.seed}",
        highlight=False,
    )
    if profile.invalid_items:
        item, why = next(iter(profile.invalid_items.items()))
        console.print(f"{len(profile.invalid_items)} item(s) left out: the model's scores were invalid (e.g. item "
                      f"{item}: {why}); a log-probability must be finite (or -inf) and at most 0", style="red",
                      highlight=False, markup=False)
    if profile.excluded:
        console.print(f"{profile.excluded} measured item(s) left out: answer mass under {profile.min_mass:g} or an "
                      "answer the model did not return", highlight=False)
    cost = profile.cost
    console.print(
        f"{cost.calls} scoring calls, {cost.prompt_tokens_encoded} of {cost.prompt_tokens} prompt tokens "
        "encoded, "
        f"{cost.seconds:.2f} s in the model",
        highlight=False,
    )


@app.command("assess")
@user_errors
def assess_command(
    model: str = typer.Option("embedded", "--model", "-m", help="Backend spec of the model to assess."),
    persona: str = typer.Option("default", "--persona", "-p", help="Persona in the system prompt (pre context)."),
    traits: str | None = typer.Option(
        None, "--traits", "-t", help="Comma-separated traits (default: every trait of the inventory)."
    ),
    items: int | None = typer.Option(None, "--items", "-n", help="Items per trait, sampled by --seed (default all)."),
    debias: bool = typer.Option(False, "--debias", help="Ask each item in both answer orders and average."),
    seed: int = typer.Option(0, "--seed", help="Seed for item sampling and bootstrap CIs."),
    inventory: str = typer.Option(
        "builtin", "--inventory", "-i", help="builtin, hub, a directory of persona .jsonl files, or a file."
    ),
    context: str = typer.Option(
        "pre", "--context", help="pre: the system prompt a player with this persona gets; bare: no context."
    ),
    game: str = typer.Option("prisoners-dilemma", "--game", "-g", help="Game whose rules the pre context holds."),
    personas_file: Path | None = typer.Option(None, "--personas", help="YAML file of user-defined personas."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the CIs."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the profile record to this JSON file."),
) -> None:
    """Measure one model's trait profile (yes/no persona statements scored by log-probability)."""
    if context not in CONTEXTS:
        raise UserError(
            f"--context must be one of {', '.join(CONTEXTS)} (got {context!r}); post-play profiles are "
            "measured on a game's history by `contagion play` and `contagion run`"
        )
    if items is not None and items < 1:
        raise UserError(f"--items must be at least 1 (got {items})")
    if bootstrap < 100:
        raise UserError(f"--bootstrap must be at least 100 (got {bootstrap})")
    if not kind_of(model).language_model:
        raise UserError(f"{model} is a scripted strategy, not a language model: it has no traits to measure")
    wanted = _split_traits(traits)
    extra = load_personas(personas_file) if personas_file is not None else None
    chosen_persona = resolve_persona(persona, extra)
    # one profile, no intervention: every sampled item is measured (no SIT source set is held back)
    try:
        settings = AssessmentSettings(inventory=inventory, traits=tuple(wanted) if wanted else None, items=items,
                                      debias=debias, seed=seed, bootstrap=bootstrap, source_items=0)
    except ValidationError as exc:
        raise UserError(validation_message(exc, "bad assessment settings", _OPTION, show_input=True)) from None
    full = settings.inventory_full()
    sample = settings.inventory_sample()
    backend = resolve(model)
    try:
        with track_usage() as usage:
            if context == "pre":
                # the system prompt the first seat of a game with this persona gets (the trial's own prompt)
                dilemma = load_dilemma(game)
                seats = (PlayerSpec(backend=model, persona=chosen_persona.name),
                         *(PlayerSpec(backend=model) for _ in range(PLAYERS - 1)))
                system = system_messages(GameSpec(game=game, players=seats, rounds=ROUNDS), extra)[0]
                where = f"pre-play: {chosen_persona.name} persona, {dilemma.name}"
                profile = run_sync(measure_agent(backend, system, settings))
            else:
                where = "bare: no system prompt"
                profile = run_sync(measure(backend, bare_context(), settings, context_kind="bare"))
    except BackendError as exc:
        raise UserError(f"model {model} failed while scoring: {exc}") from None
    short = [t for t in sample.traits() if items is not None and len(full.by_trait(t)) < items]
    render_profile(profile, title=f"Trait profile of {backend.identity} ({where})")
    support = Support()
    support.add_profile(profile.to_record())
    if support.low:
        console.print(f"Warning: {describe(backend.identity, support)}", style="yellow", highlight=False,
                      markup=False)
    if short:
        console.print(
            f"note: fewer than {items} items available for {', '.join(short)}; used all of them",
            highlight=False,
        )
    if usage.retries or usage.failures:
        console.print(f"{usage.retries} scoring call(s) retried after transient failures", highlight=False)
    if json_out is not None:
        write_atomic(json_out, json.dumps(profile.to_record(), indent=2) + "\n")
        console.print(f"profile written to {json_out}", highlight=False)
