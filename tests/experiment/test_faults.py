"""Fault tolerance against a real OpenAI-compatible server on loopback: 5xx errors, timeouts, slow replies
and malformed bodies at 30 % — the run completes and every game is stored, finished or failed with its
error. A game whose model keeps refusing is stored as failed; a rerun retries it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import contagion.cli  # noqa: F401
from contagion.cli.app import app
from contagion.experiment.config import parse_config
from contagion.experiment.runner import Runner
from contagion.experiment.store import Store
from contagion.testing import FaultPlan, LoopbackServer, RawResponse
from tests.experiment.experiment_helpers import game_responder, squash

FAULT_KINDS = ("500", "503", "429", "timeout", "slow", "malformed", "nologprobs", "empty")


def _grid(model: str, **changes: Any) -> dict[str, Any]:
    return {
        "models": [model],
        "games": ["prisoners-dilemma", "chicken", "stag-hunt"],
        "compositions": {
            "all-default": ["default", "default", "default"],
            "scripted-defector": ["default", "default", "scripted:always-defect"],
        },
        "interventions": ["none", "sit:k=1,n=1"],
        "rounds": 2,
        "chat_turns": [0, 1],
        "assessment": {"traits": ["agreeableness", "machiavellianism"], "items": 1, "bootstrap": 100},
        "generation": {"max_tokens": 12},
        "concurrency": 24,
        **changes,
    }


@pytest.mark.slow  # ~40 s of retries against the fault-injecting server
def test_run_completes_through_30_percent_faults(tmp_path: Path) -> None:
    plan = FaultPlan(rate=0.3, kinds=FAULT_KINDS, seed=6, hang_seconds=2.0, slow_seconds=0.2, retry_after=0.1)
    out = tmp_path / "run"
    with LoopbackServer(game_responder, faults=plan) as server:
        # ?timeout= is the per-request limit: a hung request is abandoned after 0.5 s and retried
        model = f"openai:loopback@{server.base_url}?timeout=0.5"
        cfg = parse_config(_grid(model, max_failure_rate=1.0))
        result = CliRunner().invoke(app, ["run", str(_write(tmp_path, cfg.model_dump(mode="json"))),
                                          "--out", str(out), "--no-progress"])
        served, faults = len(server.requests), list(server.fault_log)
    assert result.exit_code == 0, result.output
    # (that a hung request is abandoned at the timeout is tested in tests/backends/test_robust.py, untimed here:
    # a wall-clock bound is a benchmark's business and failed under a loaded machine)
    assert {kind for _, kind in faults} == set(FAULT_KINDS)
    assert 0.2 < len(faults) / served < 0.4

    with Store.open_existing(out) as store:
        counts = store.counts()
        assert counts["ok"] + counts["failed"] == cfg.size() == 24  # every game is accounted for
        assert {r.spec_hash for r in store.iter_records(status=None)} == {s.stable_hash() for s, _ in cfg.expand()}
        for record in store.iter_records(status="failed"):
            assert record.error  # failed games carry their error
        assert counts["ok"] >= 0.9 * cfg.size()  # retries absorb nearly all faults
        for record in store.iter_records():
            assert record.error is None and len(record.rounds) == 2
            for player in record.players:
                if player.backend.startswith("openai:"):
                    # replies that lost their logprobs were retried, never scored another way
                    assert {a.method for a in player.actions} == {"score:first-token-top-logprobs"}
                    for profile in (player.pre_profile, player.post_profile):
                        assert profile is not None and profile["method"] == "first-token-top-logprobs"
                    assert all(a.action in ("cooperate", "defect") for a in player.actions)
                    assert player.post_profile is not None and player.pre_profile is not None
        actions = {a.action for r in store.iter_records() for p in r.players for a in p.actions}
        assert actions == {"cooperate", "defect"}


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    import yaml

    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _refuse_chicken(body: dict[str, Any]) -> Any:
    """A server that rejects every request about the game of Chicken (a client error: no retry helps)."""
    if "swerve" in str(body.get("messages", "")):
        return RawResponse(400, '{"error": {"message": "this model does not play chicken"}}')
    return game_responder(body)


def test_failed_games_are_stored_with_their_error_and_retried(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with LoopbackServer(_refuse_chicken) as server:
        model = f"openai:loopback@{server.base_url}?timeout=5"
        cfg = parse_config(_grid(model, interventions=["none"], chat_turns=[1]))
        summary = Runner(cfg, out, progress=False).run()
        assert (summary.finished, summary.failed) == (4, 2)
        assert summary.failure_rate == 2 / 6
        with Store.open_existing(out) as store:
            failed = list(store.iter_records(status="failed"))
            assert {r.labels["game"] for r in failed} == {"chicken"}
            for record in failed:
                # the pre-play profile failed: the game was never started, and says why
                assert "pre-play profile" in record.error and "HTTP 400" in record.error
                assert "does not play chicken" in record.error
            assert dict(store.failures()) == {r.spec_hash: r.error for r in failed}

        # the model recovers: a rerun retries only the failed games and replaces their records
        server.responder = game_responder
        summary = Runner(cfg, out, progress=False).run()
        assert (summary.skipped, summary.finished, summary.failed) == (4, 2, 0)
        with Store.open_existing(out) as store:
            assert store.counts() == {"ok": 6, "failed": 0}


def _refuse_acting_in_chicken(body: dict[str, Any]) -> Any:
    messages = str(body.get("messages", ""))
    if "swerve" in messages and "Round 2: choose your action" in messages:
        return RawResponse(400, '{"error": {"message": "no second round"}}')
    return game_responder(body)


def test_a_game_failing_midway_keeps_its_partial_record_and_error(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with LoopbackServer(_refuse_acting_in_chicken) as server:
        cfg = parse_config(_grid(f"openai:loopback@{server.base_url}", games=["chicken"], interventions=["none"],
                                 chat_turns=[0], compositions={"all-default": ["default"] * 3}))
        result = CliRunner().invoke(app, ["run", str(_write(tmp_path, cfg.model_dump(mode="json"))),
                                          "--out", str(out), "--no-progress"])
    assert result.exit_code == 1, result.output  # 100 % failed > max_failure_rate
    assert squash("Failure rate 100.0% exceeds max_failure_rate 5.0%") in squash(result.output)
    with Store.open_existing(out) as store:
        (record,) = list(store.iter_records(status="failed"))
        assert "HTTP 400" in record.error and "no second round" in record.error
        assert len(record.rounds) == 1  # what was played is kept


def _trait_questions_fail_first(failures: int) -> Any:
    """The first ``failures`` trait questions get HTTP 503; everything else is answered."""
    left = [failures]

    def respond(body: dict[str, Any]) -> Any:
        if "something you would say" in str(body.get("messages", "")) and left[0] > 0:
            left[0] -= 1
            return RawResponse(503, '{"error": {"message": "overloaded"}}')
        return game_responder(body)

    return respond


def test_a_failing_pre_play_profile_is_retried_not_inherited_by_its_games(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from contagion.backends import registry

    monkeypatch.setattr(registry, "MAX_RETRIES", 0)  # no call-level retry: only the profile step's own retry
    out = tmp_path / "run"
    with LoopbackServer(_trait_questions_fail_first(1)) as server:
        cfg = parse_config(_grid(f"openai:loopback@{server.base_url}", games=["prisoners-dilemma"],
                                 interventions=["none"], chat_turns=[0], concurrency=1))
        summary = Runner(cfg, out, progress=False).run()
    assert (summary.finished, summary.failed) == (2, 0)  # the first attempt failed; the second measured it
    with Store.open_existing(out) as store:
        assert all(p.pre_profile for r in store.iter_records() for p in r.players if p.focal)
