"""The store's SQLite schema, its version, and the migrations that upgrade an older store in place.

A store records its schema version in ``meta``. :func:`schema_version` reads it (refusing a foreign, damaged
or newer store before anything is changed) and :func:`migrate` creates a new store or upgrades an older one
with :data:`MIGRATIONS`. Older *records* need no migration here: a game record's fields added later have
defaults, so a record written by an older contagion loads as it is (see ``GameRecord``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from contagion.errors import UserError

if TYPE_CHECKING:
    from contagion.experiment.store import Store

STORE_SCHEMA_VERSION = 1

SCHEMA_V1 = """
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
QUARANTINE = """CREATE TABLE IF NOT EXISTS quarantine (
    spec_hash TEXT, reason TEXT NOT NULL, record BLOB, moved REAL NOT NULL)"""
REQUIRED_TABLES = ("meta", "games", "profiles")

MIGRATIONS: dict[int, str] = {}
"""version -> SQL that upgrades a store from that version to the next."""


class StoreDamagedError(UserError):
    """A store that cannot be read as it is: the message names the file and the damage."""


def schema_version(store: Store, create: bool) -> int | None:
    """The store's schema version (None for a new, empty file); reads only."""
    tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" not in tables:
        if tables - {"quarantine"}:
            if tables & {"games", "profiles"}:
                raise StoreDamagedError(f"the store {store.path} is damaged: its meta table is missing")
            raise UserError(f"{store.path} is an SQLite file but not a contagion store")
        if not create:
            raise UserError(f"{store.path} is empty; run `contagion run` first")
        return None
    raw = store.meta("schema_version") or "0"
    try:
        version = int(raw)
    except ValueError:
        raise StoreDamagedError(f"{store.path} has an unreadable store schema version {raw!r}") from None
    if version > STORE_SCHEMA_VERSION:
        raise UserError(
            f"{store.path} was written by a newer contagion (store schema {version}; this version reads "
            f"up to {STORE_SCHEMA_VERSION}); upgrade with: pip install -U contagion"
        )
    if version < STORE_SCHEMA_VERSION and any(v not in MIGRATIONS for v in range(version, STORE_SCHEMA_VERSION)):
        raise UserError(f"{store.path} has store schema {version}, which this contagion cannot migrate")
    missing = [t for t in REQUIRED_TABLES if t not in tables]  # after the version: a newer schema may differ
    if missing:
        raise StoreDamagedError(
            f"the store {store.path} is damaged: table(s) {', '.join(missing)} missing; "
            "restore it from a backup, or run into a new directory")
    return version


def migrate(store: Store, create: bool) -> None:
    """Create the schema in a new store, or upgrade an older one to :data:`STORE_SCHEMA_VERSION`."""
    version = schema_version(store, create)
    if version is None:
        # One transaction: a crash while creating leaves an empty file (created again on the next
        # run), never a half-made store.
        store.conn.executescript(
            f"BEGIN;\n{SCHEMA_V1}\n"
            f"INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', '{STORE_SCHEMA_VERSION}');\n"
            f"INSERT OR REPLACE INTO meta (key, value) VALUES ('created', '{time.time()!r}');\nCOMMIT;"
        )
        return
    while version < STORE_SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise UserError(f"{store.path} has store schema {version}, which this contagion cannot migrate")
        with store.conn:
            store.conn.executescript(MIGRATIONS[version])
        version += 1
        store.set_meta("schema_version", str(version))
