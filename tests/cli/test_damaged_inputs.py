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

import contagion.cli  # registers the commands (and locates the package data)
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
    (``{tmp}`` is replaced by the case's directory, ``{store}`` by its store's path); ``absent`` must not be in
    the output at all (a secret)."""

    id: str
    make: Callable[[Path, Path], list[str]]
    needles: tuple[str, ...]
    absent: tuple[str, ...] = ()


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
KEY = "sk-live-DO-NOT-PRINT-4242"
"""A secret written into specs: it must never appear in any output."""


def play(*argv: str) -> Callable[[Path, Path], list[str]]:
    return lambda tmp, _: ["play", *argv]


def cli(*argv: str) -> Callable[[Path, Path], list[str]]:
    """Any command; ``{tmp}`` in an argument is the case's directory."""
    return lambda tmp, _: [a.replace("{tmp}", str(tmp)) for a in argv]


def inventory_yaml(text: str) -> Callable[[Path, Path], list[str]]:
    """``contagion assess`` on a YAML inventory holding ``text``."""
    def make(tmp: Path, _: Path) -> list[str]:
        return ["assess", "--model", "sim:planted", "--inventory", str(_write(tmp / "inv.yaml", text)),
                "--bootstrap", "100"]
    return make


INVENTORY_HEAD = "format: contagion-inventory/1\nversion: 1\n"
PROTOCOL = Path(contagion.cli.__file__).parents[1] / "data" / "bench-v1.yaml"


def protocol_with(change: Callable[[dict[str, Any]], None]) -> Callable[[Path, Path], list[str]]:
    """``contagion bench`` with a protocol file: the built-in one, changed."""
    def make(tmp: Path, _: Path) -> list[str]:
        data = yaml.safe_load(PROTOCOL.read_text(encoding="utf-8"))
        change(data)
        path = _write(tmp / "protocol.yaml", data)
        return ["bench", "sim:null", "--size", "smoke", "--protocol", str(path), "--out", str(tmp / "b")]
    return make

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
    # -- config semantics (issue 28) ------------------------------------------------------------------
    Case("config-persona-shadows-builtin", run_with(personas=[{"name": "malicious", "text": "Be kind."}]),
         ("grid.yaml", "personas", "'malicious' is a built-in persona", "override: true")),
    Case("config-persona-twice", run_with(personas=[{"name": "stoic", "text": "a"}, {"name": "stoic", "text": "b"}]),
         ("grid.yaml", "persona 'stoic' is defined twice")),
    Case("config-persona-name-not-a-word", run_with(personas=[{"name": "a=b", "text": "x"}]),
         ("grid.yaml", "personas.0.name")),
    Case("config-game-twice-by-alias", run_with(games=["prisoners-dilemma", "pd"]),
         ("grid.yaml", "a game is listed twice", "'pd'", "the same game as 'prisoners-dilemma'")),
    Case("config-game-file-twice-by-path", lambda tmp, r: run_with(
        games=[str(_write(tmp / "g.yaml", yaml.safe_dump(GAME_OK))), str(tmp / "." / "g.yaml")])(tmp, r),
         ("grid.yaml", "a game is listed twice")),
    Case("config-payoff-nan", run_with_file("game.yaml", "name: g\nkind: custom\ncooperate: a\ndefect: b\n"
                                            "T: .nan\nR: 1\nP: 0\nS: 0\n", games=["{file}"]),
         ("game.yaml", "T", "finite number")),
    Case("config-payoff-inf", run_with_file("game.yaml", "name: g\nkind: custom\ncooperate: a\ndefect: b\n"
                                            "T: 1\nR: -.inf\nP: 0\nS: 0\n", games=["{file}"]),
         ("game.yaml", "R", "finite number")),
    Case("config-payoff-huge", run_with_file("game.yaml", "name: g\nkind: custom\ncooperate: a\ndefect: b\n"
                                             "T: 1e300\nR: 1\nP: 0\nS: 0\n", games=["{file}"]),
         ("game.yaml", "T", "1000000")),
    Case("config-5000-seats", run_with(compositions={"crowd": ["default"] * 5000}),
         ("grid.yaml", "compositions.crowd", "5000 seats", "at most 12 players")),
    Case("config-items-leave-sit-nothing", run_with(interventions=["none", "sit:k=2,n=2"],
                                                    assessment={"items": 10**9, "bootstrap": 100}),
         ("grid.yaml", "assessment", "source set", "leaves no item over")),
    Case("config-url-fragment", run_with(models=["openai:m@http://127.0.0.1:9/v1#frag"]),
         ("grid.yaml", "models", "#fragment")),
    Case("config-url-userinfo", run_with(models=[f"openai:m@http://user:{KEY}@127.0.0.1:9/v1"]),
         ("grid.yaml", "carries a secret", "user:password@", "CONTAGION_API_KEY"), (KEY,)),
    Case("config-url-api-key-param", run_with(compositions={"x": ["default", f"openai:m@http://h/v1?api_key={KEY}"]}),
         ("grid.yaml", "carries a secret", "'api_key'"), (KEY,)),
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
    Case("inventory-yaml-key-twice-under-a-trait", inventory_yaml(
        INVENTORY_HEAD + "traits:\n  kind:\n    matching-yes: [I am kind]\n    matching-yes: [I am nice]\n"),
         ("inv.yaml", "line 6", "matching-yes appears twice")),
    Case("inventory-yaml-top-key-twice", inventory_yaml(
        INVENTORY_HEAD + "traits:\n  kind: {matching-yes: [I am kind]}\ntraits:\n  mean: {matching-yes: [I am]}\n"),
         ("inv.yaml", "line 5", "'traits' appears twice")),
    Case("inventory-yaml-unknown-key", inventory_yaml(
        INVENTORY_HEAD + "descripton: x\ntraits:\n  kind: {matching-yes: [I am kind]}\n"),
         ("inv.yaml", "line 3", "unknown key 'descripton'")),
    Case("inventory-yaml-version-not-a-number", inventory_yaml(
        "format: contagion-inventory/1\nversion: [1]\ntraits:\n  kind: {matching-yes: [I am kind]}\n"),
         ("inv.yaml", "line 2", "version must be a whole number")),
    Case("inventory-yaml-newer-format", inventory_yaml(
        "format: contagion-inventory/2\ntraits:\n  kind: {matching-yes: [I am kind]}\n"),
         ("inv.yaml", "newer contagion")),
    Case("inventory-yaml-trait-not-a-name", inventory_yaml(
        "format: contagion-inventory/1\ntraits:\n  ? [a, b]\n  : {matching-yes: [I am kind]}\n"),
         ("inv.yaml", "line 3", "trait name must be plain text")),
    # -- persona files -----------------------------------------------------------------------------
    Case("persona-file-missing", persona_file(None), ("personas.yaml", "does not exist")),
    Case("persona-file-bad-yaml", persona_file("name: [\n"), ("personas.yaml", "not valid YAML")),
    Case("persona-file-not-utf8", persona_file(NOT_UTF8), ("personas.yaml", "UTF-8")),
    Case("persona-file-not-a-mapping", persona_file("- 42\n"), ("personas.yaml", "entry 1")),
    Case("persona-file-shadows-builtin", persona_file("- name: malicious\n  text: Be kind.\n"),
         ("personas.yaml", "'malicious' is a built-in persona", "override: true")),
    Case("persona-file-name-twice", persona_file("- {name: zealot, text: a}\n- {name: zealot, text: b}\n"),
         ("personas.yaml", "'zealot' is defined twice")),
    Case("persona-file-name-with-spaces", persona_file("name: two words\ntext: hi\n"),
         ("personas.yaml", "entry 1", "name", "pattern")),
    Case("persona-file-text-not-text", persona_file("name: zealot\ntext: [1, 2]\n"),
         ("personas.yaml", "entry 1", "text", "valid string")),
    Case("persona-file-newer-format", persona_file("format: contagion-personas/2\npersonas: []\n"),
         ("personas.yaml", "newer contagion")),
    Case("persona-file-empty-list", persona_file("[]\n"), ("personas.yaml", "holds no persona")),
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
    Case("assess-seed-negative", cli("assess", "--model", "sim:planted", "--seed", "-1"),
         ("--seed", "greater than or equal to 0")),
    Case("assess-seed-beyond-64-bits", cli("assess", "--model", "sim:planted", "--seed", str(2**70)),
         ("--seed", "less than or equal to 9223372036854775807")),
    Case("assess-bootstrap-huge", cli("assess", "--model", "sim:planted", "--bootstrap", str(10**9)),
         ("--bootstrap", "less than or equal to 1000000")),
    Case("assess-secret-spec", cli("assess", "--model", f"openai:m@http://127.0.0.1:9/v1?token={KEY}"),
         ("carries a secret", "'token'"), (KEY,)),
    # -- play (issue 28) -------------------------------------------------------------------------------
    Case("play-conversation-without-chat", play("--game", "conversation", "--chat-turns", "0", "-p", "sim:null",
                                                "-p", "sim:null"),
         ("conversation", "--chat-turns 0", "nothing would be played")),
    Case("play-13-players", play(*[a for _ in range(13) for a in ("-p", "sim:null")], "--rounds", "1"),
         ("players", "at most 12")),
    Case("play-userinfo-in-url", play("-p", f"openai:m@http://user:{KEY}@127.0.0.1:9/v1", "-p", "sim:null"),
         ("carries a secret", "user:password@", "OPENAI_API_KEY"), (KEY, "player 1")),
    Case("play-bare-key-in-url", play("-p", f"openai:m@https://{KEY}@127.0.0.1:9/v1", "-p", "sim:null"),
         ("carries a secret",), (KEY, "player 1")),
    Case("play-api-key-param", play("-p", f"openai:m@http://127.0.0.1:9/v1?api_key={KEY}", "-p", "sim:null"),
         ("carries a secret", "'api_key'"), (KEY, "player 1")),
    Case("play-key-param-of-inspect", play("-p", f"inspect:openai/m?base_url=http://h/v1&key={KEY}", "-p", "sim:null"),
         ("carries a secret", "'key'"), (KEY, "player 1")),
    Case("play-url-fragment", play("-p", "openai:m@http://127.0.0.1:9/v1#part", "-p", "sim:null"),
         ("#fragment",), ("player 1",)),
    # -- protocol files (issue 28) --------------------------------------------------------------------
    Case("protocol-effect-size-infinite", protocol_with(lambda d: d.__setitem__("effect_size", float("inf"))),
         ("protocol.yaml", "effect_size", "finite number")),
    Case("protocol-rounds-a-boolean", protocol_with(lambda d: d["sizes"]["smoke"].__setitem__("rounds", True)),
         ("protocol.yaml", "sizes.smoke.rounds", "valid integer")),
    Case("protocol-version-text", protocol_with(lambda d: d.__setitem__("version", "one")),
         ("protocol.yaml", "version")),
    Case("protocol-unknown-key", protocol_with(lambda d: d.__setitem__("alfa", 0.05)),
         ("protocol.yaml", "alfa", "unknown key")),
    # -- power (issue 28) ------------------------------------------------------------------------------
    Case("power-sd-nan", lambda tmp, _: ["power", str(_write(tmp / "grid.yaml", GRID)), "--sd", "nan"],
         ("--sd", "positive number")),
    Case("power-sd-inf", lambda tmp, _: ["power", str(_write(tmp / "grid.yaml", GRID)), "--sd", "inf"],
         ("--sd", "positive number")),
    Case("power-effect-inf", lambda tmp, _: ["power", str(_write(tmp / "grid.yaml", GRID)), "--effect", "inf"],
         ("--effect", "positive number")),
    Case("power-baseline-sd-inf", lambda tmp, _: ["power", str(_write(tmp / "grid.yaml", GRID)),
                                                  "--baseline-sd", "inf"], ("--baseline-sd",)),
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
    for secret in case.absent:
        assert secret not in output, output
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


def test_a_run_says_what_it_cuts_before_it_starts(tmp_path: Path) -> None:
    config = _write(tmp_path / "grid.yaml", {**GRID, "assessment": {"items": 10**9, "bootstrap": 100}})
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 0, result.output
    flat = squash(result.output)
    assert squash("Note: assessment.items: 1000000000 per trait asked, but the inventory builtin:v2 has fewer") in flat
    assert squash("agreeableness (24 of 24)") in flat
    assert flat.index(squash("Note: assessment.items")) < flat.index(squash("Run summary"))


def test_a_failed_start_into_a_used_run_keeps_it_and_says_a_rerun_resumes(tmp_path: Path, finished_run: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    config = _write(tmp_path / "grid.yaml", {**GRID, "models": ["sim:planted", "openai:m@http://127.0.0.1:9/v1"]})
    # --no-preflight: the run itself meets the dead server (the preflight would refuse it before the run)
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(copy), "--extend", "--no-progress",
                                      "--no-preflight"])
    assert result.exit_code == 2, result.output
    flat = squash(result.output)
    assert squash("cannot connect to the OpenAI-compatible server") in flat
    assert squash("stored so far are kept: rerunning the same command resumes") in flat
    with Store.open_existing(copy) as store:
        assert store.counts() == {"ok": 4, "failed": 0}


def test_power_on_a_pilot_without_between_game_variance(tmp_path: Path) -> None:
    """A noise-free simulated model drifts exactly alike in every game: no variance to plan from (it was a
    ZeroDivisionError)."""
    pilot = {**GRID, "models": ["sim:null?noise=0"], "repetitions": 3, "chat_turns": [0],
             "compositions": {"all-default": ["default", "default", "default"],
                              "one-malicious": ["default", "default", "malicious"]}}
    run = tmp_path / "pilot"
    assert Runner(parse_config(pilot), run, progress=False).run().finished == 6
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["power", str(run)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert squash("shows no between-game variance") in squash(result.output)
    assert squash("give a config with --sd") in squash(result.output)
    assert _snapshot(tmp_path) == before
