"""The trial redesign: one seat grammar, a registry that declares kinds, the robust wrapper on every
path, and the layers (a lower one never imports a higher one)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import contagion
from contagion.backends.registry import build, kind_of, resolve
from contagion.backends.robust import RobustBackend
from contagion.errors import BackendSpecError
from contagion.experiment.config import ExperimentConfig
from contagion.experiment.record import RECORD_SCHEMA_VERSION
from contagion.experiment.trial import GameRecord, TrialSpec, run_trial
from contagion.games.record import GameSpec, PlayerSpec, split_seat
from contagion.steering import parse_intervention
from contagion.testing.loopback import FaultPlan, LoopbackServer
from tests.experiment.experiment_helpers import cli_env

SRC = Path(contagion.__file__).resolve().parent


@pytest.mark.parametrize(
    ("text", "persona", "spec"),
    [
        ("embedded", None, "embedded"),
        ("malicious=embedded", "malicious", "embedded"),
        ("scripted:random?p=0.3", None, "scripted:random?p=0.3"),
        ("malicious=scripted:random?p=0.3", "malicious", "scripted:random?p=0.3"),
        ("openai:m@http://127.0.0.1:9/v1?timeout=5", None, "openai:m@http://127.0.0.1:9/v1?timeout=5"),
        ("default=openai:m@http://h:8000/v1?timeout=5", "default", "openai:m@http://h:8000/v1?timeout=5"),
        ("embedded?n_threads=1", None, "embedded?n_threads=1"),
        ("sim:planted?contagion=0.3&seed=1", None, "sim:planted?contagion=0.3&seed=1"),
        (" benevolent = sim:null ", "benevolent", "sim:null"),
    ],
)
def test_one_seat_grammar(text: str, persona: str | None, spec: str) -> None:
    assert split_seat(text) == (persona, spec)
    player = PlayerSpec.parse(text)
    assert (player.persona, player.backend) == (persona or "default", spec)


def test_a_config_reads_seats_with_parameters_as_backend_specs() -> None:
    config = ExperimentConfig.model_validate({
        "models": ["sim:null"],
        "compositions": {"mixed": ["default", "scripted:random?p=0.3", "openai:m@http://127.0.0.1:9/v1?timeout=5",
                                   "malicious=scripted:random?p=0.3", "malicious"]},
    })
    players = config.players_for(config.compositions["mixed"], "sim:null")
    assert [(p.persona, p.backend) for p in players] == [
        ("default", "sim:null"), ("default", "scripted:random?p=0.3"),
        ("default", "openai:m@http://127.0.0.1:9/v1?timeout=5"), ("malicious", "scripted:random?p=0.3"),
        ("malicious", "sim:null"),
    ]
    # scripted seats are never measured; language models with the default persona are
    assert [p.focal for p in players] == [True, False, True, False, False]
    assert set(config.backend_specs()) == {"sim:null", "scripted:random?p=0.3",
                                           "openai:m@http://127.0.0.1:9/v1?timeout=5"}


@pytest.mark.parametrize("spec", ["scripted:tit-for-tat", "sim:planted", "sim:null",
                                  "openai:m@http://127.0.0.1:9/v1", "embedded"])
def test_each_kind_declares_what_it_is_and_every_backend_is_wrapped(spec: str) -> None:
    kind = kind_of(spec)
    bare = build(spec)
    caps = bare.capabilities
    assert (caps.language_model, caps.local, caps.cpu_bound, caps.simulated, caps.scripted) == (
        kind.language_model, kind.local, kind.cpu_bound, kind.simulated, kind.scripted)
    wrapped = resolve(spec)
    assert isinstance(wrapped, RobustBackend) and wrapped is resolve(spec)
    assert wrapped.capabilities == caps
    # local models are never cut by a timeout; remote ones are (by the wrapper, or their own ?timeout=)
    limit = wrapped.timeout or getattr(bare, "timeout", None)
    assert (limit is None) == kind.local


def test_unknown_specs_are_refused_by_the_registry() -> None:
    for bad in ("gpt4", "openai", "embedded:x", "sim:", "scripted"):
        with pytest.raises(BackendSpecError, match="valid forms"):
            kind_of(bad)


_PREFIX = re.compile(r"""startswith\(\(?\s*["'](embedded|gguf|openai|hf|scripted|sim)[:"']""")


def test_nothing_outside_backends_looks_at_a_spec_prefix() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.parent.name == "backends":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _PREFIX.search(line):
                offenders.append(f"{path.relative_to(SRC)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# lowest first; a module may import only from its own layer or lower ones
LAYERS: list[set[str]] = [
    {"messages", "errors", "fileio", "strict", "vocabulary", "personas", "redact", "__init__", "testing"},
    {"backends"},
    {"games"},
    {"traits"},
    {"steering"},
    {"guard"},
    {"experiment"},
    {"whitebox"},  # runs white-box models on stored records; writes tables the analysis reads
    {"analysis"},  # reads records only
    {"check", "coverage", "bench", "doctor"},  # run models, then use the analysis
    {"viewer"},
    {"cli", "__main__"},
]


# pairs a higher layer must not import either, and why
FORBIDDEN: dict[tuple[str, str], str] = {
    ("analysis", "backends"): "analysis reads records only: a player's record says what it is (language model, "
                              "scripted strategy), no backend registry is asked",
}


def _layer(name: str) -> int:
    for i, names in enumerate(LAYERS):
        if name in names:
            return i
    raise AssertionError(f"module or package {name!r} is in no layer: add it to LAYERS")


def test_a_lower_layer_never_imports_a_higher_one() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        own = _layer(rel.parts[0].removesuffix(".py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
                if node.module == "contagion":
                    names = [f"contagion.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] != "contagion" or len(parts) < 2 or parts[1].startswith("__"):
                    continue
                if _layer(parts[1]) > own:
                    offenders.append(f"{rel}:{node.lineno} imports {name}")
                why = FORBIDDEN.get((rel.parts[0].removesuffix(".py"), parts[1]))
                if why:
                    offenders.append(f"{rel}:{node.lineno} imports {name} ({why})")
    assert not offenders, "\n".join(offenders)


async def test_run_trial_measures_profiles_steers_focal_agents_and_records_everything() -> None:
    spec = TrialSpec(
        game=GameSpec(players=(PlayerSpec.parse("sim:planted"), PlayerSpec.parse("malicious=sim:planted", focal=False),
                               PlayerSpec.parse("scripted:always-defect", focal=False)),
                      rounds=3, chat_turns=1, seed=3),
        intervention=parse_intervention("sit:k=1,n=2"),
        assessment={"items": 2, "bootstrap": 100},
    )
    record = await run_trial(spec, labels={"cell": "x"})
    assert record.error is None and record.labels == {"cell": "x"} and record.spec_hash == spec.stable_hash()
    agent, malicious, bot = record.players
    assert agent.pre_profile and agent.post_profile and agent.injections
    assert agent.pre_profile["context_kind"] == "pre" and agent.post_profile["context_kind"] == "post"
    assert not malicious.injections and malicious.pre_profile is None and malicious.post_profile is None
    assert not bot.language_model and not bot.injections
    # the system prompt the agent played with is the one its pre-play profile was measured on
    assert agent.messages[0].content == agent.system_prompt


@pytest.fixture(scope="module")
def flaky_server() -> LoopbackServer:
    with LoopbackServer(faults=FaultPlan(rate=0.3, kinds=("500",), seed=0)) as server:
        yield server
        assert server.fault_log, "the server injected no fault: the tests proved nothing"


def _contagion(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "contagion", *args], capture_output=True, text=True,
                          env=cli_env(), timeout=300)


def test_play_finishes_against_a_server_failing_30_percent_and_says_how_many_retries(
        flaky_server: LoopbackServer) -> None:
    model = f"openai:loopback@{flaky_server.base_url}"
    proc = _contagion("play", "-p", model, "-p", model, "-p", "scripted:tit-for-tat", "--rounds", "3",
                      "--chat-turns", "1", "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    match = re.search(r"(\d+) model call\(s\) retried", proc.stdout)
    assert match and int(match.group(1)) > 0, proc.stdout
    assert "Traceback" not in proc.stderr


def test_assess_finishes_against_a_server_failing_30_percent_and_says_how_many_retries(
        flaky_server: LoopbackServer) -> None:
    proc = _contagion("assess", "--model", f"openai:loopback@{flaky_server.base_url}", "--items", "4",
                      "--traits", "agreeableness,machiavellianism")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    match = re.search(r"(\d+) scoring call\(s\) retried", proc.stdout)
    assert match and int(match.group(1)) > 0, proc.stdout


async def test_the_record_round_trips_through_json_with_its_versions_and_hash() -> None:
    spec = TrialSpec(game=GameSpec(players=(PlayerSpec.parse("sim:null"), PlayerSpec.parse("scripted:random?seed=2")),
                                   rounds=2, seed=3), assessment={"items": 2, "bootstrap": 100})
    record = await run_trial(spec)
    again = GameRecord.model_validate_json(record.to_json())
    assert again == record
    data = json.loads(record.to_json())
    assert data["schema_version"] == RECORD_SCHEMA_VERSION
    assert data["spec_hash"] == spec.stable_hash() and len(data["spec_hash"]) == 16
    assert data["spec"]["game"]["seed"] == 3 and data["spec"]["assessment"]["items"] == 2
    assert "invalid_rate" in data and all("invalid_rate" in p for p in data["players"])
    # the hash follows everything that changes the outcome, and nothing else
    assert TrialSpec.model_validate(data["spec"]).stable_hash() == spec.stable_hash()
    assert spec.model_copy(update={"measure": False}).stable_hash() != spec.stable_hash()


async def test_a_finished_trial_releases_every_players_history_after_its_post_profile(monkeypatch) -> None:
    from contagion.backends.base import Backend

    released: list[tuple[str, int]] = []
    monkeypatch.setattr(Backend, "release", lambda self, messages: released.append((self.spec, len(messages))))
    spec = TrialSpec(game=GameSpec(players=(PlayerSpec.parse("sim:null"), PlayerSpec.parse("scripted:random?seed=2")),
                                   rounds=2, seed=3), assessment={"items": 2, "bootstrap": 100})
    record = await run_trial(spec)
    assert record.error is None and record.players[0].post_profile is not None
    # once each, the whole history; then the measured agent's sham history (as long, in messages)
    assert released == [*((p.backend, len(p.messages)) for p in record.players),
                        (record.players[0].backend, len(record.players[0].messages))]
