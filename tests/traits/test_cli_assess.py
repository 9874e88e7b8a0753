"""``contagion assess``: the printed table, the JSON record, and one clear line (exit 2) for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import contagion
import contagion.cli.assess  # registers the command
from contagion.cli.app import app
from contagion.traits.profile import Profile


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(app, ["assess", *args], env={"COLUMNS": "160"})


def test_assess_prints_table_index_and_method(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    result = invoke(
        runner,
        "--model",
        "sim:planted",
        "--persona",
        "malicious",
        "--traits",
        "agreeableness,machiavellianism",
        "--items",
        "40",
        "--debias",
        "--seed",
        "1",
        "--json",
        str(out),
    )
    assert result.exit_code == 0, result.output
    text = result.output
    for needle in (
        "trait",
        "polarity",
        "95% CI",
        "agreeableness",
        "machiavellianism",
        "pro-social index",
        "scoring method: simulated",
        "debiasing: on",
        "malicious persona",
        "prisoners-dilemma",
        "fewer than 40 items",
    ):
        assert needle in text, needle
    row = next(line for line in text.splitlines() if "machiavellianism" in line)
    assert "anti" in row and "24" in row
    profile = Profile.from_record(json.loads(out.read_text(encoding="utf-8")))
    assert profile.debiased and profile.seed == 1 and profile.context_kind == "pre"
    assert set(profile.traits) == {"agreeableness", "machiavellianism"}
    assert f"{profile.traits['agreeableness'].mean:.3f}" in text


def test_assess_malicious_persona_is_less_prosocial_on_the_sim(runner: CliRunner, tmp_path: Path) -> None:
    indices = {}
    for persona in ("benevolent", "malicious"):
        out = tmp_path / f"{persona}.json"
        result = invoke(runner, "--model", "sim:null", "--persona", persona, "--json", str(out))
        assert result.exit_code == 0, result.output
        indices[persona] = Profile.from_record(json.loads(out.read_text(encoding="utf-8"))).prosocial_index
    assert indices["malicious"] < indices["benevolent"]  # type: ignore[operator]


def test_assess_bare_context_with_persona_directory(runner: CliRunner, persona_dir: Path) -> None:
    result = invoke(
        runner,
        "--model",
        "sim:null",
        "--inventory",
        str(persona_dir),
        "--traits",
        "narcissism,agreeableness,openness",
        "--items",
        "6",
        "--context",
        "bare",
    )
    assert result.exit_code == 0, result.output
    assert "bare: no system prompt" in result.output
    assert "neutral" in result.output  # openness is neither pro- nor anti-social
    assert str(persona_dir) in result.output.replace("\n", "")


@pytest.mark.slow
def test_assess_embedded_model(runner: CliRunner) -> None:
    result = invoke(runner, "--model", "embedded", "--traits", "honesty,narcissism", "--items", "2", "--debias")
    assert result.exit_code == 0, result.output
    assert "scoring method: first-token-top-logprobs" in result.output
    assert "Trait profile of embedded" in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--traits", "agreeableness,grumpiness"], "unknown trait(s) grumpiness"),
        (["--traits", " , "], "--traits needs at least one trait"),
        (["--items", "0"], "--items must be at least 1"),
        (["--context", "post"], "--context must be one of pre, bare"),
        (["--persona", "sneaky"], "unknown persona 'sneaky'"),
        (["--game", "tic-tac-toe"], "unknown game 'tic-tac-toe'"),
        (["--model", "nonsense:thing"], "unknown backend spec 'nonsense:thing'"),
        (["--inventory", "/nonexistent/items.jsonl"], "not found"),
        (["--bootstrap", "0"], "--bootstrap must be at least 1"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(runner: CliRunner, args: list[str], needle: str) -> None:
    base = {"--model": "sim:null"}
    full = [x for k, v in base.items() if k not in args for x in (k, v)] + args
    result = invoke(runner, *full)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: ")
    assert needle in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("content", "line", "needle"),
    [
        ('{"statement": "I nap", "answer_matching_behavior": " Yes"}\n{"statement": ', 2, "not valid JSON"),
        ('{"statement": "I nap"}\n', 1, "missing field 'answer_matching_behavior'"),
        ('{"statement": "I nap", "answer_matching_behavior": " Often"}\n', 1, "must be 'Yes' or 'No'"),
        ("", 1, "no items"),
    ],
    ids=["bad-json", "missing-field", "bad-answer", "empty"],
)
def test_bad_inventory_file_exits_2_naming_file_and_line(
    runner: CliRunner, tmp_path: Path, content: str, line: int, needle: str
) -> None:
    path = tmp_path / "napping.jsonl"
    path.write_text(content, encoding="utf-8")
    result = invoke(runner, "--model", "sim:null", "--inventory", str(path))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    flat = " ".join(result.output.split())  # rich wraps long lines at spaces
    assert f"napping.jsonl, line {line}" in flat and needle in flat


def test_entry_point_prints_table_and_bad_input_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(contagion.__file__).resolve().parents[1])}
    ok = subprocess.run(
        [sys.executable, "-m", "contagion", "assess", "--model", "sim:planted", "--traits", "honesty,psychopathy"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "honesty" in ok.stdout and "pro-social index" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "contagion", "assess", "--model", "sim:null", "--traits", "honesty,spite"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("Error: unknown trait(s) spite")
    assert "Traceback" not in bad.stderr and bad.stdout == ""
