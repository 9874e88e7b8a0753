"""``contagion vectors`` and white-box ``vector`` steering on ``hf:embedded`` (SmolLM2-135M through
transformers): the file's directions and AUCs recomputed from activations, steering that moves the scored
cooperation probability in opposite directions for +alpha and -alpha, steered and unsteered calls that
share no cached state, and one clear line (exit 2) for bad input. The model-free checks of the
intervention's parameters are tests/steering/test_vector_params.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from contagion.backends.robust import RobustBackend
from contagion.cli.app import app
from contagion.messages import Message
from contagion.steering.vector import load_vectors, steering_additions
from contagion.traits.inventory import load_inventory
from contagion.whitebox.vectors import PROMPT, act_trials, auc, cooperation_probability

COOP_ITEMS = 24  # builtin:v2 has 12 high and 12 low cooperativeness statements


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["vectors", *args], env={"COLUMNS": "160"})


def expect_error(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: "), result.output
    text = " ".join(result.output.split())
    for needle in needles:
        assert needle in text, text


# -- user errors (no model is loaded) --------------------------------------------------------------------

@pytest.mark.parametrize("model", ["embedded", "sim:planted", "scripted:always-defect"])
def test_a_model_without_activations_is_refused(tmp_path: Path, model: str) -> None:
    expect_error(invoke(model, "--out", str(tmp_path / "v.json")), "needs a white-box model: use hf:embedded")
    assert not (tmp_path / "v.json").exists()


@pytest.mark.parametrize(("args", "needle"), [
    (["--traits", "kindness"], "unknown trait(s) kindness"),
    (["--traits", ","], "--traits names no trait"),
    (["--held-out", "1.5"], "--held-out must be between 0 and 1"),
    (["--inventory", "builtin:v9"], "unknown built-in inventory"),
])
def test_bad_options_are_one_clear_line(tmp_path: Path, args: list[str], needle: str) -> None:
    expect_error(invoke("hf:embedded", "--out", str(tmp_path / "v.json"), *args), needle)
    assert not (tmp_path / "v.json").exists()


def test_an_existing_file_is_not_overwritten_without_force(tmp_path: Path) -> None:
    out = tmp_path / "v.json"
    out.write_text("keep", encoding="utf-8")
    expect_error(invoke("hf:embedded", "--out", str(out)), "exists; give another --out or add --force")
    assert out.read_text(encoding="utf-8") == "keep"


def test_help_teaches_the_steering_spec() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "vector:file=vectors.json,trait=cooperativeness,alpha=4" in text and "held-out" in text


# -- on the model ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_file_holds_what_the_activations_give(coop_vectors: Path, hf_embedded: RobustBackend) -> None:
    vf = load_vectors(coop_vectors)
    assert json.loads(coop_vectors.read_text())["format"] == "contagion-vectors/1"
    assert (vf.model, vf.inventory, vf.layers, vf.hidden_size, vf.prompt) == ("hf:embedded", "builtin:v2", 30, 576,
                                                                               PROMPT)
    t = vf.traits["cooperativeness"]
    items = {i.id: i for i in load_inventory("builtin").by_trait("cooperativeness")}
    train, held = set(t.high_items) | set(t.low_items), set(t.held_out_items)
    assert not train & held and train | held == set(items) and len(items) == COOP_ITEMS
    assert all(items[i].matching == "Yes" for i in t.high_items) and all(items[i].matching == "No" for i in t.low_items)
    assert sorted(items[i].matching for i in held) == ["No"] * 4 + ["Yes"] * 4
    assert t.layer == max(range(vf.layers), key=lambda layer: (t.auc_by_layer[layer], t.separation_by_layer[layer]))
    assert len(t.directions) == vf.layers and all(len(row) == vf.hidden_size for row in t.directions)

    inner = hf_embedded.inner
    prompt = [Message(role="user", content=PROMPT)]

    async def acts(ids: list[str]) -> np.ndarray:
        return np.stack([(await inner.reply_activations(prompt, items[i].statement))[t.layer]  # type: ignore[attr-defined]
                         for i in ids])

    high, low = asyncio.run(acts(t.high_items)), asyncio.run(acts(t.low_items))
    direction = np.asarray(t.directions[t.layer])
    assert np.allclose(high.mean(axis=0) - low.mean(axis=0), direction, rtol=1e-4, atol=1e-4)
    held_high = asyncio.run(acts([i for i in t.held_out_items if items[i].matching == "Yes"])) @ direction
    held_low = asyncio.run(acts([i for i in t.held_out_items if items[i].matching == "No"])) @ direction
    assert auc(held_high, held_low) == pytest.approx(t.auc, abs=1e-6)


ALPHA = 1.0
MIN_SHIFT = 0.005  # the mean p(cooperate) must move by at least this much each way


@pytest.mark.slow
async def test_plus_and_minus_alpha_move_cooperation_in_opposite_directions(coop_vectors: Path) -> None:
    """The Done-when test of issue 29: on fixed, seeded one-round act prompts (prisoner's dilemma, chicken,
    stag hunt), steering cooperativeness with +ALPHA and -ALPHA moves the game's scored p(cooperate) away from
    the unsteered value in opposite directions, by at least MIN_SHIFT on average over the prompts valid at
    all three alphas (an invalid action stays invalid; it is never read as a probability)."""
    probs: dict[float, list[float | None]] = {}
    for alpha in (-ALPHA, 0.0, ALPHA):
        spec = f"vector:file={coop_vectors},trait=cooperativeness,alpha={alpha:g}"
        trials = act_trials("hf:embedded", spec, seed=7)[::2]  # option order cooperate-first
        probs[alpha] = [await cooperation_probability(s) for s in trials]
    valid = [k for k in range(len(probs[0.0])) if all(probs[a][k] is not None for a in probs)]
    assert len(valid) >= 2, probs

    def mean(alpha: float) -> float:
        return float(np.mean([probs[alpha][k] for k in valid]))

    up, down = mean(ALPHA) - mean(0.0), mean(-ALPHA) - mean(0.0)
    assert up * down < 0, probs
    assert min(abs(up), abs(down)) >= MIN_SHIFT, probs


@pytest.mark.slow
async def test_a_steered_trial_records_its_steering(coop_vectors: Path) -> None:
    from contagion.experiment.trial import run_trial

    spec = act_trials("hf:embedded", f"vector:file={coop_vectors},trait=cooperativeness,alpha=-1", seed=7)[0]
    record = await run_trial(spec)
    log = record.players[0].intervention_log
    steer = [e for e in log if e.get("event") == "steer"]
    assert len(steer) == 1 and steer[0]["trait"] == "cooperativeness" and steer[0]["alpha"] == -1
    assert steer[0]["vectors"] == load_vectors(coop_vectors).fingerprint()
    assert steer[0]["identity"].startswith("hf:embedded+steer:cooperativeness@")
    assert not record.players[1].intervention_log  # scripted co-players are not steered


@pytest.mark.slow
async def test_steered_and_unsteered_calls_share_no_cached_state(coop_vectors: Path,
                                                                 hf_embedded: RobustBackend) -> None:
    vf = load_vectors(coop_vectors)
    layer = vf.traits["cooperativeness"].layer
    messages = [Message(role="system", content="You are a player in a game."),
                Message(role="user", content="Choose your action. Reply with one word: 'cooperate' or 'defect'.")]
    before = await hf_embedded.score_choices(messages, ["cooperate", "defect"])
    steered = hf_embedded.steered(steering_additions(vf, "cooperativeness", 2.0, [layer]), "test")
    assert steered.identity != hf_embedded.identity
    moved = await steered.score_choices(messages, ["cooperate", "defect"])
    after = await hf_embedded.score_choices(messages, ["cooperate", "defect"])
    assert moved.logprobs != before.logprobs
    assert after.logprobs == pytest.approx(before.logprobs, abs=1e-5)
    # a zero vector adds nothing: the steered path is the unsteered one plus the vector, exactly
    zero = hf_embedded.steered(steering_additions(vf, "cooperativeness", 0.0, [layer]), "zero")
    assert (await zero.score_choices(messages, ["cooperate", "defect"])).logprobs == pytest.approx(
        before.logprobs, abs=1e-5)


@pytest.mark.slow
def test_a_vector_steered_grid_stores_the_same_records_locally_and_on_ray(coop_vectors: Path,
                                                                          tmp_path: Path) -> None:
    """Vector steering through the runner: a steered (+2) one-malicious game on the local executor and on a local
    Ray instance whose worker loads the model itself stores identical records."""
    ray = pytest.importorskip("ray", reason="the ray executor needs the cluster extra")
    from contagion.experiment.config import parse_config
    from contagion.experiment.runner import Runner
    from tests.experiment.experiment_helpers import SRC, comparable_records
    from tests.experiment.test_concurrency_embedded import without_work

    cfg = parse_config({
        "name": "vector-ray", "models": ["hf:embedded"], "games": ["prisoners-dilemma"],
        "compositions": {"one-malicious": ["default", "default", "malicious"]},
        "interventions": [f"vector:file={coop_vectors},trait=cooperativeness,alpha=2"],
        "rounds": 2, "chat_turns": [0], "repetitions": 1,
        "assessment": {"items": 1, "source_items": 1, "traits": ["agreeableness", "machiavellianism"],
                       "bootstrap": 100},
    })
    local = Runner(cfg, tmp_path / "local", executor="local", progress=False).run()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}})
    try:
        remote = Runner(cfg, tmp_path / "ray", executor="ray", progress=False).run()
    finally:
        ray.shutdown()
    assert local.finished == remote.finished == cfg.size() == 1 and local.failed == remote.failed == 0
    a, b = comparable_records(tmp_path / "local"), comparable_records(tmp_path / "ray")
    assert set(a) == set(b)
    for spec_hash in a:  # all but the work a lane did: the prompt tokens it had to encode depend on its cache
        assert without_work(a[spec_hash]) == without_work(b[spec_hash]), spec_hash
    (record,) = a.values()  # the one game, steered on both executors
    assert any(e.get("event") == "steer" for p in record["players"] for e in p["intervention_log"])
