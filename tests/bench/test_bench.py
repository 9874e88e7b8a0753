"""contagion bench on simulated models: the protocol, the card (equal to the report's numbers), leaderboards."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from contagion.analysis.report import build_report
from contagion.analysis.tables import PROSOCIAL
from contagion.bench.card import HEADLINES, PRIMARY
from contagion.bench.protocol import Protocol, load_protocol
from contagion.bench.render import CARD_HTML, CARD_JSON, LEADERBOARD_CSV, LEADERBOARD_HTML
from contagion.bench.run import run_bench
from contagion.cli import app
from contagion.errors import UserError
from tests.analysis.sim_runs import PageWatch, browser_fixture

BUILTIN = Path(__file__).parents[2] / "src" / "contagion" / "data" / "bench-v1.yaml"


def small_protocol(tmp: Path, version: int = 1, games_per_cell: int = 12) -> Path:
    """The built-in protocol with a quick size ``mini`` (one game type, few rounds) for tests."""
    data = yaml.safe_load(BUILTIN.read_text(encoding="utf-8"))
    data["version"] = version
    data["sizes"]["mini"] = {"games": ["prisoners-dilemma"], "rounds": 4, "chat_turns": 1,
                             "games_per_cell": games_per_cell, "control_games_per_cell": 4, "items": 6,
                             "source_items": 6, "debias": False, "max_tokens": 32}
    path = tmp / f"protocol-v{version}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bench_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("bench")
    proto = load_protocol("mini", small_protocol(tmp))
    out: dict[str, Any] = {"protocol": proto, "tmp": tmp}
    for model in ("sim:planted", "sim:null"):
        target = tmp / model.replace(":", "-")
        result = run_bench(model, proto, target, progress=False)
        out[model] = (target, result.card)
    yield out


def test_protocol_is_versioned_hashed_and_covers_the_design() -> None:
    smoke, standard = load_protocol("smoke"), load_protocol("standard")
    assert smoke.version == 1 and len(smoke.hash) == 16 and smoke.hash != standard.hash
    assert load_protocol("smoke").hash == smoke.hash  # stable
    assert Protocol(smoke.data, "smoke", "hub").hash != smoke.hash  # the instrument is part of what is measured
    cfgs = standard.configs("sim:null")
    assert set(cfgs) == {"contagion", "baselines", "control"}
    assert {i.split(":")[0] for i in cfgs["contagion"].interventions} == {"none", "repeat-system", "placebo", "sit"}
    assert set(cfgs["baselines"].compositions) == {"all-default", "scripted-defector"}
    assert cfgs["control"].games == ["conversation"]
    for c in cfgs.values():
        assert c.action_mode == "sample" and c.option_order == "counterbalanced" and c.seat_order == "shuffled"
    assert standard.games() == sum(c.size() for c in cfgs.values())
    with pytest.raises(UserError, match="unknown size"):
        load_protocol("huge")


@pytest.mark.slow  # shares bench_dirs: two simulated benchmark runs (~60 s)
def test_card_numbers_equal_the_full_reports(bench_dirs: dict[str, Any]) -> None:
    """Every headline read off a contrast is the very row the full report shows for the same store."""
    for model in ("sim:planted", "sim:null"):
        run_dir, card = bench_dirs[model]
        report = build_report(run_dir)
        on_disk = json.loads((run_dir / CARD_JSON).read_text(encoding="utf-8"))
        assert on_disk["headlines"] == card["headlines"]
        views = {v["name"]: v for v in report.contrasts}
        compared = 0
        for h in card["headlines"]:
            source = h.get("source", "")
            if not source.startswith("report: "):
                continue
            name, comparison = source.removeprefix("report: ").split(" · ", 1)
            table = views[name]["index"]
            header = table.columns
            row = next(r for r in table.rows if r[header.index("comparison")] == comparison
                       and r[header.index("model")] == card["model"])
            estimate = float(row[header.index("estimate")].replace("−", "-").replace("+", ""))
            assert math.isclose(estimate, round(h["estimate"], 3), abs_tol=1.5e-3), (model, h["id"])
            compared += 1
        assert compared >= 6
        # and through the analysis objects themselves, exactly
        from contagion.analysis.contrasts import compute_contrasts
        from contagion.analysis.tables import load_tables

        contrasts = compute_contrasts(load_tables(run_dir))
        for h in card["headlines"]:
            if h.get("source", "").startswith("report: "):
                name, comparison = h["source"].removeprefix("report: ").split(" · ", 1)
                rows = contrasts[name].rows
                row = rows[(rows.comparison == comparison) & (rows.trait == PROSOCIAL)].iloc[0]
                assert row["estimate"] == h["estimate"] and row["n_games"] == h["n_games"]
                assert (row["p"] == h["p"]) or (math.isnan(row["p"]) and h["p"] is None)


@pytest.mark.slow  # shares bench_dirs: two simulated benchmark runs (~60 s)
def test_planted_effects_are_detected_and_the_null_shows_none(bench_dirs: dict[str, Any]) -> None:
    planted = bench_dirs["sim:planted"][1]
    null = bench_dirs["sim:null"][1]
    assert set(planted["detected"]) >= {"susceptibility", "amplification", "sit_vs_none", "sit_vs_placebo"}
    assert null["detected"] == [] and null["verdict"] == "no effect detected"
    for card in (planted, null):
        assert card["protocol"]["hash"] == bench_dirs["protocol"].hash
        assert card["scoring"]["method"] == "simulated"
        assert [h["id"] for h in card["headlines"]] == [h.id for h in HEADLINES]
        for h in card["headlines"]:
            if h["primary"]:
                assert "p_holm" in h and "power" in h, h["id"]
    html = (bench_dirs["sim:planted"][0] / CARD_HTML).read_text(encoding="utf-8")
    assert html.index("<svg") < html.index('id="headlines"')  # the figure first, then the numbers
    assert len(PRIMARY) == 5


@pytest.mark.slow  # shares bench_dirs: two simulated benchmark runs (~60 s)
def test_leaderboard_refuses_two_protocol_versions(bench_dirs: dict[str, Any], tmp_path: Path) -> None:
    other = load_protocol("mini", small_protocol(tmp_path, version=2, games_per_cell=2))
    run_bench("sim:null", other, tmp_path / "v2", progress=False, report=False)
    result = CliRunner().invoke(app, ["leaderboard", str(bench_dirs["sim:planted"][0] / CARD_JSON),
                                      str(tmp_path / "v2"), "--out", str(tmp_path / "lb")])
    assert result.exit_code == 2
    assert "different protocols" in result.output and "v1" in result.output and "v2" in result.output
    assert not (tmp_path / "lb" / LEADERBOARD_HTML).exists()


@pytest.mark.slow  # shares bench_dirs: two simulated benchmark runs (~60 s)
def test_a_benchmark_directory_belongs_to_one_model_and_protocol(bench_dirs: dict[str, Any]) -> None:
    run_dir, _ = bench_dirs["sim:null"]
    with pytest.raises(UserError, match="holds a benchmark of 'sim:null'"):
        run_bench("sim:planted", bench_dirs["protocol"], run_dir, progress=False)
    again = run_bench("sim:null", bench_dirs["protocol"], run_dir, progress=False, report=False)  # resumes
    assert all(s.finished == 0 for s in again.summaries.values())


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from browser_fixture()


@pytest.mark.slow  # shares bench_dirs: two simulated benchmark runs (~60 s)
def test_two_cards_render_in_a_browser_without_requests(bench_dirs: dict[str, Any], browser: Any,
                                                        tmp_path: Path) -> None:
    cards = [str(bench_dirs[m][0]) for m in ("sim:planted", "sim:null")]
    result = CliRunner().invoke(app, ["leaderboard", *cards, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = (tmp_path / LEADERBOARD_CSV).read_text(encoding="utf-8").splitlines()
    assert rows[1].startswith("sim:planted") and rows[2].startswith("sim:null")  # most susceptible first
    pages = [tmp_path / LEADERBOARD_HTML, *(Path(c) / CARD_HTML for c in cards)]
    for page_file in pages:
        watch = PageWatch(browser)
        requests: list[str] = []
        watch.page.on("request", lambda r, seen=requests: seen.append(r.url))
        try:
            watch.page.goto(page_file.as_uri())
            svgs = watch.page.locator("figure svg")
            assert svgs.count() >= 2
            for i in range(svgs.count()):
                box = svgs.nth(i).bounding_box()
                assert box is not None and box["width"] > 200 and box["height"] > 60
            assert watch.page.evaluate("document.scripts.length") == 0
            assert watch.errors == []
            assert requests == [page_file.as_uri()]  # the page itself, nothing else
        finally:
            watch.close()


@pytest.mark.slow  # shares bench_dirs: two simulated benchmark runs (~60 s)
def test_a_headline_that_flattening_explains_is_not_claimed(bench_dirs: dict[str, Any],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The report's confidence gate reaches the card: the planted run's SIT − none headline is detected; the
    same numbers with the arms' movement toward ½ explaining it (as on sim:flatten-keep, where every reminder
    lengthens the context) are not claimed, and the card says why."""
    import contagion.bench.card as card_mod

    run_dir, planted = bench_dirs["sim:planted"]
    assert next(h for h in planted["headlines"] if h["id"] == "sit_vs_none")["detected"]
    real = card_mod.headline_numbers

    def mass_differs(*args: Any, **kwargs: Any) -> Any:
        numbers = real(*args, **kwargs)
        n = numbers["sit_vs_none"]
        numbers["sit_vs_none"] = {**n, "flat_estimate": n["estimate"], "net_estimate": 0.001, "net_p": 0.9}
        return numbers

    monkeypatch.setattr(card_mod, "headline_numbers", mass_differs)
    card = card_mod.compute_card(run_dir, bench_dirs["protocol"], "sim:planted")
    head = next(h for h in card["headlines"] if h["id"] == "sit_vs_none")
    assert head["confidence_gated"] and not head["significant"] and not head["detected"]
    assert "sit_vs_none" not in card["detected"]
    assert any(w.startswith("SIT protection (SIT − none): not claimed") for w in card["warnings"])
    others = {h["id"]: h["detected"] for h in card["headlines"] if h["id"] != "sit_vs_none"}
    assert others == {h["id"]: h["detected"] for h in planted["headlines"] if h["id"] != "sit_vs_none"}
