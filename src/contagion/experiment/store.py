"""The results store: one SQLite file per run, one row per game, written by a single writer.

SQLite in WAL mode gives atomic, durable appends: a record is committed whole or not at all, so a
crash (even ``kill -9``) loses at most the games in flight and nothing half-written is ever read back.
Records are stored as compressed JSON (the full, self-contained game record) next to the condition
labels that analysis filters on. Reading streams rows one at a time: memory does not grow with the
number of games.

One writer per run directory: :meth:`Store.open` with ``writer=True`` holds an advisory lock
(:class:`~contagion.experiment.run_lock.RunLock`: ``fcntl.flock`` on ``RUN_DIR/run.lock``, released by the
kernel when the process dies, even by ``kill -9``), so a second ``contagion run`` on the same directory
refuses with a clear message. A stored
``ok`` record is never replaced by a failed attempt (:meth:`Store.put`). The store remembers the grid
hash of every config run into it (:meth:`Store.adopt_config`) and refuses a different grid unless told
to extend the run.

Damage (a garbled record, invalid JSON, a dropped table, corrupted pages) is reported as a
:class:`StoreDamagedError` naming the store and what is wrong, never as a traceback. Before resuming,
the writer checks the file (:meth:`Store.recover`, :mod:`contagion.experiment.store_recovery`):
SQLite-level corruption is refused; records that cannot be read are moved to a ``quarantine`` table (and
their games played again), and it says so.

Schema versions are recorded in ``meta``; :data:`~contagion.experiment.store_schema.MIGRATIONS` upgrades
older stores in place (:mod:`contagion.experiment.store_schema`), and a store written by a newer contagion
is refused with a clear message. Exports live in :mod:`contagion.experiment.store_export`; the ``profiles``
table is read and written here and serves the runner's pre-play profile cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from contagion.errors import UserError
from contagion.experiment import store_schema
from contagion.experiment.record import GameRecord
from contagion.experiment.run_lock import LOCK_FILE, RunLock
from contagion.experiment.rundir import RunDir
from contagion.experiment.store_export import export_jsonl, export_parquet
from contagion.experiment.store_recovery import decode_problem, pack, quarantined, recover, unpack
from contagion.experiment.store_schema import (
    MIGRATIONS,
    QUARANTINE,
    STORE_SCHEMA_VERSION,
    StoreDamagedError,
    migrate,
    schema_version,
)

__all__ = ["EXECUTION_KEYS", "LOCK_FILE", "MIGRATIONS", "STORE_SCHEMA_VERSION", "RunLock", "Store",
           "StoreDamagedError", "grid_hash"]

EXECUTION_KEYS = frozenset({"name", "concurrency", "max_failure_rate"})
"""Config keys that change how a run is executed or labelled, not which games it holds: not in the grid hash."""

_SQLITE_INT_MAX = 2**63 - 1


def grid_hash(config: dict[str, Any]) -> str:
    """A stable hash of what a config asks to play (every key but :data:`EXECUTION_KEYS`)."""
    outcome = {k: v for k, v in config.items() if k not in EXECUTION_KEYS}
    blob = json.dumps(outcome, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _sqlite_int(value: Any) -> Any:
    """An integer label SQLite can hold (beyond 64 bits it is stored as text), other values as they are."""
    if isinstance(value, int) and not isinstance(value, bool) and not -_SQLITE_INT_MAX - 1 <= value <= _SQLITE_INT_MAX:
        return str(value)
    return value


class Store:
    """One run's games. Open with :meth:`open` (creates; ``writer=True`` for the run's one writer) or
    :meth:`open_existing` (read)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: RunLock | None = None) -> None:
        self.path = path
        self.conn = conn
        self.lock = lock

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, run_dir: Path, *, create: bool = True, writer: bool = False) -> Store:
        """Open (and with ``create``, make) the store of ``run_dir``; ``writer`` takes the run's lock first."""
        path = RunDir(run_dir).store
        if not path.exists() and not create:
            raise UserError(f"{run_dir} holds no contagion run (no {RunDir.STORE}); run `contagion run` first")
        if path.exists() and not path.is_file():
            raise StoreDamagedError(f"{path} is not a contagion store (not a file)")
        if create:
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}") from None
        lock = RunLock.acquire(run_dir) if writer else None
        try:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            if lock is not None:
                lock.release()
            raise UserError(f"{path} cannot be opened as a contagion store ({exc})") from None
        store = cls(path, conn, lock)
        try:
            # Refuse a foreign or newer store before changing anything in it (switching the journal
            # mode rewrites the file header).
            schema_version(store, create)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            migrate(store, create)
            if writer:
                conn.execute(QUARANTINE)
        except sqlite3.DatabaseError as exc:
            store.close()
            raise StoreDamagedError(store.damage_text(exc)) from None
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def check(cls, run_dir: Path) -> None:
        """Fail (UserError) when ``run_dir`` holds a store this version cannot use, or another run is
        writing to it; changes nothing."""
        path = RunDir(run_dir).store
        if not path.exists():
            return
        if not path.is_file():
            raise StoreDamagedError(f"{path} is not a contagion store (not a file)")
        if RunLock.held(run_dir):
            RunLock.acquire(run_dir)  # raises the message naming the holder
        try:
            # read-write but only reading: a read-only connection would leave -wal/-shm files behind
            conn = sqlite3.connect(path, timeout=30)
        except sqlite3.Error as exc:
            raise UserError(f"{path} cannot be opened as a contagion store ({exc})") from None
        store = cls(path, conn)
        try:
            schema_version(store, create=True)  # an empty file is created again
        except sqlite3.DatabaseError as exc:
            raise StoreDamagedError(store.damage_text(exc)) from None
        finally:
            conn.close()

    @classmethod
    def open_existing(cls, run_dir: Path) -> Store:
        """Open a run's store to read it (report, view, export, analysis): the connection cannot write, and an
        archived run whose files or directory are read-only reads as well (:meth:`_connect_reader`). The one
        exception: a store of an older schema is upgraded in place first (:data:`MIGRATIONS`), when it is
        writable; a read-only one is refused with the fix."""
        if not run_dir.exists():
            raise UserError(f"run directory {run_dir} does not exist")
        if not run_dir.is_dir():
            raise UserError(f"{run_dir} is not a directory; give the run directory")
        path = RunDir(run_dir).store
        if not path.exists():
            raise UserError(f"{run_dir} holds no contagion run (no {RunDir.STORE}); run `contagion run` first")
        if not path.is_file():
            raise StoreDamagedError(f"{path} is not a contagion store (not a file)")
        conn = cls._connect_reader(path)
        store = cls(path, conn)
        try:
            version = schema_version(store, create=False)
            if version is not None and version < store_schema.STORE_SCHEMA_VERSION:
                if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)):
                    raise UserError(f"{path} has store schema {version}, older than this contagion's "
                                    f"({store_schema.STORE_SCHEMA_VERSION}), and is read-only: upgrade a writable "
                                    "copy by opening it once (e.g. contagion report COPY)")
                store.close()
                cls.open(run_dir, create=False).close()  # the upgrade, in place
                return cls.open_existing(run_dir)
        except sqlite3.DatabaseError as exc:
            store.close()
            raise StoreDamagedError(store.damage_text(exc)) from None
        except BaseException:
            store.close()
            raise
        return store

    @staticmethod
    def _connect_reader(path: Path) -> sqlite3.Connection:
        """A connection that cannot write. Where the store and its directory are writable, an ordinary
        connection with ``PRAGMA query_only`` (SQLite removes the journal files it made when it closes);
        otherwise — an archived, read-only run — a read-only one, ``immutable`` when SQLite cannot even
        make its shared-memory file there (then nothing may be writing to it: a run holds write access)."""
        def connect(uri: str) -> sqlite3.Connection:
            conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the file (and its journal)
            return conn

        base = "file:" + urllib.parse.quote(str(path.absolute()))
        writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)
        try:
            if writable:
                return connect(base)
            try:
                return connect(base + "?mode=ro")
            except sqlite3.OperationalError:
                wal = path.with_name(path.name + "-wal")
                if wal.exists() and wal.stat().st_size:
                    raise UserError(f"{path} is read-only and holds games not yet merged from {wal.name}; open it "
                                    "once with write access (e.g. a copy) to read them") from None
                return connect(base + "?mode=ro&immutable=1")
        except sqlite3.DatabaseError as exc:
            detail = str(exc) or type(exc).__name__
            if "not a database" in detail or "file is encrypted" in detail:
                raise StoreDamagedError(
                    f"{path} is not a contagion store, or its header is damaged ({detail})") from None
            raise UserError(f"{path} cannot be opened as a contagion store ({detail})") from None

    def damage_text(self, exc: BaseException, what: str = "") -> str:
        detail = str(exc) or type(exc).__name__
        if "not a database" in detail or "file is encrypted" in detail:
            return f"{self.path} is not a contagion store, or its header is damaged ({detail})"
        return (f"the store {self.path} is damaged{': ' + what if what else ''} ({detail}); "
                "restore it from a backup, or run into a new directory")

    def damaged(self, exc: BaseException, what: str = "") -> StoreDamagedError:
        return StoreDamagedError(self.damage_text(exc, what))

    def query(self, sql: str, params: tuple[Any, ...] = (), what: str = "") -> list[Any]:
        """Every row of a query; SQLite-level damage becomes a StoreDamagedError naming the store."""
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self.damaged(exc, what) from None

    def close(self) -> None:
        self.conn.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------
    def write(self, sql: str, params: tuple[Any, ...], what: str) -> sqlite3.Cursor:
        """Run one write; a full disk or a damaged file becomes a UserError naming the store."""
        try:
            return self.conn.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
                raise UserError(
                    f"cannot write {what} to the store {self.path}: the disk is full ({exc}); free some space "
                    "and rerun the same command to resume (every game stored so far is kept)"
                ) from None
            if isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc).replace(" ", ""):
                raise UserError(f"cannot write {what} to the store {self.path}: it is read-only ({exc})") from None
            raise self.damaged(exc, f"writing {what} failed") from None

    # -- meta ---------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,), "the meta table cannot be read")
        return None if not rows else str(rows[0][0])

    def set_meta(self, key: str, value: str) -> None:
        self.write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value), f"meta {key}")

    def _json_meta(self, key: str) -> Any:
        raw = self.meta(key)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise StoreDamagedError(f"the store {self.path} is damaged: its stored {key} is not valid JSON "
                                    f"({exc})") from None

    def set_config(self, config: dict[str, Any]) -> None:
        self.set_meta("config", json.dumps(config, sort_keys=True))

    def config(self) -> dict[str, Any] | None:
        """The first config run into this directory (see :meth:`configs` for all of them)."""
        value = self._json_meta("config")
        if value is not None and not isinstance(value, dict):
            raise StoreDamagedError(f"the store {self.path} is damaged: its stored config is not a mapping")
        return value

    def configs(self) -> list[dict[str, Any]]:
        """Every config run into this directory, oldest first: ``{"grid_hash", "added", "config"}``."""
        value = self._json_meta("configs")
        if value is None:
            first = self.config()
            return [] if first is None else [{"grid_hash": grid_hash(first), "added": None, "config": first}]
        if not isinstance(value, list) or not all(isinstance(v, dict) and isinstance(v.get("config"), dict)
                                                  for v in value):
            raise StoreDamagedError(f"the store {self.path} is damaged: its stored config list is malformed")
        return value

    def adopt_config(self, config: dict[str, Any], *, extend: bool = False) -> bool:
        """Remember ``config`` as run into this directory. A config whose grid differs from the stored
        ones is refused (UserError) unless ``extend``; returns whether a new grid was added."""
        held = self.configs()
        new_hash = grid_hash(config)
        if any(c.get("grid_hash") == new_hash for c in held):
            return False
        if held and not extend:
            first = held[0]["config"]
            changed = sorted(k for k in set(first) | set(config)
                             if k not in EXECUTION_KEYS and first.get(k) != config.get(k))
            raise UserError(
                f"{self.path.parent} holds a run of a different config (grid {held[0]['grid_hash']}; this one is "
                f"{new_hash}; changed: {', '.join(changed) or 'see the configs'}). Add --extend to add this grid's "
                "games to the same run (the report then describes every config), or give another --out"
            )
        entry = {"grid_hash": new_hash, "added": time.time(), "config": config}
        entries = [*held, entry]
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            if self.meta("config") is None:
                self.set_config(config)
            self.set_meta("configs", json.dumps(entries, sort_keys=True))
            self.conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise
        return True

    # -- games --------------------------------------------------------------------------------
    def put(self, record: GameRecord) -> bool:
        """Store one game atomically: a new game, a retry of a failed attempt, or a finished game. A stored
        ``ok`` record is never replaced by a failed attempt; returns whether the record was written."""
        labels = record.labels
        cursor = self.write(
            "INSERT INTO games (spec_hash, status, model, game, composition, intervention, chat_turns,"
            " rep, error, record, finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (spec_hash) DO UPDATE SET status = excluded.status, model = excluded.model,"
            " game = excluded.game, composition = excluded.composition, intervention = excluded.intervention,"
            " chat_turns = excluded.chat_turns, rep = excluded.rep, error = excluded.error,"
            " record = excluded.record, finished = excluded.finished"
            " WHERE excluded.status = 'ok' OR games.status != 'ok'",
            (
                record.spec_hash, "failed" if record.error else "ok", labels.get("model"), labels.get("game"),
                labels.get("composition"), labels.get("intervention"), _sqlite_int(labels.get("chat_turns")),
                _sqlite_int(labels.get("rep")), record.error, pack(record), time.time(),
            ),
            f"game {record.spec_hash}",
        )
        return cursor.rowcount > 0

    def done_hashes(self, *, include_failed: bool = False) -> set[str]:
        sql = "SELECT spec_hash FROM games" + ("" if include_failed else " WHERE status = 'ok'")
        return {r[0] for r in self.query(sql, (), "the games table cannot be read")}

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "failed": 0}
        for status, n in self.query("SELECT status, COUNT(*) FROM games GROUP BY status", (),
                                    "the games table cannot be read"):
            out[str(status)] = int(n)
        return out

    def iter_records(self, *, status: str | None = "ok") -> Iterator[GameRecord]:
        """Stream the records (one decoded at a time), in a stable order; a record that cannot be read
        raises a StoreDamagedError naming it."""
        sql = "SELECT spec_hash, record FROM games" + (" WHERE status = ?" if status else "") + " ORDER BY spec_hash"
        try:
            cursor = self.conn.cursor()
            cursor.execute(sql, (status,) if status else ())
        except sqlite3.DatabaseError as exc:
            raise self.damaged(exc, "the games table cannot be read") from None
        while True:
            try:
                rows = cursor.fetchmany(64)
            except sqlite3.DatabaseError as exc:
                raise self.damaged(exc, "the games table cannot be read") from None
            if not rows:
                break
            for spec_hash, blob in rows:
                yield self._decode(spec_hash, blob)

    def _decode(self, spec_hash: Any, blob: Any) -> GameRecord:
        problem = decode_problem(blob)
        if problem is not None:
            raise StoreDamagedError(
                f"the store {self.path} is damaged: the record of game {spec_hash} cannot be read ({problem}); "
                "`contagion run` with the run's config moves unreadable records aside and plays those games again"
            )
        return unpack(blob)

    def get(self, spec_hash: str) -> GameRecord | None:
        rows = self.query("SELECT record FROM games WHERE spec_hash = ?", (spec_hash,),
                          f"game {spec_hash} cannot be read")
        return None if not rows else self._decode(spec_hash, rows[0][0])

    def failures(self) -> list[tuple[str, str]]:
        return [(str(h), str(e)) for h, e in
                self.query("SELECT spec_hash, error FROM games WHERE status = 'failed' ORDER BY spec_hash", (),
                           "the games table cannot be read")]

    # -- damage (:mod:`contagion.experiment.store_recovery`) ----------------------------------
    def recover(self) -> list[str]:
        """Check the store before a run resumes over it (:func:`~contagion.experiment.store_recovery.recover`)."""
        return recover(self)

    def quarantined(self) -> list[tuple[str, str]]:
        """(spec hash, reason) of every record moved aside by :meth:`recover`."""
        return quarantined(self)

    # -- the profiles table (the runner's pre-play profile cache) ------------------------------
    def get_profile(self, key: str) -> dict[str, Any] | None:
        rows = self.query("SELECT profile FROM profiles WHERE key = ?", (key,), "the profiles table cannot be read")
        if not rows:
            return None
        try:
            value = json.loads(rows[0][0])
        except (TypeError, ValueError) as exc:
            raise StoreDamagedError(f"the store {self.path} is damaged: cached profile {key} is not valid JSON "
                                    f"({exc})") from None
        if not isinstance(value, dict):
            raise StoreDamagedError(f"the store {self.path} is damaged: cached profile {key} is not a mapping")
        return value

    def put_profile(self, key: str, profile: dict[str, Any]) -> None:
        self.write("INSERT OR REPLACE INTO profiles (key, profile) VALUES (?, ?)", (key, json.dumps(profile)),
                    f"profile {key}")

    # -- export (:mod:`contagion.experiment.store_export`) ------------------------------------
    def export_jsonl(self, path: Path) -> int:
        """Every record as one JSON line, written atomically (nothing is written if a record is damaged)."""
        return export_jsonl(self, path)

    def export_parquet(self, path: Path) -> int:
        """One row per game and player (flat columns), built in batches and written atomically."""
        return export_parquet(self, path)
