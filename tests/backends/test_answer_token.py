"""Scoring where the answer is (issue 27, item 2): ``answer-token-top-logprobs`` and ``score=auto``.

Against the loopback server answering in each emulated style with known probabilities: the answer-token
method finds the answer after reasoning or an opener and scores it as the first-token method scores a
first token; ``auto`` chooses from its probe and says which; the direct case keeps the first-token numbers
exactly."""

from __future__ import annotations

import math

import pytest

from contagion.backends.answer_token import locate_answer
from contagion.backends.base import ScoreMethod, run_sync
from contagion.backends.first_token import score_candidates
from contagion.backends.openai_compat import OpenAIBackend
from contagion.backends.probe import PROBES
from contagion.errors import BackendSpecError
from contagion.messages import user
from contagion.testing.loopback import LoopbackServer, Reply, Token
from contagion.testing.styles import STYLES, StyleResponder, label_probability, yes_probability

STATEMENTS = ("I enjoy making other people happy.", "Winning matters more to me than being fair.",
              "I keep my promises.")


def question(statement: str, order: str = "Yes or No") -> list:  # type: ignore[type-arg]
    return [user(f'Is the following statement something you would say?\n"{statement}"\nAnswer {order}.')]


def p_yes(backend: OpenAIBackend, statement: str, order: str = "Yes or No") -> tuple[float, object]:
    scores = run_sync(backend.score_choices(question(statement, order), ["Yes", "No"]))
    return scores.normalised()[0], scores


def test_locate_answer_skips_reasoning_and_openers() -> None:
    yes_no = [(" Yes", -0.1), (" No", -2.3)]
    tokens = [("<think>", []), ("\nyes", []), (" or", []), (" no", []), ("</think>", []), ("\n\n", []),
              ("**", []), ("Yes", yes_no), ("**", [])]
    found = locate_answer(tokens, ["Yes", "No"])
    assert found.index == 7  # not the "yes"/"no" inside the reasoning, not the markdown
    assert locate_answer([(" I", []), (" would", []), (" say", []), (":", []), (" No", yes_no)],
                         ["Yes", "No"]).index == 4
    assert locate_answer([(" Yes", yes_no)], ["Yes", "No"]).index == 0
    # multi-token action names: a proper prefix of exactly one choice owns it ("co" for cooperate)
    assert locate_answer([("I", []), (" pick", []), (" co", []), ("operate", [])],
                         ["cooperate", "defect"]).index == 2


def test_locate_answer_finds_nothing_where_there_is_no_answer() -> None:
    unclosed = locate_answer([("<think>", []), (" yes", [])], ["Yes", "No"])
    assert unclosed.index is None and "did not end" in unclosed.reason
    none = locate_answer([(" Maybe", []), (".", [])], ["Yes", "No"])
    assert none.index is None and "owns a choice" in none.reason
    # reasoning in a field and an empty content: the answer was never written
    assert locate_answer([], ["Yes", "No"], content="", reasoning="thinking").index is None


def test_locate_answer_with_content_only_logprobs() -> None:
    # reasoning moved to a field and logprobs of the content tokens only: the answer starts at content
    found = locate_answer([("\n\n", []), (" No", [])], ["Yes", "No"], content="No", reasoning="yes? no?")
    assert found.index == 1


@pytest.mark.parametrize("style", [s for s in STYLES if s != "no-logprobs"])
def test_answer_token_scores_every_style_at_its_known_probability(style: str) -> None:
    with LoopbackServer(StyleResponder(style)) as server:
        backend = OpenAIBackend("m", server.base_url, score="answer-token")
        for statement in STATEMENTS:
            for order in ("Yes or No", "No or Yes"):
                p, scores = p_yes(backend, statement, order)
                assert scores.method == ScoreMethod.ANSWER_TOKEN  # type: ignore[attr-defined]
                assert abs(p - yes_probability(statement)) < 1e-9, (style, statement)
                mass = sum(math.exp(c.logprob) for c in scores.choices)  # type: ignore[attr-defined]
                assert mass == pytest.approx(0.97)
        requests = list(server.requests)
        run_sync(backend.aclose())
    assert all(r["max_tokens"] == 1024 and r["logprobs"] and r["temperature"] == 0 for r in requests)
    assert len(requests) == 2 * len(STATEMENTS)  # one generation per score


@pytest.mark.parametrize("style", ["markdown", "words", "inline-reasoning", "field-reasoning"])
def test_first_token_scoring_misreads_these_styles(style: str) -> None:
    """Why the method exists: the first token holds the answers with a small share (and, in the emulation,
    the opposite preference) or not at all."""
    with LoopbackServer(StyleResponder(style)) as server:
        backend = OpenAIBackend("m", server.base_url)
        p, scores = p_yes(backend, STATEMENTS[0])
        run_sync(backend.aclose())
    mass = sum(math.exp(c.logprob) for c in scores.choices if math.isfinite(c.logprob))  # type: ignore[attr-defined]
    assert abs(p - yes_probability(STATEMENTS[0])) > 0.1 or scores.detail["floored"]  # type: ignore[attr-defined]
    assert mass < 0.15


def test_the_direct_case_keeps_the_first_token_numbers_exactly() -> None:
    with LoopbackServer(StyleResponder("direct")) as server:
        first = OpenAIBackend("m", server.base_url)
        answer = OpenAIBackend("m", server.base_url, score="answer-token")
        auto = OpenAIBackend("m", server.base_url, score="auto")
        for statement in STATEMENTS:
            a = run_sync(first.score_choices(question(statement), ["Yes", "No"]))
            b = run_sync(answer.score_choices(question(statement), ["Yes", "No"]))
            c = run_sync(auto.score_choices(question(statement), ["Yes", "No"]))
            assert a.logprobs == b.logprobs == c.logprobs  # to the last digit
            assert b.detail["position"] == 0
            assert a.method == c.method == ScoreMethod.FIRST_TOKEN and b.method == ScoreMethod.ANSWER_TOKEN
        for backend in (first, answer, auto):
            run_sync(backend.aclose())
    assert auto.auto_probe is not None and auto.auto_probe["chose"] == ScoreMethod.FIRST_TOKEN.value
    assert auto.auto_probe["mass"] == pytest.approx(0.97)


@pytest.mark.parametrize("style,chosen", [("direct", ScoreMethod.FIRST_TOKEN), ("markdown", ScoreMethod.ANSWER_TOKEN),
                                          ("words", ScoreMethod.ANSWER_TOKEN),
                                          ("inline-reasoning", ScoreMethod.ANSWER_TOKEN),
                                          ("field-reasoning", ScoreMethod.ANSWER_TOKEN),
                                          ("no-logprobs", ScoreMethod.SAMPLED)])
def test_auto_probes_once_and_records_its_choice(style: str, chosen: ScoreMethod) -> None:
    with LoopbackServer(StyleResponder(style), logprobs=style != "no-logprobs") as server:
        backend = OpenAIBackend("m", server.base_url, score="auto", samples=64)
        scores = [p_yes(backend, s) for s in STATEMENTS]
        asked = [[m.wire() for m in probe.messages] for probe in PROBES]
        probes = [r for r in server.requests if r["messages"] in asked]
        run_sync(backend.aclose())
    assert len(probes) == len(PROBES)  # the probe runs once per backend, not per call
    assert backend.auto_probe is not None and backend.auto_probe["chose"] == chosen.value
    assert backend.capabilities.score_method == chosen
    for statement, (p, s) in zip(STATEMENTS, scores, strict=True):
        assert s.method == chosen  # type: ignore[attr-defined]
        assert abs(p - yes_probability(statement)) < 0.02, (style, statement, p)


def test_field_reasoning_with_content_only_logprobs_and_the_reasoning_field_name() -> None:
    responder = StyleResponder("field-reasoning", logprobs_cover="content", reasoning_field="reasoning")
    with LoopbackServer(responder) as server:
        backend = OpenAIBackend("m", server.base_url, score="auto")
        p, scores = p_yes(backend, STATEMENTS[1])
        run_sync(backend.aclose())
    assert scores.method == ScoreMethod.ANSWER_TOKEN  # type: ignore[attr-defined]
    assert abs(p - yes_probability(STATEMENTS[1])) < 1e-9
    assert "PRIVATE-REASONING" in scores.detail["reasoning"]  # type: ignore[attr-defined]


def test_actions_are_scored_at_the_answer_too() -> None:
    prompt = [user("Round 1: choose your action. Reply with one word: 'swerve' or 'straight'.")]
    with LoopbackServer(StyleResponder("inline-reasoning")) as server:
        backend = OpenAIBackend("m", server.base_url, score="answer-token")
        scores = run_sync(backend.score_choices(prompt, ["swerve", "straight"]))
        run_sync(backend.aclose())
    assert scores.normalised()[0] == pytest.approx(label_probability("swerve", "straight"))


def test_a_reply_that_never_answers_scores_nothing() -> None:
    def thinker(body: dict) -> Reply:  # type: ignore[type-arg]
        think = Token("<think>", ({"token": "<think>", "logprob": 0.0},))
        more = Token(" yes", ({"token": " yes", "logprob": 0.0},))
        return Reply(tokens=(think, *[more] * 50))

    with LoopbackServer(thinker) as server:
        backend = OpenAIBackend("m", server.base_url, score="answer-token", answer_tokens=20)
        scores = run_sync(backend.score_choices(question(STATEMENTS[0]), ["Yes", "No"]))
        run_sync(backend.aclose())
        assert server.requests[0]["max_tokens"] == 20
    assert scores.logprobs == [-math.inf, -math.inf]
    assert scores.detail["floored"] == ["Yes", "No"] and "did not end" in scores.detail["no_answer"]


def test_the_answer_position_is_scored_as_a_first_token_is() -> None:
    top = [{"token": " Yes", "logprob": math.log(0.3)}, {"token": "yes", "logprob": math.log(0.1)},
           {"token": " Maybe", "logprob": math.log(0.2)}]

    def opener(body: dict) -> Reply:  # type: ignore[type-arg]
        return Reply(tokens=(Token("**", ({"token": "**", "logprob": 0.0},)), Token(" Yes", tuple(top))))

    with LoopbackServer(opener) as server:
        backend = OpenAIBackend("m", server.base_url, score="answer-token")
        scores = run_sync(backend.score_choices(question(STATEMENTS[0]), ["Yes", "No"]))
        run_sync(backend.aclose())
    expected, detail = score_candidates([(t["token"], t["logprob"]) for t in top], ["Yes", "No"])
    assert scores.logprobs == expected and scores.detail["floored"] == detail["floored"] == ["No"]


def test_score_options_are_checked_and_part_of_the_identity() -> None:
    with pytest.raises(BackendSpecError, match="score"):
        OpenAIBackend("m", "http://127.0.0.1:9/v1", score="middle-token")
    with pytest.raises(BackendSpecError, match="answer_tokens"):
        OpenAIBackend("m", "http://127.0.0.1:9/v1", answer_tokens="0")
    plain = OpenAIBackend("m", "http://127.0.0.1:9/v1")
    auto = OpenAIBackend("m", "http://127.0.0.1:9/v1", score="auto")
    explicit = OpenAIBackend("m", "http://127.0.0.1:9/v1", score="first-token")
    assert plain.identity == explicit.identity == "openai:m@http://127.0.0.1:9/v1"
    assert auto.identity == "openai:m@http://127.0.0.1:9/v1?score=auto"
    assert OpenAIBackend("m", "http://127.0.0.1:9/v1", score="answer-token", answer_tokens="64").identity.endswith(
        "?score=answer-token&answer_tokens=64")
