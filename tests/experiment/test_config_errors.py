"""Bad input to `contagion run`: each malformed config, output directory or store gives one clear
message naming the file and the key, exit code 2, and writes nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import contagion.cli
from contagion.cli.app import app
from contagion.errors import UserError
from contagion.experiment.config import ExperimentConfig, load_config, parse_config
from contagion.experiment.runner import Runner
from contagion.experiment.store import Store
from tests.experiment.experiment_helpers import SMALL, run_cli, squash, write_config

DROP = object()


def _with(**changes: Any) -> dict[str, Any]:
    cfg = {k: v for k, v in SMALL.items()}
    for key, value in changes.items():
        if value is DROP:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    return cfg


# (id, config data, fragment of the message naming the key / the problem)
BAD_CONFIGS: list[tuple[str, Any, str]] = [
    # unknown keys
    ("unknown-top-level-key", _with(modles=["sim:planted"]), "modles: unknown key"),
    ("unknown-key-in-assessment", _with(assessment={"itemz": 3}), "assessment.itemz: unknown key"),
    ("unknown-key-in-generation", _with(generation={"max_token": 3}), "generation.max_token: unknown key"),
    ("unknown-key-in-persona", _with(personas=[{"name": "x", "txt": "y"}]), "personas.0.txt: unknown key"),
    # wrong types
    ("models-not-a-list", _with(models="sim:planted"), "models:"),
    ("rounds-a-string", _with(rounds="five"), "rounds:"),
    ("repetitions-a-float", _with(repetitions=1.5), "repetitions:"),
    ("chat-turns-strings", _with(chat_turns=["one"]), "chat_turns.0:"),
    ("compositions-a-list", _with(compositions=["default", "default"]), "compositions:"),
    ("reveal-horizon-not-bool", _with(reveal_horizon="maybe"), "reveal_horizon:"),
    ("temperature-a-string", _with(generation={"temperature": "hot"}), "generation.temperature:"),
    ("assessment-a-string", _with(assessment="all"), "assessment:"),
    ("focal-unknown", _with(focal="everyone"), "focal:"),
    ("action-mode-unknown", _with(action_mode="guess"), "action_mode:"),
    # unknown game / persona / model / intervention
    ("unknown-game", _with(games=["tennis"]), "games:"),
    ("unknown-persona", _with(compositions={"x": ["default", "evil"]}), "compositions.x: unknown persona 'evil'"),
    ("unknown-persona-with-backend", _with(compositions={"x": ["default", "evil=sim:planted"]}),
     "compositions.x: unknown persona 'evil'"),
    ("unknown-seat-backend-kind", _with(compositions={"x": ["default", "gpt:4"]}),
     "compositions.x: unknown backend spec 'gpt:4'"),
    ("unknown-backend-kind", _with(models=["gpt4"]), "models:"),
    ("unknown-sim-model", _with(models=["sim:bogus"]), "models: unknown simulated model 'bogus'"),
    ("unknown-sim-parameter", _with(models=["sim:planted?foo=1"]), "models: unknown sim parameter"),
    ("openai-without-url", _with(models=["openai:gpt"]), "models: backend spec 'openai:gpt'"),
    ("missing-gguf-file", _with(models=["gguf:/no/such/model.gguf"]), "models: GGUF file /no/such/model.gguf"),
    ("unknown-scripted-strategy", _with(compositions={"x": ["default", "scripted:always-nice"]}),
     "compositions.x: unknown scripted strategy 'always-nice'"),
    ("unknown-seat-backend", _with(compositions={"x": ["default", "default=sim:nul"]}),
     "compositions.x: unknown simulated model 'nul'"),
    ("models-listed-twice", _with(models=["sim:planted", "sim:planted"]), "models: models are listed twice"),
    ("unknown-intervention", _with(interventions=["magic"]), "interventions: unknown intervention 'magic'"),
    ("bad-intervention-parameter", _with(interventions=["sit:bogus=1"]), "interventions:"),
    ("unknown-trait", _with(assessment={"traits": ["telepathy"]}), "assessment: unknown trait(s) telepathy"),
    ("missing-inventory", _with(assessment={"inventory": "/no/such/inventory.jsonl"}),
     "assessment: inventory '/no/such/inventory.jsonl' not found"),
    # empty grids
    ("no-games", _with(games=[]), "games: at least one game"),
    ("no-models", _with(models=[]), "models:"),
    ("missing-models", _with(models=DROP), "models: Field required"),
    ("no-compositions", _with(compositions={}), "bad.yaml: compositions: at least one composition"),
    ("no-interventions", _with(interventions=[]), "interventions: at least one intervention"),
    ("no-chat-turns", _with(chat_turns=[]), "chat_turns: at least one chat_turns value"),
    ("one-seat", _with(compositions={"alone": ["default"]}),
     "compositions.alone: composition 'alone' needs at least 2 seats"),
    # bad numbers and seeds
    ("negative-seed", _with(seed=-1), "seed:"),
    ("string-seed", _with(seed="abc"), "seed:"),
    ("negative-rounds", _with(rounds=-3), "rounds:"),
    ("zero-rounds", _with(rounds=0), "rounds:"),
    ("zero-repetitions", _with(repetitions=0), "repetitions:"),
    ("negative-chat-turns", _with(chat_turns=[-1]), "chat_turns: chat_turns values must be between 0 and 20"),
    ("failure-rate-above-one", _with(max_failure_rate=2), "max_failure_rate:"),
    ("zero-concurrency", _with(concurrency=0), "concurrency:"),
    ("zero-items", _with(assessment={"items": 0}), "assessment.items:"),
    ("zero-max-tokens", _with(generation={"max_tokens": 0}), "generation.max_tokens:"),
    # strict types: a boolean is no number, a seed fits in 64 bits, no grid cell twice
    ("rounds-boolean", _with(rounds=True), "rounds: Input should be a valid integer"),
    ("repetitions-string", _with(repetitions="3"), "repetitions: Input should be a valid integer"),
    ("items-boolean", _with(assessment={"items": True}), "assessment.items: Input should be a valid integer"),
    ("seed-beyond-64-bits", _with(seed=2**64), "seed: Input should be less than or equal to"),
    ("generation-seed-beyond-64-bits", _with(generation={"seed": 2**63}), "generation.seed: Input should be less"),
    ("game-twice", _with(games=["chicken", "chicken"]), "games: a game is listed twice"),
    ("chat-turns-twice", _with(chat_turns=[1, 1]), "chat_turns: a chat_turns value is listed twice"),
    ("intervention-twice", _with(interventions=["sit:k=2", "sit:k=2"]), "an intervention is listed twice"),
    ("composition-twice", _with(compositions={"a": ["default"] * 3, "b": ["default"] * 3}),
     "compositions.b: the same seats as 'a'"),
]

BAD_FILES: list[tuple[str, str, str]] = [
    ("malformed-yaml", "models: [sim:planted\ngames: [chicken]\n", "is not valid YAML"),
    ("list-not-mapping", "- sim:planted\n- chicken\n", "the config must be a YAML mapping"),
    ("scalar-not-mapping", "just a sentence\n", "the config must be a YAML mapping"),
    ("empty-file", "", "the config must be a YAML mapping"),
    ("tab-indented", "models:\n\t- sim:planted\n", "is not valid YAML"),
]


@pytest.fixture()
def cli() -> CliRunner:
    return CliRunner()


def _assert_one_clear_error(output: str, exit_code: int, *fragments: str) -> None:
    assert exit_code == 2, output
    assert "Traceback" not in output, output
    assert output.count("Error:") == 1, output
    for fragment in fragments:
        assert squash(fragment) in squash(output), f"{fragment!r} not in:\n{output}"


@pytest.mark.parametrize(("data", "fragment"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_one_clear_error_and_writes_nothing(
    tmp_path: Path, cli: CliRunner, data: Any, fragment: str
) -> None:
    cfg = write_config(tmp_path / "bad.yaml", data)
    out = tmp_path / "run"
    result = cli.invoke(app, ["run", str(cfg), "--out", str(out), "--no-progress"])
    _assert_one_clear_error(result.output, result.exit_code, str(cfg), fragment)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


@pytest.mark.parametrize(("text", "fragment"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_config_file_is_one_clear_error(tmp_path: Path, cli: CliRunner, text: str, fragment: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text, encoding="utf-8")
    out = tmp_path / "run"
    result = cli.invoke(app, ["run", str(cfg), "--out", str(out)])
    _assert_one_clear_error(result.output, result.exit_code, str(cfg), fragment)
    assert not out.exists()


def test_missing_and_non_utf8_config(tmp_path: Path, cli: CliRunner) -> None:
    missing = tmp_path / "nope.yaml"
    result = cli.invoke(app, ["run", str(missing), "--out", str(tmp_path / "run")])
    _assert_one_clear_error(result.output, result.exit_code, str(missing), "does not exist")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\nmodels: [sim:planted]\n".encode("latin-1"))
    result = cli.invoke(app, ["run", str(latin), "--out", str(tmp_path / "run")])
    _assert_one_clear_error(result.output, result.exit_code, str(latin), "UTF-8")
    assert not (tmp_path / "run").exists()


def test_unknown_executor_writes_nothing(tmp_path: Path, cli: CliRunner) -> None:
    cfg = write_config(tmp_path / "ok.yaml")
    out = tmp_path / "run"
    result = cli.invoke(app, ["run", str(cfg), "--out", str(out), "--executor", "slurm"])
    _assert_one_clear_error(result.output, result.exit_code, "unknown executor 'slurm'")
    assert not out.exists()


# -- output directory ------------------------------------------------------------------------------


def test_output_under_a_regular_file(tmp_path: Path, cli: CliRunner) -> None:
    """Tests run as root, where permissions do not block writes: a parent that is a file always does."""
    cfg = write_config(tmp_path / "ok.yaml")
    blocker = tmp_path / "blocker"
    blocker.write_text("I am a file")
    out = blocker / "deeper" / "run"
    result = cli.invoke(app, ["run", str(cfg), "--out", str(out)])
    _assert_one_clear_error(result.output, result.exit_code, str(out), "is a file, not a directory")
    assert blocker.read_text() == "I am a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "ok.yaml"]


def test_output_is_a_regular_file(tmp_path: Path, cli: CliRunner) -> None:
    cfg = write_config(tmp_path / "ok.yaml")
    out = tmp_path / "results.txt"
    out.write_text("keep me")
    result = cli.invoke(app, ["run", str(cfg), "--out", str(out)])
    _assert_one_clear_error(result.output, result.exit_code, str(out), "exists and is not a directory")
    assert out.read_text() == "keep me"


# -- incompatible stores ---------------------------------------------------------------------------


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _store_with_version(run_dir: Path, version: str, *, wal: bool) -> None:
    Store.open(run_dir).close()
    conn = sqlite3.connect(run_dir / "store.sqlite")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
    conn.commit()
    if not wal:
        conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()


@pytest.mark.parametrize("wal", [True, False], ids=["wal", "rollback-journal"])
def test_store_from_a_newer_schema_is_refused_unchanged(tmp_path: Path, cli: CliRunner, wal: bool) -> None:
    cfg = write_config(tmp_path / "ok.yaml")
    out = tmp_path / "run"
    _store_with_version(out, "999", wal=wal)
    before = _snapshot(out)
    result = cli.invoke(app, ["run", str(cfg), "--out", str(out)])
    _assert_one_clear_error(result.output, result.exit_code, str(out / "store.sqlite"), "store schema 999",
                            "pip install -U contagion")
    assert _snapshot(out) == before


@pytest.mark.parametrize(
    ("name", "make", "fragment"),
    [
        ("not-sqlite", lambda p: p.write_bytes(b"this is not a database\n" * 64), "is not a contagion store"),
        ("foreign-sqlite", lambda p: _foreign_sqlite(p), "is an SQLite file but not a contagion store"),
        ("unreadable-version", None, "unreadable store schema version"),
        ("unmigratable-version", None, "store schema 0, which this contagion cannot migrate"),
    ],
)
def test_incompatible_store_is_refused_unchanged(
    tmp_path: Path, cli: CliRunner, name: str, make: Any, fragment: str
) -> None:
    cfg = write_config(tmp_path / "ok.yaml")
    out = tmp_path / "run"
    out.mkdir()
    if name == "unreadable-version":
        _store_with_version(out, "two", wal=False)
    elif name == "unmigratable-version":
        _store_with_version(out, "0", wal=False)
    else:
        make(out / "store.sqlite")
    before = _snapshot(out)
    result = cli.invoke(app, ["run", str(cfg), "--out", str(out)])
    _assert_one_clear_error(result.output, result.exit_code, str(out / "store.sqlite"), fragment)
    assert _snapshot(out) == before


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('Ada')")
    conn.commit()
    conn.close()


def test_export_of_an_incompatible_store_is_refused(tmp_path: Path, cli: CliRunner) -> None:
    out = tmp_path / "run"
    _store_with_version(out, "999", wal=False)
    before = _snapshot(out)
    result = cli.invoke(app, ["export", str(out)])
    _assert_one_clear_error(result.output, result.exit_code, "store schema 999")
    assert _snapshot(out) == before


# -- the real command line -------------------------------------------------------------------------


def test_subprocess_bad_config_and_bad_store(tmp_path: Path) -> None:
    """The same through `python -m contagion`: exit 2, one line on stderr, nothing written."""
    cfg = write_config(tmp_path / "bad.yaml", _with(assessment={"itemz": 3}))
    out = tmp_path / "run"
    proc = run_cli("run", str(cfg), "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"Error: {cfg}: assessment.itemz: unknown key (check the spelling; see `contagion run "
                     "--help` for the keys)"]
    assert proc.stdout == ""
    assert not out.exists()

    good = write_config(tmp_path / "good.yaml")
    _store_with_version(out, "999", wal=False)
    before = _snapshot(out)
    proc = run_cli("run", str(good), "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert "store schema 999" in proc.stderr and "Traceback" not in proc.stderr
    assert _snapshot(out) == before


# -- the library entry points ----------------------------------------------------------------------


def test_load_config_names_file_and_key(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", _with(rounds=-3))
    with pytest.raises(UserError, match=r"c\.yaml: rounds: Input should be greater than or equal to 1"):
        load_config(cfg)
    with pytest.raises(UserError, match=r"^grid: models: unknown simulated model"):
        parse_config(_with(models=["sim:bogus"]), "grid")


def test_runner_preflight_refuses_a_bad_backend_before_writing(tmp_path: Path) -> None:
    """A config built in code (no parse_config) is checked by the runner before it creates anything."""
    cfg = ExperimentConfig.model_validate(_with(models=["sim:bogus"]))
    out = tmp_path / "run"
    with pytest.raises(UserError, match="unknown simulated model"):
        Runner(cfg, out, progress=False).run()
    assert not out.exists()


def test_every_example_config_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.whitebox.test_vectors import _tiny_vectors

    examples = Path(__file__).resolve().parents[2] / "examples"
    paths = sorted(examples.glob("*.yaml"))
    assert {p.name for p in paths} >= {"demo.yaml", "paper-grid.yaml", "sim-grid.yaml", "vector-dose.yaml"}
    monkeypatch.chdir(tmp_path)
    for path in paths:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if "vectors.json" in path.read_text(encoding="utf-8"):
            # its first step makes vectors.json (contagion vectors, in the directory it is run from): without it
            # the config names that step; with it the config loads
            with pytest.raises(UserError, match=r"no vectors file at vectors\.json; make one with: contagion vectors"):
                load_config(path)
            _tiny_vectors(tmp_path / "vectors.json")
            assert load_config(path).size() == 3 * 4
            (tmp_path / "vectors.json").unlink()
            continue
        if (data.get("assessment") or {}).get("inventory") == "hub":
            # the hub needs the network: schema here, the full offline check in test_paper_grid.py
            cfg = ExperimentConfig.model_validate(data)
        else:
            cfg = load_config(path)
        assert cfg.size() > 0
    sim = load_config(examples / "sim-grid.yaml")
    assert sim.size() == 3456
    paper = yaml.safe_load((examples / "paper-grid.yaml").read_text(encoding="utf-8"))
    assert ExperimentConfig.model_validate(paper).size() == 3 * 4 * 6 * 2 * 36  # with both placebos
    assert yaml.safe_load((examples / "demo.yaml").read_text()) == yaml.safe_load(
        (Path(contagion.cli.__file__).parents[1] / "data" / "demo.yaml").read_text()
    )


def test_a_duplicate_yaml_key_is_an_error_not_the_last_value(tmp_path: Path) -> None:
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("models: [sim:null]\nrounds: 2\nrounds: 50\n", encoding="utf-8")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(cfg), "--out", str(out), "--no-progress"])
    _assert_one_clear_error(result.output, result.exit_code, str(cfg), "duplicate key 'rounds' at line 3")
    assert not out.exists()
