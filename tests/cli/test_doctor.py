"""``contagion doctor`` (issue 27, item 6): the right verdict for each answer style of the emulation, a
refusal (exit 2, with the reason) for a server that cannot be measured, the quick part before run and
bench, and a cost estimate that counts the requests a run really makes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import contagion.cli  # noqa: F401  (registers the commands)
from contagion.cli.app import app
from contagion.experiment.config import parse_config
from contagion.experiment.estimate import estimate_grid
from contagion.experiment.runner import Runner
from contagion.testing.loopback import LoopbackServer, Reply, Token
from contagion.testing.styles import StyleResponder

runner = CliRunner()


def doctor(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["doctor", *args])
    assert "Traceback" not in result.output
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture
def serve(request: pytest.FixtureRequest) -> Iterator[LoopbackServer]:
    style, logprobs, system_role = request.param
    with LoopbackServer(StyleResponder(style, system_role=system_role), logprobs=logprobs) as server:
        yield server


def _served(style: str, *, logprobs: bool = True, system_role: bool = True) -> Any:
    return pytest.mark.parametrize("serve", [(style, logprobs, system_role)], indirect=True)


@_served("direct")
def test_direct(serve: LoopbackServer) -> None:
    code, out = doctor(f"openai:m@{serve.base_url}")
    assert code == 0, out
    assert "logprobs returned: yes" in out and "reasoning seen: no" in out and "system role: accepted" in out
    assert "measurable by first-token-top-logprobs, the answers holding 97%" in out
    assert f"Settings to use: openai:m@{serve.base_url} " in out + " "  # as it is: no options
    assert "scoring calls per second:" in out and "at 16 in flight" in out


@_served("markdown")
def test_markdown_opener(serve: LoopbackServer) -> None:
    code, out = doctor(f"openai:m@{serve.base_url}")
    assert code == 0, out
    assert "│ 12%" in out or "12%" in out
    assert "measurable by answer-token-top-logprobs, the answers holding 97%" in out
    assert "score=answer-token" in out and "token 1" in out


@_served("words")
def test_a_few_words_first(serve: LoopbackServer) -> None:
    code, out = doctor(f"openai:m@{serve.base_url}")
    assert code == 0, out
    assert "token 4" in out and "score=answer-token" in out


@_served("inline-reasoning")
def test_inline_reasoning(serve: LoopbackServer) -> None:
    code, out = doctor(f"openai:m@{serve.base_url}")
    assert code == 0, out
    assert "reasoning seen: before its answers" in out and "enable_thinking" in out
    assert "measurable by answer-token-top-logprobs" in out and "answer_tokens=64&score=answer-token" in out


@_served("field-reasoning")
def test_reasoning_in_a_field(serve: LoopbackServer) -> None:
    code, out = doctor(f"openai:m@{serve.base_url}")
    assert code == 0, out
    assert "reasoning seen: before its answers" in out and "measurable by answer-token-top-logprobs" in out


@_served("no-logprobs", logprobs=False)
def test_no_logprobs(serve: LoopbackServer) -> None:
    code, out = doctor(f"openai:m@{serve.base_url}")
    assert code == 0, out
    assert "logprobs returned: no" in out and "measurable by sampled-fallback" in out and "?logprobs=0" in out


@_served("direct", system_role=False)
def test_a_template_without_a_system_role(serve: LoopbackServer) -> None:
    code, out = doctor(f"openai:m@{serve.base_url}")
    assert code == 0, out
    assert "system role: refused" in out and "accepted merged into the user message" in out
    assert "system_role=merge" in out


def _evasive(body: dict[str, Any]) -> Reply:
    """A model that never answers: 'I cannot say.' whatever it is asked."""
    tokens = [" I", " cannot", " say", "."]
    return Reply(tokens=tuple(Token(t, ({"token": t, "logprob": -0.05}, {"token": " Hmm", "logprob": -3.0}))
                              for t in tokens))


def test_a_server_that_cannot_be_measured_is_refused() -> None:
    with LoopbackServer(_evasive) as server:
        code, out = doctor(f"openai:m@{server.base_url}")
    assert code == 2, out
    assert "the instrument cannot measure" in out and "5% of the first token's probability" in out
    assert "Settings to use" not in out


def test_nothing_to_measure_and_bad_input() -> None:
    assert doctor("scripted:always-defect")[0] == 2
    code, out = doctor("openai:m@http://127.0.0.1:9/v1?score=sideways")
    assert code == 2 and "option score" in out
    code, out = doctor("sim:null", "no-such-size")
    assert code == 2 and "unknown size" in out


def test_a_config_gets_a_cost_estimate(tmp_path: Path) -> None:
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump({"models": ["sim:null"], "games": ["chicken"], "rounds": 2,
                                      "chat_turns": [1], "assessment": {"items": 2}}), encoding="utf-8")
    with LoopbackServer(StyleResponder("direct")) as server:
        code, out = doctor(f"openai:m@{server.base_url}", str(config), "--in-flight", "4")
    assert code == 0, out
    assert f"cost of {config} with this model: 3 games" in out and "at 4 in flight" in out


def test_the_estimate_counts_the_requests_a_run_makes(tmp_path: Path) -> None:
    """The dry run's count is the real count: the same grid, run against the loopback server."""
    with LoopbackServer(StyleResponder("direct")) as server:
        grid = parse_config({"models": [f"openai:m@{server.base_url}"], "games": ["chicken", "stag-hunt"],
                             "rounds": 2, "chat_turns": [0, 1], "interventions": ["none"],
                             "compositions": {"mixed": ["default", "malicious", "scripted:tit-for-tat"],
                                              "pair": ["default", "default"]},
                             "assessment": {"items": 2, "traits": ["agreeableness", "narcissism"], "debias": True},
                             "generation": {"max_tokens": 12}})
        estimate = asyncio.run(estimate_grid([grid], talk_tokens=8))
        summary = Runner(grid, tmp_path / "run", progress=False).run()
        assert summary.finished == grid.size() == estimate.games
        assert estimate.requests == len(server.requests)


def test_run_refuses_a_model_it_cannot_measure_and_the_override(tmp_path: Path) -> None:
    with LoopbackServer(StyleResponder("markdown")) as server:
        model = f"openai:md@{server.base_url}"
        config = tmp_path / "grid.yaml"
        config.write_text(yaml.safe_dump({"models": [model], "games": ["chicken"], "rounds": 1, "chat_turns": [0],
                                          "compositions": {"pair": ["default", "scripted:always-defect"]},
                                          "measure_traits": False}), encoding="utf-8")
        refused = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "a"), "--no-progress"])
        assert refused.exit_code == 2, refused.output
        text = " ".join(refused.output.split())
        assert "cannot measure" in text and "hold 12%" in text and "?score=auto" in text and "hold 97%" in text
        assert not (tmp_path / "a").exists()
        forced = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "b"), "--no-progress",
                                     "--no-preflight"])
        assert forced.exit_code == 0, forced.output
        fixed = config.with_name("fixed.yaml")
        fixed.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()),
                                         "model_options": {model: {"score": "auto"}}}), encoding="utf-8")
        passed = runner.invoke(app, ["run", str(fixed), "--out", str(tmp_path / "c"), "--no-progress"])
        assert passed.exit_code == 0, passed.output
        assert "preflight:" in passed.output and "answer-token-top-logprobs" in passed.output


def test_bench_runs_the_preflight_and_simulated_models_are_not_probed(tmp_path: Path) -> None:
    with LoopbackServer(_evasive) as server:
        result = runner.invoke(app, ["bench", f"openai:m@{server.base_url}", "--size", "smoke", "--out",
                                     str(tmp_path / "bench"), "--no-progress"])
        assert result.exit_code == 2, result.output
        assert "cannot measure" in result.output and not (tmp_path / "bench").exists()
    from contagion.doctor import probed

    assert not probed("sim:planted") and not probed("scripted:random") and probed("embedded")
