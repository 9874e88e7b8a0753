"""Scripted game players: deterministic strategies for controls and fast tests.

A scripted player is not a language model. It chooses its action from the observations it has been
shown (``Message.meta``, see :mod:`contagion.vocabulary`), never from hidden globals, and its
chat messages are fixed sentences. Its scores carry the method ``scripted``: log-prob 0 for the chosen
action and -inf for the other.

Strategies: ``always-cooperate``, ``always-defect``, ``tit-for-tat`` (cooperate first, then cooperate
when at least as many others cooperated as defected last round; with one other player this is
classic TFT),
``grim-trigger`` (cooperate until any other player defects once, then defect forever) and ``random``
(cooperate with probability ``p``, default 0.5, from a seeded generator keyed on the round:
``scripted:random?seed=3&p=0.3``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence

from contagion import vocabulary as P
from contagion.backends.base import (
    Backend,
    Capabilities,
    ChoiceScore,
    Completion,
    GenerationConfig,
    ScoreMethod,
    Scores,
)
from contagion.errors import BackendSpecError
from contagion.messages import Message

Strategy = Callable[[Sequence[Message], dict[str, str]], bool]  # -> cooperate?


def _observations(messages: Sequence[Message]) -> list[Message]:
    return P.all_of_kind(messages, P.OBSERVATION)


def _always_cooperate(messages: Sequence[Message], params: dict[str, str]) -> bool:
    return True


def _always_defect(messages: Sequence[Message], params: dict[str, str]) -> bool:
    return False


def _tit_for_tat(messages: Sequence[Message], params: dict[str, str]) -> bool:
    obs = _observations(messages)
    if not obs:
        return True
    last = obs[-1].meta
    return int(last.get("others_cooperated", 0)) >= int(last.get("others_defected", 0))


def _grim_trigger(messages: Sequence[Message], params: dict[str, str]) -> bool:
    return all(int(o.meta.get("others_defected", 0)) == 0 for o in _observations(messages))


def _random(messages: Sequence[Message], params: dict[str, str]) -> bool:
    seed = int(params.get("seed", "0"))
    p = float(params.get("p", "0.5"))
    round_no = len(_observations(messages)) + 1
    return random.Random(f"{seed}:{round_no}").random() < p


STRATEGIES: dict[str, Strategy] = {
    "always-cooperate": _always_cooperate,
    "always-defect": _always_defect,
    "tit-for-tat": _tit_for_tat,
    "grim-trigger": _grim_trigger,
    "random": _random,
}

_TALK = {
    True: "I will cooperate this round.",
    False: "I will look after my own interest this round.",
}


class ScriptedBackend(Backend):
    """A deterministic strategy that acts on the observations in its messages."""

    def __init__(self, strategy: str, params: dict[str, str] | None = None) -> None:
        if strategy not in STRATEGIES:
            raise BackendSpecError(
                f"unknown scripted strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}"
            )
        self.strategy = strategy
        self.params = dict(params or {})
        allowed = {"seed", "p"} if strategy == "random" else set()
        unknown = sorted(set(self.params) - allowed)
        if unknown:
            raise BackendSpecError(
                f"unknown option(s) {unknown} for scripted:{strategy}; "
                + (f"valid: {sorted(allowed)}" if allowed else "it takes none")
            )
        self._check_params(strategy)
        query = "&".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        self.spec = f"scripted:{strategy}" + (f"?{query}" if query else "")
        self.capabilities = Capabilities(
            language_model=False, logprobs=True, score_method=ScoreMethod.SCRIPTED, deterministic=True,
            strategy=strategy,
        )

    def _check_params(self, strategy: str) -> None:
        """Every option parses and is in range now, when the spec is built, not in the middle of a game."""
        if "p" in self.params:
            raw = self.params["p"]
            try:
                p = float(raw)
            except ValueError:
                p = math.nan
            if not 0.0 <= p <= 1.0:  # also refuses nan and inf
                raise BackendSpecError(
                    f"option p of scripted:{strategy} must be a probability between 0 and 1, got {raw!r}"
                )
        if "seed" in self.params:
            raw = self.params["seed"]
            try:
                seed = int(raw)
            except ValueError:
                raise BackendSpecError(f"option seed of scripted:{strategy} must be an integer, got {raw!r}") from None
            if not -(2**63) <= seed < 2**63:
                raise BackendSpecError(f"option seed of scripted:{strategy} must fit in 64 bits, got {raw!r}")

    def decide(self, messages: Sequence[Message]) -> bool:
        """Whether the strategy cooperates given what it has been shown."""
        return STRATEGIES[self.strategy](messages, self.params)

    async def generate(self, messages: Sequence[Message], config: GenerationConfig) -> Completion:
        started = time.perf_counter()
        text = _TALK[self.decide(messages)]
        return Completion(text=text, seconds=time.perf_counter() - started)

    async def score_choices(
        self, messages: Sequence[Message], choices: Sequence[str], *, prefix: str = ""
    ) -> Scores:
        act = P.last_of_kind(messages, P.ACT)
        if act is None:
            raise ValueError("a scripted player can only score game actions (no 'act' prompt in its messages)")
        coop_i, defect_i = P.choice_roles(act, choices)
        chosen = coop_i if self.decide(messages) else defect_i
        return Scores(
            choices=[
                ChoiceScore(choice=c, logprob=0.0 if i == chosen else -math.inf) for i, c in enumerate(choices)
            ],
            method=ScoreMethod.SCRIPTED,
        )


def build_scripted(rest: str, params: dict[str, str], spec: str) -> ScriptedBackend:
    """The registry's factory for ``scripted:STRATEGY``."""
    return ScriptedBackend(rest, params)
