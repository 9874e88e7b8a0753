"""The ``vector`` intervention's parameters and file are checked when it is parsed, and a backend without
activations is refused before any game starts. No model is loaded: the vectors file here is a real file of
the format with tiny made-up directions (2 layers x 4 dimensions), which is all these checks read."""

from __future__ import annotations

from pathlib import Path

import pytest

from contagion.errors import UserError
from contagion.experiment.config import ExperimentConfig
from contagion.experiment.trial import TrialSpec, run_trial
from contagion.games.record import GameSpec, PlayerSpec
from contagion.steering import parse_intervention
from contagion.steering.vector import TraitDirections, VectorFile, load_vectors, steering_additions, steering_layers


def tiny_file(path: Path) -> Path:
    trait = TraitDirections(
        layer=1, auc=0.75, separation=1.0, high_items=["a-y01"], low_items=["a-n01"], held_out_items=["a-y02"],
        auc_by_layer=[0.5, 0.75], separation_by_layer=[0.0, 1.0], norm_by_layer=[1.0, 2.0],
        directions=[[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]],
    )
    vf = VectorFile(model="hf:embedded", layers=2, hidden_size=4, inventory="builtin:v2", contrast="test",
                    prompt="p", pooling="mean", seed=0, held_out_fraction=0.33, contagion_version="0",
                    traits={"cooperativeness": trait})
    path.write_text(vf.model_dump_json(), encoding="utf-8")
    return path


@pytest.fixture
def vectors(tmp_path: Path) -> Path:
    return tiny_file(tmp_path / "v.json")


def test_layers_and_additions(vectors: Path) -> None:
    vf = load_vectors(vectors)
    assert steering_layers("best", vf, "cooperativeness") == [1]
    assert steering_layers(0, vf, "cooperativeness") == [0]
    assert steering_layers("0-1", vf, "cooperativeness") == [0, 1]
    assert steering_additions(vf, "cooperativeness", -1.5, [0, 1]) == {0: [-1.5, 0.0, 0.0, 0.0],
                                                                        1: [0.0, -3.0, 0.0, 0.0]}
    spec = parse_intervention(f"vector:file={vectors},trait=cooperativeness,alpha=2,layers=0-1")
    assert spec.params == {"file": str(vectors), "trait": "cooperativeness", "alpha": 2, "layers": "0-1"}


@pytest.mark.parametrize(("params", "needle"), [
    ("trait=cooperativeness,alpha=1", "file"),
    ("file={f},alpha=1", "trait"),
    ("file={f},trait=cooperativeness", "alpha"),
    ("file={f},trait=honesty,alpha=1", "trait 'honesty' is not in the vectors file (it has: cooperativeness)"),
    ("file={f},trait=cooperativeness,alpha=1,layers=2", "outside the file's layers 0-1"),
    ("file={f},trait=cooperativeness,alpha=1,layers=top", "give best, one layer (12) or a range (10-14)"),
    ("file={f},trait=cooperativeness,alpha=x", "alpha"),
    ("file={f},trait=cooperativeness,alpha=1,beta=2", "beta"),
    ("file={d}/missing.json,trait=cooperativeness,alpha=1", "no vectors file at"),
])
def test_bad_parameters_are_one_clear_error(vectors: Path, params: str, needle: str) -> None:
    with pytest.raises(UserError, match=None) as info:
        parse_intervention("vector:" + params.format(f=vectors, d=vectors.parent))
    assert needle in str(info.value)


def test_a_file_of_another_format_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something-else"}', encoding="utf-8")
    with pytest.raises(UserError, match="not a vectors file of format contagion-vectors/1"):
        parse_intervention(f"vector:file={bad},trait=cooperativeness,alpha=1")


@pytest.mark.parametrize("model", ["sim:planted", "embedded"])
async def test_a_backend_without_activations_is_refused_before_the_game(vectors: Path, model: str) -> None:
    players = (PlayerSpec.parse(model), PlayerSpec.parse("scripted:always-defect", focal=False))
    spec = TrialSpec(game=GameSpec(players=players, rounds=1, chat_turns=0),
                     intervention=parse_intervention(f"vector:file={vectors},trait=cooperativeness,alpha=1"),
                     measure=False)
    with pytest.raises(UserError, match="needs a backend with activations"):
        await run_trial(spec)


def test_a_config_steering_a_model_without_activations_fails_before_the_run(vectors: Path) -> None:
    config = ExperimentConfig.model_validate({
        "models": ["sim:planted"],
        "interventions": ["none", f"vector:file={vectors},trait=cooperativeness,alpha=1"],
    })
    with pytest.raises(UserError, match="steers activations, which sim:planted does not expose"):
        config.check_resources()
