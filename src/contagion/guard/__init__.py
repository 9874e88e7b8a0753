"""SIT for agents you build yourself: a framework-neutral guard and thin adapters for agent frameworks.

Steering with implicit traits needs only the agent's messages and a model that can answer yes/no
questions, so it fits any stack. Measure the agent's profile once, before it talks to anyone::

    from contagion.guard import SITGuard

    guard = SITGuard.from_system_prompt("openai:my-model@http://localhost:8000/v1", SYSTEM_PROMPT,
                                        schedule="sit:k=2,n=3")
    guard.save("negotiator.guard.json")          # later: SITGuard.load("negotiator.guard.json", backend)

then, right before each of the agent's model calls::

    messages = guard.steer(messages)             # or: await guard.asteer(messages)

``messages`` are OpenAI-style dicts (``{"role", "content"}``, or Responses API input items) or contagion
:class:`~contagion.messages.Message` objects. ``guard.log()`` / ``guard.log_json()`` say what was
decided on every turn and why. Schedules: ``sit:k=2,n=3`` (every k turns, n reminders) and
``sit-adaptive:m=1,threshold=0.05`` (probe held-out items every m turns, remind only on measured drift);
see :mod:`contagion.guard.core`. As in a game, a reminder stays in the conversation's later requests
(``persist=True``, the default); ``persist=False`` puts it in its own turn's request only.

Adapters (each imports its framework only when imported itself; install the extra named):

* :mod:`contagion.guard.langgraph` — ``pre_model_hook(guard)`` for ``create_react_agent`` or any graph
  node (``pip install 'contagion[langgraph]'``);
* :mod:`contagion.guard.autogen` — ``SITModelContext(guard)``, a model context for AutoGen AgentChat's
  ``AssistantAgent`` (``pip install 'contagion[autogen]'``);
* :mod:`contagion.guard.openai_agents` — ``sit_input_filter(guard)`` for the OpenAI Agents SDK's
  ``RunConfig(call_model_input_filter=...)`` (``pip install 'contagion[openai-agents]'``).
"""

from contagion.guard.core import (
    DEFAULT_PERSIST,
    DEFAULT_SCHEDULE,
    REMINDER_OPENING,
    GuardDecision,
    Placement,
    ProbeResult,
    SITGuard,
    apply,
    insert_position,
    parse_schedule,
    place,
)

__all__ = [
    "DEFAULT_PERSIST",
    "DEFAULT_SCHEDULE",
    "REMINDER_OPENING",
    "GuardDecision",
    "Placement",
    "ProbeResult",
    "SITGuard",
    "apply",
    "insert_position",
    "parse_schedule",
    "place",
]
