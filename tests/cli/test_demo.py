"""`contagion demo`: the built-in design, and the demo on the simulated model run end to end from the
command line — its terminal summary, its labels (simulated, no claim), the planted effect found in the
report, and `--open` with a browser and without one.

The demo on the embedded model takes minutes: `benchmarks/bench_demo.py` runs it from a cold cache and
prints its wall time and peak memory; here its design is checked, and the code it shares with the simulated
demo (the run, the report, the summary, --open) is run for real.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import contagion
from contagion.analysis.contrasts import MIN_GAMES
from contagion.cli.app import app
from contagion.cli.demo import SIMULATED_MODEL, demo_config
from contagion.steering import parse_intervention
from contagion.traits.inventory import DEFAULT_TRAIT_SETS

SRC = Path(contagion.__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    """The child's environment: this checkout's package, no display and no browser unless given."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER", "TERM")}
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def _demo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "contagion", "demo", "--no-progress", *args], env=env, text=True,
                          capture_output=True, timeout=600)


def _verdicts(html: str) -> dict[tuple[str, str], str]:
    """(contrast, comparison) → css class (``sig``, ``ns``) of each line of the report's summary."""
    rows = re.findall(r'<li class="(\w+)"><span class="tag[^"]*">([^<]+)</span>([^<]+)</li>', html)
    assert rows, "the report has no summary lines"
    out = {}
    for cls, tag, text in rows:
        comparison = re.split(r": (?:pro-social drift|difference in pro-social drift|slope) ", text, maxsplit=1)[0]
        out[tag, comparison.strip()] = cls
    return out


# -- the design ---------------------------------------------------------------------------------------


def test_demo_config_shows_every_stage_of_a_study() -> None:
    """Pre-play profiles, chat, a malicious co-player next to an all-default control, SIT and its placebo on
    SIT's own schedule, post-play profiles with pro- and anti-social traits — in 6 games on the embedded model."""
    cfg = demo_config()
    assert cfg.models == ["embedded"]
    assert cfg.games == ["prisoners-dilemma"]
    assert cfg.compositions == {"all-default": ["default"] * 3, "one-malicious": ["default", "default", "malicious"]}
    specs = [parse_intervention(i) for i in cfg.interventions]
    assert [s.name for s in specs] == ["none", "placebo", "sit"]
    sit, placebo = specs[2], specs[1]
    assert placebo.params == sit.params  # the placebo injects exactly when SIT does
    assert cfg.chat_turns == [1] and cfg.rounds == 3
    assert cfg.rounds >= sit.params["k"]  # SIT (and its placebo) inject at least once
    assert cfg.measure_traits and cfg.focal == "default"
    traits = cfg.assessment.traits
    assert traits and any(t in DEFAULT_TRAIT_SETS.pro_social for t in traits)
    assert any(t in DEFAULT_TRAIT_SETS.anti_social for t in traits)
    assert cfg.assessment.source_items > 0  # SIT's reminders come from items never measured
    specs_and_labels = list(cfg.expand())
    assert len(specs_and_labels) == cfg.size() == 6
    for spec, labels in specs_and_labels:
        focal = [p for p in spec.game.players if p.focal]
        assert focal and all(p.persona == "default" for p in focal)
        malicious = [p for p in spec.game.players if p.persona == "malicious"]
        assert len(malicious) == (labels["composition"] == "one-malicious")
        assert not any(p.focal for p in malicious)


def test_the_simulated_demo_is_the_same_design_with_enough_games() -> None:
    real, sim = demo_config(), demo_config(simulated=True)
    assert sim.models == [SIMULATED_MODEL]
    assert sim.repetitions >= MIN_GAMES  # no condition is flagged as too few to support a claim
    assert "simulated" in sim.name.lower()
    same = {"models", "repetitions", "name"}
    assert sim.model_dump(exclude=same) == real.model_dump(exclude=same)


def test_demo_help_says_what_it_runs() -> None:
    result = CliRunner().invoke(app, ["demo", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert re.search(r"embedded model", text)
    for needle in ("--simulated", "--open", "placebo", "SIT", "malicious", "support any claim", "minutes"):
        assert needle in text, needle


# -- the simulated demo, end to end -------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulated_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """`contagion demo --simulated --open` with $BROWSER a script that records what it was asked to open."""
    tmp = tmp_path_factory.mktemp("demo")
    opened = tmp / "opened.txt"
    browser = tmp / "browser.sh"
    browser.write_text(f'#!/bin/sh\nprintf "%s" "$1" > "{opened}"\n', encoding="utf-8")
    browser.chmod(browser.stat().st_mode | stat.S_IXUSR)
    out = tmp / "run"
    proc = _demo("--simulated", "--open", "--out", str(out), env=_env(BROWSER=str(browser)))
    assert proc.returncode == 0, proc.stderr
    return out, opened, proc


def test_simulated_demo_finds_the_planted_effect_and_says_it_is_simulated(
        simulated_demo: tuple[Path, Path, subprocess.CompletedProcess[str]]) -> None:
    out, _, proc = simulated_demo
    html = (out / "report.html").read_text(encoding="utf-8")
    title = re.search(r"<title>(.*?)</title>", html, re.S)
    assert title and "SIMULATED" in title.group(1)
    assert 'id="notice-simulated"' in html and SIMULATED_MODEL in html
    assert 'id="notice-too-small"' not in html  # enough games: the report may make its claims
    verdict = _verdicts(html)
    # the planted rule: contagion next to the malicious co-player (post − sham), undone in part by SIT while its
    # reminders are in view — in behaviour (SIT's primary outcome), not in the post-play traits measured with
    # them removed — and not by the placebo
    assert verdict["contagion", "default agents in one-malicious (post − sham)"] == "sig"
    assert verdict["amplification", "one-malicious − all-default"] == "sig"
    protection = {comparison.split(": difference", 1)[0]: cls
                  for (contrast, comparison), cls in verdict.items() if contrast == "protection"}
    assert protection == {"sit:k=2,n=3 − none": "sig", "sit:k=2,n=3 − placebo:k=2,n=3": "sig"}
    assert verdict["mitigation", "placebo:k=2,n=3 − none"] == "ns"
    # the terminal: labelled, what ran, what was found, where, what next
    text = proc.stdout
    assert "SIMULATED" in text.splitlines()[0]
    assert "Demo finished in" in text and "stored already" not in text
    assert f"What ran: {demo_config(simulated=True).size()} games of prisoners-dilemma on {SIMULATED_MODEL}" in text
    assert "The report detects the planted effect" in text
    assert "default agents in one-malicious (post − sham): pro-social drift -" in text
    assert f"Report:      {(out / 'report.html').resolve()}" in text
    assert f"Transcripts: {(out / 'viewer.html').resolve()}" in text
    assert (out / "viewer.html").is_file()
    assert "Next:" in text and "contagion run examples/paper-grid.yaml" in text and "contagion demo " in text
    assert "No claim" not in text


def test_open_hands_the_report_to_the_browser(
        simulated_demo: tuple[Path, Path, subprocess.CompletedProcess[str]]) -> None:
    out, opened, proc = simulated_demo
    assert opened.read_text(encoding="utf-8") == (out / "report.html").resolve().as_uri()
    assert "Opened" in proc.stdout and "No web browser" not in proc.stderr


@pytest.mark.parametrize("browser", [None, "false"], ids=["none-found", "browser-fails"])
def test_open_without_a_browser_says_where_the_report_is(
        simulated_demo: tuple[Path, Path, subprocess.CompletedProcess[str]], browser: str | None) -> None:
    """Run again in the same directory (every game is stored: only the report is written again)."""
    out, _, _ = simulated_demo
    proc = _demo("--simulated", "--open", "--out", str(out), env=_env(**({"BROWSER": browser} if browser else {})))
    assert proc.returncode == 0, proc.stderr
    assert "finished now              │     0" in proc.stdout  # nothing was played again
    assert "its games were stored already: only the report was written" in proc.stdout
    message = " ".join(proc.stderr.split())
    assert "No web browser could be started here" in message
    assert str((out / "report.html").resolve()) in message
    assert "Traceback" not in proc.stderr


def test_a_demo_too_small_for_a_claim_says_so(tmp_path: Path) -> None:
    """One game per condition (the embedded demo's size): the report and the terminal say no claim is possible."""
    out = tmp_path / "small"
    proc = _demo("--simulated", "--repetitions", "1", "--out", str(out), env=_env())
    assert proc.returncode == 0, proc.stderr
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="notice-too-small"' in html and "too small to support any claim" in html
    assert 'id="notice-simulated"' in html
    assert "No claim: 1 game(s) per condition are far too few to support any claim" in proc.stdout
    assert "The report detects" not in proc.stdout
