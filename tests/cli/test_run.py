"""`contagion run` and `contagion export` from the command line: Ctrl-C, exit codes, export round-trips
(`contagion demo`: tests/cli/test_demo.py)."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

import contagion
import contagion.cli
from contagion.cli.app import app
from contagion.experiment.record import GameRecord
from contagion.experiment.store import Store
from contagion.testing import LoopbackServer, RawResponse
from contagion.testing.loopback import default_responder

SRC = Path(contagion.__file__).resolve().parents[1]

GRID: dict[str, Any] = {
    "models": ["sim:planted", "sim:null"],
    "games": ["prisoners-dilemma", "chicken", "stag-hunt"],
    "compositions": {
        "all-default": ["default"] * 3,
        "scripted-defector": ["default", "default", "scripted:always-defect"],
    },
    "interventions": ["none", "sit:k=2,n=2"],
    "rounds": 3,
    "chat_turns": [0, 1],
    "repetitions": 3,
    "assessment": {"items": 2, "bootstrap": 100},
    "generation": {"max_tokens": 20},
}


def _config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["COLUMNS"] = "200"
    return env


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "contagion", *args], env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _rows(run_dir: Path) -> int:
    try:
        conn = sqlite3.connect(run_dir / "store.sqlite", timeout=30)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM games").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def _wait_for(predicate: Any, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"exited early ({proc.returncode}): {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def _all_records_decode(run_dir: Path) -> int:
    conn = sqlite3.connect(run_dir / "store.sqlite", timeout=30)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT spec_hash, record FROM games").fetchall()
    finally:
        conn.close()
    for spec_hash, blob in rows:
        assert GameRecord.model_validate_json(zlib.decompress(blob)).spec_hash == spec_hash
    return len(rows)


def _summary_row(text: str, label: str) -> int:
    for line in text.splitlines():
        if label in line:
            return int(line.strip().strip("│").split("│")[-1].strip())
    raise AssertionError(f"no {label!r} row in:\n{text}")


# -- Ctrl-C ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_stops_after_the_games_in_flight_and_says_how_to_resume(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "grid.yaml", GRID)
    out = tmp_path / "run"
    total = 2 * 3 * 2 * 2 * 2 * 3
    proc = _start("run", str(cfg), "--out", str(out), "--no-progress")
    _wait_for(lambda: _rows(out) >= 3, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 130, stderr
    assert "Stopping after the games in flight" in stderr and "Traceback" not in stderr
    flat = " ".join(stdout.split())
    assert "Interrupted." in flat and f"resume with: contagion run {cfg} --out {out}" in flat
    stored = _all_records_decode(out)  # consistent: every stored game whole
    assert 3 <= stored < total
    assert _summary_row(stdout, "finished now") == stored
    assert _summary_row(stdout, "not started (interrupted)") == total - stored

    proc = _start("run", str(cfg), "--out", str(out), "--no-progress")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert _summary_row(stdout, "skipped") == stored and _summary_row(stdout, "finished now") == total - stored
    assert _all_records_decode(out) == total


def _act_slowly(body: dict[str, Any]) -> Any:
    time.sleep(0.05)
    return default_responder(body)


@pytest.mark.slow
def test_second_ctrl_c_stops_now(tmp_path: Path) -> None:
    """With slow remote games in flight, the first Ctrl-C waits for them; the second stops at once."""
    with LoopbackServer(_act_slowly, latency=0.1) as server:
        grid = {**GRID, "models": [f"openai:loopback@{server.base_url}"], "games": ["prisoners-dilemma"],
                "compositions": {"all-default": ["default"] * 3}, "interventions": ["none"], "chat_turns": [1],
                "rounds": 20, "repetitions": 4, "measure_traits": False, "concurrency": 4}
        cfg = _config(tmp_path / "grid.yaml", grid)
        out = tmp_path / "run"
        proc = _start("run", str(cfg), "--out", str(out), "--no-progress")
        _wait_for(lambda: len(server.requests) >= 8, proc)  # games are under way (each needs ~120 requests)
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert proc.poll() is None  # still finishing the games in flight
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        stdout, stderr = proc.communicate(timeout=60)
        stopped_after = time.monotonic() - started
    assert proc.returncode == 130, stderr
    assert stopped_after < 10  # the games in flight needed ~20 s more
    assert "Traceback" not in stderr
    assert _all_records_decode(out) == 0  # nothing half-written from the cancelled games
    assert _summary_row(stdout, "not started (interrupted)") == 4


# -- failure rate ------------------------------------------------------------------------------------


def _refuse_chicken(body: dict[str, Any]) -> Any:
    if "swerve" in str(body.get("messages", "")):
        return RawResponse(400, '{"error": {"message": "no chicken today"}}')
    return default_responder(body)


@pytest.mark.parametrize(("max_rate", "code"), [(0.05, 1), (0.5, 0)])
def test_exit_code_follows_max_failure_rate(tmp_path: Path, max_rate: float, code: int) -> None:
    with LoopbackServer(_refuse_chicken) as server:
        grid = {**GRID, "models": [f"openai:loopback@{server.base_url}"],
                "compositions": {"all-default": ["default"] * 3}, "interventions": ["none"], "chat_turns": [0],
                "rounds": 1, "repetitions": 1,
                "assessment": {"items": 1, "traits": ["agreeableness"], "bootstrap": 100},
                "max_failure_rate": max_rate}
        cfg = _config(tmp_path / "grid.yaml", grid)
        result = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == code, result.output
    flat = " ".join(result.output.split())
    assert "1 game(s) failed; first errors:" in flat and "no chicken today" in flat
    assert ("exceeds max_failure_rate" in flat) == (code == 1)
    with Store.open_existing(tmp_path / "run") as store:
        assert store.counts() == {"ok": 2, "failed": 1}


# -- export ------------------------------------------------------------------------------------------


def test_export_jsonl_and_parquet_round_trip(tmp_path: Path) -> None:
    small = {**GRID, "models": ["sim:planted"], "games": ["chicken"], "repetitions": 1, "rounds": 2}
    cfg = _config(tmp_path / "grid.yaml", small)
    out = tmp_path / "run"
    cli = CliRunner()
    result = cli.invoke(app, ["run", str(cfg), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    with Store.open_existing(out) as store:
        records = {r.spec_hash: r for r in store.iter_records(status=None)}
    assert len(records) == 8

    result = cli.invoke(app, ["export", str(out)])
    assert result.exit_code == 0, result.output
    lines = (out / "games.jsonl").read_text(encoding="utf-8").splitlines()
    exported = [GameRecord.model_validate_json(line) for line in lines]
    assert {r.spec_hash: r for r in exported} == records  # whole records, losslessly
    assert "8 rows written" in " ".join(result.output.split())

    target = tmp_path / "players.parquet"
    result = cli.invoke(app, ["export", str(out), "--format", "parquet", "--out", str(target)])
    assert result.exit_code == 0, result.output
    table = pq.read_table(target).to_pylist()
    assert len(table) == sum(len(r.players) for r in records.values()) == 24
    for row in table:
        record = records[row["spec_hash"]]
        player = record.players[[p.name for p in record.players].index(row["player"])]
        assert (row["backend"], row["persona"], row["focal"]) == (player.backend, player.persona, player.focal)
        assert row["total"] == pytest.approx(player.total)
        assert row["composition"] == record.labels["composition"] and row["seed"] == record.spec.game.seed
        if player.post_profile is not None:
            assert math.isclose(row["post_prosocial"], player.post_profile["prosocial_index"])
        if row["record_json"] is not None:
            assert GameRecord.model_validate_json(row["record_json"]) == record
    assert sum(row["record_json"] is not None for row in table) == len(records)
    assert not list(tmp_path.glob("**/.*.tmp"))  # written via a temporary file, renamed


def test_export_errors(tmp_path: Path) -> None:
    cli = CliRunner()
    result = cli.invoke(app, ["export", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = cli.invoke(app, ["export", str(tmp_path), "--format", "csv"])
    assert result.exit_code == 2 and "unknown format 'csv'" in result.output
    result = cli.invoke(app, ["export", str(tmp_path)])
    assert result.exit_code == 2 and "holds no contagion run" in " ".join(result.output.split())


# -- run: the happy path ---------------------------------------------------------------------------


def test_run_prints_summary_and_next_step(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "grid.yaml", {**GRID, "models": ["sim:null"], "games": ["stag-hunt"], "repetitions": 1})
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(cfg), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert _summary_row(result.output, "finished now") == 8 and _summary_row(result.output, "failed now") == 0
    assert f"next: contagion report {out}" in " ".join(result.output.split())
    with Store.open_existing(out) as store:
        assert store.counts() == {"ok": 8, "failed": 0}
        assert store.config()["games"] == ["stag-hunt"]


def test_run_says_when_repetitions_replay_the_same_game(tmp_path: Path) -> None:
    # Without chat, the simulated model's actions and answers depend on its context only: the three
    # repetitions of each no-chat cell are one game played three times. With chat, the talk order and
    # the chat vary with the seed, so repetitions differ.
    grid = {**GRID, "models": ["sim:planted"], "games": ["prisoners-dilemma"], "interventions": ["none"],
            # argmax actions, fixed seats and option order (the grid defaults make repetitions differ)
            "action_mode": "auto", "seat_order": "fixed", "option_order": "cooperate-first"}
    no_chat = _config(tmp_path / "no-chat.yaml", {**grid, "chat_turns": [0, 1]})
    result = CliRunner().invoke(app, ["run", str(no_chat), "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert _summary_row(result.output, "finished now") == 12
    assert "Note: 4 of the 12 games finished now replayed another one exactly" in text
    assert "the report counts each distinct game once" in text
    with Store.open_existing(tmp_path / "a") as store:
        keys = [(r.spec.game.chat_turns, r.transcript_key()) for r in store.iter_records()]
    assert len({k for c, k in keys if c == 0}) == 2 and len({k for c, k in keys if c == 1}) == 6

    chat = _config(tmp_path / "chat.yaml", {**grid, "chat_turns": [1]})
    result = CliRunner().invoke(app, ["run", str(chat), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "replayed" not in result.output


def test_run_help_documents_the_command() -> None:
    result = CliRunner().invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for needle in ("--out", "--executor", "--address", "resumable", "Ctrl-C"):
        assert needle in text


def test_store_meta_keeps_the_config_json(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "grid.yaml", {**GRID, "models": ["sim:null"], "games": ["chicken"], "repetitions": 1,
                                            "interventions": ["none"], "chat_turns": [0]})
    result = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(tmp_path / "run" / "store.sqlite")
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    conn.close()
    assert meta["schema_version"] == "1"
    assert json.loads(meta["config"])["models"] == ["sim:null"]
