"""Damaged model output through the commands: a server on 127.0.0.1 that reports NaN, +inf or positive
log-probabilities, asks for absurd Retry-After waits, or sends a reply far larger than asked.

No invalid number is ever used as a value: trait items with invalid scores are left out and counted,
actions are invalid with the reason recorded, and a game with any invalid score is not stored ``ok``.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import contagion.cli  # noqa: F401  (registers the commands)
from contagion.cli.app import app
from contagion.experiment.store import Store
from contagion.testing import LoopbackServer, RawResponse, game_responder
from tests.experiment.experiment_helpers import squash

BAD = {"nan": (math.nan, "NaN"), "+inf": (math.inf, "+infinity"), "positive": (2.6, "above 0")}
Responder = Callable[[dict[str, Any]], Any]


@pytest.fixture(autouse=True)
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONTAGION_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def corrupting(value: float, *, items: Callable[[str], bool] = lambda text: True,
               actions: bool = True) -> Responder:
    """The game responder, with the first-token candidate of the answer it favours replaced by ``value`` on trait
    items whose question text ``items`` selects, and on action prompts when ``actions``."""
    def respond(body: dict[str, Any]) -> Any:
        text, top = game_responder(body)
        last = str(body["messages"][-1].get("content", ""))
        is_action = "Reply with one word" in last
        if (is_action and actions) or (not is_action and "something you would say" in last and items(last)):
            top = [dict(t, logprob=value) if i == 0 else t for i, t in enumerate(top)]
        return text, top
    return respond


@pytest.fixture
def serve() -> Iterator[Callable[[Responder], str]]:
    servers: list[LoopbackServer] = []

    def start(responder: Responder) -> str:
        server = LoopbackServer(responder).start()
        servers.append(server)
        return f"openai:loopback@{server.base_url}"

    yield start
    for server in servers:
        server.stop()


def invoke(*argv: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(argv))
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)  # never a traceback
    assert "Traceback" not in result.output
    return result.exit_code, result.output


# -- assess ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BAD)
def test_assess_refuses_a_profile_of_invalid_scores(kind: str, serve: Callable[[Responder], str],
                                                    tmp_path: Path) -> None:
    value, needle = BAD[kind]
    out = tmp_path / "profile.json"
    code, output = invoke("assess", "--model", serve(corrupting(value)), "--traits", "agreeableness", "--items", "4",
                          "--bootstrap", "100", "--json", str(out))
    assert code == 2, output
    flat = squash(output)
    assert squash("gave no usable score: 4 of 4 item(s) had invalid scores") in flat and squash(needle) in flat
    assert "0.000" not in output and not out.exists()


def test_assess_leaves_invalid_items_out_and_says_so(serve: Callable[[Responder], str], tmp_path: Path) -> None:
    marked: list[str] = []  # the first three questions asked get a NaN answer (and keep it if asked again)

    def respond(body: dict[str, Any]) -> Any:
        last = str(body["messages"][-1].get("content", ""))
        if "something you would say" in last and (last in marked or len(marked) < 3):
            if last not in marked:
                marked.append(last)
            return corrupting(math.nan)(body)
        return game_responder(body)

    out = tmp_path / "profile.json"
    code, output = invoke("assess", "--model", serve(respond), "--traits", "agreeableness,narcissism", "--items", "5",
                          "--bootstrap", "100", "--json", str(out))
    assert code == 0, output
    assert squash("3 item(s) left out: the model's scores were invalid") in squash(output)
    profile = json.loads(out.read_text(encoding="utf-8"))
    assert len(profile["invalid_items"]) == 3 and all("NaN" in why for why in profile["invalid_items"].values())
    assert len(profile["items"]) == 10 - 3  # an invalid item has no score at all
    assert not set(profile["invalid_items"]) & {it["item_id"] for it in profile["items"]}
    assert sum(t["n"] for t in profile["traits"].values()) == 7


# -- play and run ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BAD)
def test_play_records_an_invalid_action_and_fails_the_game(kind: str, serve: Callable[[Responder], str],
                                                            tmp_path: Path) -> None:
    value, needle = BAD[kind]
    out = tmp_path / "game.json"
    code, output = invoke("play", "-p", serve(corrupting(value)), "-p", "scripted:always-defect", "--rounds", "2",
                          "--chat-turns", "0", "--out", str(out))
    assert code == 1, output
    assert squash("The game failed: the model reported invalid scores for 2 action(s)") in squash(output)
    record = json.loads(out.read_text(encoding="utf-8"))
    actions = record["players"][0]["actions"]
    assert [a["action"] for a in actions] == ["invalid", "invalid"]
    assert all(needle in a["problem"] and a["logprobs"] is None and a["mass"] is None for a in actions)
    assert record["players"][0]["total"] == 0 and record["error"]


def grid(model: str, **changes: Any) -> dict[str, Any]:
    return {"name": "damaged", "models": [model], "games": ["prisoners-dilemma"],
            "compositions": {"x": ["default", "scripted:always-defect"]}, "interventions": ["none"], "rounds": 2,
            "chat_turns": [0], "repetitions": 2, "assessment": {"items": 2, "bootstrap": 100}, **changes}


def run(tmp: Path, config: dict[str, Any]) -> tuple[int, str, Path]:
    path = tmp / "grid.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    # --no-preflight: the run's own handling of invalid scores is under test (the preflight would refuse the model)
    code, output = invoke("run", str(path), "--out", str(tmp / "run"), "--no-progress", "--no-preflight")
    return code, output, tmp / "run"


def test_run_stores_games_with_invalid_actions_as_failed(serve: Callable[[Responder], str], tmp_path: Path) -> None:
    code, output, out = run(tmp_path, grid(serve(corrupting(math.inf, items=lambda _: False))))
    assert code == 1, output  # every game failed: above max_failure_rate
    assert squash("the model reported invalid scores for 2 action(s) and 0 trait item(s)") in squash(output)
    with Store.open_existing(out) as store:
        assert store.counts() == {"ok": 0, "failed": 2}
        record = store.get(store.failures()[0][0])
        assert record is not None
        (lm,) = [p for p in record.players if p.language_model]  # seats are shuffled
        assert len(lm.actions) == 2 and all(a.action == "invalid" and "+infinity" in str(a.problem)
                                            for a in lm.actions)


def test_run_stores_games_with_invalid_item_scores_as_failed(serve: Callable[[Responder], str],
                                                              tmp_path: Path) -> None:
    """Four post-play items answered NaN (the rest, and the pre-play ones, are fine): the game is played and its
    profiles made without those items, but it is not stored ok."""
    marked: list[str] = []

    def respond(body: dict[str, Any]) -> Any:
        last = str(body["messages"][-1].get("content", ""))
        after_play = any("Round 1" in str(m.get("content", "")) for m in body["messages"])
        if after_play and "something you would say" in last and (last in marked or len(marked) < 4):
            if last not in marked:
                marked.append(last)
            return corrupting(math.nan, actions=False)(body)
        return game_responder(body)

    code, output, out = run(tmp_path, grid(serve(respond), repetitions=1))
    assert code == 1, output
    assert squash("invalid scores for 0 action(s) and 4 trait item(s)") in squash(output)
    with Store.open_existing(out) as store:
        assert store.counts() == {"ok": 0, "failed": 1}
        record = store.get(store.failures()[0][0])
        assert record is not None
        (lm,) = [p for p in record.players if p.language_model]
        post = lm.post_profile
        assert post is not None and len(post["invalid_items"]) == 4
        assert len(post["items"]) == len(lm.pre_profile["items"]) - 4  # type: ignore[index]


def test_run_against_a_server_whose_every_score_is_invalid(serve: Callable[[Responder], str],
                                                           tmp_path: Path) -> None:
    code, output, out = run(tmp_path, grid(serve(corrupting(2.6))))
    assert code == 1, output
    assert squash("pre-play profile of") in squash(output) and squash("gave no usable score") in squash(output)
    with Store.open_existing(out) as store:
        assert store.counts() == {"ok": 0, "failed": 2}


# -- Retry-After and oversized replies ------------------------------------------------------------------


def first_replies(*replies: RawResponse) -> Responder:
    queue = list(replies)

    def respond(body: dict[str, Any]) -> Any:
        return queue.pop(0) if queue else game_responder(body)
    return respond


def slow_down(seconds: str) -> RawResponse:
    return RawResponse(429, '{"error": {"message": "slow down"}}', headers={"Retry-After": seconds})


def test_a_retry_after_beyond_the_cap_fails_at_once_and_says_why(serve: Callable[[Responder], str],
                                                                  tmp_path: Path) -> None:
    started = time.perf_counter()
    code, output = invoke("play", "-p", serve(first_replies(slow_down("99999"))), "-p", "scripted:always-defect",
                          "--rounds", "1", "--chat-turns", "0")
    assert time.perf_counter() - started < 30  # not six 60-second waits
    assert code == 1, output
    flat = squash(output)
    assert squash("the server asked to wait 99,999 s before trying again (Retry-After), longer than the 60 s") in flat


def test_a_retry_after_within_the_cap_is_waited_and_said(serve: Callable[[Responder], str]) -> None:
    started = time.perf_counter()
    code, output = invoke("play", "-p", serve(first_replies(slow_down("1"))), "-p", "scripted:always-defect",
                          "--rounds", "1", "--chat-turns", "0")
    assert code == 0, output
    assert time.perf_counter() - started >= 1.0
    assert squash("Note: openai:loopback@") in squash(output)
    assert squash("the server asked to wait 1 s before trying again (Retry-After); waiting 1 s") in squash(output)


def test_a_reply_far_larger_than_asked_is_refused_and_never_stored(serve: Callable[[Responder], str],
                                                                    tmp_path: Path) -> None:
    huge = "word " * 10_000_000  # 50 MB of text for a 60-token chat message

    def respond(body: dict[str, Any]) -> Any:
        if body.get("max_tokens", 1) > 1:
            return RawResponse(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": huge}}]}))
        return game_responder(body)

    code, output, out = run(tmp_path, grid(serve(respond), chat_turns=[1], repetitions=1, measure_traits=False))
    assert code == 1, output
    assert squash("sent a reply of") in squash(output) and squash("refused (it is not stored)") in squash(output)
    assert (out / "store.sqlite").stat().st_size < 1_000_000
    conn = sqlite3.connect(out / "store.sqlite")
    assert conn.execute("SELECT MAX(LENGTH(record)) FROM games").fetchone()[0] < 100_000
    conn.close()


def test_a_reply_longer_than_the_tokens_asked_allow_is_refused(serve: Callable[[Responder], str]) -> None:
    long = "x" * 5_000  # 60 tokens of chat cannot be 5,000 characters (the limit is 32 a token)

    def respond(body: dict[str, Any]) -> Any:
        if body.get("max_tokens", 1) > 1:
            return RawResponse(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": long}}]}))
        return game_responder(body)

    code, output = invoke("play", "-p", serve(respond), "-p", "scripted:always-defect", "--rounds", "1")
    assert code == 1, output
    assert squash("a reply of 5,000 characters to a request for at most 60 tokens") in squash(output)
