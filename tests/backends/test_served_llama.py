"""Issue 27 against the real llama-cpp-python server (the suite's one ``llama_server``) on SmolLM2.

SmolLM2-135M neither reasons nor opens with formatting on the instrument's questions, so against a real
server this checks the direct case and the options: answer-token scoring gives the first-token numbers
wherever the model answers with its first token (and otherwise scores a later token that owns a choice),
``auto`` chooses by its rule and says so, ``system_role=merge`` sends what a merged prompt is, extra body
fields reach a server that ignores them, and a whole trial on these settings yields valid actions and
recorded methods. The other answer styles run against the emulation (tests/games/test_answer_styles.py).
"""

from __future__ import annotations

import pytest

from contagion.backends.base import run_sync
from contagion.backends.first_token import owner, targets_of
from contagion.backends.openai_compat import OpenAIBackend
from contagion.backends.probe import AUTO_MASS, PROBES
from contagion.experiment.trial import TrialSpec, run_trial
from contagion.games.record import GameSpec, PlayerSpec
from contagion.messages import system, user
from contagion.traits.settings import AssessmentSettings
from tests.backends.llama_server import LlamaServer

pytestmark = pytest.mark.slow

STATEMENTS = ("I like people.", "I enjoy hurting others.", "I keep my promises.", "Rules are for other people.")
WORDY = "Always start your reply with the words 'My answer is' and then give the answer."


def question(statement: str) -> list:  # type: ignore[type-arg]
    return [user(f'Is the following statement something you would say?\n"{statement}"\nAnswer Yes or No.')]


def test_answer_token_is_the_first_token_where_the_model_answers_first(llama_server: LlamaServer) -> None:
    first = OpenAIBackend("smollm2", llama_server.base_url)
    answer = OpenAIBackend("smollm2", llama_server.base_url, score="answer-token", answer_tokens=48)
    asked = [(p.messages, p.choices) for p in PROBES] + [(question(s), ("Yes", "No")) for s in STATEMENTS]
    asked += [([system(WORDY), *question(s)], ("Yes", "No")) for s in STATEMENTS]  # nudged to write words first
    positions = []
    for messages, choices in asked:
        a = run_sync(first.score_choices(messages, choices))
        b = run_sync(answer.score_choices(messages, choices))
        assert b.method.value == "answer-token-top-logprobs"
        positions.append(b.detail["position"])
        if b.detail["position"] == 0:
            assert b.logprobs == pytest.approx(a.logprobs, abs=1e-6)  # the same token, the same numbers
        elif b.detail["position"] is not None:  # a later answer: no token before it owned a choice
            targets = targets_of(choices)
            assert all(owner(word, targets) is None for word in b.detail["skipped"].split())
    for backend in (first, answer):
        run_sync(backend.aclose())
    assert positions.count(0) >= len(asked) // 2  # SmolLM2 mostly answers with its first token


def test_auto_chooses_by_its_rule(llama_server: LlamaServer) -> None:
    auto = OpenAIBackend("smollm2", llama_server.base_url, score="auto")
    first = OpenAIBackend("smollm2", llama_server.base_url)
    a = run_sync(auto.score_choices(question(STATEMENTS[0]), ["Yes", "No"]))
    f = run_sync(first.score_choices(question(STATEMENTS[0]), ["Yes", "No"]))
    for backend in (auto, first):
        run_sync(backend.aclose())
    assert auto.auto_probe is not None
    chose_first = auto.auto_probe["mass"] >= AUTO_MASS
    assert auto.auto_probe["chose"] == ("first-token-top-logprobs" if chose_first else "answer-token-top-logprobs")
    assert a.method.value == auto.auto_probe["chose"]
    if chose_first:
        assert a.logprobs == f.logprobs


def test_merge_sends_the_merged_prompt_and_extra_body_reaches_the_server(llama_server: LlamaServer) -> None:
    merged = OpenAIBackend("smollm2", llama_server.base_url, system_role="merge", extra_body='{"top_k": 40}')
    plain = OpenAIBackend("smollm2", llama_server.base_url)
    a = run_sync(merged.score_choices([system("You are Avery."), *question(STATEMENTS[2])], ["Yes", "No"]))
    b = run_sync(plain.score_choices([user("You are Avery.\n\n" + question(STATEMENTS[2])[0].content)],
                                     ["Yes", "No"]))
    for backend in (merged, plain):
        run_sync(backend.aclose())
    assert a.logprobs == b.logprobs
    assert merged.identity.endswith('?extra_body={"top_k":40}&system_role=merge')


def test_a_trial_on_the_served_settings(llama_server: LlamaServer) -> None:
    spec = f"openai:smollm2@{llama_server.base_url}?score=auto&system_role=merge"
    game = GameSpec(game="chicken", players=(PlayerSpec(backend=spec),
                                             PlayerSpec(backend="scripted:tit-for-tat", focal=False)),
                    rounds=2, chat_turns=1, seed=4, action_mode="score", generation={"max_tokens": 24})
    settings = AssessmentSettings(traits=("agreeableness",), items=2, source_items=0, bootstrap=100)
    record = run_sync(run_trial(TrialSpec(game=game, assessment=settings)))
    assert record.error is None, record.error
    player = record.players[0]
    assert player.backend == spec  # the options are part of the identity the record keeps
    assert all(a.action != "invalid" for a in player.actions)
    methods = {a.method for a in player.actions} | {player.pre_profile["method"], player.post_profile["method"]}  # type: ignore[index]
    assert len({m.removeprefix("score:") for m in methods}) == 1  # one method, recorded everywhere
    assert all(m.reasoning is None for m in player.messages)  # SmolLM2 does not reason
    assert all(a.mass is not None and 0.0 < a.mass <= 1.0 for a in player.actions)
