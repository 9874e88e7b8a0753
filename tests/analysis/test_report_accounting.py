"""The report counts scoring methods per record, says when a model's method changed within a run, names
sampled-fallback actions as such, and describes every config an extended run directory holds."""

from __future__ import annotations

from pathlib import Path

from contagion.analysis.report_text import action_method_text
from contagion.analysis.tables import load_tables
from contagion.experiment.config import parse_config
from contagion.experiment.runner import Runner
from contagion.experiment.store import Store
from tests.experiment.experiment_helpers import SMALL

GRID = {**SMALL, "games": ["prisoners-dilemma"], "interventions": ["none"]}


def _report_text(run: Path) -> tuple[list[str], list[str]]:
    from contagion.analysis.report import build_report

    data = build_report(run)
    return data.methods, data.warnings


def test_methods_are_counted_per_record_and_a_change_is_a_warning(tmp_path: Path) -> None:
    out = tmp_path / "run"
    Runner(parse_config(GRID), out, progress=False).run()
    methods, warnings = _report_text(out)
    (counted,) = [p for p in methods if "Scoring methods per finished game record" in p]
    assert "sampled" not in counted and "simulated" in counted
    assert not any("changed within this run" in w for w in warnings)

    # one record whose model was scored another way (as when a server loses its logprobs mid-run)
    with Store.open(out) as store:
        record = next(store.iter_records())
        focal = next(p for p in record.players if p.pre_profile)
        assert focal.pre_profile is not None
        focal.pre_profile = {**focal.pre_profile, "method": "sampled-fallback"}
        assert store.put(record)
    tables = load_tables(out)
    assert tables.info.backend_methods["sim:planted"] == {"simulated": 4, "sampled-fallback": 1}
    methods, warnings = _report_text(out)
    assert any("The scoring method of sim:planted changed within this run" in w
               and "sampled-fallback in 1 record(s)" in w for w in warnings)
    (counted,) = [p for p in methods if "Scoring methods per finished game record" in p]
    assert "sampled-fallback + " in counted and ": 1" in counted


def test_action_methods_are_named_honestly() -> None:
    assert action_method_text("score:first-token-top-logprobs") == "log-probability scoring (first-token-top-logprobs)"
    assert "sampled fallback" in action_method_text("score:sampled-fallback")
    assert "log-probability" not in action_method_text("score:sampled-fallback")
    assert action_method_text("generate") == "parsing generated text"
    assert "log-probability" not in action_method_text("score:scripted")


def test_the_report_describes_every_config_of_an_extended_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    Runner(parse_config(GRID), out, progress=False).run()
    Runner(parse_config({**GRID, "games": ["chicken"]}), out, progress=False, extend=True).run()
    methods, _ = _report_text(out)
    (paragraph,) = [p for p in methods if "holds 2 configs" in p]
    assert "games prisoners-dilemma" in paragraph and "games chicken" in paragraph
