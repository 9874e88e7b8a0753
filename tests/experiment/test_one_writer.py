"""One writer per run directory: a second `contagion run` refuses while the first runs (and runs once the
first has died, even by kill -9); an `ok` record is never replaced by a failed attempt, even by writers
racing without the lock; a run directory refuses a config with a different grid unless told --extend."""

from __future__ import annotations

import multiprocessing
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from contagion.errors import UserError
from contagion.experiment.config import parse_config
from contagion.experiment.runner import Runner
from contagion.experiment.store import RunLock, Store, grid_hash
from contagion.experiment.trial import failed_record
from contagion.testing import LoopbackServer
from tests.experiment.experiment_helpers import SMALL, cli_env, contagion_cmd, game_responder, run_cli, write_config

GRID = {**SMALL, "games": ["prisoners-dilemma"], "interventions": ["none"]}


def test_a_second_run_on_the_same_directory_refuses_and_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    gate = threading.Event()

    def held_back(body: dict[str, Any]) -> Any:
        gate.wait(120)  # the first run's first request waits here until the second run has been refused
        return game_responder(body)

    with LoopbackServer(held_back) as server:
        model = f"openai:loopback@{server.base_url}"
        config = write_config(tmp_path / "grid.yaml", GRID, models=[model])
        # --no-preflight: the model's first request must be a game's, made under the lock (the preflight's
        # probes come before the lock is taken, and would wait at the gate)
        first = subprocess.Popen(contagion_cmd("run", str(config), "--out", str(out), "--no-progress",
                                               "--no-preflight"),
                                 env=cli_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while not server.requests:  # the first run is past its lock and talking to the model
                assert first.poll() is None, first.communicate()
                assert time.monotonic() < deadline, "the first run never reached the server"
                time.sleep(0.05)
            second = run_cli("run", str(config), "--out", str(out), "--no-progress", "--no-preflight")
            assert first.poll() is None  # the refusal happened while the first run was writing
        finally:
            first.send_signal(signal.SIGKILL)  # dies holding the lock: the kernel releases it
            first.communicate(timeout=60)
            gate.set()
        assert second.returncode == 2, second.stderr
        assert "Traceback" not in second.stderr
        message = " ".join(second.stderr.split())
        assert f"another `contagion run` (pid {first.pid}) is writing to {out}" in message
        assert "give this run another --out" in message

        third = run_cli("run", str(config), "--out", str(out), "--no-progress", timeout=300)
    assert third.returncode == 0, third.stderr
    with Store.open_existing(out) as store:
        assert store.counts()["ok"] == parse_config({**GRID, "models": [model]}).size()


def test_the_lock_is_refused_in_process_too_and_released_on_close(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with Store.open(out, writer=True):
        with pytest.raises(UserError, match="is writing to"):
            Store.open(out, writer=True)
        with pytest.raises(UserError, match="is writing to"):
            Runner(parse_config(GRID), out, progress=False).run()
        with Store.open_existing(out) as reader:  # readers (report, view, export) are never blocked
            assert reader.counts() == {"ok": 0, "failed": 0}
    assert not RunLock.held(out)
    assert Runner(parse_config(GRID), out, progress=False).run().finished == 4


# -- no ok record is ever replaced ---------------------------------------------------------------------


def _racer(source: str, target: str, failed: bool, seed: int, rounds: int) -> None:
    """Write every game of ``source`` into ``target`` (as is, or as a failed attempt) in a random order."""
    with Store.open_existing(Path(source)) as src:
        records = list(src.iter_records())
    if failed:
        records = [failed_record(r.spec, r.labels, "BackendError: the server went away", 0.1) for r in records]
    rng = random.Random(seed)
    with Store.open(Path(target)) as store:  # no lock: two writers race on purpose
        for _ in range(rounds):
            rng.shuffle(records)
            for record in records:
                store.put(record)


def test_racing_writers_never_replace_an_ok_record(tmp_path: Path) -> None:
    source = tmp_path / "source"
    cfg = parse_config({**GRID, "repetitions": 6})
    assert Runner(cfg, source, progress=False).run().finished == 24
    target = tmp_path / "target"
    Store.open(target).close()
    ctx = multiprocessing.get_context("spawn")
    racers = [ctx.Process(target=_racer, args=(str(source), str(target), i % 2 == 1, i, 5)) for i in range(4)]
    for p in racers:
        p.start()
    for p in racers:
        p.join(180)
        assert p.exitcode == 0
    with Store.open(target, create=False) as store:  # a writer: readers (open_existing) cannot write
        assert store.counts() == {"ok": 24, "failed": 0}
        # and a failed attempt written after the fact changes nothing
        record = next(store.iter_records())
        assert store.put(failed_record(record.spec, record.labels, "late failure", 0.1)) is False
        assert store.get(record.spec_hash) == record


def test_a_failed_attempt_is_replaced_by_a_later_failure_or_success(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = parse_config(GRID)
    Runner(cfg, out, progress=False).run()
    with Store.open(out) as store:
        record = next(store.iter_records())
        store.conn.execute("DELETE FROM games WHERE spec_hash = ?", (record.spec_hash,))
        assert store.put(failed_record(record.spec, record.labels, "first", 0.1))
        assert store.put(failed_record(record.spec, record.labels, "second", 0.1))
        assert store.failures() == [(record.spec_hash, "second")]
        assert store.put(record)
        assert store.counts() == {"ok": 4, "failed": 0}


# -- one grid per run directory ----------------------------------------------------------------------


def test_a_different_grid_is_refused_unless_extended(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = parse_config(GRID)
    Runner(first, out, progress=False).run()
    bigger = parse_config({**GRID, "repetitions": 2})
    with pytest.raises(UserError) as info:
        Runner(bigger, out, progress=False).run()
    message = str(info.value)
    assert "holds a run of a different config" in message and "changed: repetitions" in message
    assert "--extend" in message
    # execution settings are not the grid: a new concurrency or name is the same run
    same = parse_config({**GRID, "concurrency": 3, "name": "renamed", "max_failure_rate": 0.5})
    assert Runner(same, out, progress=False).run().skipped == 4

    summary = Runner(bigger, out, progress=False, extend=True).run()
    assert (summary.skipped, summary.finished) == (4, 4)
    with Store.open_existing(out) as store:
        held = store.configs()
        assert [c["grid_hash"] for c in held] == [grid_hash(first.model_dump(mode="json")),
                                                  grid_hash(bigger.model_dump(mode="json"))]
        assert store.config() == first.model_dump(mode="json")  # the first config stays the run's config
    # both grids are now known: either runs as a plain resume
    assert Runner(first, out, progress=False).run().skipped == 4
    assert Runner(bigger, out, progress=False).run().skipped == 8


def test_cli_extend_flag(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = write_config(tmp_path / "grid.yaml", GRID)
    assert run_cli("run", str(config), "--out", str(out), "--no-progress").returncode == 0
    other = write_config(tmp_path / "other.yaml", GRID, games=["chicken"])
    refused = run_cli("run", str(other), "--out", str(out), "--no-progress")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "changed: games" in " ".join(refused.stderr.split())
    extended = run_cli("run", str(other), "--out", str(out), "--no-progress", "--extend")
    assert extended.returncode == 0, extended.stderr
    with Store.open_existing(out) as store:
        assert store.counts()["ok"] == 8
        assert len(store.configs()) == 2
