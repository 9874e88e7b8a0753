"""Resume and crash safety: `contagion run` killed with SIGKILL at random moments, then rerun, ends with
exactly the records of an uninterrupted run — none lost, none duplicated, none corrupt."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from contagion.experiment.config import load_config
from contagion.experiment.record import GameRecord
from tests.experiment.experiment_helpers import SMALL, cli_env, comparable_records, contagion_cmd, run_cli, write_config

# 2 models x 3 games x 2 compositions x 2 interventions x 2 chat settings x 6 repetitions = 288 games,
# a few seconds of work on the simulated models: long enough to be killed in the middle many times.
CRASH_GRID = {
    **SMALL,
    "models": ["sim:planted", "sim:null"],
    "games": ["prisoners-dilemma", "chicken", "stag-hunt"],
    "rounds": 3,
    "repetitions": 6,
}
MIN_KILLS = 10


def _stored_rows(run_dir: Path) -> int:
    path = run_dir / "store.sqlite"
    if not path.exists():
        return 0
    conn = sqlite3.connect(path, timeout=30)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM games").fetchone()[0])
    except sqlite3.DatabaseError:  # killed before the schema was committed
        return 0
    finally:
        conn.close()


def _check_consistent(run_dir: Path) -> int:
    """Every row decodes to a whole record under its own hash; the file passes SQLite's integrity check."""
    path = run_dir / "store.sqlite"
    if not path.exists():
        return 0
    conn = sqlite3.connect(path, timeout=30)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'games'").fetchone() is None:
            return 0  # killed before the schema was committed: the next run creates it
        n = 0
        for spec_hash, status, blob in conn.execute("SELECT spec_hash, status, record FROM games"):
            record = GameRecord.model_validate_json(zlib.decompress(blob))
            assert record.spec_hash == spec_hash == record.spec.stable_hash()
            assert status == "ok" and record.error is None
            n += 1
        assert conn.execute("SELECT COUNT(DISTINCT spec_hash) FROM games").fetchone()[0] == n
        return n
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_records(tmp_path: Path) -> None:
    cfg_path = write_config(tmp_path / "grid.yaml", CRASH_GRID)
    total = load_config(cfg_path).size()
    assert total == 288

    reference = tmp_path / "reference"
    proc = run_cli("run", str(cfg_path), "--out", str(reference), "--no-progress", timeout=300)
    assert proc.returncode == 0, proc.stderr
    expected = comparable_records(reference)
    assert len(expected) == total

    rng = random.Random(20260506)
    rounds = 0
    crashed = tmp_path / "crashed-0"
    kills = mid_run_kills = 0
    attempts = 0
    while kills < MIN_KILLS or _stored_rows(crashed) < total:
        attempts += 1
        assert attempts <= 40, f"no progress after {attempts} attempts ({kills} kills)"
        if _stored_rows(crashed) == total:
            # finished before enough kills (a fast machine): check it, then crash a fresh run
            assert comparable_records(crashed) == expected
            rounds += 1
            crashed = tmp_path / f"crashed-{rounds}"
        before = _stored_rows(crashed)
        child = subprocess.Popen(contagion_cmd("run", str(cfg_path), "--out", str(crashed), "--no-progress"),
                                 env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if kills < MIN_KILLS:
            if attempts % 3 == 1:
                # a random moment from interpreter start-up on (imports, planning, profiles, games)
                time.sleep(rng.uniform(0.1, 2.5))
            else:
                # a random moment while games are being stored
                while child.poll() is None and _stored_rows(crashed) <= before:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.25))
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=300)
        if child.returncode == -signal.SIGKILL:
            kills += 1
            mid_run_kills += before < _stored_rows(crashed) < total
        else:
            assert child.returncode == 0, err
        stored = _check_consistent(crashed)  # after every crash: nothing half-written, nothing twice
        assert stored <= total

    assert kills >= MIN_KILLS
    assert mid_run_kills >= MIN_KILLS // 2, f"only {mid_run_kills} of {kills} kills landed while storing games"
    got = comparable_records(crashed)
    assert set(got) == set(expected)  # none lost, none extra
    assert got == expected  # and each one identical to the uninterrupted run's (timing aside)

    # a final rerun has nothing left to do
    proc = run_cli("run", str(cfg_path), "--out", str(crashed), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert _row(proc.stdout, "skipped") == total and _row(proc.stdout, "finished now") == 0
    assert comparable_records(crashed) == expected


@pytest.mark.slow
def test_changing_a_parameter_runs_only_the_new_specs(tmp_path: Path) -> None:
    small = {**SMALL, "games": ["prisoners-dilemma"], "interventions": ["none"]}
    cfg_path = write_config(tmp_path / "grid.yaml", small)
    out = tmp_path / "run"
    first = run_cli("run", str(cfg_path), "--out", str(out), "--no-progress")
    assert first.returncode == 0, first.stderr
    before = comparable_records(out)
    assert len(before) == 4

    # transport settings: nothing new
    write_config(cfg_path, {**small, "concurrency": 2, "max_failure_rate": 0.5})
    proc = run_cli("run", str(cfg_path), "--out", str(out), "--no-progress")
    assert proc.returncode == 0 and _row(proc.stdout, "finished now") == 0 and _row(proc.stdout, "skipped") == 4

    # one more repetition and one more game: a different grid, refused unless --extend; then only those run
    write_config(cfg_path, {**small, "repetitions": 2, "games": ["prisoners-dilemma", "stag-hunt"]})
    proc = run_cli("run", str(cfg_path), "--out", str(out), "--no-progress")
    assert proc.returncode == 2 and "--extend" in proc.stderr, proc.stderr
    proc = run_cli("run", str(cfg_path), "--out", str(out), "--no-progress", "--extend")
    assert proc.returncode == 0, proc.stderr
    assert _row(proc.stdout, "skipped") == 4 and _row(proc.stdout, "finished now") == 12
    after = comparable_records(out)
    assert len(after) == 16
    assert {h: after[h] for h in before} == before  # the old records are untouched

    # a parameter that changes every spec (rounds) reruns everything, next to the old records
    write_config(cfg_path, {**small, "rounds": 3})
    proc = run_cli("run", str(cfg_path), "--out", str(out), "--no-progress", "--extend")
    assert _row(proc.stdout, "skipped") == 0 and _row(proc.stdout, "finished now") == 4


def _row(summary: str, label: str) -> int:
    for line in summary.splitlines():
        if label in line:
            return int(line.strip().strip("│").split("│")[-1].strip())
    raise AssertionError(f"no {label!r} row in:\n{summary}")
