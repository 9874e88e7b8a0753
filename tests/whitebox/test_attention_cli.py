"""``contagion attention``: the table and plot on a real short game, and one clear line (exit 2) for bad input.

The game is played by simulated players (fast, deterministic) with the ``repeat-system:k=2``
intervention, so the focal player's history has turns before and after an injected system message.
One slow test replays it through ``hf:embedded`` (SmolLM2 through transformers); the others use a
fake white-box backend whose shares follow the segment labels, so they need no model.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import contagion.cli.attention as attention_cli
from contagion.analysis.attention import SEGMENTS, TABLE_COLUMNS
from contagion.backends.base import run_sync
from contagion.backends.hf import TEMPLATE, AttentionShares
from contagion.cli.app import app
from contagion.experiment.record import GameRecord, TrialSpec
from contagion.experiment.store import Store
from contagion.experiment.trial import run_trial
from contagion.games.record import GameSpec, PlayerSpec
from contagion.messages import Message
from contagion.steering import parse_intervention

SHARES = [f"share_{s}" for s in SEGMENTS]
NEEDED = ["game", "player", "intervention", "composition", "round", "turn", "tokens_so_far", "layer",
          "share_system", "share_injection", "share_others", "share_observation", "share_own",
          "share_other_prompts", "share_template"]


@pytest.fixture(scope="module")
def record() -> GameRecord:
    """Two sim players (the malicious one not focal), 2 rounds, 1 chat turn, system prompt repeated in round 2."""
    game = GameSpec(
        players=(PlayerSpec(backend="sim:planted"),
                 PlayerSpec(backend="sim:planted", persona="malicious", focal=False)),
        rounds=2, chat_turns=1, seed=3,
    )
    spec = TrialSpec(game=game, intervention=parse_intervention("repeat-system:k=2"), measure=False)
    rec = run_sync(run_trial(spec))
    assert rec.error is None
    return rec.model_copy(update={"labels": {"composition": "one-malicious"}})


@pytest.fixture
def game_json(record: GameRecord, tmp_path: Path) -> Path:
    path = tmp_path / "game.json"
    path.write_text(record.model_dump_json(indent=1), encoding="utf-8")
    return path


@pytest.fixture
def run_dir(record: GameRecord, tmp_path: Path) -> Path:
    path = tmp_path / "run"
    with Store.open(path) as store:
        store.put(record)
    return path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["attention", *args], env={"COLUMNS": "160"})


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def injected_before(messages: Sequence[Message], index: int) -> bool:
    return any(m.meta.get("kind") == "injection" for m in messages[:index])


def check_table(out: Path, record: GameRecord, players: set[str]) -> list[dict[str, str]]:
    """The checks every successful run must pass; returns the CSV rows."""
    rows = read_csv(out / "attention.csv")
    assert rows
    assert list(rows[0]) == list(TABLE_COLUMNS)
    assert set(NEEDED) <= set(rows[0])
    for row in rows:
        assert math.isclose(sum(float(row[c]) for c in SHARES), 1.0, abs_tol=1e-4), row
    assert {r["player"] for r in rows} == players
    assert {r["game"] for r in rows} == {record.spec_hash}
    assert {r["intervention"] for r in rows} == {"repeat-system:k=2"}
    assert {r["composition"] for r in rows} == {"one-malicious"}
    assert {r["round"] for r in rows} == {"1", "2"}
    assert {r["phase"] for r in rows} == {"talk", "act"}
    # injection share is positive exactly on the turns after the round-2 injection
    history = {p.name: p.messages for p in record.players}
    after = [injected_before(history[r["player"]], int(r["message_index"])) for r in rows]
    assert any(after) and not all(after)
    for row, injected in zip(rows, after, strict=True):
        assert (float(row["share_injection"]) > 0) == injected, row
        assert float(row["share_system"]) > 0
    import pyarrow.parquet as pq

    table = pq.read_table(out / "attention.parquet")
    assert table.num_rows == len(rows) and table.column_names == list(TABLE_COLUMNS)
    assert (out / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    return rows


# ----------------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_attention_on_a_run_with_the_embedded_model(run_dir: Path, record: GameRecord) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    result = invoke(str(run_dir), "--model", "hf:embedded", "--no-progress")
    assert result.exit_code == 0, result.output
    out = run_dir / "attention"  # the default for a run: where the HTML report reads it
    rows = check_table(out, record, {"Avery"})  # focal players only
    layers = {int(r["layer"]) for r in rows}
    assert layers == set(range(len(layers))) and len(layers) > 1
    turns = {int(r["turn"]) for r in rows}
    assert len(rows) == len(turns) * len(layers)
    tokens = [int(r["tokens_so_far"]) for r in rows if r["layer"] == "0"]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)  # the history only grows
    assert {r["attention_model"] for r in rows} == {"hf:embedded"}
    text = " ".join(result.output.split())
    assert f"{len(rows)} rows" in text and "1 game(s)" in text and str(out) in text.replace(" ", "")
    assert "1 player not focal" in text


# ----------------------------------------------------------------------------------- fake model


class FakeWhiteBox:
    """Shares proportional to each segment's number of messages, plus a fixed template share; 2 layers."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    async def attention_to_segments(
        self, messages: Sequence[Message], segment_of_message: Sequence[str], *, query: str = "last"
    ) -> AttentionShares:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("the model fell over")
        counts: dict[str, int] = {}
        for label in segment_of_message:
            counts[label] = counts.get(label, 0) + 1
        total = sum(counts.values())
        shares = {label: 0.8 * n / total for label, n in counts.items()} | {TEMPLATE: 0.2}
        return AttentionShares(labels=[*counts, TEMPLATE], per_layer=[shares, shares],
                               tokens=sum(len(m.content) for m in messages) + self.calls)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeWhiteBox:
    backend = FakeWhiteBox()
    monkeypatch.setattr(attention_cli, "attention_backend", lambda spec: backend)
    return backend


def test_game_json_all_players_default_out(fake: FakeWhiteBox, game_json: Path, record: GameRecord) -> None:
    result = invoke(str(game_json), "--model", "hf:embedded", "--players", "all")
    assert result.exit_code == 0, result.output
    out = game_json.with_name("game-attention")
    rows = check_table(out, record, {"Avery", "Blake"})
    assert {r["persona"] for r in rows} == {"default", "malicious"}
    assert "2 player(s)" in result.output


def test_games_limit_and_explicit_out(fake: FakeWhiteBox, run_dir: Path, record: GameRecord, tmp_path: Path) -> None:
    other = record.model_copy(update={"spec_hash": "0" * 16})  # sorts first in game-hash order
    with Store.open(run_dir) as store:
        store.put(other)
    out = tmp_path / "new" / "dir"
    result = invoke(str(run_dir), "--model", "hf:embedded", "--games", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert {r["game"] for r in read_csv(out / "attention.csv")} == {"0" * 16}
    assert not (run_dir / "attention").exists()


def test_several_games_and_interventions(fake: FakeWhiteBox, run_dir: Path, record: GameRecord) -> None:
    with Store.open(run_dir) as store:
        for name in ("none", "sit:k=1,n=2"):
            spec = record.spec.model_copy(update={"intervention": parse_intervention(name)})
            store.put(record.model_copy(update={"spec": spec, "spec_hash": spec.stable_hash()}))
    result = invoke(str(run_dir), "--model", "hf:embedded", "--players", "all")
    assert result.exit_code == 0, result.output
    rows = read_csv(run_dir / "attention" / "attention.csv")
    assert {r["intervention"] for r in rows} == {"none", "repeat-system:k=2", "sit:k=1,n=2"}
    assert len({r["game"] for r in rows}) == 3 and len({r["tokens_so_far"] for r in rows}) > 12  # binned plot
    assert (run_dir / "attention" / "attention.png").stat().st_size > 0
    assert "3 game(s), 6 player(s)" in result.output


def test_a_failure_midway_writes_nothing(monkeypatch: pytest.MonkeyPatch, game_json: Path, tmp_path: Path) -> None:
    monkeypatch.setattr(attention_cli, "attention_backend", lambda spec: FakeWhiteBox(fail_after=5))
    out = tmp_path / "fresh" / "out"
    result = invoke(str(game_json), "--model", "hf:embedded", "--players", "all", "--out", str(out))
    assert isinstance(result.exception, RuntimeError)  # a bug, not a user error: it keeps its traceback
    assert not (tmp_path / "fresh").exists()  # temporary files and created directories are removed
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "attention.csv").write_text("old\n")
    result = invoke(str(game_json), "--model", "hf:embedded", "--players", "all", "--out", str(existing))
    assert result.exception is not None
    assert sorted(p.name for p in existing.iterdir()) == ["attention.csv"]
    assert (existing / "attention.csv").read_text() == "old\n"  # the previous table is untouched


# ----------------------------------------------------------------------------------- bad input


def expect_error(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: "), result.output
    text = " ".join(result.output.split())
    for needle in needles:
        assert needle in text, text


@pytest.mark.parametrize("model", ["embedded", "sim:planted", "scripted:always-defect", "gguf:/x.gguf", "hf:"])
def test_non_white_box_model(game_json: Path, model: str) -> None:
    expect_error(invoke(str(game_json), "--model", model),
                 "needs a white-box model: use hf:embedded or hf:PATH_OR_ID")


@pytest.mark.parametrize("module", ["torch", "transformers"])
def test_missing_optional_extra(monkeypatch: pytest.MonkeyPatch, game_json: Path, tmp_path: Path,
                                module: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == module else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    out = tmp_path / "out"
    expect_error(invoke(str(game_json), "--model", "hf:embedded", "--out", str(out)),
                 f"optional package '{module}'", "pip install 'contagion[whitebox]'")
    assert not out.exists()


def test_missing_path(tmp_path: Path) -> None:
    expect_error(invoke(str(tmp_path / "nope.json"), "--model", "hf:embedded"),
                 "does not exist", "`contagion play --out FILE`", "`contagion run`")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"hello": "world"}', "is JSON but not a contagion game record"),
        ("[1, 2, 3]", "is JSON but not a contagion game record"),
        ("not json at all", "is not JSON"),
        ('{"spec": {}, "players": []}', "is not a valid contagion game record (game: Field required"),
    ],
)
def test_json_that_is_not_a_game_record(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "thing.json"
    path.write_text(content, encoding="utf-8")
    expect_error(invoke(str(path), "--model", "hf:embedded"), needle, "`contagion play --out FILE`")
    assert not (tmp_path / "thing-attention").exists()


def test_record_without_per_player_histories(fake: FakeWhiteBox, record: GameRecord, tmp_path: Path) -> None:
    data = json.loads(record.model_dump_json())
    for player in data["players"]:
        player["messages"] = []
    path = tmp_path / "bare.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    expect_error(invoke(str(path), "--model", "hf:embedded"),
                 "nothing to measure", "without a per-player history (empty messages)",
                 "re-create the record with `contagion play --out FILE`")
    assert fake.calls == 0
    assert not (tmp_path / "bare-attention").exists()


def test_only_non_focal_or_scripted_players(fake: FakeWhiteBox, record: GameRecord, tmp_path: Path) -> None:
    players = [p.model_copy(update={"focal": False}) for p in record.players]
    players[1] = players[1].model_copy(update={"backend": "scripted:always-defect", "language_model": False,
                                                "strategy": "always-defect"})  # what the record says it is
    path = tmp_path / "nofocal.json"
    path.write_text(record.model_copy(update={"players": players}).model_dump_json(), encoding="utf-8")
    expect_error(invoke(str(path), "--model", "hf:embedded"),
                 "1 player scripted", "1 player not focal — use --players all")


def test_run_dir_with_no_games(tmp_path: Path) -> None:
    run = tmp_path / "run"
    Store.open(run).close()
    expect_error(invoke(str(run), "--model", "hf:embedded"), "holds no finished games", "contagion run CONFIG")
    assert not (run / "attention").exists()


def test_directory_that_is_not_a_run(tmp_path: Path) -> None:
    expect_error(invoke(str(tmp_path), "--model", "hf:embedded"), "holds no contagion run (no store.sqlite)")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--players", "some"], "--players must be one of focal, all"),
        (["--games", "0"], "--games must be at least 1"),
    ],
)
def test_bad_options(fake: FakeWhiteBox, game_json: Path, args: list[str], needle: str) -> None:
    expect_error(invoke(str(game_json), "--model", "hf:embedded", *args), needle)


def test_bad_hf_option(game_json: Path) -> None:
    pytest.importorskip("torch")
    expect_error(invoke(str(game_json), "--model", "hf:embedded?nonsense=1"), "unknown option(s) ['nonsense']")


def test_out_is_a_file(fake: FakeWhiteBox, game_json: Path) -> None:
    expect_error(invoke(str(game_json), "--model", "hf:embedded", "--out", str(game_json)),
                 "is a file; give a directory")
    assert fake.calls == 0
