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
