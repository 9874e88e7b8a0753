"""Damaged and malformed inputs, table-driven: configs, inventories, game and persona files, stores and
export targets. Each case runs the real command and must exit 2 with one message naming the file and
what is wrong — no traceback — and leave nothing half-written behind."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sqlite3
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import contagion.cli  # noqa: F401  (registers the commands)
from contagion.cli.app import app
from contagion.experiment.config import parse_config
from contagion.experiment.runner import Runner
from contagion.experiment.store import Store
from tests.experiment.experiment_helpers import SMALL, squash

GRID: dict[str, Any] = {**SMALL, "games": ["prisoners-dilemma"], "interventions": ["none"]}
NOT_UTF8 = "name: caf\xe9\n".encode("latin-1")
# files SQLite or the writer lock may leave beside a store; everything else must be as it was
BENIGN = {"store.sqlite-wal", "store.sqlite-shm", "run.lock"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert Runner(parse_config(GRID), out, progress=False).run().finished == 4
    return out


@dataclass(frozen=True)
class Case:
    """``make(tmp, run)`` prepares the files and returns the command line; ``needles`` must be in the message
    (``{tmp}`` is replaced by the case's directory, ``{store}`` by its store's path)."""

    id: str
    make: Callable[[Path, Path], list[str]]
    needles: tuple[str, ...]


def _write(path: Path, data: Any) -> Path:
    if isinstance(data, bytes):
        path.write_bytes(data)
    elif isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def run_with(**changes: Any) -> Callable[[Path, Path], list[str]]:
    def make(tmp: Path, _: Path) -> list[str]:
        return ["run", str(_write(tmp / "grid.yaml", {**GRID, **changes})), "--out", str(tmp / "out")]
    return make


def run_text(text: str | bytes) -> Callable[[Path, Path], list[str]]:
    def make(tmp: Path, _: Path) -> list[str]:
        return ["run", str(_write(tmp / "grid.yaml", text)), "--out", str(tmp / "out")]
    return make


def run_with_file(name: str, content: str | bytes, **changes: Any) -> Callable[[Path, Path], list[str]]:
    """A config that points at a side file (game, inventory) through ``{file}`` in its values."""
    def make(tmp: Path, _: Path) -> list[str]:
        side = _write(tmp / name, content)
        data = yaml.safe_load(yaml.safe_dump({**GRID, **changes}).replace("{file}", str(side)))
        return ["run", str(_write(tmp / "grid.yaml", data)), "--out", str(tmp / "out")]
    return make


def persona_file(content: str | bytes | None) -> Callable[[Path, Path], list[str]]:
    """``contagion play --personas FILE`` (``None``: the file does not exist)."""
    def make(tmp: Path, _: Path) -> list[str]:
        path = tmp / "personas.yaml" if content is None else _write(tmp / "personas.yaml", content)
        return ["play", "--player", "scripted:always-defect", "--player", "scripted:tit-for-tat",
                "--personas", str(path), "--rounds", "1", "--quiet"]
    return make


def damaged(command: str, damage: Callable[[Path], None], *extra: str) -> Callable[[Path, Path], list[str]]:
    """A copy of a finished run, damaged, then ``command`` run on it."""
    def make(tmp: Path, run: Path) -> list[str]:
        copy = tmp / "run"
        shutil.copytree(run, copy)
        damage(copy / "store.sqlite")
        if command == "run":
            return ["run", str(_write(tmp / "grid.yaml", GRID)), "--out", str(copy), "--no-progress"]
        return [command, str(copy), *extra]
    return make


def _sql(statement: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        conn = sqlite3.connect(path)
        conn.execute(statement)
        conn.commit()
        conn.close()
    return damage


def _first_record(blob: bytes) -> Callable[[Path], None]:
    return _sql(f"UPDATE games SET record = X'{blob.hex()}' WHERE spec_hash = (SELECT MIN(spec_hash) FROM games)")


def _bytes(content: bytes) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        path.write_bytes(content)
    return damage


def _corrupt_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    page = 4096
    for start in range(page, len(data), page):  # every page but the header page: the b-trees are garbage
        data[start:start + 64] = b"\xa5" * 64
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])


def _store_is_dir(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _plain_sqlite(path: Path) -> None:
    path.unlink()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()


def export_to(target: Callable[[Path], Path], fmt: str = "jsonl") -> Callable[[Path, Path], list[str]]:
    def make(tmp: Path, run: Path) -> list[str]:
        copy = tmp / "run"
        shutil.copytree(run, copy)
        return ["export", str(copy), "--format", fmt, "--out", str(target(tmp))]
    return make


def _file(tmp: Path) -> Path:
    return _write(tmp / "plain.txt", "x")


def _huge_seed(path: Path) -> None:
    """The first record's seed rewritten beyond 2**63 (no 64-bit integer, and no valid seed, holds it)."""
    conn = sqlite3.connect(path)
    spec_hash, blob = conn.execute("SELECT spec_hash, record FROM games ORDER BY spec_hash LIMIT 1").fetchone()
    record = json.loads(zlib.decompress(blob))
    record["spec"]["game"]["seed"] = 2**64
    conn.execute("UPDATE games SET record = ? WHERE spec_hash = ?", (zlib.compress(json.dumps(record).encode()),
                                                                    spec_hash))
    conn.commit()
    conn.close()


def in_run(command: str, *extra: str) -> Callable[[Path, Path], list[str]]:
    def make(tmp: Path, run: Path) -> list[str]:
        copy = tmp / "run"
        shutil.copytree(run, copy)
        return [command, str(copy), *[e.replace("{tmp}", str(tmp)) for e in extra]]
    return make


GAME_OK = {"name": "mine", "kind": "prisoners-dilemma", "cooperate": "share", "defect": "keep",
           "T": 5, "R": 3, "P": 1, "S": 0}

CASES = [
    # -- configs ---------------------------------------------------------------------------------
    Case("config-missing", lambda tmp, _: ["run", str(tmp / "nope.yaml"), "--out", str(tmp / "out")],
         ("nope.yaml", "does not exist")),
    Case("config-is-directory", lambda tmp, _: ["run", str(tmp), "--out", str(tmp / "out")], ("{tmp}",)),
    Case("config-bad-yaml", run_text("models: [sim:planted\n"), ("grid.yaml", "not valid YAML")),
    Case("config-not-utf8", run_text(NOT_UTF8), ("grid.yaml", "UTF-8")),
    Case("config-empty", run_text(""), ("grid.yaml", "mapping")),
    Case("config-a-list", run_text("- a\n- b\n"), ("grid.yaml", "mapping")),
    Case("config-unknown-key", run_with(roundz=3), ("grid.yaml", "roundz", "unknown key")),
    Case("config-rounds-text", run_with(rounds="three"), ("grid.yaml", "rounds")),
    Case("config-rounds-zero", run_with(rounds=0), ("grid.yaml", "rounds")),
    Case("config-repetitions-zero", run_with(repetitions=0), ("grid.yaml", "repetitions")),
    Case("config-chat-negative", run_with(chat_turns=[-1]), ("grid.yaml", "chat_turns")),
    Case("config-unknown-backend", run_with(models=["foo:bar"]), ("grid.yaml", "foo:bar")),
    Case("config-unknown-game", run_with(games=["poker"]), ("grid.yaml", "poker")),
    Case("config-unknown-persona", run_with(compositions={"x": ["default", "villain"]}), ("grid.yaml", "villain")),
    Case("config-bad-intervention", run_with(interventions=["sit:k=abc"]), ("grid.yaml", "interventions")),
    Case("config-scripted-p-text", run_with(compositions={"x": ["default", "scripted:random?p=abc"]}),
         ("grid.yaml", "option p of scripted:random", "'abc'")),
    Case("config-scripted-p-range", run_with(compositions={"x": ["default", "scripted:random?p=2"]}),
         ("grid.yaml", "option p of scripted:random", "between 0 and 1")),
    Case("config-scripted-seed-text", run_with(compositions={"x": ["default", "scripted:random?seed=x1"]}),
         ("grid.yaml", "option seed of scripted:random", "integer")),
    Case("config-scripted-seed-huge", run_with(compositions={"x": ["default", f"scripted:random?seed={2**70}"]}),
         ("grid.yaml", "option seed of scripted:random", "64 bits")),
    Case("config-scripted-unknown-option", run_with(compositions={"x": ["default", "scripted:always-defect?p=1"]}),
         ("grid.yaml", "unknown option")),
    Case("config-unknown-strategy", run_with(compositions={"x": ["default", "scripted:sometimes"]}),
         ("grid.yaml", "sometimes")),
    # -- game files --------------------------------------------------------------------------------
    Case("game-file-bad-yaml", run_with_file("game.yaml", "name: [x\n", games=["{file}"]),
         ("game.yaml", "not valid YAML")),
    Case("game-file-not-utf8", run_with_file("game.yaml", NOT_UTF8, games=["{file}"]), ("game.yaml", "UTF-8")),
    Case("game-file-a-list", run_with_file("game.yaml", "- 1\n", games=["{file}"]), ("game.yaml", "mapping")),
    Case("game-file-bad-payoffs", run_with_file(
        "game.yaml", yaml.safe_dump({**GAME_OK, "R": 9}), games=["{file}"]), ("game.yaml", "T > R > P > S")),
    Case("game-file-missing", lambda tmp, _: run_with(games=[str(tmp / "gone.yaml")])(tmp, _),
         ("gone.yaml", "does not exist")),
    # -- inventories -------------------------------------------------------------------------------
    Case("inventory-missing", lambda tmp, r: run_with(assessment={"inventory": str(tmp / "inv.jsonl")})(tmp, r),
         ("inv.jsonl",)),
    Case("inventory-bad-json-line", run_with_file(
        "inv.jsonl", '{"statement": "I am kind", "answer_matching_behavior": " Yes"}\n{not json\n',
        assessment={"inventory": "{file}", "items": 1}), ("inv.jsonl", "line 2", "not valid JSON")),
    Case("inventory-not-utf8", run_with_file("inv.jsonl", b'{"statement": "caf\xe9"}\n',
                                             assessment={"inventory": "{file}"}), ("inv.jsonl",)),
    Case("inventory-bad-yaml", run_with_file("inv.yaml", "traits: [\n", assessment={"inventory": "{file}"}),
         ("inv.yaml",)),
    # -- persona files -----------------------------------------------------------------------------
    Case("persona-file-missing", persona_file(None), ("personas.yaml", "does not exist")),
    Case("persona-file-bad-yaml", persona_file("name: [\n"), ("personas.yaml", "not valid YAML")),
    Case("persona-file-not-utf8", persona_file(NOT_UTF8), ("personas.yaml", "UTF-8")),
    Case("persona-file-not-a-mapping", persona_file("- 42\n"), ("personas.yaml", "entry 1")),
    # -- run targets --------------------------------------------------------------------------------
    Case("run-out-is-a-file", lambda tmp, _: ["run", str(_write(tmp / "grid.yaml", GRID)), "--out",
                                              str(_file(tmp))], ("plain.txt", "not a directory")),
    Case("run-out-under-a-file", lambda tmp, _: ["run", str(_write(tmp / "grid.yaml", GRID)), "--out",
                                                 str(_file(tmp) / "run")], ("plain.txt", "is a file")),
    # -- stores ----------------------------------------------------------------------------------------
    Case("report-run-dir-missing", lambda tmp, _: ["report", str(tmp / "nothing")], ("nothing", "does not exist")),
    Case("view-run-dir-is-a-file", lambda tmp, _: ["view", str(_file(tmp))], ("plain.txt", "not a directory")),
    Case("report-store-garbage", damaged("report", _bytes(b"this is not a database at all " * 100)),
         ("{store}", "not a contagion store")),
    Case("export-store-empty-file", damaged("export", _bytes(b"")), ("{store}", "empty")),
    Case("view-store-is-a-directory", damaged("view", _store_is_dir), ("{store}", "not a file")),
    Case("report-store-foreign-sqlite", damaged("report", _plain_sqlite), ("{store}", "not a contagion store")),
    Case("report-dropped-games", damaged("report", _sql("DROP TABLE games")), ("{store}", "damaged", "games")),
    Case("view-dropped-profiles", damaged("view", _sql("DROP TABLE profiles")), ("{store}", "damaged", "profiles")),
    Case("export-dropped-meta", damaged("export", _sql("DROP TABLE meta")), ("{store}", "damaged", "meta")),
    Case("report-garbled-record", damaged("report", _first_record(b"\x00garbage")),
         ("{store}", "damaged", "compressed record is garbled")),
    Case("view-record-invalid-json", damaged("view", _first_record(zlib.compress(b'{"spec": {"game": '))),
         ("{store}", "damaged", "invalid JSON")),
    Case("export-record-not-a-record", damaged("export", _first_record(zlib.compress(b'{"hello": 1}'))),
         ("{store}", "damaged", "not a game record")),
    Case("export-parquet-garbled-record", damaged("export", _first_record(b"\x01\x02"), "--format", "parquet"),
         ("{store}", "damaged")),
    Case("report-corrupted-pages", damaged("report", _corrupt_pages), ("{store}",)),
    Case("view-truncated-store", damaged("view", _truncate), ("{store}",)),
    Case("report-newer-schema", damaged("report", _sql("UPDATE meta SET value = '99' WHERE key = 'schema_version'")),
         ("{store}", "newer contagion")),
    Case("report-bad-schema-version", damaged(
        "report", _sql("UPDATE meta SET value = 'one' WHERE key = 'schema_version'")),
         ("{store}", "unreadable store schema version")),
    Case("report-config-not-json", damaged("report", _sql("UPDATE meta SET value = '{oops' WHERE key = 'config'")),
         ("{store}", "damaged", "config")),
    Case("run-over-corrupted-pages", damaged("run", _corrupt_pages), ("{store}",)),
    Case("run-over-dropped-games", damaged("run", _sql("DROP TABLE games")), ("{store}", "damaged", "games")),
    Case("run-over-foreign-sqlite", damaged("run", _plain_sqlite), ("{store}", "not a contagion store")),
    # -- export, report and viewer targets ---------------------------------------------------------------
    Case("export-into-missing-dir", export_to(lambda tmp: tmp / "no" / "such" / "games.jsonl"),
         ("no/such", "does not exist")),
    Case("export-under-a-file", export_to(lambda tmp: _file(tmp) / "games.jsonl"), ("plain.txt", "not a directory")),
    Case("export-parquet-missing-dir", export_to(lambda tmp: tmp / "gone" / "g.parquet", "parquet"),
         ("gone", "does not exist")),
    Case("export-parquet-seed-beyond-64-bits", damaged("export", _huge_seed, "--format", "parquet"),
         ("{store}", "damaged", "seed")),
    Case("export-unknown-format", in_run("export", "--format", "xml"), ("xml",)),
    Case("report-out-missing-dir", in_run("report", "--out", "{tmp}/no/report.html"), ("no", "does not exist")),
    Case("view-out-missing-dir", in_run("view", "--out", "{tmp}/no/viewer.html"), ("no", "does not exist")),
    # -- other inputs ------------------------------------------------------------------------------------
    Case("assess-scripted-model", lambda tmp, _: ["assess", "--model", "scripted:always-defect"],
         ("scripted:always-defect",)),
    Case("assess-scripted-bad-param", lambda tmp, _: ["assess", "--model", "scripted:random?p=abc"],
         ("scripted:random",)),
]


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1)
            for p in root.rglob("*") if p.name not in BENIGN}


def test_there_are_at_least_forty_cases() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_damaged_input_exits_2_with_a_clear_message(case: Case, tmp_path: Path, finished_run: Path) -> None:
    argv = case.make(tmp_path, finished_run)
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, argv)
    output = result.output
    assert result.exit_code == 2, f"exit {result.exit_code}: {output}\n{result.exception!r}"
    assert isinstance(result.exception, SystemExit)  # a handled error, not a crash
    assert "Traceback" not in output and "Error:" in output
    flat = squash(output)
    store = tmp_path / "run" / "store.sqlite"
    for needle in case.needles:
        assert squash(needle.replace("{tmp}", str(tmp_path)).replace("{store}", str(store))) in flat, output
    after = _snapshot(tmp_path)
    assert after == before, f"files changed: {set(after.items()) ^ set(before.items())}"  # nothing half-written
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_run_quarantines_unreadable_records_and_says_so(tmp_path: Path, finished_run: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    _first_record(b"\x00garbage")(copy / "store.sqlite")
    config = _write(tmp_path / "grid.yaml", GRID)
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(copy), "--no-progress"])
    assert result.exit_code == 0, result.output
    flat = squash(result.output)
    assert squash("1 unreadable game record(s) in") in flat and squash("moved to its quarantine table") in flat
    with Store.open_existing(copy) as store:
        assert store.counts() == {"ok": 4, "failed": 0}  # the game was played again
        ((_, reason),) = store.quarantined()
        assert "garbled" in reason
    assert CliRunner().invoke(app, ["export", str(copy)]).exit_code == 0  # every record reads again


def test_executor_ray_without_ray_refuses_before_creating_the_store(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    config = _write(tmp_path / "grid.yaml", GRID)
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "out"), "--executor", "ray"])
    assert result.exit_code == 2, result.output
    assert squash("pip install 'contagion[cluster]'") in squash(result.output)
    assert not (tmp_path / "out").exists()


def test_a_full_disk_is_a_clear_error_and_keeps_what_was_stored(tmp_path: Path, finished_run: Path) -> None:
    from contagion.errors import UserError
    from contagion.experiment.trial import failed_record

    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    with Store.open(copy, writer=True) as store:
        record = next(store.iter_records())
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own 'disk full' (SQLITE_FULL)
        store.conn.execute("DELETE FROM games WHERE spec_hash = ?", (record.spec_hash,))
        big = failed_record(record.spec, record.labels, "x" * 2_000_000, 0.0)
        with pytest.raises(UserError) as info:
            store.put(big)
        assert str(store.path) in str(info.value) and "disk is full" in str(info.value)
        assert store.counts() == {"ok": 3, "failed": 0}


def test_export_into_a_directory_writes_the_default_name_inside(tmp_path: Path, finished_run: Path) -> None:
    target = tmp_path / "exports"
    target.mkdir()
    for fmt in ("jsonl", "parquet"):
        result = CliRunner().invoke(app, ["export", str(finished_run), "--format", fmt, "--out", str(target)])
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in target.iterdir()) == ["games.jsonl", "games.parquet"]
    assert len((target / "games.jsonl").read_text(encoding="utf-8").splitlines()) == 4
