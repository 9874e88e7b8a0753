"""The Ray executor, on a local Ray instance started by the test, stores the same records as the local one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from contagion.backends.registry import resolve
from contagion.experiment.config import parse_config
from contagion.experiment.runner import Runner
from tests.experiment.experiment_helpers import SMALL, SRC, comparable_records

ray = pytest.importorskip("ray", reason="the ray executor needs the cluster extra: pip install 'contagion[cluster]'")

GRID = {
    **SMALL,
    "models": ["sim:planted"],
    "games": ["prisoners-dilemma", "stag-hunt"],
    "compositions": {
        "all-default": ["default", "default", "default"],
        "one-malicious": ["default", "default", "malicious"],
        "scripted-defector": ["default", "default", "scripted:tit-for-tat"],
    },
    "interventions": ["none", "repeat-system:k=1", "sit:k=2,n=2"],
    "chat_turns": [0, 1],
    "repetitions": 1,
}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    # Workers import contagion from the same source tree as this process.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(SRC)}})
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_ray_and_local_executors_store_identical_records(tmp_path: Path, local_ray: None) -> None:
    cfg = parse_config(GRID)
    local = Runner(cfg, tmp_path / "local", executor="local", progress=False).run()
    remote = Runner(cfg, tmp_path / "ray", executor="ray", progress=False).run()
    assert local.finished == remote.finished == cfg.size() == 36
    assert local.failed == remote.failed == 0
    a, b = comparable_records(tmp_path / "local"), comparable_records(tmp_path / "ray")
    assert set(a) == set(b)
    for spec_hash in a:
        assert a[spec_hash] == b[spec_hash], spec_hash

    # resume works across executors: nothing is left to do for either
    again = Runner(cfg, tmp_path / "ray", executor="local", progress=False).run()
    assert (again.skipped, again.finished) == (cfg.size(), 0)
    assert ray.is_initialized()  # a Ray instance the runner did not start is left running


def test_remote_backends_keep_their_own_request_timeout() -> None:
    """The robust wrapper must not cut a request the backend spec allows more time (``?timeout=``)."""
    slow = resolve("openai:big-model@http://127.0.0.1:9/v1?timeout=600")
    assert slow.timeout is None and slow.inner.timeout == 600  # type: ignore[attr-defined]
    assert resolve("sim:planted") is not None


def test_a_task_ray_could_not_run_becomes_a_failed_record() -> None:
    from contagion.errors import UserError
    from contagion.experiment.ray_executor import RayExecutor

    class WorkerDied(Exception):
        cause = None

    class UserProblem(Exception):
        cause = UserError("cannot connect to the server")

    class FakeRay:
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def get(self, ref: object) -> str:
            raise self.exc

    spec, labels = next(parse_config(GRID).expand())
    executor = RayExecutor.__new__(RayExecutor)
    executor.ray = FakeRay(WorkerDied("the worker process died"))
    record = executor._result(object(), spec, labels)
    assert record.error is not None and record.error.startswith("ray: ")
    assert record.error.endswith("WorkerDied: the worker process died")
    assert record.spec_hash == spec.stable_hash() and record.labels == labels
    executor.ray = FakeRay(UserProblem("wrapped"))
    with pytest.raises(UserError, match="cannot connect"):
        executor._result(object(), spec, labels)
