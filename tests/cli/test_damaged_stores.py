"""Reading commands open a store read-only: an archived run whose files and directory are read-only reports,
views and exports; a writable one is left exactly as it was.

Root ignores file permissions, so as root the commands run in a subprocess without the capabilities that let
root write anyway (``setpriv --bounding-set=-dac_override,-dac_read_search``); as any other user, ``chmod``
alone makes the run read-only. Either way the test first checks that the process really cannot write there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import contagion.cli  # noqa: F401  (registers the commands)
from contagion.cli.app import app
from contagion.experiment.config import parse_config
from contagion.experiment.runner import Runner
from contagion.experiment.store import Store
from tests.experiment.experiment_helpers import SMALL, SRC

GRID = {**SMALL, "games": ["prisoners-dilemma"], "interventions": ["none"]}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert Runner(parse_config(GRID), out, progress=False).run().finished == 4
    return out


def fingerprint(run: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.iterdir())}


def _unprivileged() -> list[str]:
    """The command prefix of a process that file permissions bind."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a process that permissions bind")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def _set_writable(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        if writable:
            path.chmod(mode | stat.S_IWUSR)
        else:
            path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.fixture
def archived(finished_run: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of a finished run with every file and the directory read-only."""
    run = tmp_path / "archive" / "run"
    shutil.copytree(finished_run, run)
    _set_writable(run, False)
    yield run
    _set_writable(run, True)


DRIVER = """
import json, sys
from typer.testing import CliRunner
import contagion.cli
from contagion.cli.app import app
results = [CliRunner().invoke(app, argv) for argv in json.loads(sys.argv[1])]
print(json.dumps([[r.exit_code, r.output] for r in results]))
"""


def contagion_cli(*commands: list[str]) -> list[tuple[int, str]]:
    """Run the commands, one after another, in one unprivileged Python process: (exit code, output) each."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([*_unprivileged(), sys.executable, "-c", DRIVER, json.dumps(commands)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return [(int(code), str(output)) for code, output in json.loads(done.stdout.strip().splitlines()[-1])]


def test_an_archived_read_only_run_reports_views_and_exports(archived: Path, tmp_path: Path) -> None:
    probe = subprocess.run([*_unprivileged(), sys.executable, "-c", f"open({str(archived / 'x')!r}, 'w')"],
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "Permission denied" in probe.stderr  # the premise: it really is read-only
    before = fingerprint(archived)
    out = tmp_path / "out"
    out.mkdir()
    commands = [["report", str(archived), "--out", str(out / "report.html")],
                ["view", str(archived), "--out", str(out / "viewer.html")],
                ["export", str(archived), "--out", str(out / "games.jsonl")],
                ["export", str(archived), "--format", "parquet", "--out", str(out)]]
    for (code, output), argv in zip(contagion_cli(*commands), commands, strict=True):
        assert code == 0, (argv, output)
        assert "damaged" not in output and "Traceback" not in output
    for made in ("report.html", "viewer.html", "games.jsonl", "games.parquet"):
        assert (out / made).stat().st_size > 0
    assert len((out / "games.jsonl").read_text(encoding="utf-8").splitlines()) == 4
    assert fingerprint(archived) == before  # not a byte changed, no journal file left


def test_writing_into_an_archived_run_is_refused_clearly(archived: Path) -> None:
    ((code, output),) = contagion_cli(["view", str(archived)])  # the default output is inside the run
    assert code == 2, output
    assert "Traceback" not in output and "viewer.html" in output and "damaged" not in output


def test_reading_commands_leave_a_writable_run_as_it_was(finished_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = fingerprint(run)
    for argv in (["export", str(run), "--out", str(tmp_path / "g.jsonl")],
                 ["view", str(run), "--out", str(tmp_path / "v.html")]):
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 0, result.output
    assert fingerprint(run) == before


def test_a_reading_store_cannot_write(finished_run: Path) -> None:
    with Store.open_existing(finished_run) as store, pytest.raises(sqlite3.OperationalError, match="readonly"):
        store.conn.execute("DELETE FROM games")
    with Store.open_existing(finished_run) as store:
        assert store.counts() == {"ok": 4, "failed": 0}
