"""Measuring attention decay white-box: how much of a player's attention its system prompt keeps as its
history grows. ``contagion attention`` runs this; the table it writes (:mod:`contagion.whitebox.attention_table`)
is what the HTML report reads (:mod:`contagion.analysis.attention`).

Each message of a player's history gets a segment label (:func:`segment_labels`); a white-box backend
(``hf:…``) reports, per layer, the share of attention that the position producing the player's next
reply pays to each segment (:meth:`contagion.backends.hf.HFBackend.attention_to_segments`);
:func:`history_attention_rows` does that before every turn of the player and returns tidy rows.

On stored games: :func:`~contagion.whitebox.attention_input.open_attention_input` reads a run directory or
one game record JSON and plans which players to replay; :func:`player_attention_rows` adds the game,
player, condition, round and phase to each row (:data:`~contagion.whitebox.attention_table.TABLE_COLUMNS`);
:func:`measure_attention` streams every planned player's rows into ``attention.csv`` and
``attention.parquet`` and has the caller's ``plot`` draw ``attention.png``, writing each to a temporary file
renamed into place only when everything succeeded.

The plot ``contagion attention`` draws (:func:`contagion.analysis.figures.write_attention_png`) averages
over **all layers** (each layer weighted equally; within a layer heads are already averaged), per turn,
then over turns per intervention at each context length (exact lengths when there are at most 12 distinct
ones, else 10 equal-width bins), with a band of ± 1 standard error over turns — the same aggregation as the
HTML report's attention section. The table keeps every layer, so other layer sets can be plotted from it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from contagion import vocabulary as P
from contagion.backends.hf import AttentionShares
from contagion.backends.registry import build, kind_of
from contagion.errors import BackendSpecError, UserError
from contagion.experiment.record import GameRecord
from contagion.experiment.rundir import RunDir
from contagion.messages import Message
from contagion.whitebox.attention_input import (
    INPUT_HINT,
    PLAYER_SELECTIONS,
    AttentionInput,
    AttentionJob,
    PlayerSelection,
    describe_skipped,
    measurable_players,
    open_attention_input,
    read_game_record,
    skip_reason,
)
from contagion.whitebox.attention_table import (
    BASELINE,
    INJECTION,
    OBSERVATION,
    OTHER_PROMPTS,
    OTHERS,
    OWN,
    SEGMENTS,
    SYSTEM,
    TABLE_COLUMNS,
    TableWriter,
    check_out_dir,
    make_dirs,
)

__all__ = ["INPUT_HINT", "PLAYER_SELECTIONS", "AttentionBackend", "AttentionInput", "AttentionJob",
           "AttentionResult", "PlayerSelection", "attention_backend", "check_out_dir", "describe_skipped",
           "history_attention_rows", "measurable_players", "measure_attention", "open_attention_input",
           "phase_of_turn", "player_attention_rows", "read_game_record", "round_of_turn", "segment_label",
           "segment_labels", "skip_reason"]

if TYPE_CHECKING:
    import pandas as pd

PlotWriter = Callable[["pd.DataFrame", int, Path], None]
"""Writes the PNG plot of the turn means (one row per turn; over ``layers`` layers) to the path given."""


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
    turn's first token. Columns: :data:`~contagion.whitebox.attention_table.COLUMNS` — ``turn`` (1-based),
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

_PHASES = {"own_talk": "talk", "own_action": "act"}


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
    plot: PlotWriter,
    model: str = "",
    on_player: Callable[[AttentionJob, int], None] | None = None,
) -> AttentionResult:
    """Replay every planned player through ``backend``; write the table, and the plot ``plot`` draws of its
    turn means, into ``out_dir``.

    Rows are streamed to temporary files (memory holds one player's rows and one mean per turn), and
    the files are renamed to ``attention.csv`` / ``.parquet`` / ``.png`` only when every player is
    done; on any failure they are removed, with the directories this call created, so a reader never
    sees a partial table. ``on_player(job, rows)`` is called after each player.
    """
    import pandas as pd

    check_out_dir(out_dir)
    created = make_dirs(out_dir)
    writer: TableWriter | None = None
    try:
        writer = TableWriter(out_dir)
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
        plot(turn_means, layers, writer.tmp[RunDir.ATTENTION_PNG])
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
