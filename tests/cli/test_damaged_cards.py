"""Cards edited by hand or from elsewhere, given to ``contagion leaderboard``; ``bench`` starts that fail.

Every bad card is one line naming the file, the field and what was expected (exit 2, no traceback), and
the leaderboard writes nothing: not the CSV, not the page. A failed ``bench`` start leaves nothing behind.
"""

from __future__ import annotations

import copy
import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import contagion.cli  # noqa: F401  (registers the commands)
from contagion.bench.protocol import load_protocol
from contagion.bench.run import run_bench
from contagion.cli.app import app
from contagion.fileio import csv_cell
from tests.experiment.experiment_helpers import squash

KEY = "sk-live-DO-NOT-PRINT-4242"
V1_CARD = Path(__file__).parents[1] / "fixtures" / "cards" / "card-v1-smoke-sim-null.json"
"""A card of format version 1 (protocol v1, smoke, sim:null), written by contagion before cards carried the
analysis fingerprint (commit e56f76f)."""


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real card: the smoke benchmark of a simulated model (a few seconds)."""
    out = tmp_path_factory.mktemp("bench") / "run"
    result = run_bench("sim:planted", load_protocol("smoke"), out, progress=False, report=False)
    assert result.card is not None
    return dict(json.loads((out / "card.json").read_text(encoding="utf-8")))


def edit(change: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], str]:
    def make(card: dict[str, Any]) -> str:
        data = copy.deepcopy(card)
        change(data)
        return json.dumps(data)
    return make


def head(field: str, value: Any, index: int = 0) -> Callable[[dict[str, Any]], str]:
    return edit(lambda c: c["headlines"][index].__setitem__(field, value))


def raw(field: str, token: str) -> Callable[[dict[str, Any]], str]:
    """A number in the first headline written as a bare JSON token (NaN, Infinity)."""
    def make(card: dict[str, Any]) -> str:
        return head(field, "@@")(card).replace('"@@"', token)
    return make


# (id, the card's text from the real one, what the message must say)
BAD_CARDS: list[tuple[str, Callable[[dict[str, Any]], str], tuple[str, ...]]] = [
    ("protocol-a-string", edit(lambda c: c.__setitem__("protocol", "v1")), ("protocol", "valid dictionary")),
    ("protocol-without-hash", edit(lambda c: c["protocol"].pop("hash")), ("protocol.hash", "Field required")),
    ("headlines-a-number", edit(lambda c: c.__setitem__("headlines", 5)), ("headlines", "valid list", "got 5")),
    ("headlines-empty", edit(lambda c: c.__setitem__("headlines", [])), ("headlines", "at least 1 item")),
    ("headline-without-id", edit(lambda c: c["headlines"][0].pop("id")), ("headlines.0.id", "Field required")),
    ("headline-without-title", edit(lambda c: c["headlines"][2].pop("title")), ("headlines.2.title", "required")),
    ("headline-id-twice", edit(lambda c: c["headlines"][1].__setitem__("id", c["headlines"][0]["id"])),
     ("headlines", "appear twice")),
    ("headline-unknown-field", head("estimat", 0.1), ("headlines.0.estimat", "unknown key")),
    ("no-model", edit(lambda c: c.pop("model")), ("model", "Field required")),
    ("model-a-list", edit(lambda c: c.__setitem__("model", ["a", "b"])), ("model", "valid string")),
    ("model-empty", edit(lambda c: c.__setitem__("model", "")), ("model", "at least 1 character")),
    ("estimate-huge", head("estimate", 1e308), ("headlines.0.estimate", "less than or equal to 4")),
    ("estimate-minus-huge", head("estimate", -1e308), ("headlines.0.estimate", "greater than or equal to -4")),
    ("estimate-text", head("estimate", "abc"), ("headlines.0.estimate", "valid number", "'abc'")),
    ("estimate-nan", raw("estimate", "NaN"), ("NaN is not a JSON number",)),
    ("estimate-infinity", raw("ci_low", "Infinity"), ("Infinity is not a JSON number",)),
    ("estimate-minus-infinity", raw("ci_high", "-Infinity"), ("-Infinity is not a JSON number",)),
    ("p-above-one", head("p", 1.5), ("headlines.0.p", "less than or equal to 1")),
    ("ci-reversed", edit(lambda c: c["headlines"][1].update(ci_low=0.2, ci_high=-0.2)),
     ("headlines.1.ci_high", "below ci_low")),
    ("n-games-negative", head("n_games", -3), ("headlines.0.n_games", "greater than or equal to 0")),
    ("detected-text", head("detected", "maybe"), ("headlines.0.detected", "valid boolean")),
    ("card-version-newer", edit(lambda c: c.__setitem__("card_version", 3)), ("card of version 3", "newer contagion")),
    ("card-version-zero", edit(lambda c: c.__setitem__("card_version", 0)), ("card_version 0", "expected 1 or 2")),
    ("fingerprint-missing", edit(lambda c: c["protocol"].pop("analysis_fingerprint")),
     ("protocol.analysis_fingerprint is missing",)),
    ("fingerprint-not-hex", edit(lambda c: c["protocol"].__setitem__("analysis_fingerprint", "zz")),
     ("protocol.analysis_fingerprint", "pattern")),
    ("card-version-missing", edit(lambda c: c.pop("card_version")), ("not a contagion card", "card_version")),
    ("card-version-text", edit(lambda c: c.__setitem__("card_version", "2")), ("card_version '2'",)),
    ("not-an-object", lambda c: "[1, 2]", ("not a contagion card", "JSON object")),
    ("not-json", lambda c: "{\"card_version\": 1,", ("not a readable card",)),
    ("model-with-a-key", edit(lambda c: c.__setitem__("model", f"openai:m@http://u:{KEY}@h/v1")),
     ("carries a secret",)),
]


@pytest.mark.parametrize(("case", "make", "needles"), BAD_CARDS, ids=[c[0] for c in BAD_CARDS])
def test_a_bad_card_is_one_line_and_the_leaderboard_writes_nothing(
        case: str, make: Callable[[dict[str, Any]], str], needles: tuple[str, ...], card: dict[str, Any],
        tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({**card, "model": "sim:null"}), encoding="utf-8")
    bad = tmp_path / "bad.json"
    bad.write_text(make(card), encoding="utf-8")
    out = tmp_path / "board"
    result = CliRunner().invoke(app, ["leaderboard", str(good), str(bad), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert result.output.count("Error:") == 1 and len(result.output.strip().splitlines()) == 1, result.output
    flat = squash(result.output)
    assert squash(str(bad)) in flat, result.output
    for needle in needles:
        assert squash(needle) in flat, result.output
    assert KEY not in result.output
    assert not out.exists()  # neither leaderboard.csv nor leaderboard.html


def test_the_real_card_goes_on_a_leaderboard(card: dict[str, Any], tmp_path: Path) -> None:
    paths = []
    for model in ("sim:planted", "sim:null"):
        path = tmp_path / f"{model.replace(':', '-')}.json"
        path.write_text(json.dumps({**card, "model": model}), encoding="utf-8")
        paths.append(str(path))
    result = CliRunner().invoke(app, ["leaderboard", *paths, "--out", str(tmp_path / "board")])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader((tmp_path / "board" / "leaderboard.csv").open(encoding="utf-8")))
    assert {r[0] for r in rows[1:]} == {"sim:planted", "sim:null"}


def test_csv_cells_that_would_be_formulas_are_escaped(card: dict[str, Any], tmp_path: Path) -> None:
    formula = '=HYPERLINK("http://evil.example","click")'
    paths = []
    for i, model in enumerate((formula, "+1+1", "-2+3", "@SUM(A1)")):
        path = tmp_path / f"card{i}.json"
        path.write_text(json.dumps({**card, "model": model, "backend": "=cmd|' /C calc'!A0"}), encoding="utf-8")
        paths.append(str(path))
    result = CliRunner().invoke(app, ["leaderboard", *paths, "--out", str(tmp_path / "board")])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader((tmp_path / "board" / "leaderboard.csv").open(encoding="utf-8")))
    cells = [cell for row in rows[1:] for cell in row]
    assert {rows[i][0] for i in range(1, 5)} == {"'" + formula, "'+1+1", "'-2+3", "'@SUM(A1)"}
    assert all(r[1] == "'=cmd|' /C calc'!A0" for r in rows[1:])
    assert not [c for c in cells if c[:1] in ("=", "+", "@")]
    numbers = [float(c) for c in cells if c.startswith("-") and c[1:2].isdigit()]
    assert numbers  # negative estimates are numbers, written as numbers, not escaped
    html = (tmp_path / "board" / "leaderboard.html").read_text(encoding="utf-8")
    assert "=HYPERLINK(&#34;http://evil.example&#34;" in html  # shown escaped in the page too


@pytest.mark.parametrize(("value", "expected"), [
    ("=1+1", "'=1+1"), ("+x", "'+x"), ("-x", "'-x"), ("@x", "'@x"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("plain", "plain"), ("", ""), (-0.5, -0.5), (3, 3), (None, None), (True, True)])
def test_csv_cell(value: Any, expected: Any) -> None:
    assert csv_cell(value) == expected


def test_leaderboard_out_naming_a_file(card: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card), encoding="utf-8")
    target = tmp_path / "board.txt"
    target.write_text("keep me", encoding="utf-8")
    result = CliRunner().invoke(app, ["leaderboard", str(path), "--out", str(target)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert squash(f"--out {target} is a file") in squash(result.output)
    assert target.read_text(encoding="utf-8") == "keep me"


def test_a_version_1_card_still_loads_and_is_refused_next_to_a_new_one(card: dict[str, Any],
                                                                       tmp_path: Path) -> None:
    """An older card is read (alone it still makes a leaderboard); next to a card of the new format the
    leaderboard refuses, naming both cards and why."""
    from contagion.bench.render import load_card

    old = load_card(V1_CARD)
    assert old["card_version"] == 1 and old["protocol"]["analysis_fingerprint"] is None
    alone = CliRunner().invoke(app, ["leaderboard", str(V1_CARD), "--out", str(tmp_path / "alone")])
    assert alone.exit_code == 0, alone.output
    new = tmp_path / "new.json"
    new.write_text(json.dumps(card), encoding="utf-8")
    out = tmp_path / "board"
    result = CliRunner().invoke(app, ["leaderboard", str(V1_CARD), str(new), "--out", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    flat = squash(result.output)
    assert squash("version-1 cards carry no analysis fingerprint") in flat, result.output
    assert squash(str(V1_CARD)) in flat and squash(str(new)) in flat
    assert squash("card v1, protocol contagion-bench v1 (smoke)") in flat
    assert squash("card v2, protocol contagion-bench v2 (smoke)") in flat
    assert squash(f"analysis fingerprint {card['protocol']['analysis_fingerprint']}") in flat
    assert not out.exists()


def test_cards_analysed_by_different_code_are_refused(card: dict[str, Any], tmp_path: Path) -> None:
    """Two cards of one protocol design whose analysis fingerprints differ (one made before a change of the
    analysis code): the leaderboard names both cards and both fingerprints, and writes nothing."""
    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps(card), encoding="utf-8")
    older = copy.deepcopy(card)
    older["model"] = "sim:null"
    older["protocol"].update(analysis_fingerprint="0123456789ab", hash="0123456789abcdef")
    theirs = tmp_path / "theirs.json"
    theirs.write_text(json.dumps(older), encoding="utf-8")
    out = tmp_path / "board"
    result = CliRunner().invoke(app, ["leaderboard", str(ours), str(theirs), "--out", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    flat = squash(result.output)
    assert squash("analysed by different analysis code (their analysis fingerprints differ)") in flat, result.output
    assert squash(str(ours)) in flat and squash(str(theirs)) in flat
    assert "0123456789ab" in flat and card["protocol"]["analysis_fingerprint"] in flat
    assert not out.exists()


def test_the_card_states_its_fingerprint_estimands_and_validation_scope(card: dict[str, Any]) -> None:
    """The card names the analysis code (its hash covers it), each available headline's estimand in one
    sentence (the report's), and labels the validation figures as on simulated models."""
    from contagion.analysis.validation import analysis_fingerprint
    from contagion.bench.protocol import load_protocol

    protocol = load_protocol("smoke")
    assert card["protocol"]["analysis_fingerprint"] == analysis_fingerprint() == card["analysis"]["fingerprint"]
    assert card["protocol"]["hash"] == protocol.hash != protocol.design_hash == card["protocol"]["design_hash"]
    for h in card["headlines"]:
        if h["available"]:
            assert h["estimand"].endswith(".") and h["estimand"].count(". ") == 0, h
    assert card["validation"][0].startswith("These figures are on simulated models")
    # the shipped interval coverage is part of what a number rests on: both grids, no caution about them
    assert sum(line.startswith("Interval coverage on a simulated model") for line in card["validation"]) == 2
    assert not [line for line in card["validation"] if "coverage" in line and line.startswith("Caution")]


def test_a_card_with_headlines_not_in_the_run_renders(card: dict[str, Any], tmp_path: Path) -> None:
    """A run without some conditions (records played elsewhere, e.g. in Inspect) has headlines with no numbers,
    no estimand: the card still writes and shows them as not in this run."""
    from contagion.bench.render import write_card

    data = copy.deepcopy(card)
    for h in data["headlines"][2:4]:
        for key in list(h):
            if key not in ("id", "title", "question", "primary", "direction", "units"):
                h.pop(key)
        h.update(available=False, reason="not in this run", significant=False, detected=False)
    _, html = write_card(data, tmp_path)
    page = html.read_text(encoding="utf-8")
    assert page.count("not in this run") >= 2 and page.count("Estimand:") == len(data["headlines"]) - 2


# -- bench: failed starts leave nothing --------------------------------------------------------------------


def bench(*argv: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["bench", *argv])
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_bench_out_naming_a_file(tmp_path: Path) -> None:
    target = tmp_path / "bench.txt"
    target.write_text("keep me", encoding="utf-8")
    code, output = bench("sim:null", "--size", "smoke", "--out", str(target))
    assert code == 2 and squash(f"--out {target} is a file") in squash(output), output
    assert target.read_text(encoding="utf-8") == "keep me" and sorted(tmp_path.iterdir()) == [target]


def test_bench_with_an_unknown_executor_writes_nothing(tmp_path: Path) -> None:
    code, output = bench("sim:null", "--size", "smoke", "--out", str(tmp_path / "b"), "--executor", "nosuch")
    assert code == 2 and squash("unknown executor 'nosuch'; choose local or ray") in squash(output), output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("existing", [False, True])
def test_bench_against_a_dead_server_leaves_nothing(existing: bool, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "b"
    if existing:
        out.mkdir(parents=True)
    code, output = bench("openai:m@http://127.0.0.1:9/v1", "--size", "smoke", "--out", str(out), "--no-progress")
    assert code == 2 and squash("cannot connect to the OpenAI-compatible server") in squash(output), output
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert left == (["deep", "deep/b"] if existing else [])  # no bench.json, store.sqlite or run.lock


def test_bench_header_never_prints_a_key(tmp_path: Path) -> None:
    code, output = bench(f"openai:m@http://127.0.0.1:9/v1?api_key={KEY}", "--size", "smoke", "--out",
                         str(tmp_path / "b"))
    assert code == 2 and "carries a secret" in output and KEY not in output, output
    assert "contagion bench:" not in output and list(tmp_path.iterdir()) == []


def test_run_against_a_dead_server_leaves_nothing(tmp_path: Path) -> None:
    config = tmp_path / "grid.yaml"
    config.write_text("models: ['openai:m@http://127.0.0.1:9/v1']\ngames: [prisoners-dilemma]\n"
                      "compositions: {x: [default, scripted:always-defect]}\nrounds: 1\nchat_turns: [0]\n"
                      "interventions: [none]\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "a" / "run"), "--no-progress"])
    assert result.exit_code == 2 and "cannot connect" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.yaml"]
