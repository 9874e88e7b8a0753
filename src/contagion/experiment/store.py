"""The results store: one SQLite file per run, one row per game, written by a single writer.

SQLite in WAL mode gives atomic, durable appends: a record is committed whole or not at all, so a
crash (even ``kill -9``) loses at most the games in flight and nothing half-written is ever read back.
Records are stored as compressed JSON (the full, self-contained game record) next to the condition
labels that analysis filters on. Reading streams rows one at a time: memory does not grow with the
number of games.

One writer per run directory: :meth:`Store.open` with ``writer=True`` holds an advisory lock
(``fcntl.flock`` on ``RUN_DIR/run.lock``, released by the kernel when the process dies, even by
``kill -9``), so a second ``contagion run`` on the same directory refuses with a clear message. A stored
``ok`` record is never replaced by a failed attempt (:meth:`Store.put`). The store remembers the grid
hash of every config run into it (:meth:`Store.adopt_config`) and refuses a different grid unless told
to extend the run.

Damage (a garbled record, invalid JSON, a dropped table, corrupted pages) is reported as a
:class:`StoreDamagedError` naming the store and what is wrong, never as a traceback. Before resuming,
the writer checks the file (:meth:`Store.recover`): SQLite-level corruption is refused; records that
cannot be read are moved to a ``quarantine`` table (and their games played again), and it says so.

Schema versions are recorded in ``meta``; :data:`MIGRATIONS` upgrades older stores in place, and a
store written by a newer contagion is refused with a clear message.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import sqlite3
import time
import urllib.parse
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contagion.errors import UserError
from contagion.experiment.record import GameRecord
from contagion.experiment.rundir import RunDir
from contagion.fileio import write_atomic

STORE_SCHEMA_VERSION = 1
LOCK_FILE = RunDir.LOCK
"""The writer's lock file in a run directory (left in place; only the lock on it matters)."""
EXECUTION_KEYS = frozenset({"name", "concurrency", "max_failure_rate"})
"""Config keys that change how a run is executed or labelled, not which games it holds: not in the grid hash."""

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS games (
    spec_hash TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    model TEXT, game TEXT, composition TEXT, intervention TEXT, chat_turns INTEGER, rep INTEGER,
    error TEXT,
    record BLOB NOT NULL,
    finished REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS games_condition ON games (model, game, composition, intervention, chat_turns);
CREATE TABLE IF NOT EXISTS profiles (key TEXT PRIMARY KEY, profile TEXT NOT NULL);
"""
_QUARANTINE = """CREATE TABLE IF NOT EXISTS quarantine (
    spec_hash TEXT, reason TEXT NOT NULL, record BLOB, moved REAL NOT NULL)"""
_REQUIRED_TABLES = ("meta", "games", "profiles")
_SQLITE_INT_MAX = 2**63 - 1

# version -> SQL that upgrades a store from that version to the next
MIGRATIONS: dict[int, str] = {}


class StoreDamagedError(UserError):
    """A store that cannot be read as it is: the message names the file and the damage."""


def _pack(record: GameRecord) -> bytes:
    return zlib.compress(record.model_dump_json().encode("utf-8"), 6)


def _unpack(blob: bytes) -> GameRecord:
    return GameRecord.model_validate_json(zlib.decompress(blob))


def _decode_problem(blob: Any) -> str | None:
    """Why a stored record blob cannot be read, or None when it can."""
    if not isinstance(blob, bytes):
        return f"the record is stored as {type(blob).__name__}, not compressed bytes"
    try:
        raw = zlib.decompress(blob)
    except zlib.error as exc:
        return f"the compressed record is garbled ({exc})"
    try:
        GameRecord.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        kind = "invalid JSON" if first["type"] == "json_invalid" else "not a game record"
        return f"{kind}: {where + ': ' if where else ''}{first['msg']}"
    return None


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


class RunLock:
    """The one-writer lock of a run directory: ``fcntl.flock`` on ``RUN_DIR/run.lock``.

    Advisory and held by an open file, so the kernel releases it when the process ends in any way.
    """

    def __init__(self, run_dir: Path, fd: int) -> None:
        self.run_dir = run_dir
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, run_dir: Path, *, note_pid: bool = True) -> RunLock:
        """Take the lock, or raise a UserError naming the process that holds it."""
        path = Path(run_dir) / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise UserError(f"cannot create the lock file {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = cls._holder(fd)
            os.close(fd)
            raise UserError(
                f"another `contagion run`{f' (pid {holder})' if holder else ''} is writing to {run_dir} "
                f"(it holds {path}); wait for it to finish, or give this run another --out"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise UserError(f"cannot lock {path}: {exc.strerror or exc}") from None
        if note_pid:
            with contextlib.suppress(OSError):  # the pid is only a hint for the message above
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(Path(run_dir), fd)

    @staticmethod
    def _holder(fd: int) -> str | None:
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            return None
        return text if text.isdigit() else None

    @staticmethod
    def held(run_dir: Path) -> bool:
        """Whether some process holds the lock now (checks without keeping it)."""
        path = Path(run_dir) / LOCK_FILE
        if not path.is_file():
            return False
        try:
            lock = RunLock.acquire(run_dir, note_pid=False)  # the holder's pid stays in the file
        except UserError:
            return True
        lock.release()
        return False

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


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
            store._check_version(create)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            store._migrate(create)
            if writer:
                conn.execute(_QUARANTINE)
        except sqlite3.DatabaseError as exc:
            store.close()
            raise StoreDamagedError(store._damage_text(exc)) from None
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
            store._check_version(create=True)  # an empty file is created again
        except sqlite3.DatabaseError as exc:
            raise StoreDamagedError(store._damage_text(exc)) from None
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
            version = store._check_version(create=False)
            if version is not None and version < STORE_SCHEMA_VERSION:
                if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)):
                    raise UserError(f"{path} has store schema {version}, older than this contagion's "
                                    f"({STORE_SCHEMA_VERSION}), and is read-only: upgrade a writable copy by opening "
                                    "it once (e.g. contagion report COPY)")
                store.close()
                cls.open(run_dir, create=False).close()  # the upgrade, in place
                return cls.open_existing(run_dir)
        except sqlite3.DatabaseError as exc:
            store.close()
            raise StoreDamagedError(store._damage_text(exc)) from None
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

    def _damage_text(self, exc: BaseException, what: str = "") -> str:
        detail = str(exc) or type(exc).__name__
        if "not a database" in detail or "file is encrypted" in detail:
            return f"{self.path} is not a contagion store, or its header is damaged ({detail})"
        return (f"the store {self.path} is damaged{': ' + what if what else ''} ({detail}); "
                "restore it from a backup, or run into a new directory")

    def _damaged(self, exc: BaseException, what: str = "") -> StoreDamagedError:
        return StoreDamagedError(self._damage_text(exc, what))

    def _rows(self, sql: str, params: tuple[Any, ...] = (), what: str = "") -> list[Any]:
        """Every row of a query; SQLite-level damage becomes a StoreDamagedError naming the store."""
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc, what) from None

    def _check_version(self, create: bool) -> int | None:
        """The store's schema version (None for a new, empty file); reads only."""
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            if tables - {"quarantine"}:
                if tables & {"games", "profiles"}:
                    raise StoreDamagedError(f"the store {self.path} is damaged: its meta table is missing")
                raise UserError(f"{self.path} is an SQLite file but not a contagion store")
            if not create:
                raise UserError(f"{self.path} is empty; run `contagion run` first")
            return None
        raw = self.meta("schema_version") or "0"
        try:
            version = int(raw)
        except ValueError:
            raise StoreDamagedError(f"{self.path} has an unreadable store schema version {raw!r}") from None
        if version > STORE_SCHEMA_VERSION:
            raise UserError(
                f"{self.path} was written by a newer contagion (store schema {version}; this version reads "
                f"up to {STORE_SCHEMA_VERSION}); upgrade with: pip install -U contagion"
            )
        if version < STORE_SCHEMA_VERSION and any(v not in MIGRATIONS for v in range(version, STORE_SCHEMA_VERSION)):
            raise UserError(f"{self.path} has store schema {version}, which this contagion cannot migrate")
        missing = [t for t in _REQUIRED_TABLES if t not in tables]  # after the version: a newer schema may differ
        if missing:
            raise StoreDamagedError(
                f"the store {self.path} is damaged: table(s) {', '.join(missing)} missing; "
                "restore it from a backup, or run into a new directory")
        return version

    def _migrate(self, create: bool) -> None:
        version = self._check_version(create)
        if version is None:
            # One transaction: a crash while creating leaves an empty file (created again on the next
            # run), never a half-made store.
            self.conn.executescript(
                f"BEGIN;\n{_SCHEMA_V1}\n"
                f"INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', '{STORE_SCHEMA_VERSION}');\n"
                f"INSERT OR REPLACE INTO meta (key, value) VALUES ('created', '{time.time()!r}');\nCOMMIT;"
            )
            return
        while version < STORE_SCHEMA_VERSION:
            if version not in MIGRATIONS:
                raise UserError(f"{self.path} has store schema {version}, which this contagion cannot migrate")
            with self.conn:
                self.conn.executescript(MIGRATIONS[version])
            version += 1
            self._set_meta("schema_version", str(version))

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
    def _write(self, sql: str, params: tuple[Any, ...], what: str) -> sqlite3.Cursor:
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
            raise self._damaged(exc, f"writing {what} failed") from None

    # -- meta ---------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,), "the meta table cannot be read")
        return None if not rows else str(rows[0][0])

    def _set_meta(self, key: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value), f"meta {key}")

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
        self._set_meta("config", json.dumps(config, sort_keys=True))

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
            self._set_meta("configs", json.dumps(entries, sort_keys=True))
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
        cursor = self._write(
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
                _sqlite_int(labels.get("rep")), record.error, _pack(record), time.time(),
            ),
            f"game {record.spec_hash}",
        )
        return cursor.rowcount > 0

    def done_hashes(self, *, include_failed: bool = False) -> set[str]:
        sql = "SELECT spec_hash FROM games" + ("" if include_failed else " WHERE status = 'ok'")
        return {r[0] for r in self._rows(sql, (), "the games table cannot be read")}

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "failed": 0}
        for status, n in self._rows("SELECT status, COUNT(*) FROM games GROUP BY status", (),
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
            raise self._damaged(exc, "the games table cannot be read") from None
        while True:
            try:
                rows = cursor.fetchmany(64)
            except sqlite3.DatabaseError as exc:
                raise self._damaged(exc, "the games table cannot be read") from None
            if not rows:
                break
            for spec_hash, blob in rows:
                yield self._decode(spec_hash, blob)

    def _decode(self, spec_hash: Any, blob: Any) -> GameRecord:
        problem = _decode_problem(blob)
        if problem is not None:
            raise StoreDamagedError(
                f"the store {self.path} is damaged: the record of game {spec_hash} cannot be read ({problem}); "
                "`contagion run` with the run's config moves unreadable records aside and plays those games again"
            )
        return _unpack(blob)

    def get(self, spec_hash: str) -> GameRecord | None:
        rows = self._rows("SELECT record FROM games WHERE spec_hash = ?", (spec_hash,),
                          f"game {spec_hash} cannot be read")
        return None if not rows else self._decode(spec_hash, rows[0][0])

    def failures(self) -> list[tuple[str, str]]:
        return [(str(h), str(e)) for h, e in
                self._rows("SELECT spec_hash, error FROM games WHERE status = 'failed' ORDER BY spec_hash", (),
                           "the games table cannot be read")]

    # -- damage -------------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Check the store before a run resumes over it; returns what was done, one sentence each.

        SQLite-level corruption (``PRAGMA quick_check`` fails) is refused with a StoreDamagedError:
        resuming over it could lose more. A game record that cannot be read (garbled, not JSON, not a
        record, or filed under the wrong game) is moved to the ``quarantine`` table, so the run plays
        that game again; an unreadable cached pre-play profile is dropped (it is measured again).
        """
        try:
            check = [str(r[0]) for r in self.conn.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc, "SQLite's integrity check cannot run") from None
        if check != ["ok"]:
            raise StoreDamagedError(
                f"the store {self.path} is damaged (SQLite integrity check: {'; '.join(check[:2])}); "
                "`contagion run` will not resume over it. Move it aside and run into a new directory "
                "(`contagion export` may still read the intact games)"
            )
        bad: list[tuple[int, str, str]] = []
        for rowid, spec_hash, status, blob in self._rows("SELECT rowid, spec_hash, status, record FROM games", (),
                                                         "the games table cannot be read"):
            problem = _decode_problem(blob)
            if problem is None:
                record = _unpack(blob)
                if record.spec_hash != spec_hash:
                    problem = f"the row of game {spec_hash} holds the record of game {record.spec_hash}"
                elif (status == "ok") != (record.error is None):
                    problem = f"the row says {status!r} but the record {'has' if record.error else 'has no'} error"
            if problem is not None:
                bad.append((int(rowid), str(spec_hash), problem))
        bad_profiles = []
        for key, text in self._rows("SELECT key, profile FROM profiles", (), "the profiles table cannot be read"):
            try:
                ok = isinstance(json.loads(text), dict)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                bad_profiles.append(key)
        notes: list[str] = []
        if bad:
            now = time.time()
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                for rowid, _, problem in bad:
                    self.conn.execute("INSERT INTO quarantine (spec_hash, reason, record, moved) SELECT spec_hash,"
                                      " ?, record, ? FROM games WHERE rowid = ?", (problem, now, rowid))
                    self.conn.execute("DELETE FROM games WHERE rowid = ?", (rowid,))
                self.conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
                raise self._damaged(exc, "moving unreadable records aside failed") from None
            first = bad[0]
            notes.append(f"{len(bad)} unreadable game record(s) in {self.path} were moved to its quarantine table "
                         f"and will be played again (first: game {first[1]}: {first[2]})")
        if bad_profiles:
            for key in bad_profiles:
                self._write("DELETE FROM profiles WHERE key = ?", (key,), "a profile")
            notes.append(f"{len(bad_profiles)} unreadable cached pre-play profile(s) in {self.path} were dropped "
                         "and will be measured again")
        return notes

    def quarantined(self) -> list[tuple[str, str]]:
        """(spec hash, reason) of every record moved aside by :meth:`recover`."""
        tables = {r[0] for r in self._rows("SELECT name FROM sqlite_master WHERE type='table'")}
        if "quarantine" not in tables:
            return []
        return [(str(h), str(r)) for h, r in self._rows("SELECT spec_hash, reason FROM quarantine ORDER BY moved")]

    # -- pre-play profile cache ---------------------------------------------------------------
    def get_profile(self, key: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT profile FROM profiles WHERE key = ?", (key,), "the profiles table cannot be read")
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
        self._write("INSERT OR REPLACE INTO profiles (key, profile) VALUES (?, ?)", (key, json.dumps(profile)),
                    f"profile {key}")

    # -- export -------------------------------------------------------------------------------
    def export_jsonl(self, path: Path) -> int:
        """Every record as one JSON line, written atomically (nothing is written if a record is damaged)."""
        lines = [record.model_dump_json() + "\n" for record in self.iter_records(status=None)]
        write_atomic(path, "".join(lines))
        return len(lines)

    def export_parquet(self, path: Path) -> int:
        """One row per game and player (flat columns), built in batches and written atomically."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        writer: pq.ParquetWriter | None = None
        n = 0
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            nonlocal writer
            if not batch:
                return
            table = pa.Table.from_pylist(batch)
            if writer is None:
                writer = pq.ParquetWriter(buffer, table.schema)
            writer.write_table(table.cast(writer.schema))
            batch.clear()

        for record in self.iter_records(status=None):
            for p in record.players:
                batch.append({
                    "spec_hash": record.spec_hash, "status": "failed" if record.error else "ok",
                    "error": record.error, **{k: str(v) for k, v in record.labels.items()},
                    "seed": record.spec.game.seed, "player": p.name, "persona": p.persona, "backend": p.backend,
                    "focal": p.focal, "total": p.total,
                    "cooperation": (sum(a.action == "cooperate" for a in p.actions) / len(p.actions))
                    if p.actions else None,
                    "invalid_rate": p.invalid_rate, "injections": len(p.injections),
                    "pre_prosocial": (p.pre_profile or {}).get("prosocial_index"),
                    "post_prosocial": (p.post_profile or {}).get("prosocial_index"),
                    "record_json": record.model_dump_json() if p.index == 0 else None,
                })
                n += 1
            if len(batch) >= 512:
                flush()
        flush()
        if writer is None:
            raise UserError(f"the store {self.path} holds no games to export")
        writer.close()
        write_atomic(path, buffer.getvalue())
        return n
