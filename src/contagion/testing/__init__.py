"""Test helpers that run real components locally: a loopback OpenAI-compatible HTTP server with faults.

Used by the test suite (backends, runner fault tests) and by benchmarks; nothing here needs a network.
"""

from contagion.testing.loopback import (
    FAULT_KINDS,
    SERVER_FAULTS,
    FaultPlan,
    LoopbackServer,
    RawResponse,
    Responder,
    default_responder,
    default_top_logprobs,
    game_responder,
)

__all__ = [
    "FAULT_KINDS",
    "SERVER_FAULTS",
    "FaultPlan",
    "LoopbackServer",
    "RawResponse",
    "Responder",
    "default_responder",
    "default_top_logprobs",
    "game_responder",
]
