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


def _tiny_vectors(path: Path) -> Path:
    """A valid vectors file for a model of 2 layers and hidden size 3 (for the checks made before any model)."""
    from contagion.steering.vector import TraitDirections, VectorFile

    t = TraitDirections(layer=1, auc=0.9, separation=1.0, high_items=["a"], low_items=["b"], held_out_items=[],
                        auc_by_layer=[0.5, 0.9], separation_by_layer=[0.0, 1.0], norm_by_layer=[1.0, 1.0],
                        directions=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    vf = VectorFile(model="hf:tiny", layers=2, hidden_size=3, inventory="builtin:v2", contrast="c", prompt="p",
                    pooling="mean", seed=0, held_out_fraction=0.33, contagion_version="0",
                    traits={"cooperativeness": t})
    path.write_text(vf.model_dump_json(), encoding="utf-8")
    return path


@pytest.mark.parametrize("model", ["embedded", "sim:planted"])
def test_the_monitor_on_a_model_without_activations_is_refused_before_any_game(tmp_path: Path, model: str) -> None:
    vectors = _tiny_vectors(tmp_path / "v.json")
    result = CliRunner().invoke(app, ["play", "-p", model, "-p", "scripted:tit-for-tat", "--monitor", str(vectors),
                                      "--out", str(tmp_path / "g.json")], env={"COLUMNS": "160"})
    expect_error(result, "--monitor needs players with activations", model)
    config = tmp_path / "c.yaml"
    config.write_text(f"models: [{model}]\ngames: [prisoners-dilemma]\nmonitor: {vectors}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "run"), "--no-progress"],
                                env={"COLUMNS": "160"})
    expect_error(result, "monitor:", "exposes no activations to monitor")
    assert not (tmp_path / "g.json").exists() and not (tmp_path / "run" / "store.sqlite").exists()


def test_a_monitor_naming_a_trait_the_file_lacks_is_one_clear_line(tmp_path: Path) -> None:
    vectors = _tiny_vectors(tmp_path / "v.json")
    config = tmp_path / "c.yaml"
    config.write_text(f"models: [hf:embedded]\nmonitor: {{file: {vectors}, traits: [honesty]}}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "run"), "--no-progress"],
                                env={"COLUMNS": "160"})
    expect_error(result, "monitor:", "'honesty' not in", "it has: cooperativeness")
    missing = tmp_path / "c2.yaml"
    missing.write_text(f"models: [hf:embedded]\nmonitor: {tmp_path / 'none.json'}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(missing), "--out", str(tmp_path / "run2"), "--no-progress"],
                                env={"COLUMNS": "160"})
    expect_error(result, "no vectors file at", "contagion vectors")


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
    """Vector steering and the monitor through the runner: a steered (+2), monitored one-malicious game on the
    local executor and on a local Ray instance whose worker loads the model itself stores identical records,
    bitwise with whole-block prefix reuse (monitor readings and every score included); the report shows the
    monitor beside the questionnaire."""
    ray = pytest.importorskip("ray", reason="the ray executor needs the cluster extra")
    from contagion.experiment.config import parse_config
    from contagion.experiment.runner import Runner
    from tests.experiment.experiment_helpers import SRC, comparable_records
    from tests.experiment.test_concurrency_embedded import without_work

    cfg = parse_config({  # whole-block prefix reuse: every number a function of the prompt alone
        "name": "vector-ray", "models": ["hf:embedded?prefix_reuse=blocks"], "games": ["prisoners-dilemma"],
        "compositions": {"one-malicious": ["default", "default", "malicious"]},
        "interventions": [f"vector:file={coop_vectors},trait=cooperativeness,alpha=2"],
        "rounds": 2, "chat_turns": [0], "repetitions": 1, "monitor": str(coop_vectors),
        "assessment": {"items": 1, "source_items": 1, "traits": ["cooperativeness", "machiavellianism"],
                       "bootstrap": 100},
    })
    # the Ray worker starts from an empty prompt cache and the Ray run's pre-play profiles are measured here after
    # the local run filled it: the records are still equal to the last bit (every prompt encoded in the same
    # blocks). A small matrix product's rounding also depends on the threads that share it: a Ray task holding one
    # CPU runs torch on one thread (Ray sets OMP_NUM_THREADS), so this process does too, as a user would set it
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = Runner(cfg, tmp_path / "local", executor="local", progress=False).run()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}})
        try:
            remote = Runner(cfg, tmp_path / "ray", executor="ray", progress=False).run()
        finally:
            ray.shutdown()
    finally:
        torch.set_num_threads(threads)
    assert local.finished == remote.finished == cfg.size() == 1 and local.failed == remote.failed == 0
    a, b = comparable_records(tmp_path / "local"), comparable_records(tmp_path / "ray")
    assert set(a) == set(b)
    for spec_hash in a:  # all but the work a lane did: the prompt tokens it had to encode depend on its cache
        differ = _differences(without_work(a[spec_hash]), without_work(b[spec_hash]))
        assert not differ, differ[:10]
    (record,) = a.values()  # the one game, steered and monitored on both executors
    assert any(e.get("event") == "steer" for p in record["players"] for e in p["intervention_log"])
    watched = [p for p in record["players"] if p["focal"]]
    assert watched and all([(r["round"], r["phase"]) for r in p["monitor"]] == [(1, "act"), (2, "act")]
                           for p in watched)
    assert all("monitor" not in p for p in record["players"] if not p["focal"])
    from contagion.analysis.report import build_report

    report = build_report(tmp_path / "local")
    (figure,) = [f for f in report.figures if f.id == "monitor"]
    assert "cooperativeness" in str(figure.svg) and figure.table is not None and len(figure.table.rows) == 2


def _differences(a: object, b: object, path: str = "record") -> list[str]:
    """Where two stored records differ, every value exactly (with exact prefix reuse a float32 score moved by
    ~3e-6 with the cache's history, which CI caught on the pre-play item scores)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b or (a != a and b != b) else [f"{path}: {a!r} vs {b!r}"]  # NaN equals NaN here


# -- the monitor ------------------------------------------------------------------------------------------

def _last_token_projection(backend: RobustBackend, messages: list[Message], layer: int, direction: list[float],
                           stem: str = "") -> float:
    """The prompt's last-token residual at ``layer`` projected on the unit ``direction``: one full forward pass
    without any cache, read by a hook of the test's own (the reference the monitor's readings must equal)."""
    import torch

    from contagion.backends.hf_steer import decoder_layers

    inner = backend.inner
    state = inner.loaded()  # type: ignore[attr-defined]
    ids = inner.encode(inner.render(messages) + stem)  # type: ignore[attr-defined]
    kept = {}
    hook = decoder_layers(state.model)[layer].register_forward_hook(
        lambda module, args, output: kept.update(h=(output[0] if isinstance(output, tuple) else output)))
    try:
        with torch.inference_mode():
            state.model(input_ids=torch.tensor([ids]), use_cache=False)
    finally:
        hook.remove()
    unit = np.asarray(direction, dtype=float) / np.linalg.norm(direction)
    return float(kept["h"][0, -1, :].double().numpy() @ unit)


@pytest.mark.slow
async def test_the_monitor_reads_the_prompts_last_token_on_every_path(coop_vectors: Path,
                                                                     hf_embedded: RobustBackend) -> None:
    """Generation, first-token scoring and full-continuation scoring after a prefix, with prefix reuse on and
    off: the monitored backend answers as the plain one and its probe equals the reference projection."""
    from contagion.backends.base import GenerationConfig
    from contagion.backends.registry import resolve
    from contagion.steering.monitor import MonitorSpec

    vf = load_vectors(coop_vectors)
    t = vf.traits["cooperativeness"]
    spec = MonitorSpec(file=str(coop_vectors))
    messages = [Message(role="system", content="You are a player in a game."),
                Message(role="user", content="Round 2: choose your action. Reply with one word: 'cooperate' or "
                                             "'defect'.")]
    expected = _last_token_projection(hf_embedded, messages, t.layer, t.directions[t.layer])
    with_stem = _last_token_projection(hf_embedded, messages, t.layer, t.directions[t.layer], stem="My action:")
    assert abs(expected) > 0.01  # a reading that could not be told from zero would prove nothing
    for plain in (hf_embedded, resolve("hf:embedded?prefix_reuse=0")):
        watched = plain.monitored(spec.directions(), spec.label())
        assert "+monitor:cooperativeness@" in watched.identity and watched.identity != plain.identity
        config = GenerationConfig(max_tokens=4, temperature=0.0, seed=1)
        a, b = await plain.generate(messages, config), await watched.generate(messages, config)
        assert a.text == b.text and a.probes is None
        assert b.probes is not None and b.probes["cooperativeness"] == pytest.approx(expected, rel=1e-3, abs=1e-3)
        s, m = (await plain.score_choices(messages, ["cooperate", "defect"]),
                await watched.score_choices(messages, ["cooperate", "defect"]))
        assert s.probes is None and m.logprobs == pytest.approx(s.logprobs, abs=1e-5)
        assert m.probes is not None and m.probes["cooperativeness"] == pytest.approx(expected, rel=1e-3, abs=1e-3)
        v1 = await watched.score_choices(messages, [" cooperate", " defect"], prefix="My action:")
        assert v1.probes is not None and v1.probes["cooperativeness"] == pytest.approx(with_stem, rel=1e-3, abs=1e-3)


@pytest.mark.slow
async def test_a_monitored_game_is_the_same_game_with_a_reading_at_every_turn(coop_vectors: Path,
                                                                              hf_embedded: RobustBackend) -> None:
    from contagion import vocabulary as P
    from contagion.backends.base import GenerationConfig
    from contagion.experiment.record import TrialSpec
    from contagion.experiment.trial import run_trial
    from contagion.games.record import GameSpec, PlayerSpec
    from contagion.steering.monitor import MonitorSpec

    vf = load_vectors(coop_vectors)
    t = vf.traits["cooperativeness"]
    game = GameSpec(game="prisoners-dilemma", rounds=2, chat_turns=1, seed=3,
                    generation=GenerationConfig(max_tokens=10),
                    players=(PlayerSpec.parse("hf:embedded"), PlayerSpec.parse("malicious=hf:embedded", focal=False),
                             PlayerSpec.parse("scripted:tit-for-tat", focal=False)))
    hf_embedded.inner._invalidate()  # type: ignore[attr-defined]  # both games start from an empty prompt cache
    plain = await run_trial(TrialSpec(game=game, measure=False))
    hf_embedded.inner._invalidate()  # type: ignore[attr-defined]
    watched = await run_trial(TrialSpec(game=game, measure=False, monitor=MonitorSpec(file=str(coop_vectors))))
    assert plain.error is None and watched.error is None
    assert watched.spec_hash != plain.spec_hash
    for a, b in zip(plain.players, watched.players, strict=True):
        assert [m.content for m in a.messages] == [m.content for m in b.messages]
        assert [x.action for x in a.actions] == [x.action for x in b.actions]
        assert [x.p_cooperate for x in a.actions] == pytest.approx([x.p_cooperate for x in b.actions], abs=1e-5)
        assert a.prompt_tokens_encoded == b.prompt_tokens_encoded  # the same prompt cache: the same work
        assert not a.monitor
    agent, co_player, scripted = watched.players
    assert [(r.round, r.phase, r.turn) for r in agent.monitor] == [(1, "talk", 0), (1, "act", 0), (2, "talk", 0),
                                                                   (2, "act", 0)]
    assert not co_player.monitor and not scripted.monitor  # only the agents under study are watched
    assert agent.backend.startswith("hf:embedded+monitor:cooperativeness@")
    # the last reading, recomputed from the record's own messages by a full forward pass
    act = max(i for i, m in enumerate(agent.messages) if m.meta.get("kind") == P.ACT)
    expected = _last_token_projection(hf_embedded, agent.messages[: act + 1], t.layer, t.directions[t.layer])
    assert agent.monitor[-1].values["cooperativeness"] == pytest.approx(expected, rel=1e-3, abs=1e-3)
    assert len({r.values["cooperativeness"] for r in agent.monitor}) == 4  # four different contexts
