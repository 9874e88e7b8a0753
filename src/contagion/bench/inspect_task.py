"""The benchmark as an Inspect AI task: ``inspect eval contagion/contagion_bench --model PROVIDER/MODEL``.

One Inspect sample per trial of the protocol (``-T size=smoke|standard|paper``). The solver plays the
trial with :func:`contagion.experiment.trial.run_trial` on ``inspect:active`` — the model of the running
evaluation, through Inspect's model API (:mod:`contagion.backends.inspect_backend`) — so ``inspect view``
shows every model call of every game. The scorer keeps each game's record in its score's metadata (the
per-sample value is the mean pro-social drift of its default agents); the ``contagion_card`` metric
rebuilds the run's tables from every sample's record and computes the card with the card's own code
(:func:`contagion.bench.card.card_from_tables`), so the evaluation's scores are the card's headline
estimates. ``-T out=DIR`` also writes ``card.json`` and ``card.html`` there.

Registered through the package's ``inspect_ai`` entry point (:mod:`contagion.bench._inspect_registry`);
needs the extra ``inspect``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.scorer import Metric, SampleScore, Score, Target, Value, metric, scorer
from inspect_ai.solver import Generate, Solver, TaskState, solver

from contagion.analysis.tables import PROSOCIAL, tables_from_records
from contagion.backends.inspect_backend import ACTIVE
from contagion.bench.card import card_from_tables
from contagion.bench.protocol import Protocol, load_protocol
from contagion.bench.render import write_card
from contagion.experiment.record import GameRecord, TrialSpec
from contagion.experiment.trial import ProfileCache, run_trial

MODEL = f"inspect:{ACTIVE}"


def samples(protocol: Protocol) -> list[Sample]:
    """One sample per trial of the protocol, played on the evaluation's model."""
    out: list[Sample] = []
    for block, config in protocol.configs(MODEL).items():
        for spec, labels in config.expand():
            sid = f"{block}-{labels['game']}-{labels['composition']}-{labels['intervention']}-{labels['rep']}"
            text = (f"{labels['game']} · {labels['composition']} · intervention {labels['intervention']} · "
                    f"game {labels['rep']} of its cell ({block} block)")
            out.append(Sample(id=sid, input=text, metadata={
                "block": block, "spec": spec.model_dump_json(), "labels": json.dumps(labels),
                "personas": json.dumps([p.model_dump(mode="json") for p in config.personas])}))
    return out


@solver
def play_trial() -> Solver:
    """Play the sample's trial (pre-play profiles, interventions, game, post-play profiles) on the model.

    Each distinct pre-play profile (model, system prompt, settings) is measured once per task and model
    and handed to every trial that needs it, as the runner does (one in-memory cache per model)."""
    caches: dict[str, ProfileCache] = {}

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        from contagion.personas import Persona

        spec = TrialSpec.model_validate_json(state.metadata["spec"])
        labels = json.loads(state.metadata["labels"])
        personas = {p["name"]: Persona.model_validate(p) for p in json.loads(state.metadata["personas"])}
        profiles = caches.setdefault(str(state.model), ProfileCache())
        record = await run_trial(spec, labels=labels, personas=personas, profiles=profiles)
        state.store.set("record", record.model_dump_json())
        state.completed = True
        return state

    return solve


def _drift(record: GameRecord) -> float:
    tables = tables_from_records([record])
    agents = tables.drift[(tables.drift["trait"] == PROSOCIAL) & (tables.drift["persona"].astype(str) == "default")]
    return float(agents["drift"].mean()) if len(agents) else math.nan


@metric
def contagion_card(size: str = "standard", out: str | None = None, protocol: str | None = None) -> Metric:
    """The card's headline estimates, from every sample's game record (and the card files, with ``out``)."""

    def compute(scores: list[SampleScore]) -> Value:
        records = [GameRecord.model_validate_json(s.score.metadata["record"]) for s in scores
                   if s.score.metadata and "record" in s.score.metadata]
        proto = _protocol(size, protocol)
        if len(records) < proto.games():  # while the evaluation runs: the card needs every game
            return {}
        card = card_from_tables(tables_from_records(records), proto, MODEL)
        name = next((s.score.metadata.get("model") for s in scores if s.score.metadata), None)
        card["model"] = f"inspect:{name}" if name else MODEL
        card["backend"] = "inspect"
        if out:
            write_card(card, Path(out))
        values: dict[str, float] = {}
        for h in card["headlines"]:
            if h.get("estimate") is not None:
                values[h["id"]] = float(h["estimate"])
        values["detected"] = float(len(card["detected"]))
        return values

    return compute


def _protocol(size: str, path: str | None) -> Protocol:
    return load_protocol(size, Path(path) if path else None)


def _scorer(size: str, out: str | None, protocol: str | None) -> Any:
    @scorer(metrics=[contagion_card(size, out, protocol)], name="contagion")
    def contagion_scorer() -> Any:
        async def score(state: TaskState, target: Target) -> Score:
            raw = state.store.get("record")
            record = GameRecord.model_validate_json(raw)
            drift = _drift(record)
            value = 0.0 if math.isnan(drift) else drift
            explanation = (f"game failed: {record.error}" if record.error else
                           f"mean post − pre pro-social drift of the default agents: {drift:+.3f}"
                           if not math.isnan(drift) else "no default agent was measured")
            return Score(value=value, explanation=explanation,
                         metadata={"record": raw, "model": str(state.model), "error": record.error})

        return score

    return contagion_scorer()


@task
def contagion_bench(size: str = "standard", out: str | None = None, protocol_file: str | None = None) -> Task:
    """The contagion benchmark protocol (``size``: smoke, standard, paper; ``protocol_file``: another protocol
    file) on the evaluation's model; ``out``: a directory for card.json and card.html."""
    protocol = _protocol(size, protocol_file)
    return Task(dataset=MemoryDataset(samples(protocol), name=f"contagion-bench-v{protocol.version}-{size}"),
                solver=play_trial(), scorer=_scorer(size, out, protocol_file),
                metadata={"protocol": protocol.describe()}, name="contagion_bench")
