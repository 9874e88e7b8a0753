"""The pre-play profile cache every trial caller hands to run_trial: one measurement per key (also when
asked concurrently), failures remembered and tried again, and the store-backed cache of the runner."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from contagion.backends.registry import resolve
from contagion.experiment import profiles as profiles_module
from contagion.experiment.profiles import ProfileCache, StoredProfiles, needed_profiles
from contagion.experiment.record import TrialSpec
from contagion.experiment.store import Store
from contagion.experiment.trial import run_trial
from contagion.games.record import GameSpec, PlayerSpec
from contagion.steering import parse_intervention

SPEC = TrialSpec(game=GameSpec(players=(PlayerSpec.parse("sim:null"), PlayerSpec.parse("sim:null"),
                                        PlayerSpec.parse("scripted:always-defect")), rounds=2, chat_turns=0),
                 intervention=parse_intervention("sit:k=1,n=2"), assessment={"items": 2, "bootstrap": 100})


def counted(monkeypatch: pytest.MonkeyPatch, fail: int = 0) -> list[str]:
    """Count the measurements the cache makes (the first ``fail`` raise a transient connection error)."""
    calls: list[str] = []
    real = profiles_module.measure_agent

    async def measuring(backend: Any, system: Any, settings: Any) -> Any:
        calls.append(system.content)
        await asyncio.sleep(0.01)  # long enough for concurrent askers to find it in flight
        if len(calls) <= fail:
            raise ConnectionResetError("dropped")
        return await real(backend, system, settings)

    monkeypatch.setattr(profiles_module, "measure_agent", measuring)
    return calls


def test_concurrent_asks_share_one_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counted(monkeypatch)
    cache = ProfileCache()
    requests = needed_profiles(SPEC)
    assert [r.seat for r in requests] == [0, 1]  # the scripted player is not under study

    async def ask() -> list[Any]:
        return await asyncio.gather(*(cache.profile(r) for r in requests * 3))

    got = asyncio.run(ask())
    assert len(calls) == 2 and got[0] == got[2] == got[4] and got[1] == got[3] == got[5]
    seats = [resolve(p.backend) for p in SPEC.game.players]
    assert asyncio.run(cache.for_seats(requests, seats)) == [got[0], got[1], None] and len(calls) == 2


def test_a_failed_measurement_is_remembered_and_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counted(monkeypatch, fail=1)
    once = ProfileCache()
    (first, _) = needed_profiles(SPEC)
    with pytest.raises(ConnectionResetError):
        asyncio.run(once.profile(first))
    assert once.errors[first.key].startswith("pre-play profile of sim:null failed after 1 attempt(s)")
    assert asyncio.run(once.profile(first))["context_kind"] == "pre" and first.key not in once.errors
    monkeypatch.undo()
    calls = counted(monkeypatch, fail=1)
    retried = ProfileCache(attempts=2)  # a transient failure is retried within one ask
    assert asyncio.run(retried.profile(first))["context_kind"] == "pre" and not retried.errors and len(calls) == 2


def test_a_trial_takes_its_profiles_from_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counted(monkeypatch)
    with Store.open(tmp_path) as store:
        record = asyncio.run(run_trial(SPEC, profiles=StoredProfiles(store)))
        assert len(calls) == 2 and record.error is None
        assert [p.pre_profile for p in record.players[:2]] == [store.get_profile(r.key) for r in needed_profiles(SPEC)]
    with Store.open(tmp_path) as store:  # another run of the directory: nothing is measured again
        again = asyncio.run(run_trial(SPEC, profiles=StoredProfiles(store)))
        assert len(calls) == 2 and [p.pre_profile for p in again.players] == [p.pre_profile for p in record.players]
