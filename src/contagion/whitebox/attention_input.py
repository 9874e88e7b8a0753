"""Which stored players ``contagion attention`` replays: a run directory or one game record JSON read,
its players planned (language-model players only — scripted strategies have no attention — and by
default only focal ones), the others counted by the reason they are left out."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError

from contagion.errors import UserError
from contagion.experiment.record import RECORD_SCHEMA_VERSION, GameRecord
from contagion.experiment.rundir import RunDir

if TYPE_CHECKING:
    from contagion.experiment.store import Store


PlayerSelection = Literal["focal", "all"]
PLAYER_SELECTIONS: tuple[str, ...] = ("focal", "all")

INPUT_HINT = (
    "give a run directory written by `contagion run` or a game record JSON written by `contagion play --out FILE`"
)

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


def skip_reason(record: GameRecord, index: int, players: PlayerSelection = "focal") -> str | None:
    """Why player ``index`` of ``record`` is not measured (a key of the reasons below), or None.

    In order: ``scripted`` (a strategy, not a model); ``not focal`` (only with ``players='focal'``);
    ``no history`` (its ``messages`` are empty); ``no turns`` (no assistant message after the first).
    """
    player = record.players[index]
    if not player.language_model:  # the record says what the player is
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
