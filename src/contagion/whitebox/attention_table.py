"""The attention table ``contagion attention`` writes: its columns, their Parquet types, and the writer that
puts ``attention.csv``, ``attention.parquet`` and ``attention.png`` into place only when all is done.

Each message of a player's history belongs to one segment (:data:`SEGMENTS`), and each row holds the
share of attention paid to every segment by the position that produces the player's next reply, in one
layer. The white-box measurement writes the table; the report reads it (:mod:`contagion.analysis.attention`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contagion.errors import UserError
from contagion.experiment.rundir import RunDir
from contagion.fileio import csv_cell

SYSTEM = "system"
INJECTION = "injection"
OTHERS = "others"
OBSERVATION = "observation"
OWN = "own"
OTHER_PROMPTS = "other_prompts"
TEMPLATE = "template"
"""The chat-format tokens between message contents (the label the white-box backend gives them)."""

SEGMENTS = (SYSTEM, INJECTION, OTHERS, OBSERVATION, OWN, OTHER_PROMPTS, TEMPLATE)
"""Every segment, in column order; ``template`` is the chat-format tokens between message contents."""

BASELINE = "baseline_system"
"""The dilution baseline of the system prompt's share: system-prompt tokens ÷ all prompt tokens at that point,
the share a query spreading its attention evenly over the context would give it. Decay of ``share_system``
that only follows this line is dilution; decay beyond it is the system prompt losing attention."""

COLUMNS = ("turn", "message_index", "tokens_so_far", "system_tokens", BASELINE, "layer",
           *(f"share_{s}" for s in SEGMENTS))
"""Columns of one player's rows: ``turn`` (1-based), ``message_index`` (index of the assistant message),
``tokens_so_far`` (prompt tokens), ``system_tokens`` (tokens of the system prompt), ``baseline_system``
(:data:`BASELINE`), ``layer`` (0-based) and one ``share_*`` per segment (they sum to 1)."""

TABLE_COLUMNS = (
    "game", "player", "persona", "player_backend", "intervention", "composition", "attention_model",
    "round", "phase", *COLUMNS,
)
"""Columns of ``attention.csv`` / ``attention.parquet``, one row per (game, player, turn, layer):

``game`` the spec hash; ``player`` its name in the game; ``persona`` and ``player_backend`` who played
the seat; ``intervention`` (``record.spec.intervention.label()``) and ``composition`` (the run's
label, empty for a single game) the condition; ``attention_model`` the white-box model that replayed
the history; ``round`` (1-based, from the assistant message's meta) and ``phase`` (``talk`` / ``act``)
of the turn; then :data:`COLUMNS`.
"""

INT_COLUMNS = ("round", "turn", "message_index", "tokens_so_far", "system_tokens", "layer")
"""Integer columns; ``share_*`` and ``baseline_system`` columns are floats, the others strings."""


def parquet_schema() -> Any:
    """The Arrow schema of ``attention.parquet`` (:data:`TABLE_COLUMNS` with their types)."""
    import pyarrow as pa

    def kind(column: str) -> Any:
        if column.startswith("share_") or column == BASELINE:
            return pa.float64()
        return pa.int64() if column in INT_COLUMNS else pa.string()

    return pa.schema([(c, kind(c)) for c in TABLE_COLUMNS])


class TableWriter:
    """Streams rows to temporary CSV and Parquet files in ``out_dir``; :meth:`commit` renames them."""

    def __init__(self, out_dir: Path) -> None:
        import csv

        self.out_dir = out_dir
        # unique hidden names (not mkstemp, whose 0600 mode would survive the rename)
        tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
        names = (RunDir.ATTENTION_CSV, RunDir.ATTENTION_PARQUET, RunDir.ATTENTION_PNG)
        self.tmp: dict[str, Path] = {name: out_dir / f".{name}.{tag}.tmp" for name in names}
        self._csv_file = self.tmp[RunDir.ATTENTION_CSV].open("x", encoding="utf-8", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=list(TABLE_COLUMNS))
        self._csv.writeheader()
        self._schema = parquet_schema()
        self._parquet: Any = None
        self.rows = 0

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not rows:
            return
        self._csv.writerows([{k: csv_cell(v) for k, v in row.items()} for row in rows])  # no formula runs
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.tmp[RunDir.ATTENTION_PARQUET], self._schema)
        self._parquet.write_table(pa.Table.from_pylist(list(rows), schema=self._schema))
        self.rows += len(rows)

    def finish_tables(self) -> None:
        self._csv_file.close()
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None

    def commit(self) -> dict[str, Path]:
        """Rename the temporary files into place; the CSV last, since readers look for it."""
        self.finish_tables()
        final = {}
        for name in (RunDir.ATTENTION_PARQUET, RunDir.ATTENTION_PNG, RunDir.ATTENTION_CSV):
            final[name] = self.out_dir / name
            os.replace(self.tmp[name], final[name])
        self.tmp = {}
        return final

    def discard(self) -> None:
        try:
            self.finish_tables()
        finally:
            for tmp in self.tmp.values():
                tmp.unlink(missing_ok=True)
            self.tmp = {}


def check_out_dir(out_dir: Path) -> None:
    """Fail early (before any model is loaded) when ``out_dir`` cannot be created or written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; give a directory")
    existing = out_dir
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"--out {out_dir} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {out_dir} cannot be written: {existing} is not writable")


def make_dirs(path: Path) -> list[Path]:
    """``mkdir -p``, returning the directories it created (outermost first)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    missing.reverse()
    for directory in missing:
        directory.mkdir()
    return missing
