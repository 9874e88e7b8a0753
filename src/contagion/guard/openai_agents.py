"""The SIT guard in the OpenAI Agents SDK: a model-call input filter.

``Runner.run(agent, input, run_config=RunConfig(call_model_input_filter=sit_input_filter(guard)))`` runs
the guard right before each call of the model. One filter serves a run; with several agents in it
(handoffs), pass ``{agent name: guard}``: agents without a guard are left alone. A reminder is an input
item of the model call (``{"role": "system", "content": …}``; with ``persist=True`` it is put back at its
place in every later call of the run); the run's items are not changed.

Install with ``pip install 'contagion[openai-agents]'``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from contagion.errors import MissingExtraError
from contagion.guard.core import SITGuard

try:
    from agents.run_config import CallModelData, ModelInputData
except ImportError:  # pragma: no cover - depends on the environment
    raise MissingExtraError("contagion.guard.openai_agents", "openai-agents", "openai-agents") from None

__all__ = ["sit_input_filter"]


def sit_input_filter(
    guards: SITGuard | Mapping[str, SITGuard],
) -> Callable[[CallModelData[Any]], Awaitable[ModelInputData]]:
    """A ``call_model_input_filter`` steering one agent (a guard) or several (agent name → guard)."""

    def pick(data: CallModelData[Any]) -> SITGuard | None:
        if isinstance(guards, SITGuard):
            return guards
        return guards.get(data.agent.name)

    async def sit_filter(data: CallModelData[Any]) -> ModelInputData:
        guard = pick(data)
        if guard is None:
            return data.model_data
        steered = await guard.asteer(list(data.model_data.input))
        return ModelInputData(input=steered, instructions=data.model_data.instructions)  # type: ignore[arg-type]

    return sit_filter
