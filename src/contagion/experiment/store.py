"""The results store: one SQLite file per run, one row per game, written by a single writer.

SQLite in WAL mode gives atomic, durable appends: a record is committed whole or not at all, so a
crash (even ``kill -9``) loses at most the games in flight and nothing half-written is ever read back.
Records are stored as compressed JSON (the full, self-contained game record) next to the condition
labels that analysis filters on. Reading streams rows one at a time: memory does not grow with the
number of games.

Schema versions are recorded in ``meta``; :data:`MIGRATIONS` upgrades older stores in place, and a
store written by a newer contagion is refused with a clear message.
"""

from __future__ import annotations

import json
import sqlite3
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from contagion.errors import UserError
from contagion.games.record import GameRecord

STORE_SCHEMA_VERSION = 1
STORE_FILE = "store.sqlite"

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

# version -> SQL that upgrades a store from that version to the next
MIGRATIONS: dict[int, str] = {}


def _pack(record: GameRecord) -> bytes:
    return zlib.compress(record.model_dump_json().encode("utf-8"), 6)


def _unpack(blob: bytes) -> GameRecord:
    return GameRecord.model_validate_json(zlib.decompress(blob))


class Store:
    """One run's games. Open with :meth:`open` (creates) or :meth:`open_existing` (read)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, run_dir: Path, *, create: bool = True) -> Store:
        path = run_dir / STORE_FILE
        if not path.exists() and not create:
            raise UserError(f"{run_dir} holds no contagion run (no {STORE_FILE}); run `contagion run` first")
        if create:
            run_dir.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        store = cls(path, conn)
        try:
            # Refuse a foreign or newer store before changing anything in it (switching the journal
            # mode rewrites the file header).
            store._check_version(create)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            store._migrate(create)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise UserError(f"{path} is not a contagion store ({exc})") from None
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def check(cls, run_dir: Path) -> None:
        """Fail (UserError) when ``run_dir`` holds a store this version cannot use; changes nothing."""
        path = run_dir / STORE_FILE
        if not path.exists():
            return
        if not path.is_file():
            raise UserError(f"{path} is not a contagion store (not a file)")
        try:
            # read-write but only reading: a read-only connection would leave -wal/-shm files behind
            conn = sqlite3.connect(path, timeout=30)
        except sqlite3.Error as exc:
            raise UserError(f"{path} cannot be opened as a contagion store ({exc})") from None
        try:
            cls(path, conn)._check_version(create=True)  # an empty file is created again
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{path} is not a contagion store ({exc})") from None
        finally:
            conn.close()

    @classmethod
    def open_existing(cls, run_dir: Path) -> Store:
        if not run_dir.exists():
            raise UserError(f"run directory {run_dir} does not exist")
        if not run_dir.is_dir():
            raise UserError(f"{run_dir} is not a directory; give the run directory")
        return cls.open(run_dir, create=False)

    def _check_version(self, create: bool) -> int | None:
        """The store's schema version (None for a new, empty file); reads only."""
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            if tables:
                raise UserError(f"{self.path} is an SQLite file but not a contagion store")
            if not create:
                raise UserError(f"{self.path} is empty; run `contagion run` first")
            return None
        raw = self.meta("schema_version") or "0"
        try:
            version = int(raw)
        except ValueError:
            raise UserError(f"{self.path} has an unreadable store schema version {raw!r}") from None
        if version > STORE_SCHEMA_VERSION:
            raise UserError(
                f"{self.path} was written by a newer contagion (store schema {version}; this version reads "
                f"up to {STORE_SCHEMA_VERSION}); upgrade with: pip install -U contagion"
            )
        if version < STORE_SCHEMA_VERSION and any(v not in MIGRATIONS for v in range(version, STORE_SCHEMA_VERSION)):
            raise UserError(f"{self.path} has store schema {version}, which this contagion cannot migrate")
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

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta ---------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def set_config(self, config: dict[str, Any]) -> None:
        self._set_meta("config", json.dumps(config, sort_keys=True))

    def config(self) -> dict[str, Any] | None:
        raw = self.meta("config")
        return None if raw is None else dict(json.loads(raw))

    # -- games --------------------------------------------------------------------------------
    def put(self, record: GameRecord) -> None:
        """Append (or replace a failed attempt of) one game, atomically."""
        labels = record.labels
        self.conn.execute(
            "INSERT OR REPLACE INTO games (spec_hash, status, model, game, composition, intervention, chat_turns,"
            " rep, error, record, finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.spec_hash, "failed" if record.error else "ok", labels.get("model"), labels.get("game"),
                labels.get("composition"), labels.get("intervention"), labels.get("chat_turns"),
                labels.get("rep"), record.error, _pack(record), time.time(),
            ),
        )

    def done_hashes(self, *, include_failed: bool = False) -> set[str]:
        sql = "SELECT spec_hash FROM games" + ("" if include_failed else " WHERE status = 'ok'")
        return {r[0] for r in self.conn.execute(sql)}

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "failed": 0}
        for status, n in self.conn.execute("SELECT status, COUNT(*) FROM games GROUP BY status"):
            out[str(status)] = int(n)
        return out

    def iter_records(self, *, status: str | None = "ok") -> Iterator[GameRecord]:
        """Stream the records (one decoded at a time), in a stable order."""
        sql = "SELECT record FROM games" + (" WHERE status = ?" if status else "") + " ORDER BY spec_hash"
        cursor = self.conn.cursor()
        cursor.execute(sql, (status,) if status else ())
        while True:
            rows = cursor.fetchmany(64)
            if not rows:
                break
            for (blob,) in rows:
                yield _unpack(blob)

    def get(self, spec_hash: str) -> GameRecord | None:
        row = self.conn.execute("SELECT record FROM games WHERE spec_hash = ?", (spec_hash,)).fetchone()
        return None if row is None else _unpack(row[0])

    def failures(self) -> list[tuple[str, str]]:
        return [(str(h), str(e)) for h, e in
                self.conn.execute("SELECT spec_hash, error FROM games WHERE status = 'failed' ORDER BY spec_hash")]

    # -- pre-play profile cache ---------------------------------------------------------------
    def get_profile(self, key: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT profile FROM profiles WHERE key = ?", (key,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def put_profile(self, key: str, profile: dict[str, Any]) -> None:
        self.conn.execute("INSERT OR REPLACE INTO profiles (key, profile) VALUES (?, ?)", (key, json.dumps(profile)))

    # -- export -------------------------------------------------------------------------------
    def export_jsonl(self, path: Path) -> int:
        n = 0
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for record in self.iter_records(status=None):
                fh.write(record.model_dump_json() + "\n")
                n += 1
        tmp.replace(path)
        return n

    def export_parquet(self, path: Path) -> int:
        """One row per game and player (flat columns), written in batches."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        tmp = path.with_name(f".{path.name}.tmp")
        writer: pq.ParquetWriter | None = None
        n = 0
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            nonlocal writer
            if not batch:
                return
            table = pa.Table.from_pylist(batch)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table.cast(writer.schema))
            batch.clear()

        for record in self.iter_records(status=None):
            for p in record.players:
                batch.append({
                    "spec_hash": record.spec_hash, "status": "failed" if record.error else "ok",
                    "error": record.error, **{k: str(v) for k, v in record.labels.items()},
                    "seed": record.spec.seed, "player": p.name, "persona": p.persona, "backend": p.backend,
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
            raise UserError("the store holds no games to export")
        writer.close()
        tmp.replace(path)
        return n
