"""contagion bench on simulated models: the protocol (v1 frozen, v2 the default), the card (the report's rows and
the report's significance), leaderboards."""

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
from contagion.bench.card import HEADLINES, PRIMARY, SOURCES
from contagion.bench.protocol import Protocol, load_protocol
from contagion.bench.render import CARD_HTML, CARD_JSON, LEADERBOARD_CSV, LEADERBOARD_HTML
from contagion.bench.run import run_bench
from contagion.cli import app
from contagion.errors import UserError
from tests.analysis.sim_runs import PageWatch, browser_fixture

DATA = Path(__file__).parents[2] / "src" / "contagion" / "data"
BUILTIN = DATA / "bench-v2.yaml"
BUILTIN_V1 = DATA / "bench-v1.yaml"
V1_DESIGN_HASHES = {"smoke": "c499268f8acc2efe", "standard": "1b85439369ddf87e", "paper": "cf43f1e58607d93f"}
"""What version 1 measures, as its cards before the analysis fingerprint stated it: frozen."""


def small_protocol(tmp: Path, version: int = 2, games_per_cell: int = 12) -> Path:
    """The built-in protocol of ``version`` with a quick size ``mini`` (one game type, few rounds) for tests."""
    data = yaml.safe_load((BUILTIN if version == 2 else BUILTIN_V1).read_text(encoding="utf-8"))
    assert data["version"] == version
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
    assert smoke.version == 2 and len(smoke.hash) == 16 and smoke.hash != standard.hash
    assert load_protocol("smoke").hash == smoke.hash  # stable
    assert Protocol(smoke.data, "smoke", "hub").hash != smoke.hash  # the instrument is part of what is measured
    cfgs = standard.configs("sim:null")
    assert set(cfgs) == {"contagion", "all-default", "scripted-defector", "control"}
    kinds = {name: [i.split(":")[0] for i in c.interventions] for name, c in cfgs.items()}
    assert kinds == {"contagion": ["none", "repeat-system", "placebo", "sit"],
                     "all-default": ["none", "placebo", "sit"], "scripted-defector": ["none"], "control": ["none"]}
    assert cfgs["control"].games == ["conversation"]
    for c in cfgs.values():
        assert c.action_mode == "sample" and c.option_order == "counterbalanced" and c.seat_order == "shuffled"
    assert standard.games() == sum(c.size() for c in cfgs.values())
    with pytest.raises(UserError, match="unknown size"):
        load_protocol("huge")
    with pytest.raises(UserError, match="unknown protocol version 3"):
        load_protocol("smoke", version=3)


def test_v1_is_frozen_and_v2_hashes_differently(monkeypatch: pytest.MonkeyPatch) -> None:
    """Version 1 still loads and measures exactly what it did (its design hashes are pinned); version 2 is
    another design; the hash a card states covers the analysis fingerprint as well as the design."""
    import contagion.bench.protocol as protocol_module
    from contagion.analysis.validation import analysis_fingerprint

    for size, design in V1_DESIGN_HASHES.items():
        v1, v2 = load_protocol(size, version=1), load_protocol(size, version=2)
        assert v1.version == 1 and v1.design_hash == design
        assert v2.version == 2 and v2.design_hash != design and v2.hash != v1.hash
        assert set(v1.configs("sim:null")) == {"contagion", "baselines", "control"}
        assert v1.measurement is None and v1.unhonoured() == []  # v1 declared no measurement design
        declared = v2.measurement
        assert declared is not None and (declared.post_play, declared.baseline) == ("stripped", "sham")
        assert v2.unhonoured() == []  # this contagion makes the whole declared design
        assert all(c.sham for c in v2.configs("sim:null").values())
    v2 = load_protocol("standard")
    assert v2.analysis_fingerprint == analysis_fingerprint()
    design, card_hash = v2.design_hash, v2.hash
    monkeypatch.setattr(protocol_module, "_fingerprint", lambda: "0123456789ab")
    assert v2.design_hash == design and v2.hash != card_hash  # other analysis code: another card hash
    # the v1 file itself is untouched (its text, not only its hash: it is frozen)
    assert "version: 1\n" in BUILTIN_V1.read_text(encoding="utf-8") and "arms:" not in BUILTIN_V1.read_text(
        encoding="utf-8")


@pytest.mark.slow  # shares bench_dirs: two simulated benchmark runs (~80 s)
def test_card_significance_is_the_reports(bench_dirs: dict[str, Any]) -> None:
    """On one store, every headline of the card is one row of the report: the same estimate, interval, p,
    adjusted p and significance (the report's analysis objects, exactly, and the rendered report's row:
    its shown estimate and whether it is marked significant)."""
    from contagion.analysis.contrasts import AnalysisSettings, compute_contrasts
    from contagion.analysis.power import achieved_power
    from contagion.analysis.tables import load_tables

    significant_somewhere, powered = False, 0
    for model in ("sim:planted", "sim:null"):
        run_dir, card = bench_dirs[model]
        on_disk = json.loads((run_dir / CARD_JSON).read_text(encoding="utf-8"))
        assert on_disk["headlines"] == card["headlines"]
        contrasts = compute_contrasts(load_tables(run_dir), settings=AnalysisSettings())  # the report's call
        views = {v["name"]: v for v in build_report(run_dir).contrasts}
        compared = 0
        for h in card["headlines"]:
            if not h["available"]:
                continue
            assert h["source"].startswith("report: ")
            name, comparison = h["source"].removeprefix("report: ").split(" · ", 1)
            rows = contrasts[name].rows
            trait = SOURCES[h["id"]][1]
            row = rows[(rows.comparison == comparison) & (rows.model == card["model"]) & (rows.trait == trait)].iloc[0]
            for key, card_key in (("estimate", "estimate"), ("ci_low", "ci_low"), ("ci_high", "ci_high"),
                                  ("p", "p"), ("p_adj", "p_holm"), ("n_games", "n_games")):
                value = row[key]
                assert (value == h[card_key]) or (math.isnan(value) and h[card_key] is None), (model, h["id"], key)
            assert bool(row["significant"]) == h["significant"], (model, h["id"])
            # the power the card states is the row's own test's (its cluster-robust SE and df), at the
            # protocol's effect size
            if "power" in h and math.isfinite(row["se"]) and row["df"] >= 1:
                assert (h["se"], h["df"]) == (row["se"], row["df"]), (model, h["id"])
                expected = achieved_power(row, h["power_effect"])  # NaN without a test (SE 0): no power on the card
                assert (h["power"] is None and math.isnan(expected)) or h["power"] == pytest.approx(expected, rel=1e-12)
                powered += h["power"] is not None
            assert h["detected"] == (h["significant"] and (h["estimate"] > 0) == (h["direction"] > 0))
            significant_somewhere |= h["significant"]
            # the rendered report: the row it shows for this comparison, its number and its marking
            table = views[name]["index"]
            header = table.columns
            at = next(i for i, r in enumerate(table.rows) if r[header.index("comparison")] == comparison
                      and r[header.index("model")] == card["model"])
            shown = float(table.rows[at][header.index("estimate")].replace("−", "-").replace("+", ""))
            assert math.isclose(shown, round(h["estimate"], 3), abs_tol=1.5e-3), (model, h["id"])
            assert ("sig" in table.row_classes[at].split()) == h["significant"], (model, h["id"])
            assert h["estimand"] in dict(views[name]["estimands"]).values()
            compared += 1
        assert compared == len(HEADLINES)  # every headline, the behaviour and the answer mass too
        assert card["detected"] == [h["id"] for h in card["headlines"] if h["primary"] and h["detected"]]
    assert significant_somewhere  # the comparison covered a significant headline, not only non-significant ones
    assert powered  # and headlines whose power the card states


@pytest.mark.slow  # shares bench_dirs: two simulated benchmark runs (~80 s)
def test_planted_effects_are_detected_and_the_null_shows_none(bench_dirs: dict[str, Any]) -> None:
    planted = bench_dirs["sim:planted"][1]
    null = bench_dirs["sim:null"][1]
    assert set(planted["detected"]) >= {"susceptibility", "amplification"}
    # SIT's trait rows are measured with its reminders removed (v2's stripped post-play), and sim:planted's SIT
    # acts only through reminders in the context it answers in: nothing to see there (its behaviour is the
    # primary SIT headline)
    traits = {h["id"]: h for h in planted["headlines"] if h["id"].endswith("_traits")}
    assert len(traits) == 2 and all(abs(h["estimate"]) < 0.03 for h in traits.values()), traits
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


@pytest.mark.slow  # shares bench_dirs: two simulated benchmark runs (~80 s)
def test_leaderboard_refuses_a_v1_card_next_to_a_v2_one(bench_dirs: dict[str, Any], tmp_path: Path) -> None:
    """A card of protocol v1 (made by this contagion) next to a v2 card: refused, naming both and their
    protocol versions."""
    other = load_protocol("mini", small_protocol(tmp_path, version=1, games_per_cell=2))
    run_bench("sim:null", other, tmp_path / "v1", progress=False, report=False)
    v2_card = bench_dirs["sim:planted"][0] / CARD_JSON
    result = CliRunner().invoke(app, ["leaderboard", str(v2_card), str(tmp_path / "v1"), "--out",
                                      str(tmp_path / "lb")])
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert "measured under different protocols" in flat
    assert "protocol contagion-bench v1 (mini)" in flat and "protocol contagion-bench v2 (mini)" in flat
    assert not (tmp_path / "lb" / LEADERBOARD_HTML).exists()


@pytest.mark.slow  # shares bench_dirs: two simulated benchmark runs (~80 s)
def test_a_benchmark_directory_belongs_to_one_model_and_protocol(bench_dirs: dict[str, Any]) -> None:
    run_dir, _ = bench_dirs["sim:null"]
    with pytest.raises(UserError, match="holds a benchmark of 'sim:null'"):
        run_bench("sim:planted", bench_dirs["protocol"], run_dir, progress=False)
    again = run_bench("sim:null", bench_dirs["protocol"], run_dir, progress=False, report=False)  # resumes
    assert all(s.finished == 0 for s in again.summaries.values())


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from browser_fixture()


@pytest.mark.slow  # shares bench_dirs: two simulated benchmark runs (~80 s)
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


@pytest.mark.slow  # shares bench_dirs: two simulated benchmark runs
def test_a_headline_the_reports_gate_holds_back_is_not_claimed(bench_dirs: dict[str, Any],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The report's confidence gate reaches the card through the report's rows: the planted run's amplification
    headline is detected; the same store with the arms' movement toward ½ explaining that row's difference (as on
    sim:flatten-keep, where a longer context costs confidence) is held back by the report, so the card does not
    claim it and says why."""
    import contagion.analysis.contrasts as contrasts_module
    import contagion.bench.card as card_mod

    run_dir, planted = bench_dirs["sim:planted"]
    before = next(h for h in planted["headlines"] if h["id"] == "amplification")
    assert before["detected"]
    comparison = before["source"].removeprefix("report: amplification · ")
    real = contrasts_module.CONTRASTS["amplification"]

    def flattening_explains(*args: Any, **kwargs: Any) -> Any:
        contrast = real(*args, **kwargs)
        hit = (contrast.rows["comparison"] == comparison) & (contrast.rows["trait"] == PROSOCIAL)
        assert hit.sum() == 1
        estimate = float(contrast.rows.loc[hit, "estimate"].iloc[0])
        contrast.rows.loc[hit, ["flat_estimate", "flat_low", "flat_high", "net_estimate", "net_p"]] = [
            estimate, estimate - 0.01, estimate + 0.01, 0.001, 0.9]
        return contrast

    monkeypatch.setitem(contrasts_module.CONTRASTS, "amplification", flattening_explains)
    card = card_mod.compute_card(run_dir, bench_dirs["protocol"], "sim:planted")
    head = next(h for h in card["headlines"] if h["id"] == "amplification")
    assert head["estimate"] == before["estimate"] and head["p_holm"] == before["p_holm"] < 0.05
    assert head["confidence_gated"] and not head["significant"] and not head["detected"]
    assert "movement toward ½ explains" in head["warning"] and "amplification" not in card["detected"]
    assert any(w.startswith("Amplification: not claimed") and "movement toward ½ explains" in w
               for w in card["warnings"])
    others = {h["id"]: h["detected"] for h in card["headlines"] if h["id"] != "amplification"}
    assert others == {h["id"]: h["detected"] for h in planted["headlines"] if h["id"] != "amplification"}

