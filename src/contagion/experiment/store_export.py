"""A store's games written out for other tools: JSON lines (whole records) or Parquet (a row per player)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contagion.errors import UserError
from contagion.fileio import write_atomic

if TYPE_CHECKING:
    from contagion.experiment.store import Store


def export_jsonl(store: Store, path: Path) -> int:
    """Every record as one JSON line, written atomically (nothing is written if a record is damaged)."""
    lines = [record.model_dump_json() + "\n" for record in store.iter_records(status=None)]
    write_atomic(path, "".join(lines))
    return len(lines)

def export_parquet(store: Store, path: Path) -> int:
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

    for record in store.iter_records(status=None):
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
        raise UserError(f"the store {store.path} holds no games to export")
    writer.close()
    write_atomic(path, buffer.getvalue())
    return n
