"""Test helpers that run real components locally: a loopback OpenAI-compatible HTTP server with faults,
and the answer styles of served models (:mod:`contagion.testing.styles`) with known probabilities.

Used by the test suite (backends, runner fault tests) and by benchmarks; nothing here needs a network.
"""

from contagion.testing.loopback import (
    FAULT_KINDS,
    SERVER_FAULTS,
    FaultPlan,
    LoopbackServer,
    RawResponse,
    Reply,
    Responder,
    Token,
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
    "Reply",
    "Responder",
    "Token",
    "default_responder",
    "default_top_logprobs",
    "game_responder",
]
