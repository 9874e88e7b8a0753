"""OpenAIBackend against a real HTTP server on loopback (contagion.testing.LoopbackServer)."""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from contagion.backends.base import GenerationConfig, ScoreMethod, run_sync
from contagion.backends.openai_compat import LOGPROB_PROBES, PREFIX_INSTRUCTION, OpenAIBackend
from contagion.backends.registry import build
from contagion.backends.robust import RobustBackend
from contagion.errors import BackendError, BackendSpecError, BackendUnavailableError
from contagion.messages import Message, assistant, system, user
from contagion.testing import FaultPlan, LoopbackServer, RawResponse, default_top_logprobs

SECRET = "sk-test-0123456789-secret"
QUESTION = [system("You are a helpful assistant."), user('Is this something you would say? "I am kind."')]


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CONTAGION_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return SECRET


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


def fixed_top(pairs: dict[str, float]) -> Any:
    """A responder whose first-token distribution is exactly ``pairs`` (token -> probability)."""
    top: list[dict[str, Any]] = [{"token": t, "logprob": math.log(p)} for t, p in pairs.items()]

    def respond(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        return str(top[0]["token"]), top

    return respond


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- generation ---------------------------------------------------------------------------------


async def test_generate_returns_text_tokens_and_sends_only_role_and_content(server: LoopbackServer) -> None:
    backend = OpenAIBackend("tiny", server.base_url)
    named = Message(role="user", content="Hello there friend", name="alice", meta={"kind": "talk"})
    config = GenerationConfig(max_tokens=5, temperature=0.0, seed=7, stop=("\n",))
    completion = await backend.generate([system("Be brief."), named], config)
    await backend.aclose()

    assert completion.text == "Yes, you said: Hello there"  # default responder, cut to 5 words
    assert completion.prompt_tokens == (2 + 4) + (3 + 4)  # loopback counts words + 4 per message
    assert completion.completion_tokens == 5
    assert completion.prompt_tokens_encoded == completion.prompt_tokens
    assert 0 < completion.seconds < 5
    assert not completion.cached
    (body,) = server.requests
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there friend"},
    ]
    assert body["model"] == "tiny"
    assert (body["max_tokens"], body["temperature"], body["seed"], body["stop"]) == (5, 0.0, 7, ["\n"])


async def test_generate_without_seed_or_stop_omits_them(server: LoopbackServer) -> None:
    backend = OpenAIBackend("tiny", server.base_url)
    await backend.generate([user("hi")], GenerationConfig(seed=None, temperature=0.5))
    await backend.aclose()
    assert "seed" not in server.requests[0]
    assert "stop" not in server.requests[0]


async def test_cached_prompt_tokens_reduce_encoded_count() -> None:
    def respond(body: dict[str, Any]) -> RawResponse:
        reply = {
            "choices": [{"message": {"role": "assistant", "content": "ok"}}],
            "usage": {
                "prompt_tokens": 50,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 32},
            },
        }
        import json

        return RawResponse(200, json.dumps(reply))

    with LoopbackServer(respond) as srv:
        backend = OpenAIBackend("m", srv.base_url)
        completion = await backend.generate([user("hi")], GenerationConfig())
        await backend.aclose()
    assert (completion.prompt_tokens, completion.prompt_tokens_encoded, completion.completion_tokens) == (
        50,
        18,
        1,
    )


# -- first-token scoring ------------------------------------------------------------------------


async def test_first_token_scores_sum_token_variants_and_floor_missing_choices() -> None:
    probs = {" Yes": 0.6, " No": 0.25, "Yes": 0.1, "no": 0.03, " Maybe": 0.02}
    with LoopbackServer(fixed_top(probs)) as srv:
        backend = OpenAIBackend("m", srv.base_url)
        scores = await backend.score_choices(QUESTION, [" Yes", " No", " Never"])
        await backend.aclose()
        body = srv.requests[0]

    assert scores.method is ScoreMethod.FIRST_TOKEN
    assert [c.choice for c in scores.choices] == [" Yes", " No", " Never"]
    assert scores.logprobs[0] == pytest.approx(math.log(0.7))  # " Yes" + "Yes"
    assert scores.logprobs[1] == pytest.approx(math.log(0.28))  # " No" + "no"
    assert scores.logprobs[2] == pytest.approx(math.log(0.02 / 2))  # floor: half the least likely
    assert scores.logprobs[2] < min(math.log(p) for p in probs.values())
    assert scores.detail["floored"] == [" Never"]
    assert sorted(scores.detail["matched"][" Yes"]) == [" Yes", "Yes"]
    assert scores.prompt_tokens > 0
    assert (body["max_tokens"], body["logprobs"], body["top_logprobs"], body["temperature"]) == (
        1,
        True,
        20,
        0,
    )
    assert body["messages"] == [m.wire() for m in QUESTION]  # no prefix, no instruction


async def test_first_token_scores_match_default_server_distribution(server: LoopbackServer) -> None:
    backend = OpenAIBackend("m", server.base_url)
    scores = await backend.score_choices(QUESTION, ["Yes", "No"])
    await backend.aclose()
    top = {t["token"]: math.exp(t["logprob"]) for t in default_top_logprobs(server.requests[0])}
    assert scores.logprobs[0] == pytest.approx(math.log(top[" Yes"] + top["Yes"]))
    assert scores.logprobs[1] == pytest.approx(math.log(top[" No"] + top["No"]))
    assert scores.best() == "Yes"
    assert scores.normalised()[0] > 0.6


async def test_unique_prefix_token_scores_multi_token_choice() -> None:
    with LoopbackServer(fixed_top({"Co": 0.7, "Def": 0.2, " C": 0.1})) as srv:
        backend = OpenAIBackend("m", srv.base_url)
        scores = await backend.score_choices([user("act")], ["Cooperate", "Defect", "Chicken"])
        await backend.aclose()
    # "Co" is a prefix of "Cooperate" only; " C" starts two choices, so it counts for none.
    assert scores.logprobs[0] == pytest.approx(math.log(0.7))
    assert scores.logprobs[1] == pytest.approx(math.log(0.2))
    assert scores.detail["floored"] == ["Chicken"]


async def test_prefix_becomes_instruction_on_last_user_message(server: LoopbackServer) -> None:
    backend = OpenAIBackend("m", server.base_url)
    messages = [system("sys"), user("first"), assistant("reply"), user("Would you lie?")]
    await backend.score_choices(messages, [" Yes", " No"], prefix="Answer: ")
    await backend.aclose()
    sent = server.requests[0]["messages"]
    assert sent[:3] == [m.wire() for m in messages[:3]]
    assert sent[3]["content"] == "Would you lie?" + PREFIX_INSTRUCTION.format(prefix="Answer:")


async def test_score_rejects_empty_choices(server: LoopbackServer) -> None:
    backend = OpenAIBackend("m", server.base_url)
    with pytest.raises(ValueError):
        await backend.score_choices(QUESTION, [])
    with pytest.raises(ValueError):
        await backend.score_choices(QUESTION, ["Yes", "  "])
    assert server.requests == []


# -- sampled fallback ---------------------------------------------------------------------------


def yes_for_low_seeds(body: dict[str, Any]) -> tuple[str, None]:
    """15 of seeds 0..19 answer Yes (in varied dress), 4 answer No, 1 answers something else."""
    seed = int(body["seed"])
    if seed < 15:
        return ("**Yes**, I would." if seed % 2 else " yes"), None
    return ("No." if seed < 19 else "Nobody knows"), None


async def test_sampled_fallback_when_server_sends_no_logprobs() -> None:
    with LoopbackServer(yes_for_low_seeds, logprobs=False) as srv:
        backend = OpenAIBackend("m", srv.base_url)
        assert backend.capabilities.score_method is ScoreMethod.FIRST_TOKEN
        scores = await backend.score_choices(QUESTION, [" Yes", " No"])
        await backend.aclose()
        requests = list(srv.requests)

    assert scores.method is ScoreMethod.SAMPLED
    assert scores.detail["counts"] == {" Yes": 15, " No": 4}
    assert scores.detail["unmatched"] == 1  # "Nobody" is not "No"
    assert scores.detail["reason"] == "the server returned no logprobs"
    assert scores.logprobs == pytest.approx([math.log(15.5 / 21), math.log(4.5 / 21)])
    # LOGPROB_PROBES logprobs requests (one reply without them could be a fault), then 20 samples at
    # temperature 1 with distinct seeds
    assert [r["logprobs"] for r in requests[:LOGPROB_PROBES]] == [True] * LOGPROB_PROBES
    samples = requests[LOGPROB_PROBES:]
    assert len(samples) == 20
    assert {r["temperature"] for r in samples} == {1.0}
    assert sorted(r["seed"] for r in samples) == list(range(20))
    assert all("logprobs" not in r for r in samples)
    # the backend now declares the fallback and stops asking for logprobs
    assert backend.capabilities.score_method is ScoreMethod.SAMPLED
    assert backend.capabilities.logprobs is False


async def test_logprobs_0_in_spec_goes_straight_to_labelled_sampling() -> None:
    with LoopbackServer(yes_for_low_seeds) as srv:
        backend = build(f"openai:m@{srv.base_url}?logprobs=0&samples=10")
        assert isinstance(backend, OpenAIBackend)
        assert backend.capabilities.score_method is ScoreMethod.SAMPLED
        assert not backend.capabilities.logprobs
        scores = await backend.score_choices(QUESTION, ["Yes", "No"], prefix="Answer:")
        await backend.aclose()
        assert len(srv.requests) == 10
        assert all("logprobs" not in r for r in srv.requests)
    assert scores.method is ScoreMethod.SAMPLED
    assert scores.detail["counts"] == {"Yes": 10, "No": 0}
    assert scores.detail["reason"] == "logprobs=0 in the backend spec"
    assert scores.logprobs[1] == pytest.approx(math.log(0.5 / 11))


async def test_sampled_fallback_strips_repeated_prefix() -> None:
    def respond(body: dict[str, Any]) -> tuple[str, None]:
        return "Answer: No, never.", None

    with LoopbackServer(respond, logprobs=False) as srv:
        backend = OpenAIBackend("m", srv.base_url, samples="4")
        scores = await backend.score_choices(QUESTION, ["Yes", "No"], prefix="Answer:")
        await backend.aclose()
    assert scores.detail["counts"] == {"Yes": 0, "No": 4}


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, status", [("500", 500), ("503", 503), ("429", 429)])
async def test_server_errors_are_transient(kind: str, status: int) -> None:
    with LoopbackServer(faults=FaultPlan(rate=0.0, sequence=(kind,))) as srv:
        backend = OpenAIBackend("m", srv.base_url)
        with pytest.raises(BackendError) as info:
            await backend.generate(QUESTION, GenerationConfig())
        # the next request is fine: the failure was transient indeed
        assert (await backend.generate(QUESTION, GenerationConfig())).text
        await backend.aclose()
    assert info.value.transient is True
    assert info.value.status == status


async def test_bad_request_is_not_transient_and_carries_server_message() -> None:
    def respond(body: dict[str, Any]) -> RawResponse:
        return RawResponse(400, '{"error": {"message": "top_logprobs is not supported"}}')

    with LoopbackServer(respond) as srv:
        backend = OpenAIBackend("m", srv.base_url)
        with pytest.raises(BackendError) as info:
            await backend.score_choices(QUESTION, ["Yes", "No"])
        await backend.aclose()
    assert info.value.transient is False
    assert info.value.status == 400
    assert "top_logprobs is not supported" in str(info.value)
    assert "logprobs=0" in str(info.value)  # names the fix


async def test_timeout_is_transient_and_fast() -> None:
    plan = FaultPlan(rate=0.0, sequence=("timeout",), hang_seconds=3.0)
    started = time.perf_counter()
    with LoopbackServer(faults=plan) as srv:
        backend = OpenAIBackend("m", srv.base_url, timeout="0.2")
        with pytest.raises(BackendError) as info:
            await backend.generate(QUESTION, GenerationConfig())
        await backend.aclose()
    assert info.value.transient is True
    assert "0.2 s" in str(info.value)
    assert time.perf_counter() - started < 2.0  # neither the client nor the server's exit waited 3 s


async def test_malformed_json_is_transient() -> None:
    with LoopbackServer(faults=FaultPlan(rate=0.0, sequence=("malformed",))) as srv:
        backend = OpenAIBackend("m", srv.base_url)
        with pytest.raises(BackendError) as info:
            await backend.generate(QUESTION, GenerationConfig())
        await backend.aclose()
    assert info.value.transient is True
    assert "not valid JSON" in str(info.value)


async def test_dropped_connection_is_transient() -> None:
    with LoopbackServer(faults=FaultPlan(rate=0.0, sequence=(None, "reset"))) as srv:
        backend = OpenAIBackend("m", srv.base_url)
        await backend.generate(QUESTION, GenerationConfig())
        with pytest.raises(BackendError) as info:
            await backend.generate(QUESTION, GenerationConfig())
        await backend.aclose()
    assert info.value.transient is True


@pytest.mark.parametrize(
    "body",
    ['{"object": "chat.completion"}', '{"choices": [{"text": "legacy"}]}', "[1, 2]"],
)
async def test_json_of_the_wrong_shape_is_not_transient(body: str) -> None:
    with LoopbackServer(lambda _: RawResponse(200, body)) as srv:
        backend = OpenAIBackend("m", srv.base_url)
        with pytest.raises(BackendError) as info:
            await backend.generate(QUESTION, GenerationConfig())
        await backend.aclose()
    assert info.value.transient is False


async def test_empty_choices_are_transient() -> None:
    with LoopbackServer(faults=FaultPlan(rate=0.0, sequence=("empty",))) as srv:
        backend = OpenAIBackend("m", srv.base_url)
        with pytest.raises(BackendError) as info:
            await backend.generate(QUESTION, GenerationConfig())
        assert (await backend.generate(QUESTION, GenerationConfig())).text  # the next one is fine
        await backend.aclose()
    assert info.value.transient is True
    assert "empty choices" in str(info.value)


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_client_errors_are_permanent(status: int) -> None:
    with LoopbackServer(lambda _: RawResponse(status, '{"error": {"message": "no"}}')) as srv:
        backend = OpenAIBackend("m", srv.base_url)
        with pytest.raises(BackendError) as info:
            await backend.generate(QUESTION, GenerationConfig())
        await backend.aclose()
    assert (info.value.transient, info.value.status) == (False, status)


@pytest.mark.parametrize("header, expected", [("7", 7.0), ("0.5", 0.5), ("soon", None)])
async def test_retry_after_is_read_from_the_reply(header: str, expected: float | None) -> None:
    def respond(body: dict[str, Any]) -> RawResponse:
        return RawResponse(429, '{"error": {"message": "slow down"}}', headers={"Retry-After": header})

    with LoopbackServer(respond) as srv:
        backend = OpenAIBackend("m", srv.base_url)
        with pytest.raises(BackendError) as info:
            await backend.generate(QUESTION, GenerationConfig())
        await backend.aclose()
    assert info.value.transient is True
    assert info.value.retry_after == expected


async def test_retry_after_as_an_http_date() -> None:
    import email.utils

    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    with LoopbackServer(lambda _: RawResponse(503, "{}", headers={"Retry-After": when})) as srv:
        backend = OpenAIBackend("m", srv.base_url)
        with pytest.raises(BackendError) as info:
            await backend.generate(QUESTION, GenerationConfig())
        await backend.aclose()
    assert info.value.retry_after is not None and 20 < info.value.retry_after <= 30


async def test_a_reply_that_loses_its_logprobs_is_a_transient_fault_not_a_new_method() -> None:
    # the first reply has logprobs; the second does not (a flaky proxy): the backend must not switch
    # to the sampled fallback for the rest of the process
    with LoopbackServer(faults=FaultPlan(rate=0.0, sequence=(None, "nologprobs"))) as srv:
        backend = OpenAIBackend("m", srv.base_url)
        first = await backend.score_choices(QUESTION, [" Yes", " No"])
        with pytest.raises(BackendError) as info:
            await backend.score_choices(QUESTION, [" Yes", " No"])
        assert info.value.transient is True and "without logprobs" in str(info.value)
        assert backend.capabilities.score_method is ScoreMethod.FIRST_TOKEN  # unchanged
        again = await backend.score_choices(QUESTION, [" Yes", " No"])
        await backend.aclose()
    assert first.method is again.method is ScoreMethod.FIRST_TOKEN
    assert first.logprobs == again.logprobs


async def test_one_reply_without_logprobs_at_first_contact_does_not_switch_the_method() -> None:
    with LoopbackServer(faults=FaultPlan(rate=0.0, sequence=("nologprobs",))) as srv:
        backend = OpenAIBackend("m", srv.base_url)
        scores = await backend.score_choices(QUESTION, [" Yes", " No"])
        await backend.aclose()
        assert len(srv.requests) == 2  # the probe was asked again, and had logprobs
    assert scores.method is ScoreMethod.FIRST_TOKEN
    assert backend.capabilities.score_method is ScoreMethod.FIRST_TOKEN


async def test_the_sampled_fallback_retries_each_request_through_faults() -> None:
    plan = FaultPlan(rate=0.25, kinds=("500", "503", "429", "malformed", "empty"), seed=4)
    with LoopbackServer(yes_for_low_seeds, faults=plan) as srv:
        inner = OpenAIBackend("m", srv.base_url, logprobs="0", sample_retries="8")
        backend = RobustBackend(inner, max_retries=0)  # no retry of the whole call: each sample retries
        scores = await backend.score_choices(QUESTION, [" Yes", " No"])
        await backend.aclose()
        faults = len(srv.fault_log)
    # the same counts as without faults: every sample was retried until it answered
    assert scores.method is ScoreMethod.SAMPLED
    assert scores.detail["counts"] == {" Yes": 15, " No": 4}
    assert faults > 0 and scores.detail["retries"] == faults
    assert backend.usage.retries == faults and backend.usage.failures == 0


async def test_a_permanent_error_in_the_sampled_fallback_is_raised_plainly() -> None:
    def respond(body: dict[str, Any]) -> Any:
        if int(body.get("seed", 0)) == 7:
            return RawResponse(400, '{"error": {"message": "seed 7 is cursed"}}')
        return yes_for_low_seeds(body)

    with LoopbackServer(respond) as srv:
        backend = OpenAIBackend("m", srv.base_url, logprobs="0")
        with pytest.raises(BackendError) as info:  # not an ExceptionGroup: one clear, classified error
            await backend.score_choices(QUESTION, [" Yes", " No"])
        await backend.aclose()
    assert info.value.transient is False and "seed 7 is cursed" in str(info.value)
    assert any("sampled-fallback requests failed" in note for note in info.value.__notes__)


async def test_unreachable_server_names_url_and_fix() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    backend = OpenAIBackend("m", url)
    with pytest.raises(BackendUnavailableError) as info:
        await backend.generate(QUESTION, GenerationConfig())
    await backend.aclose()
    message = str(info.value)
    assert url in message
    assert "is the server running?" in message
    assert "BASE_URL" in message
    assert SECRET not in message


async def test_server_gone_after_first_contact_is_transient() -> None:
    with LoopbackServer() as srv:
        backend = OpenAIBackend("m", srv.base_url)
        await backend.generate(QUESTION, GenerationConfig())
    with pytest.raises(BackendError) as info:  # the server may be restarting: retry, don't give up
        await backend.generate(QUESTION, GenerationConfig())
    await backend.aclose()
    assert info.value.transient is True


# -- API key and spec ---------------------------------------------------------------------------


async def test_api_key_is_sent_but_never_shown() -> None:
    def respond(body: dict[str, Any]) -> RawResponse:  # a server that echoes the key back
        return RawResponse(404, f'{{"error": {{"message": "model m not found for key {SECRET}"}}}}')

    with LoopbackServer(respond) as srv:
        backend = OpenAIBackend("m", srv.base_url)
        with pytest.raises(BackendError) as info:
            await backend.generate(QUESTION, GenerationConfig())
        await backend.aclose()
        headers = srv.headers[0]
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert "model m not found" in str(info.value)
    for text in (
        str(info.value),
        repr(info.value),
        backend.spec,
        backend.identity,
        repr(backend),
        str(vars(backend)),
    ):
        assert SECRET not in text


async def test_wrong_key_names_the_environment_variables() -> None:
    with LoopbackServer(api_key="the-right-key") as srv:
        backend = OpenAIBackend("m", srv.base_url)
        with pytest.raises(BackendError) as info:
            await backend.generate(QUESTION, GenerationConfig())
        await backend.aclose()
    assert info.value.status == 401
    assert info.value.transient is False
    assert "CONTAGION_API_KEY" in str(info.value)
    assert SECRET not in str(info.value)


async def test_openai_api_key_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONTAGION_API_KEY")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-other")
    with LoopbackServer(api_key="sk-other") as srv:
        backend = OpenAIBackend("m", srv.base_url)
        assert (await backend.generate(QUESTION, GenerationConfig())).text
        await backend.aclose()


def test_spec_identity_and_capabilities() -> None:
    backend = build("openai:qwen2.5-7b@http://localhost:8000/v1/?timeout=30")
    assert isinstance(backend, OpenAIBackend)
    assert backend.base_url == "http://localhost:8000/v1"
    assert backend.spec == "openai:qwen2.5-7b@http://localhost:8000/v1?timeout=30"
    assert backend.identity == "openai:qwen2.5-7b@http://localhost:8000/v1"  # transport settings left out
    assert build(backend.spec).spec == backend.spec  # the spec round-trips
    caps = backend.capabilities
    assert (caps.language_model, caps.logprobs, caps.prefix_caching, caps.deterministic) == (
        True,
        True,
        False,
        False,
    )
    assert caps.score_method is ScoreMethod.FIRST_TOKEN
    plain = OpenAIBackend("m", "http://h:1/v1")
    assert plain.spec == plain.identity == "openai:m@http://h:1/v1"
    assert (
        OpenAIBackend("m", "http://h:1/v1", logprobs="false").identity == "openai:m@http://h:1/v1?logprobs=0"
    )
    assert OpenAIBackend("m", "http://h:1/v1", samples="20", timeout=5).identity == "openai:m@http://h:1/v1"
    assert (
        OpenAIBackend("m", "http://h:1/v1", samples="8", timeout=5).spec
        == "openai:m@http://h:1/v1?samples=8&timeout=5"
    )


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("openai:m@http://h/v1?bogus=1", "timeout"),  # unknown option: lists the valid ones
        ("openai:m@http://h/v1?timeout=soon", "timeout"),
        ("openai:m@http://h/v1?timeout=inf", "timeout"),
        ("openai:m@http://h/v1?logprobs=maybe", "logprobs"),
        ("openai:m@http://h/v1?top_logprobs=50", "top_logprobs"),
        ("openai:m@http://h/v1?samples=0", "samples"),
        ("openai:m@localhost:8000", "http"),
    ],
)
def test_bad_specs_are_user_errors(spec: str, needle: str) -> None:
    with pytest.raises(BackendSpecError) as info:
        build(spec)
    assert needle in str(info.value)


def test_unknown_option_lists_valid_ones() -> None:
    with pytest.raises(BackendSpecError) as info:
        OpenAIBackend("m", "http://h/v1", api_key="x")
    assert "api_key" in str(info.value)
    assert all(k in str(info.value) for k in ("timeout", "logprobs", "samples", "top_logprobs"))


# -- event loops ---------------------------------------------------------------------------------


def test_usable_from_successive_event_loops(server: LoopbackServer) -> None:
    backend = OpenAIBackend("m", server.base_url)
    first = run_sync(backend.generate(QUESTION, GenerationConfig()))  # asyncio.run: loop 1, then closed
    second = run_sync(backend.generate(QUESTION, GenerationConfig()))  # loop 2
    third = asyncio.run(backend.score_choices(QUESTION, ["Yes", "No"]))
    run_sync(backend.aclose())
    assert first.text == second.text
    assert third.method is ScoreMethod.FIRST_TOKEN
    assert len(server.requests) == 3


async def test_usable_from_a_running_loop_and_run_sync_together(server: LoopbackServer) -> None:
    backend = OpenAIBackend("m", server.base_url)
    here = await backend.generate(QUESTION, GenerationConfig())
    # run_sync inside a running loop runs on contagion's private background loop: a second live loop
    there = run_sync(backend.generate(QUESTION, GenerationConfig()))
    # and a third loop in a worker thread
    elsewhere = await asyncio.to_thread(asyncio.run, backend.generate(QUESTION, GenerationConfig()))
    again = await backend.generate(QUESTION, GenerationConfig())
    await backend.aclose()  # closes this loop's client and the background loop's, on that loop
    assert here.text == there.text == elsewhere.text == again.text
    assert len(server.requests) == 4
