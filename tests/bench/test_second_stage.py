"""A benchmark's second stage (``contagion bench --scale K``) on simulated models: the scale a first stage says it
needs, and the same run directory growing to it. (Its own file: test_bench.py's module-wide browser keeps an
event loop running in the main thread, in which the command's runner cannot start its own.)"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contagion.bench.render import CARD_HTML, CARD_JSON
from contagion.cli import app
from tests.bench.test_bench import small_protocol


def test_scale_for_power_is_the_smallest_scale_that_reaches_the_target() -> None:
    from contagion.bench.power import power, scale_for_power

    k = scale_for_power(0.05, 0.04, 11, 1, target=0.8)
    assert k is not None and k > 1
    assert power(0.05, 0.04 / math.sqrt(k), 12 * k - 1) >= 0.8 > power(0.05, 0.04 / math.sqrt(k - 1), 12 * (k - 1) - 1)
    assert scale_for_power(0.05, 0.001, 11, 3) == 3  # powered already: the scale it has
    assert scale_for_power(0.05, 10.0, 11, 1, limit=64) is None  # not within the limit
    assert scale_for_power(0.05, math.nan, 11, 1) is None


@pytest.mark.slow  # two small simulated benchmark runs (~15 s)
def test_a_second_stage_adds_seeds_to_the_same_directory_and_keeps_the_games_played(tmp_path: Path) -> None:
    """The first stage (scale 1) of a tiny benchmark is under-powered and says which --scale it needs; the second
    stage at a larger scale into the same --out plays only the new seeds, and its card states the scale; a
    smaller scale is then refused."""
    path = small_protocol(tmp_path, games_per_cell=2)
    out = tmp_path / "run"
    args = ["bench", "sim:planted", "--protocol", str(path), "--size", "mini", "--out", str(out), "--no-report",
            "--no-progress", "--no-preflight"]
    first = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    text = " ".join(first.output.split())
    assert "Under-powered at the protocol's effect sizes" in text and "--scale" in text, text
    played = json.loads((out / CARD_JSON).read_text(encoding="utf-8"))
    second = CliRunner().invoke(app, [*args, "--scale", "2"], env={"COLUMNS": "200"})
    assert second.exit_code == 0, second.output
    card = json.loads((out / CARD_JSON).read_text(encoding="utf-8"))
    assert card["protocol"]["scale"] == 2 and card["protocol"]["games_per_cell"] == 4
    assert card["protocol"]["design_hash"] != played["protocol"]["design_hash"]
    assert card["run"]["games_ok"] == 2 * played["run"]["games_ok"]  # every cell doubled: the first seeds kept
    assert card["run"]["planned"] == 2 * played["run"]["planned"]
    assert "scale 2" in (out / CARD_HTML).read_text(encoding="utf-8")
    assert json.loads((out / "bench.json").read_text(encoding="utf-8"))["scale"] == 2
    smaller = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert smaller.exit_code == 2 and "holds this benchmark at --scale 2" in " ".join(smaller.output.split())
