"""The results store: one row per game, failed games with their error, streaming reads, schema
versions and migrations, and recovery from a store whose creation was cut short."""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path

import pytest

from contagion.errors import UserError
from contagion.experiment import store_schema
from contagion.experiment.config import parse_config
from contagion.experiment.runner import Runner, plan
from contagion.experiment.store import STORE_SCHEMA_VERSION, Store
from contagion.experiment.trial import failed_record
from tests.experiment.experiment_helpers import SMALL

GRID = {**SMALL, "games": ["prisoners-dilemma"], "interventions": ["none"]}


@pytest.fixture()
def finished_run(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    summary = Runner(parse_config(GRID), out, progress=False).run()
    assert summary.finished == 4
    return out


def test_failed_games_are_kept_with_their_error_and_planned_again(finished_run: Path) -> None:
    cfg = parse_config({**GRID, "repetitions": 2})
    with Store.open(finished_run) as store:
        todo = plan(cfg, store)
        jobs = list(todo.jobs())
        assert (len(jobs), todo.pending, todo.skipped) == (4, 4, 4)
        spec, labels = jobs[0]
        store.put(failed_record(spec, labels, "BackendError: the server went away", 1.5))
        assert store.counts() == {"ok": 4, "failed": 1}
        assert store.failures() == [(spec.stable_hash(), "BackendError: the server went away")]
        assert spec.stable_hash() not in store.done_hashes()
        assert spec.stable_hash() in store.done_hashes(include_failed=True)
        todo = plan(cfg, store)
        assert (len(list(todo.jobs())), todo.skipped) == (4, 4)  # the failed one is tried again
        failed = store.get(spec.stable_hash())
        assert failed is not None and failed.error == "BackendError: the server went away"
        assert failed.labels == labels
        row = store.conn.execute("SELECT status, composition, chat_turns, rep FROM games WHERE spec_hash = ?",
                                 (spec.stable_hash(),)).fetchone()
        assert row == ("failed", labels["composition"], labels["chat_turns"], labels["rep"])

    # the rerun (of a bigger grid: --extend) replaces the failed attempt with the finished game: still one
    # row per spec
    summary = Runner(cfg, finished_run, progress=False, extend=True).run()
    assert (summary.skipped, summary.finished) == (4, 4)
    with Store.open_existing(finished_run) as store:
        assert store.counts() == {"ok": 8, "failed": 0}


def test_records_stream_in_a_stable_order(finished_run: Path) -> None:
    with Store.open_existing(finished_run) as store:
        stream = store.iter_records(status=None)
        first = next(stream)  # a generator: records are decoded one at a time
        rest = list(stream)
        hashes = [first.spec_hash, *(r.spec_hash for r in rest)]
        assert hashes == sorted(hashes) and len(hashes) == 4
        assert [r.spec_hash for r in store.iter_records(status="failed")] == []


def test_store_file_is_wal_and_versioned(finished_run: Path) -> None:
    with Store.open_existing(finished_run) as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.meta("schema_version") == str(STORE_SCHEMA_VERSION)
        assert store.config()["models"] == GRID["models"]


def test_migrations_upgrade_an_older_store_in_place(finished_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_schema, "STORE_SCHEMA_VERSION", STORE_SCHEMA_VERSION + 1)
    monkeypatch.setattr(store_schema, "MIGRATIONS",
                        {STORE_SCHEMA_VERSION: "ALTER TABLE games ADD COLUMN reviewed INTEGER DEFAULT 0;"})
    with Store.open_existing(finished_run) as store:
        assert store.meta("schema_version") == str(STORE_SCHEMA_VERSION + 1)
        assert store.conn.execute("SELECT COUNT(*) FROM games WHERE reviewed = 0").fetchone()[0] == 4
        assert len(list(store.iter_records())) == 4


def test_a_store_cut_short_while_being_created_is_created_again(tmp_path: Path) -> None:
    """kill -9 right after the file was made: an empty file, which the next run initialises."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "store.sqlite").write_bytes(b"")
    summary = Runner(parse_config(GRID), out, progress=False).run()
    assert summary.finished == 4


def test_opening_read_only_commands_on_missing_or_empty_runs(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        Store.open_existing(tmp_path / "missing")
    with pytest.raises(UserError, match="holds no contagion run"):
        Store.open_existing(tmp_path)
    (tmp_path / "store.sqlite").write_bytes(b"")
    with pytest.raises(UserError, match="is empty; run `contagion run` first"):
        Store.open_existing(tmp_path)


def test_export_of_an_empty_store_is_a_clear_error(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store, pytest.raises(UserError, match="holds no games to export"):
        store.export_parquet(tmp_path / "games.parquet")
    assert not (tmp_path / "games.parquet").exists()


def test_profiles_table_caches_pre_play_profiles(finished_run: Path) -> None:
    with Store.open_existing(finished_run) as store:
        keys = [k for (k,) in store.conn.execute("SELECT key FROM profiles")]
        assert keys and all(store.get_profile(k)["context_kind"] == "pre" for k in keys)
        assert store.get_profile("no-such-key") is None
    conn = sqlite3.connect(finished_run / "store.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


@pytest.mark.parametrize("version", [1, 2])
def test_records_of_an_older_schema_load_with_what_each_player_is(finished_run: Path, version: int) -> None:
    """Records written before players stated their strategy (schema 2) or whether they were language models
    (schema 1) load with both, read from the recorded backend; the analysis sees the same compositions."""
    from contagion.analysis.tables import tables_from_records

    with Store.open(finished_run) as store:
        new = list(store.iter_records())
        for record in new:
            data = json.loads(record.model_dump_json())
            data["schema_version"] = version
            for p in data["players"]:
                p.pop("strategy")
                if version == 1:
                    p.pop("language_model")
            blob = zlib.compress(json.dumps(data).encode(), 6)
            store.conn.execute("UPDATE games SET record = ? WHERE spec_hash = ?", (blob, record.spec_hash))
    with Store.open_existing(finished_run) as store:
        old = list(store.iter_records())
    assert [r.schema_version for r in old] == [version] * len(new)
    facts = [[(p.language_model, p.strategy) for p in r.players] for r in old]
    assert facts == [[(p.language_model, p.strategy) for p in r.players] for r in new]
    assert ("False", "always-defect") in {(str(lm), s) for players in facts for lm, s in players}
    kinds = tables_from_records(old).games[["game_id", "composition_kind"]].astype(str).values.tolist()
    assert kinds == tables_from_records(new).games[["game_id", "composition_kind"]].astype(str).values.tolist()
    assert {k for _, k in kinds} == {"all-default", "scripted-defector"}
