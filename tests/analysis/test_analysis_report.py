"""The HTML report: self-contained, complete, escaped; and `contagion report` on bad input."""

from __future__ import annotations

import html
import re
import sqlite3
from pathlib import Path

import pytest
from markupsafe import escape
from typer.testing import CliRunner

import contagion.cli  # noqa: F401  (registers every command)
from contagion.analysis.report import write_report
from contagion.analysis.validation import ValidationResult, analysis_fingerprint, save_validation
from contagion.cli.app import app
from tests.analysis.sim_runs import PAYLOAD, run_grid


@pytest.fixture(scope="module")
def report_html(sim_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert write_report(sim_run_dir, out) == out
    return out.read_text(encoding="utf-8")


def test_report_is_self_contained(report_html: str) -> None:
    assert "<script" not in report_html  # no code at all
    assert not re.search(r"""<(link|img|iframe|object|embed)\b""", report_html)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", report_html)
    assert not re.search(r"url\((?!#)", report_html)  # only references inside the page
    ids = re.findall(r'\bid="([^"]+)"', report_html)
    assert len(ids) == len(set(ids))  # several inline SVGs, no shared element ids
    assert "Content-Security-Policy" in report_html


def test_report_has_methods_figures_tables_and_contrasts(report_html: str) -> None:
    for heading in ("Summary", "Validation", "Methods", "Drift by condition", "Cooperation over rounds",
                    "Mitigation", "Per-trait drift", "Contrasts"):
        assert f">{heading}" in report_html, heading
    assert report_html.count("<svg") >= 4
    # the methods name what was run and how it was measured
    for fact in ("sim:planted", "prisoners-dilemma", "one-malicious", "scripted:always-defect", "sit:k=1,n=2",
                 "builtin:v2", "4 item(s) per trait", "simulated", "position bias not cancelled",
                 "54 finished game(s) of 54 planned", "none failed", "seeds 0–2"):
        assert html.escape(fact, quote=False) in report_html, fact
    # every named contrast is present, each comparison with its estimand; tests are named next to the numbers
    for name in ("contagion", "amplification", "reciprocity", "chat", "mitigation", "defection", "answer_mass"):
        assert f'id="contrast-{name}"' in report_html
    block = report_html.split('id="contrast-defection"', 1)[1].split('id="contrast-', 1)[0]
    assert "Estimand, one-malicious − scripted-defector:" in block and "defection rate" in block
    assert "cluster-robust t" in report_html and "CR\u2011t" in report_html and "MixedLM" in report_html
    # cells with few games are flagged
    assert "too few to support a claim" in report_html


def test_absent_contrasts_say_so(tmp_path: Path) -> None:
    run_dir = run_grid(tmp_path / "run", {
        "name": "no controls", "models": ["sim:planted"], "games": ["prisoners-dilemma"],
        "compositions": {"all-default": ["default", "default", "default"]}, "interventions": ["none"],
        "chat_turns": [1], "rounds": 2, "repetitions": 2, "assessment": {"items": 2},
    })
    text = write_report(run_dir).read_text(encoding="utf-8")
    for name in ("amplification", "reciprocity", "chat", "mitigation"):
        block = text.split(f'id="contrast-{name}"', 1)[1].split("</div>", 1)[0]
        assert "not in this run" in block, name


def test_report_states_the_validation_figures(sim_run_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "store.sqlite").write_bytes((sim_run_dir / "store.sqlite").read_bytes())
    result = ValidationResult(
        runs=100, planted_model="sim:planted?contagion=0.05&seed=<run>", null_model="sim:null?seed=<run>",
        planted_size=0.05, grid={"repetitions": 8, "game": "prisoners-dilemma", "rounds": 4, "items": 5},
        power={"contagion": 0.93, "amplification": 1.0}, detected={"contagion": 93, "amplification": 100},
        false_positives={"contagion": 3, "amplification": 1},
        mean_planted_drift={"contagion": -0.055, "amplification": -0.054}, alpha=0.05, rule="the rule",
        seconds=60.0, fingerprint=analysis_fingerprint())
    save_validation(result, run_dir / "validation.json")
    text = write_report(run_dir).read_text(encoding="utf-8")
    assert "power 0.93" in text and "contagion 3/100" in text and "contagion=0.05" in text
    assert "targets met" in text
    # the figures come from simulated models, and the report says so next to them
    validation = text.split('id="validation"', 1)[1].split("</section>", 1)[0]
    assert "Validation of this analysis code on simulated models, contagion: power 0.93" in validation
    assert "These figures are on simulated models" in validation
    # and so do the shipped interval-coverage figures, both grids, with what limits them
    assert validation.count("Interval coverage on a simulated model") == 2, validation
    assert "on 6 common seeds (6 clusters)" in validation and "on 10 common seeds (10 clusters)" in validation
    assert "between the truth and zero" in validation and "discordant action pairs" in validation


def test_model_written_text_is_escaped(payload_run_dir: tuple[Path, str], tmp_path: Path) -> None:
    run_dir, _ = payload_run_dir
    text = write_report(run_dir, tmp_path / "r.html").read_text(encoding="utf-8")
    assert PAYLOAD not in text
    assert "<script>window.pwned" not in text and "<img src=x" not in text
    assert str(escape(f"RuntimeError: model said {PAYLOAD}")) in text  # the failure, shown as text
    assert "1 game(s) failed" in text


@pytest.mark.parametrize("turns", [8, 30])  # 30 distinct lengths: binned, shortest included
def test_attention_section_when_the_white_box_analysis_ran(sim_run_dir: Path, tmp_path: Path, turns: int) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "attention").mkdir(parents=True)
    (run_dir / "store.sqlite").write_bytes((sim_run_dir / "store.sqlite").read_bytes())
    lines = ["game,player,round,turn,tokens_so_far,layer,share_system,share_injection,share_others,intervention"]
    for iv in ("none", "sit"):
        for turn in range(turns):
            for layer in range(3):
                share = 0.6 / (1 + turn) + (0.1 if iv == "sit" else 0)
                lines.append(f"g1,Avery,{turn // 2 + 1},{turn},{100 + 80 * turn},{layer},{share},0.05,0.2,{iv}")
    (run_dir / "attention" / "attention.csv").write_text("\n".join(lines) + "\n")
    text = write_report(run_dir).read_text(encoding="utf-8")
    assert 'id="attention"' in text and "Attention to the system prompt" in text
    section = text.split('id="attention"', 1)[1]
    assert "<svg" in section.split("</section>", 1)[0]


# -- bad input: one clear line, exit 2 ----------------------------------------------------------------


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def _report(cli: CliRunner, *args: str) -> tuple[int, str]:
    result = cli.invoke(app, ["report", *args])
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def test_missing_run_directory(cli: CliRunner, tmp_path: Path) -> None:
    code, out = _report(cli, str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in out and "Traceback" not in out


def test_empty_run_directory(cli: CliRunner, tmp_path: Path) -> None:
    code, out = _report(cli, str(tmp_path))
    assert code == 2 and "no contagion run" in out


def test_incompatible_store(cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "store.sqlite").write_text("not a database at all")
    code, out = _report(cli, str(tmp_path))
    assert code == 2 and "not a contagion store" in out
    other = tmp_path / "other"
    other.mkdir()
    conn = sqlite3.connect(other / "store.sqlite")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO meta VALUES ('schema_version', '99')")
    conn.commit()
    conn.close()
    code, out = _report(cli, str(other))
    assert code == 2 and "newer contagion" in out


def test_run_with_only_failed_games(cli: CliRunner, failed_run_dir: Path) -> None:
    code, out = _report(cli, str(failed_run_dir))
    assert code == 2 and "every game" in out and "failed" in out and "connection refused" in out


def test_report_command_writes_the_file(cli: CliRunner, sim_run_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.html"
    code, out = _report(cli, str(sim_run_dir), "--out", str(target))
    assert code == 0, out
    assert target.exists() and "Report:" in out


def test_figure_text_is_escaped_and_never_parsed_as_math() -> None:
    import pandas as pd

    from contagion.analysis import figures

    data = pd.DataFrame({"x": ["<img src=x onerror=alert(1)>", "a$b$c & d"], "s": ["s", "s"],
                         "estimate": [0.1, 0.2], "ci_low": [0.0, 0.1], "ci_high": [0.2, 0.3], "warning": ["", ""]})
    svg = figures.points_with_ci(data, x="x", series="s", title="t <script>", ylabel="y")
    assert svg.startswith("<svg") and "<img" not in svg and "<script" not in svg
    assert "&lt;img" in svg and "a$b$c &amp; d" in svg


def test_notices_say_simulated_and_too_small_from_the_run_itself(sim_run_dir: Path, tmp_path: Path) -> None:
    """Above the summary: the run's models are simulated (as their records say: every score they gave was
    made by a simulated model's rule), and no cell has the games for a claim (3 per cell here). A copy
    whose players are a language model (another spec, scores recorded as first-token) loses the first only."""
    from contagion.analysis.report import build_report, render_report
    from contagion.experiment.store import Store

    data = build_report(sim_run_dir)
    assert [kind for kind, _ in data.notices] == ["simulated", "too-small"]
    assert data.simulated and data.title.endswith("[simulated]")
    simulated, small = (text for _, text in data.notices)
    assert "Every language model in this run is simulated (sim:planted)" in simulated  # scripted seats are no LM
    assert "too small to support any claim" in small and "at most 3" in small
    page = render_report(data)
    assert page.index('id="notice-simulated"') < page.index('id="notice-too-small"') < page.index('id="summary"')

    real = tmp_path / "real-model"
    model = "openai:some-model@http://127.0.0.1:9/v1"
    with Store.open_existing(sim_run_dir) as source, Store.open(real) as store:
        store.set_config({**(source.config() or {}), "models": [model]})
        for record in source.iter_records():
            first_token = record.model_dump_json().replace('"score:simulated"', '"score:first-token-top-logprobs"')
            first_token = first_token.replace('"method":"simulated"', '"method":"first-token-top-logprobs"')
            record = type(record).model_validate_json(first_token)
            record.labels["model"] = model
            for player in record.players:
                if player.backend == "sim:planted":
                    player.backend = model
            store.put(record)
    data = build_report(real)
    assert [kind for kind, _ in data.notices] == ["too-small"]
    assert not data.simulated and "[simulated]" not in data.title
