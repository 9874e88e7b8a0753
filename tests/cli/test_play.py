"""``contagion play`` as documented: it prints the conversation and the action table, writes a record that
validates as a GameRecord, and turns bad input into one clear line, exit code 2 and no file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

import contagion.cli  # noqa: F401  (registers the commands)
from contagion import vocabulary as P
from contagion.cli.app import app
from contagion.experiment.record import GameRecord


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def play(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(app, ["play", *args], env={"COLUMNS": "200"})


def load(path: Path) -> GameRecord:
    return GameRecord.model_validate_json(path.read_text(encoding="utf-8"))


def timeless(record: GameRecord) -> dict[str, object]:
    data = record.model_dump(mode="json")
    data.pop("wall_seconds")
    for p in data["players"]:
        p.pop("model_seconds")
    return data


def test_play_prints_the_game_and_writes_the_record(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "game.json"
    args = ["--game", "chicken", "--player", "scripted:tit-for-tat", "--player", "sim:planted",
            "--player", "malicious=sim:planted", "--rounds", "3", "--chat-turns", "1", "--seed", "7",
            "--out", str(out)]
    result = play(runner, *args)
    assert result.exit_code == 0, result.output
    text = result.output
    for needle in ("contagion play: Chicken, 3 players, 3 rounds, 1 chat turn(s), intervention none",
                   "player 3: malicious=sim:planted", "Round 1", "Round 3", "Result", "cooperation", "invalid",
                   f"record written to {out}"):
        assert needle in text, needle
    record = load(out)
    assert record.error is None
    assert record.spec.game.game == "chicken" and record.spec.game.rounds == 3 and record.spec.game.seed == 7
    assert [p.label() for p in record.spec.game.players] == ["scripted:tit-for-tat", "sim:planted",
                                                             "malicious=sim:planted"]
    assert [p.persona for p in record.players] == ["default", "default", "malicious"]
    # the conversation is printed as it happens, and the action table with labels and payoffs
    for r in record.rounds:
        for speaker, said in r.talk:
            assert f"{speaker}: {said}" in text
    table_rows = [line for line in text.splitlines() if line.strip().startswith(("Avery", "Blake", "Casey"))]
    assert any(("swerve" in line or "straight" in line) for line in table_rows)
    # the same command gives the same record
    again = tmp_path / "again.json"
    result = play(runner, *args[:-1], str(again))
    assert result.exit_code == 0, result.output
    assert timeless(load(again)) == timeless(record)


def test_quiet_hides_the_chat_but_keeps_the_tables(runner: CliRunner) -> None:
    result = play(runner, "-p", "sim:null", "-p", "sim:null", "--rounds", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert "Round 1" in result.output and "Result" in result.output
    assert "Avery: " not in result.output and "Blake: " not in result.output


def test_options_reach_the_record(runner: CliRunner, tmp_path: Path) -> None:
    personas = tmp_path / "personas.yaml"
    personas.write_text("name: stoic\ntext: You stay calm and say little.\n", encoding="utf-8")
    game = tmp_path / "trade.yaml"
    game.write_text(yaml.safe_dump({"name": "trade", "title": "Trade", "kind": "prisoners-dilemma",
                                    "cooperate": "share", "defect": "grab", "T": 6, "R": 4, "P": 1, "S": 0}))
    out = tmp_path / "game.json"
    result = play(runner, "--game", str(game), "-p", "stoic=sim:null", "-p", "scripted:random?seed=3&p=0.5",
                  "--rounds", "2", "--chat-turns", "0", "--hide-horizon", "--seed", "5", "--temperature", "0.7",
                  "--max-tokens", "20", "--personas", str(personas), "--out", str(out))
    assert result.exit_code == 0, result.output
    record = load(out)
    assert record.game["name"] == "trade" and record.game["cooperate"] == "share"
    assert record.players[0].persona == "stoic" and record.players[0].persona_text == "You stay calm and say little."
    assert record.players[1].backend == "scripted:random?p=0.5&seed=3"
    assert "unknown number of rounds" in record.players[0].system_prompt
    assert record.spec.game.reveal_horizon is False and record.spec.game.chat_turns == 0
    assert record.spec.game.generation.temperature == 0.7 and record.spec.game.generation.max_tokens == 20
    assert all(r.talk == [] for r in record.rounds)
    assert {a.label for p in record.players for a in p.actions} <= {"share", "grab"}


def test_intervention_parameters_land_in_the_record(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "game.json"
    result = play(runner, "-p", "sim:planted", "-p", "malicious=sim:planted", "-p", "scripted:always-defect",
                  "--rounds", "2", "--chat-turns", "1", "--intervention", "repeat-system:k=1,position=act",
                  "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "intervention repeat-system:k=1,position=act" in result.output
    assert "[steering → Avery]" in result.output
    record = load(out)
    assert record.spec.intervention.name == "repeat-system"
    assert record.spec.intervention.params == {"k": 1, "position": "act"}
    avery = record.players[0]
    assert avery.focal
    assert [(e.round, e.phase) for e in avery.injections] == [(1, "act"), (2, "act")]
    assert [m.meta["round"] for m in avery.messages if m.meta.get("kind") == P.INJECTION] == [1, 2]
    # co-players are never steered: not the malicious one, not the scripted bot
    assert not record.players[1].focal and record.players[1].injections == []
    assert record.players[2].injections == []


def test_sit_on_the_command_line_measures_pre_play_profiles(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "game.json"
    result = play(runner, "-p", "sim:planted", "-p", "scripted:always-defect", "--rounds", "2", "--chat-turns", "0",
                  "--intervention", "sit:k=2,n=3", "--out", str(out))
    assert result.exit_code == 0, result.output
    record = load(out)
    assert record.spec.intervention.params == {"k": 2, "n": 3}
    focal = record.players[0]
    assert focal.pre_profile is not None and focal.pre_profile["context_kind"] == "pre"
    assert [(e.round, e.intervention) for e in focal.injections] == [(2, "sit")]
    assert focal.injections[0].text.count("\n- ") == 3
    assert record.players[1].pre_profile is None  # scripted: nothing to measure


@pytest.mark.slow
def test_play_on_the_embedded_model(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "game.json"
    result = play(runner, "--player", "embedded", "--player", "scripted:always-defect", "--rounds", "2",
                  "--chat-turns", "1", "--max-tokens", "8", "--seed", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    record = load(out)
    lm = record.players[0]
    assert lm.backend == "embedded" and lm.completion_tokens > 0 and lm.prompt_tokens > 0
    assert [a.method for a in lm.actions] == ["score:first-token-top-logprobs"] * 2
    assert record.invalid_rate == 0.0
    said = [t for r in record.rounds for t in r.talk if t[0] == "Avery"]
    assert len(said) == 2 and all(f"Avery: {t}" in result.output for _, t in said)


# -- bad input --------------------------------------------------------------------------------

TWO = ["-p", "scripted:always-defect", "-p", "scripted:always-cooperate"]

BAD_GAME_ORDER = {"name": "bad", "kind": "prisoners-dilemma", "cooperate": "share", "defect": "grab",
                  "T": 2, "R": 3, "P": 1, "S": 0}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--game", "poker", *TWO], "unknown game 'poker'"),
        (["--game", "{bad_order}", *TWO], "payoffs are not a valid prisoners-dilemma: needs T > R > P > S"),
        (["--game", "{malformed}", *TWO], "is not valid YAML"),
        (["--game", "{missing}", *TWO], "does not exist"),
        (["-p", "sneaky=sim:null", "-p", "sim:null"], "unknown persona 'sneaky'"),
        (["-p", "sim:null"], "a game needs at least 2 players"),
        (["-p", "nonsense:model", "-p", "sim:null"], "unknown backend spec 'nonsense:model'"),
        (["-p", "scripted:always-lie", "-p", "sim:null"], "unknown scripted strategy 'always-lie'"),
        (["--rounds", "-1", *TWO], "--rounds must be at least 1 (got -1)"),
        (["--rounds", "0", *TWO], "--rounds must be at least 1 (got 0)"),
        (["--rounds", "5000", *TWO], "--rounds: Input should be less than or equal to 1000"),
        (["--chat-turns", "-2", *TWO], "--chat-turns must be 0 or more"),
        (["--chat-turns", "50", *TWO], "--chat-turns: Input should be less than or equal to 20"),
        (["--max-tokens", "0", *TWO], "--max-tokens: Input should be greater than or equal to 1"),
        (["--temperature", "-1", *TWO], "--temperature: Input should be greater than or equal to 0"),
        (["--personas", "{malformed}", *TWO], "persona file"),
        (["--intervention", "hypnosis", *TWO], "unknown intervention 'hypnosis'; choose one of: none, repeat-system"),
        (["--intervention", "sit:k=0", *TWO], "intervention sit: k: Input should be greater than or equal to 1"),
        (["--intervention", "sit:k=-1", *TWO], "intervention sit: k: Input should be greater than or equal to 1"),
        (["--intervention", "repeat-system:k=0", *TWO], "intervention repeat-system: k:"),
        (["--intervention", "sit-adaptive:m=0", *TWO], "intervention sit-adaptive: m:"),
        (["--intervention", "sit-adaptive:k=-3", *TWO], "intervention sit-adaptive: k:"),
        (["--intervention", "sit:n=0", *TWO], "intervention sit: n:"),
        (["--intervention", "sit:kk=2", *TWO], "intervention sit: kk: unknown key"),
        (["--intervention", "sit:source=vibes", *TWO], "intervention sit: source:"),
        (["--intervention", "sit:k", *TWO], "parameter 'k' must look like name=value"),
        (["--intervention", "sit:min_support=0.2", *TWO], "intervention sit: min_support:"),
    ],
)
def test_bad_input_is_one_clear_line_exit_2_and_nothing_written(
    runner: CliRunner, tmp_path: Path, args: list[str], needle: str
) -> None:
    files = {
        "{bad_order}": tmp_path / "bad.yaml",
        "{malformed}": tmp_path / "malformed.yaml",
        "{missing}": tmp_path / "missing.yaml",
    }
    files["{bad_order}"].write_text(yaml.safe_dump(BAD_GAME_ORDER), encoding="utf-8")
    files["{malformed}"].write_text("name: [unclosed\nkind: chicken\n", encoding="utf-8")
    args = [str(files[a]) if a in files else a for a in args]
    before = set(tmp_path.iterdir())
    out = tmp_path / "game.json"
    result = play(runner, *args, "--out", str(out))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an uncaught error
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert needle in lines[0]
    assert not out.exists()
    assert set(tmp_path.iterdir()) == before  # no temporary file left either


def test_no_player_at_all_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "game.json"
    result = play(runner, "--out", str(out))
    assert result.exit_code == 2
    assert "Missing option '--player'" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_output_directory_must_exist(runner: CliRunner, tmp_path: Path) -> None:
    result = play(runner, *TWO, "--out", str(tmp_path / "nope" / "game.json"))
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_the_module_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    import contagion

    src = str(Path(contagion.__file__).resolve().parents[1])
    out = tmp_path / "game.json"
    proc = subprocess.run([sys.executable, "-m", "contagion", "play", "-p", "embedded", "--rounds", "-1",
                           "--out", str(out)], capture_output=True, text=True,
                          env={"PYTHONPATH": src, "COLUMNS": "200"}, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "Error: a game needs at least 2 players: repeat --player"
    assert not out.exists()
    proc = subprocess.run([sys.executable, "-m", "contagion", "play", *TWO, "--rounds", "2", "--chat-turns", "0",
                           "--out", str(out)], capture_output=True, text=True, env={"PYTHONPATH": src}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text(encoding="utf-8"))
    GameRecord.model_validate(record)
    assert record["players"][0]["payoffs"] == [5.0, 5.0]  # always-defect against always-cooperate (PD T)
