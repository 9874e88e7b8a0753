"""The response cache: answers by request, in memory (LRU) and optionally in a SQLite file.

The robust wrapper (:mod:`contagion.backends.robust`) decides *when* a request may be answered from it; this
module only keeps answers and names requests.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contagion.messages import Message

CACHE_KEY_VERSION = 2
"""Bumped when what goes into a cache key changes, so old entries are never misread (2: ``embedded``
now names the shipped weights run in float32, not the Q4_1 file as it is)."""


class ResponseCache:
    """Responses by request: an in-memory LRU, optionally backed by a SQLite file that outlives the process.

    Keys are sha256 digests of (cache-key version, backend identity, method, every message's role,
    content, name and meta, and the generation config or the choices and prefix). ``meta`` is part of
    the key because scripted and simulated backends act on it. One cache may serve many backends.
    """

    def __init__(self, max_entries: int = 10_000, path: str | Path | None = None) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.path = Path(path) if path is not None else None
        self.hits = 0
        self.misses = 0
        self._memory: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )

    @staticmethod
    def key(identity: str, method: str, messages: Sequence[Message], request: dict[str, Any]) -> str:
        """The cache key of one request."""
        shown = [{"role": m.role, "content": m.content, "name": m.name, "meta": m.meta} for m in messages]
        content = [CACHE_KEY_VERSION, identity, method, shown, request]
        blob = json.dumps(content, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored value, or None; a hit moves the entry to the front of the LRU."""
        with self._lock:
            text = self._memory.get(key)
            if text is not None:
                self._memory.move_to_end(key)
            elif self._db is not None:
                row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
                if row is not None:
                    text = row[0]
                    self._remember(key, text)
            if text is None:
                self.misses += 1
                return None
            self.hits += 1
        value: dict[str, Any] = json.loads(text)  # allows -Infinity: log-prob of an impossible choice
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store a JSON-serialisable value (infinite floats allowed)."""
        text = json.dumps(value, default=str)
        with self._lock:
            self._remember(key, text)
            if self._db is not None:
                self._db.execute("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", (key, text))

    def _remember(self, key: str, text: str) -> None:
        self._memory[key] = text
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)

    def __len__(self) -> int:
        """Entries held in memory."""
        return len(self._memory)

    def clear(self) -> None:
        """Forget every entry, in memory and on disk."""
        with self._lock:
            self._memory.clear()
            if self._db is not None:
                self._db.execute("DELETE FROM responses")

    def close(self) -> None:
        """Close the SQLite file (the in-memory entries stay usable)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
