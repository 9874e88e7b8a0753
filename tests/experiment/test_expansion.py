"""Grid expansion: stable, versioned spec hashes; the default experiment's controls; pre-play profiles
measured once per distinct (model, persona, system prompt, inventory, seed) and reused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from contagion.experiment import profiles as profiles_module
from contagion.experiment.config import ExperimentConfig, load_config, parse_config
from contagion.experiment.record import SPEC_HASH_VERSION, focal_seats
from contagion.experiment.runner import Runner
from contagion.experiment.store import Store
from contagion.experiment.trial import needed_profiles
from contagion.games.record import PlayerSpec
from tests.experiment.experiment_helpers import SMALL, cli_env, write_config


def _hashes(cfg: ExperimentConfig) -> list[str]:
    return [spec.stable_hash() for spec, _ in cfg.expand()]


def test_every_cell_and_repetition_is_one_distinct_spec() -> None:
    cfg = parse_config({**SMALL, "repetitions": 3})
    expanded = list(cfg.expand())
    assert len(expanded) == cfg.size() == 1 * 2 * 2 * 2 * 2 * 3
    assert len(set(_hashes(cfg))) == len(expanded)
    seeds = {(lab["game"], lab["composition"], lab["intervention"], lab["chat_turns"]): set() for _, lab in expanded}
    for spec, lab in expanded:
        assert spec.game.seed == cfg.seed + lab["rep"]  # common seeds across conditions
        assert spec.game.chat_turns == lab["chat_turns"] and spec.game.game == lab["game"]
        seeds[(lab["game"], lab["composition"], lab["intervention"], lab["chat_turns"])].add(spec.game.seed)
    assert all(s == {0, 1, 2} for s in seeds.values())


def test_hashes_are_stable_across_processes(tmp_path: Path) -> None:
    """Same config → same hashes in a fresh interpreter (with its own hash randomisation)."""
    cfg_path = write_config(tmp_path / "grid.yaml", {**SMALL, "repetitions": 2})
    code = (
        "import json, sys; from pathlib import Path; from contagion.experiment.config import load_config;"
        "cfg = load_config(Path(sys.argv[1]));"
        "print(json.dumps([s.stable_hash() for s, _ in cfg.expand()]))"
    )
    outputs = []
    for seed in ("1", "2"):
        proc = subprocess.run([sys.executable, "-c", code, str(cfg_path)], capture_output=True, text=True,
                              env=cli_env(PYTHONHASHSEED=seed), timeout=60, check=True)
        outputs.append(json.loads(proc.stdout))
    assert outputs[0] == outputs[1] == _hashes(load_config(cfg_path))


@pytest.mark.parametrize(
    "change",
    [{"concurrency": 32}, {"max_failure_rate": 0.5}, {"name": "renamed"}, {"concurrency": 1, "max_failure_rate": 0.0}],
    ids=["concurrency", "max_failure_rate", "name", "both"],
)
def test_transport_settings_do_not_change_hashes(change: dict[str, Any]) -> None:
    assert _hashes(parse_config({**SMALL, **change})) == _hashes(parse_config(SMALL))


@pytest.mark.parametrize(
    "change",
    [{"rounds": 3}, {"seed": 7}, {"generation": {"max_tokens": 21}}, {"assessment": {"items": 3, "bootstrap": 100}},
     {"reveal_horizon": False}, {"action_mode": "generate"}],
    ids=["rounds", "seed", "generation", "assessment", "horizon", "action_mode"],
)
def test_parameters_that_matter_change_every_hash(change: dict[str, Any]) -> None:
    before = set(_hashes(parse_config(SMALL)))
    after = set(_hashes(parse_config({**SMALL, **change})))
    assert len(after) == len(before) and not before & after


def test_widening_the_grid_keeps_the_old_specs() -> None:
    before = set(_hashes(parse_config(SMALL)))
    wider = parse_config({**SMALL, "interventions": [*SMALL["interventions"], "repeat-system:k=2"],
                          "repetitions": 2})
    after = set(_hashes(wider))
    assert before < after and len(after) == wider.size()


def test_hash_is_versioned() -> None:
    spec, _ = next(parse_config(SMALL).expand())
    payload = {"v": SPEC_HASH_VERSION, "spec": spec.model_dump(mode="json")}
    import hashlib

    expected = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert spec.stable_hash() == expected


def test_default_experiment_has_the_controls() -> None:
    """All-default groups, a scripted always-defect co-player and a no-chat condition, by default."""
    cfg = ExperimentConfig(models=["sim:planted"])
    assert cfg.compositions["all-default"] == ["default"] * 3
    assert any("scripted:always-defect" in seats for seats in cfg.compositions.values())
    assert 0 in cfg.chat_turns and any(t > 0 for t in cfg.chat_turns)
    assert set(cfg.games) == {"prisoners-dilemma", "chicken", "stag-hunt"}
    labels = [lab for _, lab in cfg.expand()]
    assert {lab["chat_turns"] for lab in labels} == set(cfg.chat_turns)
    assert {"all-default", "scripted-defector"} <= {lab["composition"] for lab in labels}
    spec = next(s for s, lab in cfg.expand() if lab["composition"] == "scripted-defector")
    scripted = spec.game.players[2]
    assert scripted.backend == "scripted:always-defect" and not scripted.focal
    assert all(p.focal for p in spec.game.players[:2])


def test_seats_players_and_focal_agents() -> None:
    cfg = parse_config({**SMALL, "compositions": {"mixed": ["default", "benevolent", "malicious=sim:null",
                                                            "scripted:tit-for-tat"]}})
    players = cfg.players_for(cfg.compositions["mixed"], "sim:planted")
    assert [(p.backend, p.persona, p.focal) for p in players] == [
        ("sim:planted", "default", True), ("sim:planted", "benevolent", False),
        ("sim:null", "malicious", False), ("scripted:tit-for-tat", "default", False),
    ]
    all_lm = cfg.model_copy(update={"focal": "all-lm"}).players_for(cfg.compositions["mixed"], "sim:planted")
    assert [p.focal for p in all_lm] == [True, True, True, False]
    # one rule with `contagion play` (focal_seats): a table without a default-persona LM studies every LM
    no_default = cfg.players_for(["benevolent", "malicious", "scripted:always-defect"], "sim:planted")
    assert [p.focal for p in no_default] == [True, True, False]
    seated = focal_seats([PlayerSpec.parse(s) for s in ("benevolent=sim:null", "malicious=sim:null", "sim:null")])
    assert [p.focal for p in seated] == [False, False, True]
    # without trait measurement the same agents are under study (steered by the intervention), unmeasured
    unmeasured = cfg.model_copy(update={"measure_traits": False})
    assert [p.focal for p in unmeasured.players_for(cfg.compositions["mixed"], "sim:planted")] == [
        True, False, False, False]
    assert all(not spec.measure for spec, _ in unmeasured.expand())


# -- pre-play profiles -----------------------------------------------------------------------------


def _count_measurements(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    real = profiles_module.measure_agent

    async def counting(backend: Any, system: Any, settings: Any) -> Any:
        calls.append((getattr(backend, "spec", backend), system.content))
        return await real(backend, system, settings)

    monkeypatch.setattr(profiles_module, "measure_agent", counting)
    return calls


PROFILE_GRID = {
    **SMALL,
    "compositions": {
        "all-default": ["default", "default", "default"],
        "one-malicious": ["default", "default", "malicious"],
        "scripted-defector": ["default", "default", "scripted:always-defect"],
    },
    "interventions": ["none", "sit:k=2,n=2"],
    "repetitions": 2,
}


def test_pre_play_profiles_are_measured_once_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_measurements(monkeypatch)
    cfg = parse_config(PROFILE_GRID)
    out = tmp_path / "run"
    summary = Runner(cfg, out, progress=False).run()
    assert summary.finished == cfg.size() == 2 * 3 * 2 * 2 * 2

    # distinct (model, persona, system prompt): the 3 default seats per game; the default seats of every
    # composition share their prompts, and co-players (malicious, scripted) are neither measured nor steered
    assert len(calls) == len(set(calls)) == 2 * 3
    with Store.open_existing(out) as store:
        assert store.conn.execute("SELECT COUNT(*) FROM profiles").fetchone()[0] == 6
        personas = cfg.persona_map()
        used: dict[str, set[str]] = {}
        for record in store.iter_records():
            for request in needed_profiles(record.spec, personas):
                stored = store.get_profile(request.key)
                assert record.players[request.seat].pre_profile == stored  # the very profile measured once
                used.setdefault(request.key, set()).add(record.spec_hash)
        assert len(used) == 6
        assert all(len(games) >= 4 for games in used.values())  # each reused across games (reps, chat, ...)
        malicious = [r for r in store.iter_records() if r.labels["composition"] == "one-malicious"]
        for record in malicious:
            (bad,) = [p for p in record.players if p.persona == "malicious"]  # its seat varies with the seed
            assert bad.pre_profile is None  # never measured, never steered
            assert bad.injections == []
            assert not bad.focal

    # a rerun with a wider grid measures nothing again and runs only the new games
    calls.clear()
    wider = parse_config({**PROFILE_GRID, "interventions": [*PROFILE_GRID["interventions"], "repeat-system:k=2"]})
    summary = Runner(wider, out, progress=False, extend=True).run()  # a different grid: --extend
    assert calls == []
    assert summary.skipped == cfg.size() and summary.finished == wider.size() - cfg.size()


def test_profile_cache_key_separates_what_matters(tmp_path: Path) -> None:
    """Different inventory settings or models give different keys; reps and interventions do not."""
    cfg = parse_config({**PROFILE_GRID, "models": ["sim:planted", "sim:null"]})
    personas = cfg.persona_map()
    keys = {r.key for spec, _ in cfg.expand() for r in needed_profiles(spec, personas)}
    assert len(keys) == 2 * 2 * 3
    other = parse_config({**PROFILE_GRID, "assessment": {"items": 3, "bootstrap": 100}})
    other_keys = {r.key for spec, _ in other.expand() for r in needed_profiles(spec, personas)}
    assert not keys & other_keys
