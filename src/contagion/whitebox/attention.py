"""Measuring attention decay white-box: how much of a player's attention its system prompt keeps as its
history grows. ``contagion attention`` runs this; the table it writes has the schema of
:mod:`contagion.analysis.attention`, which the HTML report reads.

Each message of a player's history gets a segment label (:func:`segment_labels`); a white-box backend
(``hf:…``) reports, per layer, the share of attention that the position producing the player's next
reply pays to each segment (:meth:`contagion.backends.hf.HFBackend.attention_to_segments`);
:func:`history_attention_rows` does that before every turn of the player and returns tidy rows.

On stored games: :func:`open_attention_input` reads a run directory or one game record JSON and plans
which players to replay (:func:`measurable_players`: language-model players only — scripted strategies
have no attention — and by default only focal ones); :func:`player_attention_rows` adds the game,
player, condition, round and phase to each row (:data:`~contagion.analysis.attention.TABLE_COLUMNS`);
:func:`measure_attention` streams every planned player's rows into ``attention.csv`` and
``attention.parquet`` and draws ``attention.png``, writing each to a temporary file renamed into place
only when everything succeeded.

The plot (:func:`contagion.analysis.figures.attention_figure`) averages over **all layers** (each layer
weighted equally; within a layer heads are already averaged), per turn, then over turns per
intervention at each context length (exact lengths when there are at most 12 distinct ones, else 10
equal-width bins), with a band of ± 1 standard error over turns — the same aggregation as the HTML
report's attention section. The table keeps every layer, so other layer sets can be plotted from it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import ValidationError

from contagion import vocabulary as P
from contagion.analysis.attention import (
    BASELINE,
    INJECTION,
    OBSERVATION,
    OTHER_PROMPTS,
    OTHERS,
    OWN,
    SEGMENTS,
    SYSTEM,
    TABLE_COLUMNS,
    parquet_schema,
    system_share_by_length,
)
from contagion.backends.hf import AttentionShares
from contagion.backends.registry import build, is_language_model, kind_of
from contagion.errors import BackendSpecError, UserError
from contagion.experiment.record import RECORD_SCHEMA_VERSION, GameRecord
from contagion.experiment.rundir import RunDir
from contagion.fileio import csv_cell
from contagion.messages import Message

if TYPE_CHECKING:
    import pandas as pd

    from contagion.experiment.store import Store


class AttentionBackend(Protocol):
    """What :func:`history_attention_rows` needs from a backend."""

    async def attention_to_segments(
        self, messages: Sequence[Message], segment_of_message: Sequence[str], *, query: str = "last"
    ) -> AttentionShares: ...


def segment_label(message: Message, index: int) -> str:
    """The segment of one message (see :func:`segment_labels`)."""
    kind = message.meta.get(P.KIND)
    if index == 0 and message.role == "system":
        return SYSTEM
    if kind == P.INJECTION:
        return INJECTION
    if kind == P.TALK:
        return OTHERS
    if kind == P.OBSERVATION:
        return OBSERVATION
    if message.role == "assistant":
        return OWN
    return OTHER_PROMPTS


def segment_labels(messages: Sequence[Message]) -> list[str]:
    """One segment label per message, checked in this order:

    - ``system``: the first message, if its role is system (the persona's system prompt);
    - ``injection``: a steering message (meta kind ``injection``), wherever it sits;
    - ``others``: another player's chat message (meta kind ``talk``);
    - ``observation``: a round result shown to the player (meta kind ``observation``);
    - ``own``: the player's own messages (role assistant);
    - ``other_prompts``: everything else — game rules, talk and act prompts, trait questions, and
      system messages after the first that are not injections.
    """
    return [segment_label(m, i) for i, m in enumerate(messages)]


async def history_attention_rows(
    backend: AttentionBackend, messages: Sequence[Message]
) -> list[dict[str, float | int]]:
    """Tidy rows of attention shares before each of the player's turns, one row per (turn, layer).

    A turn is each assistant message after the first message; its row set describes the prompt just
    before it (``messages[:i]`` with the generation prompt), read at the position that produces the
    turn's first token. Columns: :data:`~contagion.analysis.attention.COLUMNS` — ``turn`` (1-based),
    ``message_index`` (index of the assistant message), ``tokens_so_far`` (prompt tokens),
    ``system_tokens``, ``baseline_system`` (system tokens ÷ prompt tokens: the dilution baseline),
    ``layer`` (0-based) and one ``share_*`` per segment; the shares of a row sum to 1. With a prefix-caching
    backend each prompt extends the previous one, so only the new messages are encoded.
    """
    labels = segment_labels(messages)
    rows: list[dict[str, float | int]] = []
    turn = 0
    for i, message in enumerate(messages):
        if message.role != "assistant" or i == 0:
            continue
        turn += 1
        shares = await backend.attention_to_segments(messages[:i], labels[:i])
        for layer, per_label in enumerate(shares.per_layer):
            system_tokens = int(shares.tokens_per_label.get(SYSTEM, 0))
            row: dict[str, float | int] = {
                "turn": turn,
                "message_index": i,
                "tokens_so_far": shares.tokens,
                "system_tokens": system_tokens,
                BASELINE: system_tokens / shares.tokens if shares.tokens else 0.0,
                "layer": layer,
            }
            for segment in SEGMENTS:
                row[f"share_{segment}"] = per_label.get(segment, 0.0)
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------------- stored games


# ----------------------------------------------------------------------------------- stored games


PlayerSelection = Literal["focal", "all"]
PLAYER_SELECTIONS: tuple[str, ...] = ("focal", "all")

INPUT_HINT = (
    "give a run directory written by `contagion run` or a game record JSON written by `contagion play --out FILE`"
)
_PHASES = {"own_talk": "talk", "own_action": "act"}

# reason a player is not measured -> (how to say it, the fix)
_SKIP_REASONS: dict[str, tuple[str, str]] = {
    "scripted": ("scripted (no model, no attention)", ""),
    "not focal": ("not focal", "use --players all to include them"),
    "no history": (
        "without a per-player history (empty messages)",
        "re-create the record with `contagion play --out FILE` or `contagion run`, which store every player's "
        "history",
    ),
    "no turns": ("without any turn of their own in the history", ""),
}


def attention_backend(spec: str) -> AttentionBackend:
    """The white-box backend for ``spec`` (``hf:…``), checked before any model is loaded.

    Raises :class:`~contagion.errors.UserError` for a spec that is not a transformers model and
    :class:`~contagion.errors.MissingExtraError` when torch or transformers is not installed.
    """
    spec = spec.strip()
    advice = (f"attention needs a white-box model: use hf:embedded or hf:PATH_OR_ID (got {spec!r}; only "
              "transformers models expose attention weights)")
    try:
        kind = kind_of(spec)
    except BackendSpecError:
        raise UserError(advice) from None
    if not kind.language_model or not kind.local:
        raise UserError(advice)
    # a fresh backend (nothing is loaded yet; the model itself is loaded once per process and shared);
    # whether it can report attention is its own declaration
    try:
        backend = build(spec)
    except UserError:
        if kind.name != "hf":  # e.g. gguf:PATH with a missing file: the advice, not the loader's complaint
            raise UserError(advice) from None
        raise
    if not backend.capabilities.attention or not hasattr(backend, "attention_to_segments"):
        raise UserError(advice)
    return backend


def round_of_turn(messages: Sequence[Message], index: int) -> int | None:
    """The round of the turn at ``messages[index]``: its ``round`` meta, else the latest one before it."""
    for message in reversed(messages[: index + 1]):
        value = message.meta.get("round")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def phase_of_turn(message: Message) -> str:
    """``talk`` or ``act`` for the engine's own messages; else the message's phase or kind meta, or ''."""
    kind = str(message.meta.get(P.KIND, ""))
    return _PHASES.get(kind) or str(message.meta.get("phase", kind))


def skip_reason(record: GameRecord, index: int, players: PlayerSelection = "focal") -> str | None:
    """Why player ``index`` of ``record`` is not measured (a key of the reasons below), or None.

    In order: ``scripted`` (a strategy, not a model); ``not focal`` (only with ``players='focal'``);
    ``no history`` (its ``messages`` are empty); ``no turns`` (no assistant message after the first).
    """
    player = record.players[index]
    if not is_language_model(player.backend):
        return "scripted"
    if players == "focal" and not player.focal:
        return "not focal"
    if not player.messages:
        return "no history"
    if not any(m.role == "assistant" for m in player.messages[1:]):
        return "no turns"
    return None


def measurable_players(record: GameRecord, players: PlayerSelection = "focal") -> tuple[list[int], Counter[str]]:
    """Indices of the players of ``record`` to replay, and a count of the others by reason."""
    chosen: list[int] = []
    skipped: Counter[str] = Counter()
    for i in range(len(record.players)):
        reason = skip_reason(record, i, players)
        if reason is None:
            chosen.append(i)
        else:
            skipped[reason] += 1
    return chosen, skipped


def describe_skipped(skipped: Counter[str]) -> str:
    """'2 players scripted (…); 1 player not focal (use --players all to include them)'."""
    parts = []
    for reason, (said, fix) in _SKIP_REASONS.items():
        n = skipped.get(reason, 0)
        if n:
            parts.append(f"{n} player{'s' if n != 1 else ''} {said}" + (f" — {fix}" if fix else ""))
    return "; ".join(parts)


@dataclass(frozen=True)
class AttentionJob:
    """One player of one game to replay."""

    game: str
    player: int
    name: str


@dataclass
class AttentionInput:
    """Planned work from a run directory or one game record file. Close it (or use ``with``) when done."""

    path: Path
    kind: Literal["run", "record"]
    jobs: list[AttentionJob]
    games: int
    skipped: Counter[str] = field(default_factory=Counter)
    _store: Store | None = None
    _record: GameRecord | None = None

    @property
    def default_out(self) -> Path:
        """``RUN_DIR/attention`` for a run; ``STEM-attention`` beside a record file."""
        if self.kind == "run":
            return RunDir(self.path).attention_dir
        return RunDir.attention_beside(self.path)

    def record(self, game: str) -> GameRecord:
        """The stored record of ``game`` (a spec hash)."""
        if self._record is not None and self._record.spec_hash == game:
            return self._record
        found = self._store.get(game) if self._store is not None else None
        if found is None:
            raise UserError(f"game {game} is no longer in {self.path}; was the run changed meanwhile?")
        return found

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> AttentionInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_game_record(path: Path) -> GameRecord:
    """One game record from a JSON file, or a :class:`UserError` saying what is wrong with it."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file; {INPUT_HINT}") from None
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc}); {INPUT_HINT}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not JSON ({exc.msg}, line {exc.lineno}); {INPUT_HINT}") from None
    if not isinstance(data, dict) or not {"spec", "players"} <= set(data):
        raise UserError(f"{path} is JSON but not a contagion game record (no 'spec' and 'players'); {INPUT_HINT}")
    version = data.get("schema_version", RECORD_SCHEMA_VERSION)
    if isinstance(version, int) and version > RECORD_SCHEMA_VERSION:
        raise UserError(
            f"{path} was written by a newer contagion (record schema {version}; this version reads up to "
            f"{RECORD_SCHEMA_VERSION}); upgrade with: pip install -U contagion"
        )
    try:
        return GameRecord.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "record"
        raise UserError(
            f"{path} is not a valid contagion game record ({where}: {first['msg']}); {INPUT_HINT}"
        ) from None


def open_attention_input(
    path: Path, *, games: int | None = None, players: PlayerSelection = "focal"
) -> AttentionInput:
    """Plan the players to replay from a run directory or one game record JSON.

    A run's games are taken in game-hash order (deterministic); ``games`` keeps the first N of those
    with at least one player to measure. Fails with a :class:`UserError` naming the fix when there
    is nothing to measure: a missing path, a file that is not a game record, a directory that holds
    no run or no finished game, or records without per-player histories.
    """
    if games is not None and games < 1:
        raise UserError(f"--games must be at least 1 (got {games})")
    if players not in PLAYER_SELECTIONS:
        raise UserError(f"--players must be one of {', '.join(PLAYER_SELECTIONS)} (got {players!r})")
    if not path.exists():
        raise UserError(f"{path} does not exist; {INPUT_HINT}")
    skipped: Counter[str] = Counter()
    if path.is_file():
        record = read_game_record(path)
        chosen, skipped = measurable_players(record, players)
        jobs = [AttentionJob(record.spec_hash, i, record.players[i].name) for i in chosen]
        source = AttentionInput(path, "record", jobs, 1 if jobs else 0, skipped, _record=record)
        where = f"the game record {path}"
    elif path.is_dir():
        from contagion.experiment.store import Store

        if not RunDir(path).holds_run():
            raise UserError(f"{path} is a directory but holds no contagion run (no {RunDir.STORE}); {INPUT_HINT}")
        store = Store.open_existing(path)
        try:
            jobs, n_games, seen = [], 0, 0
            for record in store.iter_records():
                seen += 1
                chosen, why = measurable_players(record, players)
                skipped.update(why)
                if chosen:
                    jobs += [AttentionJob(record.spec_hash, i, record.players[i].name) for i in chosen]
                    n_games += 1
                    if games is not None and n_games >= games:
                        break
            if seen == 0:
                failed = store.counts().get("failed", 0)
                detail = f" ({failed} failed; see `contagion report {path}`)" if failed else ""
                raise UserError(
                    f"the run {path} holds no finished games{detail}; run `contagion run CONFIG --out {path}` first"
                )
        except BaseException:
            store.close()
            raise
        source = AttentionInput(path, "run", jobs, n_games, skipped, _store=store)
        where = f"the {seen} finished game(s) of {path}"
    else:
        raise UserError(f"{path} is neither a file nor a directory; {INPUT_HINT}")
    if not source.jobs:
        source.close()
        raise UserError(f"nothing to measure in {where}: {describe_skipped(skipped) or 'no players'}")
    return source


async def player_attention_rows(
    backend: AttentionBackend, record: GameRecord, player: int, *, model: str = ""
) -> list[dict[str, Any]]:
    """:func:`history_attention_rows` of one stored player, with the columns of :data:`TABLE_COLUMNS`."""
    p = record.players[player]
    ident: dict[str, Any] = {
        "game": record.spec_hash,
        "player": p.name,
        "persona": p.persona,
        "player_backend": p.backend,
        "intervention": record.spec.intervention.label(),
        "composition": str(record.labels.get("composition", "") or ""),
        "attention_model": model,
    }
    rows = await history_attention_rows(backend, p.messages)
    out = []
    for row in rows:
        i = int(row["message_index"])
        full = {**ident, "round": round_of_turn(p.messages, i), "phase": phase_of_turn(p.messages[i]), **row}
        out.append({column: full.get(column) for column in TABLE_COLUMNS})
    return out


# ----------------------------------------------------------------------------------- writing


# ----------------------------------------------------------------------------------- writing


class _TableWriter:
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


def _make_dirs(path: Path) -> list[Path]:
    """``mkdir -p``, returning the directories it created (outermost first)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    missing.reverse()
    for directory in missing:
        directory.mkdir()
    return missing


@dataclass
class AttentionResult:
    """What :func:`measure_attention` wrote."""

    files: dict[str, Path]
    rows: int
    games: int
    players: int
    turns: int
    layers: int
    skipped: Counter[str]
    turn_means: pd.DataFrame
    """Per (game, player, turn): intervention, tokens_so_far, share_system and share_injection averaged over
    layers."""


async def measure_attention(
    source: AttentionInput,
    backend: AttentionBackend,
    out_dir: Path,
    *,
    model: str = "",
    on_player: Callable[[AttentionJob, int], None] | None = None,
) -> AttentionResult:
    """Replay every planned player through ``backend``; write the table and the plot into ``out_dir``.

    Rows are streamed to temporary files (memory holds one player's rows and one mean per turn), and
    the files are renamed to ``attention.csv`` / ``.parquet`` / ``.png`` only when every player is
    done; on any failure they are removed, with the directories this call created, so a reader never
    sees a partial table. ``on_player(job, rows)`` is called after each player.
    """
    import pandas as pd

    check_out_dir(out_dir)
    created = _make_dirs(out_dir)
    writer: _TableWriter | None = None
    try:
        writer = _TableWriter(out_dir)
        means: list[dict[str, Any]] = []
        layers = 0
        for job in source.jobs:
            record = source.record(job.game)
            rows = await player_attention_rows(backend, record, job.player, model=model)
            writer.write(rows)
            means += _turn_means(rows)
            layers = max(layers, 1 + max((int(r["layer"]) for r in rows), default=-1))
            if on_player is not None:
                on_player(job, len(rows))
        if writer.rows == 0:
            raise UserError(f"no turns to measure in {source.path}")
        turn_means = pd.DataFrame(means)
        writer.finish_tables()
        from contagion.analysis.figures import attention_figure, save_png  # matplotlib: only when a plot is drawn

        save_png(attention_figure(system_share_by_length(turn_means), layers=layers), writer.tmp[RunDir.ATTENTION_PNG])
        files = writer.commit()
    except BaseException:
        if writer is not None:
            writer.discard()
        for directory in reversed(created):
            try:
                directory.rmdir()
            except OSError:
                break
        raise
    return AttentionResult(
        files=files,
        rows=writer.rows,
        games=len({job.game for job in source.jobs}),
        players=len(source.jobs),
        turns=len(turn_means),
        layers=layers,
        skipped=source.skipped,
        turn_means=turn_means,
    )


def _turn_means(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per turn: identity, tokens_so_far and the layer-mean of share_system / share_injection."""
    by_turn: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_turn.setdefault(int(row["turn"]), []).append(row)
    out = []
    for turn, group in by_turn.items():
        first = group[0]
        out.append({
            "intervention": first["intervention"], "composition": first["composition"], "game": first["game"],
            "player": first["player"], "round": first["round"], "turn": turn,
            "tokens_so_far": first["tokens_so_far"],
            "share_system": sum(float(r["share_system"]) for r in group) / len(group),
            "share_injection": sum(float(r["share_injection"]) for r in group) / len(group),
            BASELINE: float(first[BASELINE]),
        })
    return out


# ----------------------------------------------------------------------------------- the plot
