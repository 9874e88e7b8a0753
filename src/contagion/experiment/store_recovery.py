"""Damage a store can survive: unreadable records moved aside (and played again), bad cached profiles dropped.

:func:`recover` runs before a run resumes over a store (``contagion run``); SQLite-level corruption is refused,
never repaired. :func:`decode_problem` says why one stored record cannot be read.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import zlib
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from contagion.experiment.record import GameRecord
from contagion.experiment.store_schema import StoreDamagedError

if TYPE_CHECKING:
    from contagion.experiment.store import Store


def pack(record: GameRecord) -> bytes:
    """A record as the store keeps it: compressed JSON."""
    return zlib.compress(record.model_dump_json().encode("utf-8"), 6)


def unpack(blob: bytes) -> GameRecord:
    """A stored record, decoded (see :func:`decode_problem` for one that may be damaged)."""
    return GameRecord.model_validate_json(zlib.decompress(blob))


def decode_problem(blob: Any) -> str | None:
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


def recover(store: Store) -> list[str]:
    """Check the store before a run resumes over it; returns what was done, one sentence each.

    SQLite-level corruption (``PRAGMA quick_check`` fails) is refused with a StoreDamagedError:
    resuming over it could lose more. A game record that cannot be read (garbled, not JSON, not a
    record, or filed under the wrong game) is moved to the ``quarantine`` table, so the run plays
    that game again; an unreadable cached pre-play profile is dropped (it is measured again).
    """
    try:
        check = [str(r[0]) for r in store.conn.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        raise store.damaged(exc, "SQLite's integrity check cannot run") from None
    if check != ["ok"]:
        raise StoreDamagedError(
            f"the store {store.path} is damaged (SQLite integrity check: {'; '.join(check[:2])}); "
            "`contagion run` will not resume over it. Move it aside and run into a new directory "
            "(`contagion export` may still read the intact games)"
        )
    bad: list[tuple[int, str, str]] = []
    for rowid, spec_hash, status, blob in store.query("SELECT rowid, spec_hash, status, record FROM games", (),
                                                     "the games table cannot be read"):
        problem = decode_problem(blob)
        if problem is None:
            record = unpack(blob)
            if record.spec_hash != spec_hash:
                problem = f"the row of game {spec_hash} holds the record of game {record.spec_hash}"
            elif (status == "ok") != (record.error is None):
                problem = f"the row says {status!r} but the record {'has' if record.error else 'has no'} error"
        if problem is not None:
            bad.append((int(rowid), str(spec_hash), problem))
    bad_profiles = []
    for key, text in store.query("SELECT key, profile FROM profiles", (), "the profiles table cannot be read"):
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
            store.conn.execute("BEGIN IMMEDIATE")
            for rowid, _, problem in bad:
                store.conn.execute("INSERT INTO quarantine (spec_hash, reason, record, moved) SELECT spec_hash,"
                                  " ?, record, ? FROM games WHERE rowid = ?", (problem, now, rowid))
                store.conn.execute("DELETE FROM games WHERE rowid = ?", (rowid,))
            store.conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(sqlite3.Error):
                store.conn.execute("ROLLBACK")
            raise store.damaged(exc, "moving unreadable records aside failed") from None
        first = bad[0]
        notes.append(f"{len(bad)} unreadable game record(s) in {store.path} were moved to its quarantine table "
                     f"and will be played again (first: game {first[1]}: {first[2]})")
    if bad_profiles:
        for key in bad_profiles:
            store.write("DELETE FROM profiles WHERE key = ?", (key,), "a profile")
        notes.append(f"{len(bad_profiles)} unreadable cached pre-play profile(s) in {store.path} were dropped "
                     "and will be measured again")
    return notes

def quarantined(store: Store) -> list[tuple[str, str]]:
    """(spec hash, reason) of every record moved aside by :meth:`recover`."""
    tables = {r[0] for r in store.query("SELECT name FROM sqlite_master WHERE type='table'")}
    if "quarantine" not in tables:
        return []
    return [(str(h), str(r)) for h, r in store.query("SELECT spec_hash, reason FROM quarantine ORDER BY moved")]
