"""Fault tolerance against a real OpenAI-compatible server on loopback: 5xx errors, timeouts, slow replies
and malformed bodies at 30 % — the run completes and every game is stored, finished or failed with its
error. A game whose model keeps refusing is stored as failed; a rerun retries it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

import contagion.cli  # noqa: F401
from contagion.cli.app import app
from contagion.experiment.config import parse_config
from contagion.experiment.runner import Runner
from contagion.experiment.store import Store
from contagion.testing import FaultPlan, LoopbackServer, RawResponse
from tests.experiment.experiment_helpers import game_responder, squash

FAULT_KINDS = ("500", "timeout", "slow", "malformed")


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


def test_run_completes_through_30_percent_faults(tmp_path: Path) -> None:
    plan = FaultPlan(rate=0.3, kinds=FAULT_KINDS, seed=6, hang_seconds=2.0, slow_seconds=0.2)
    out = tmp_path / "run"
    with LoopbackServer(game_responder, faults=plan) as server:
        # ?timeout= is the per-request limit: a hung request is abandoned after 0.5 s and retried
        model = f"openai:loopback@{server.base_url}?timeout=0.5"
        cfg = parse_config(_grid(model, max_failure_rate=1.0))
        started = time.monotonic()
        result = CliRunner().invoke(app, ["run", str(_write(tmp_path, cfg.model_dump(mode="json"))),
                                          "--out", str(out), "--no-progress"])
        seconds = time.monotonic() - started
        served, faults = len(server.requests), list(server.fault_log)
    assert result.exit_code == 0, result.output
    assert seconds < 60
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
                    assert {a.method for a in player.actions} == {"score:first-token-top-logprobs"}
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
