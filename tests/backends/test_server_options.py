"""Server options (issue 27, item 4): ``extra_body`` reaches the server with every request, ``system_role``
serves templates without a system role, both are checked and part of the backend's identity."""

from __future__ import annotations

import math

import pytest

from contagion.backends.base import GenerationConfig, run_sync
from contagion.backends.openai_compat import OpenAIBackend
from contagion.backends.registry import build
from contagion.backends.server_options import apply_system_role, parse_extra_body, with_options
from contagion.errors import BackendError, BackendSpecError
from contagion.messages import system, user
from contagion.testing.loopback import LoopbackServer
from contagion.testing.styles import StyleResponder, yes_probability

QUESTION = 'Is the following statement something you would say?\n"I keep my promises."\nAnswer Yes or No.'
NO_THINKING = '{"chat_template_kwargs": {"enable_thinking": false}}'


def test_extra_body_is_sent_with_every_request_and_cannot_override_the_method() -> None:
    with LoopbackServer(StyleResponder("inline-reasoning")) as server:
        backend = OpenAIBackend("qwen3", server.base_url, extra_body=NO_THINKING)
        scores = run_sync(backend.score_choices([user(QUESTION)], ["Yes", "No"]))
        reply = run_sync(backend.generate([user("Round 1, discussion. Write one short message.")],
                                          GenerationConfig(max_tokens=40)))
        run_sync(backend.aclose())
        bodies = list(server.requests)
    assert all(b["chat_template_kwargs"] == {"enable_thinking": False} for b in bodies)
    assert bodies[0]["max_tokens"] == 1 and bodies[0]["logprobs"] is True  # the method's fields are its own
    # the emulated Qwen3 template honours it: no thinking, so the first token is the answer again
    assert scores.normalised()[0] == pytest.approx(yes_probability("I keep my promises."))
    assert reply.reasoning is None


@pytest.mark.parametrize("text,needle", [("{not json", "must be a JSON object"), ("[1, 2]", "not list"),
                                         ('{"max_tokens": 5}', "may not set max_tokens"),
                                         ('{"logprobs": false, "top_k": 1}', "may not set logprobs")])
def test_malformed_extra_body_is_refused(text: str, needle: str) -> None:
    with pytest.raises(BackendSpecError, match=needle):
        OpenAIBackend("m", "http://127.0.0.1:9/v1", extra_body=text)


def test_system_role_rewrites() -> None:
    wired = [m.wire() for m in (system("rules"), user("q1"), system("reminder"), user("q2"))]
    assert apply_system_role(wired, "system") == wired
    assert [m["role"] for m in apply_system_role(wired, "user")] == ["user"] * 4
    assert apply_system_role(wired, "merge") == [{"role": "user", "content": "rules\n\nq1"},
                                                 {"role": "user", "content": "reminder\n\nq2"}]
    assert apply_system_role([{"role": "system", "content": "alone"}], "merge") == [{"role": "user",
                                                                                      "content": "alone"}]
    with pytest.raises(BackendSpecError, match="system_role"):
        OpenAIBackend("m", "http://127.0.0.1:9/v1", system_role="developer")


def test_a_template_without_a_system_role_is_served_by_merge() -> None:
    messages = [system("You are Avery."), user(QUESTION)]
    with LoopbackServer(StyleResponder("direct", system_role=False)) as server:
        plain = OpenAIBackend("gemma", server.base_url)
        with pytest.raises(BackendError, match="System role not supported"):
            run_sync(plain.score_choices(messages, ["Yes", "No"]))
        merged = OpenAIBackend("gemma", server.base_url, system_role="merge")
        scores = run_sync(merged.score_choices(messages, ["Yes", "No"]))
        for backend in (plain, merged):
            run_sync(backend.aclose())
        sent = server.requests[-1]["messages"]
    assert sent == [{"role": "user", "content": "You are Avery.\n\n" + QUESTION}]
    assert math.isfinite(scores.logprobs[0])


def test_both_are_part_of_the_identity_in_one_spelling() -> None:
    base = "openai:m@http://127.0.0.1:9/v1"
    a = build(with_options(base, {"extra_body": {"b": 1, "a": [True, None]}, "system_role": "merge"}))
    b = build(base + '?system_role=merge&extra_body={"a": [true, null],  "b": 1}')
    assert a.identity == b.identity == base + '?extra_body={"a":[true,null],"b":1}&system_role=merge'
    assert build(base + "?system_role=system").identity == base  # the default is no option at all
    assert build(a.identity).identity == a.identity  # an identity is itself a spec that builds the same
    assert parse_extra_body('{"x": "a&b=c#d"}') == build(with_options(base, {"extra_body": {"x": "a&b=c#d"}})
                                                         ).extra_body  # type: ignore[attr-defined]
