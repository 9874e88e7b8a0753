"""How many games the local executor plays at once: `concurrency`, capped by what the backends declare
(`Capabilities.parallel_games`), with a note for the console when the cap lowers it. No model is loaded."""

from __future__ import annotations

from typing import Any

from contagion.backends.registry import build
from contagion.experiment.config import ExperimentConfig
from contagion.experiment.runner import games_in_flight


def _config(**data: Any) -> ExperimentConfig:
    return ExperimentConfig.model_validate({"games": ["prisoners-dilemma"], "chat_turns": [0], **data})


def test_in_process_models_declare_one_game_at_a_time() -> None:
    for spec in ("embedded", "embedded?weights=asis"):
        assert build(spec).capabilities.parallel_games == 1
    for spec in ("sim:planted", "scripted:always-defect", "openai:m@http://127.0.0.1:9/v1"):
        assert build(spec).capabilities.parallel_games is None


def test_concurrency_on_the_embedded_model_is_capped_and_the_console_is_told() -> None:
    n, note = games_in_flight(_config(models=["embedded"], concurrency=4))
    assert n == 1
    assert note is not None and "embedded" in note and "1 at a time" in note and "concurrency: 4" in note
    assert games_in_flight(_config(models=["embedded"])) == (1, None)  # the default is 1 already: nothing to say
    assert games_in_flight(_config(models=["embedded"], concurrency=1)) == (1, None)


def test_a_seat_played_by_the_embedded_model_caps_a_remote_grid() -> None:
    cfg = _config(models=["openai:m@http://127.0.0.1:9/v1"],
                  compositions={"mixed": ["default", "default", "malicious=embedded"]})
    n, note = games_in_flight(cfg)
    assert n == 1 and note is not None and "the default of 8" in note


def test_backends_without_a_cap_get_what_is_asked() -> None:
    assert games_in_flight(_config(models=["sim:planted"], concurrency=16)) == (16, None)
    assert games_in_flight(_config(models=["sim:planted"])) == (4, None)
    assert games_in_flight(_config(models=["openai:m@http://127.0.0.1:9/v1"], concurrency=3)) == (3, None)
