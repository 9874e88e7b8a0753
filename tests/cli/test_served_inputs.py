"""Bad input for the options of served models (issue 27): each exits 2 with one clear message, no traceback,
and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import contagion.cli  # noqa: F401  (registers the commands)
from contagion.cli.app import app

runner = CliRunner()


def _fails(args: list[str], *needles: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output
    return result.output


def test_an_unknown_reasoning_mode_in_a_config(tmp_path: Path) -> None:
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump({"models": ["sim:null"], "reasoning": "show"}), encoding="utf-8")
    _fails(["run", str(config), "--out", str(tmp_path / "run"), "--no-progress"], "reasoning", "strip", "keep")
    assert not (tmp_path / "run").exists()


def test_an_unknown_reasoning_mode_for_play(tmp_path: Path) -> None:
    out = tmp_path / "game.json"
    _fails(["play", "-p", "sim:null", "-p", "sim:null", "--reasoning", "show", "--out", str(out)],
           "--reasoning must be one of strip, keep", "'show'")
    assert not out.exists()


@pytest.mark.parametrize("option,needle", [("score=middle", "option score"), ("answer_tokens=0", "answer_tokens")])
def test_bad_score_options_in_a_spec(tmp_path: Path, option: str, needle: str) -> None:
    _fails(["play", "-p", f"openai:m@http://127.0.0.1:9/v1?{option}", "-p", "sim:null"], needle)


@pytest.mark.parametrize("options,needles", [
    ({"openai:m@http://127.0.0.1:9/v1": {"extra_body": "{oops"}}, ("extra_body", "JSON object")),
    ({"openai:m@http://127.0.0.1:9/v1": {"extra_body": {"max_tokens": 3}}}, ("may not set max_tokens",)),
    ({"openai:m@http://127.0.0.1:9/v1": {"system_role": "developer"}}, ("system_role", "merge")),
    ({"openai:other@http://127.0.0.1:9/v1": {"system_role": "user"}}, ("model_options", "not one of models")),
    ({"openai:m@http://127.0.0.1:9/v1": {"reasoning": "keep"}}, ("unknown option", "reasoning")),
])
def test_bad_model_options_in_a_config(tmp_path: Path, options: dict, needles: tuple[str, ...]) -> None:  # type: ignore[type-arg]
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump({"models": ["openai:m@http://127.0.0.1:9/v1"], "model_options": options}),
                      encoding="utf-8")
    _fails(["run", str(config), "--out", str(tmp_path / "run"), "--no-progress"], *needles)
    assert not (tmp_path / "run").exists()


def test_malformed_extra_body_in_a_spec(tmp_path: Path) -> None:
    _fails(["play", "-p", "openai:m@http://127.0.0.1:9/v1?extra_body={nope", "-p", "sim:null"],
           "extra_body", "JSON object")


def test_model_options_reach_every_record(tmp_path: Path) -> None:
    from contagion.experiment.store import Store
    from contagion.testing.loopback import LoopbackServer
    from contagion.testing.styles import StyleResponder

    with LoopbackServer(StyleResponder("inline-reasoning", system_role=False)) as server:
        model = f"openai:qwen@{server.base_url}"
        config = tmp_path / "grid.yaml"
        config.write_text(yaml.safe_dump({
            "models": [model], "games": ["prisoners-dilemma"], "rounds": 1, "chat_turns": [1],
            "compositions": {"pair": ["default", "scripted:always-defect"]},
            "assessment": {"items": 1, "traits": ["agreeableness"], "bootstrap": 100},
            "model_options": {model: {"extra_body": {"chat_template_kwargs": {"enable_thinking": False}},
                                      "system_role": "merge"}}}), encoding="utf-8")
        result = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "run"), "--no-progress"])
        assert result.exit_code == 0, result.output
        assert server.requests and all(b["chat_template_kwargs"] == {"enable_thinking": False}
                                       and all(m["role"] != "system" for m in b["messages"])
                                       for b in server.requests)
    with Store.open_existing(tmp_path / "run") as store:
        records = list(store.iter_records())
    assert len(records) == 1 and records[0].error is None
    lm = records[0].players[[p.language_model for p in records[0].players].index(True)]
    assert lm.backend.endswith('?extra_body={"chat_template_kwargs":{"enable_thinking":false}}&system_role=merge')
    assert records[0].labels["model"] == model  # the report's label stays the model as listed
    assert all(a.action != "invalid" for a in lm.actions)
