"""Ray executor: one Ray task per game; records return to the driver, the only writer."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from contagion.errors import MissingExtraError, UserError
from contagion.experiment.record import GameRecord, TrialSpec
from contagion.personas import Persona


def _remote_game(spec_json: str, labels: dict[str, Any], personas: list[dict[str, Any]],
                 profiles: dict[str, dict[str, Any]]) -> str:
    """Runs on a Ray worker: rebuild everything from plain data (the game's pre-play profiles, by key, in a
    cache of its own), play, return the record as JSON."""
    from contagion.experiment.trial import ProfileCache, run_trial

    spec = TrialSpec.model_validate_json(spec_json)
    persona_map = {p["name"]: Persona.model_validate(p) for p in personas}
    record = asyncio.run(run_trial(spec, labels=labels, personas=persona_map,
                                   profiles=ProfileCache.holding(profiles)))
    return record.model_dump_json()


class RayExecutor:
    def __init__(self, address: str | None) -> None:
        try:
            import ray
        except ImportError:
            raise MissingExtraError("the ray executor", "cluster", "ray") from None
        self.ray = ray
        self.started_here = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(include_dashboard=False, log_to_driver=False)
                self.started_here = True
        self.remote = ray.remote(num_cpus=1, max_retries=2)(_remote_game)

    async def run(self, jobs: Iterator[tuple[TrialSpec, dict[str, Any]]], personas: dict[str, Persona],
                  pre_for: Callable[[TrialSpec], dict[str, dict[str, Any]]],
                  finished: Callable[[GameRecord], None], stopping: Callable[[], bool]) -> None:
        persona_list = [p.model_dump() for p in personas.values()]
        limit = max(1, int(self.ray.cluster_resources().get("CPU", 1)) * 2)
        pending: list[Any] = []
        submitted: dict[Any, tuple[TrialSpec, dict[str, Any]]] = {}
        exhausted = False
        try:
            while not exhausted or pending:
                while not exhausted and len(pending) < limit and not stopping():
                    job = next(jobs, None)
                    if job is None:
                        exhausted = True
                        break
                    spec, labels = job
                    ref = self.remote.remote(spec.model_dump_json(), labels, persona_list, pre_for(spec))
                    pending.append(ref)
                    submitted[ref] = (spec, labels)
                if not pending:
                    break
                ready, pending = await asyncio.to_thread(self.ray.wait, pending, num_returns=1, timeout=1.0)
                for ref in ready:
                    spec, labels = submitted.pop(ref)
                    finished(self._result(ref, spec, labels))
        except asyncio.CancelledError:  # stop now: the games in flight are abandoned, not stored
            for ref in pending:
                self.ray.cancel(ref, force=True)
            raise

    def _result(self, ref: Any, spec: TrialSpec, labels: dict[str, Any]) -> GameRecord:
        """The game's record; a task Ray could not run (a worker died, ...) becomes a failed record."""
        try:
            return GameRecord.model_validate_json(self.ray.get(ref))
        except Exception as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, UserError):  # the user's problem, as in the local executor
                raise cause from None
            from contagion.experiment.trial import failed_record

            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return failed_record(spec, labels, f"ray: {detail}", 0.0)

    def shutdown(self) -> None:
        if self.started_here:
            self.ray.shutdown()
