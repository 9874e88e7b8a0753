"""Say what a score rests on (issue 27, item 3): a model whose scores rest on less than half of the scored
position's probability is flagged, with the figure, by assess, play and run, in the report's warnings and
on the card; a model that answers directly is not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import contagion.cli  # noqa: F401  (registers the commands)
from contagion.analysis.contrasts import AnalysisSettings, compute_contrasts, drift_by_cell
from contagion.analysis.report_text import report_warnings
from contagion.analysis.tables import load_tables
from contagion.bench.card import _scoring
from contagion.cli.app import app
from contagion.experiment.support import Support, describe, low_support
from contagion.testing.loopback import LoopbackServer
from contagion.testing.styles import StyleResponder

runner = CliRunner()
FLAG = "of the scored position's probability"


@pytest.fixture(scope="module")
def markdown() -> Iterator[LoopbackServer]:
    with LoopbackServer(StyleResponder("markdown")) as server:
        yield server


@pytest.fixture(scope="module")
def direct() -> Iterator[LoopbackServer]:
    with LoopbackServer(StyleResponder("direct")) as server:
        yield server


def test_support_adds_up_items_and_scored_actions() -> None:
    s = Support()
    s.add_profile({"items": [{"mass": 0.1}, {"mass": 0.3}, {"mass": None}]})
    s.add_action(0.2)
    assert (s.items, s.actions) == (2, 1) and s.mean == pytest.approx(0.2) and s.low
    text = describe("m", s)
    assert "rest on 20%" in text and "trait items 20% over 2" in text and "actions 20% over 1" in text
    assert low_support({"m": s, "n": Support(item_mass=0.9, items=1)}) == [text]
    assert not Support().low  # nothing scored: nothing to flag


def test_assess_flags_a_model_that_opens_with_markdown(markdown: LoopbackServer) -> None:
    spec = f"openai:md@{markdown.base_url}"
    result = runner.invoke(app, ["assess", "-m", spec, "-t", "agreeableness", "-n", "3", "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    assert FLAG in result.output and "rest on 12%" in result.output and "?score=auto" in result.output
    fixed = runner.invoke(app, ["assess", "-m", spec + "?score=auto", "-t", "agreeableness", "-n", "3",
                                "--bootstrap", "100"])
    assert fixed.exit_code == 0, fixed.output
    assert FLAG not in fixed.output and "answer-token-top-logprobs" in fixed.output


def test_play_flags_the_player_and_not_the_direct_one(markdown: LoopbackServer, direct: LoopbackServer) -> None:
    md, ok = f"openai:md@{markdown.base_url}", f"openai:ok@{direct.base_url}"
    result = runner.invoke(app, ["play", "-p", md, "-p", ok, "-p", "scripted:always-defect", "--rounds", "2",
                                 "--chat-turns", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    flagged = [line for line in result.output.splitlines() if FLAG in line]
    assert len(flagged) == 1 and md in flagged[0] and "actions 12% over 2" in flagged[0]


def test_run_report_and_card_flag_it(markdown: LoopbackServer, tmp_path: Path) -> None:
    model = f"openai:md@{markdown.base_url}"
    config = {"name": "md", "models": [model], "games": ["prisoners-dilemma"],
              "compositions": {"pair": ["default", "scripted:always-defect"]}, "rounds": 2, "chat_turns": [0],
              "assessment": {"items": 2, "bootstrap": 100, "traits": ["agreeableness", "machiavellianism"]}}
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run"), "--no-progress", "--no-preflight"])
    assert result.exit_code == 0, result.output
    assert FLAG in result.output and model in result.output
    tables = load_tables(tmp_path / "run")
    settings = AnalysisSettings()
    contrasts = compute_contrasts(tables, settings=settings)
    warnings = report_warnings(tables, contrasts, drift_by_cell(tables.drift, settings=settings), settings)
    assert any(FLAG in w and model in w for w in warnings)
    support = _scoring(tables, model)["support"]
    assert support["low"] and support["mass"] == pytest.approx(0.12, abs=0.01)
