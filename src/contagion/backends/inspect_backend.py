"""``inspect:PROVIDER/MODEL`` — any model Inspect AI can reach, through Inspect's model API (extra ``inspect``).

``inspect:openai/gpt-4o-mini``, ``inspect:anthropic/claude-…``, ``inspect:openai/MODEL?base_url=http://…/v1``:
everything after ``inspect:`` is Inspect's model name; ``?`` parameters are Inspect model arguments
(``base_url``, ``api_key`` is refused: keys come from the provider's usual environment variable), except
this backend's own ``top_logprobs`` (1..20, default 20) and ``samples`` (default 20). ``inspect:active``
is the model of the Inspect evaluation it runs in (the benchmark's Inspect task uses it).

Scoring follows the rule every backend shares (:mod:`contagion.backends.first_token`): one token at
temperature 0 with ``logprobs`` and ``top_logprobs``; each choice's log-prob is the log-sum of the
first-token candidates it owns; a choice no candidate owns is floored below the least likely one
(method ``first-token-top-logprobs``). Where the provider returns no logprobs the backend settles on a
sampled estimate — ``samples`` short answers at temperature 1, seeds 0..n−1 — labelled
``sampled-fallback`` in every score, as the OpenAI-compatible backend does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from contagion.backends.base import (
    Backend,
    Capabilities,
    ChoiceScore,
    Completion,
    GenerationConfig,
    ScoreMethod,
    Scores,
)
from contagion.backends.first_token import score_candidates
from contagion.backends.openai_compat import PREFIX_INSTRUCTION, _leading_choice
from contagion.errors import BackendError, BackendSpecError, MissingExtraError
from contagion.messages import Message

ACTIVE = "active"
"""``inspect:active``: the model of the running Inspect evaluation."""
_OWN = {"top_logprobs": 20, "samples": 20}


def _inspect() -> Any:
    try:
        import inspect_ai.model as model
    except ImportError:
        raise MissingExtraError("the inspect: backend", "inspect", "inspect-ai") from None
    return model


class InspectBackend(Backend):
    """A model behind Inspect AI's ``get_model``."""

    def __init__(self, name: str, params: dict[str, str], spec: str) -> None:
        self.spec = spec
        self.name = name
        if "api_key" in params:
            raise BackendSpecError("inspect: the API key comes from the provider's environment variable, "
                                   "never from the spec")
        own: dict[str, int] = {}
        for key, default in _OWN.items():
            raw = params.pop(key, None)
            try:
                own[key] = default if raw is None else int(raw)
            except ValueError:
                raise BackendSpecError(f"inspect: {key} must be an integer, not {raw!r}") from None
        if not 1 <= own["top_logprobs"] <= 20 or own["samples"] < 1:
            raise BackendSpecError("inspect: top_logprobs must be 1..20 and samples at least 1")
        self.top_logprobs, self.samples = own["top_logprobs"], own["samples"]
        self.model_args: dict[str, Any] = {k: _value(v) for k, v in params.items()}
        self._model: Any = None
        self._logprobs_missing: str | None = None
        self.capabilities = Capabilities(logprobs=True, score_method=ScoreMethod.FIRST_TOKEN)

    def _get(self) -> Any:
        if self.name == ACTIVE:  # asked each time: the evaluation running now decides
            return _inspect().get_model()
        if self._model is None:
            api = _inspect()
            base_url = self.model_args.get("base_url")
            args = {k: v for k, v in self.model_args.items() if k != "base_url"}
            self._model = api.get_model(self.name, base_url=base_url, memoize=False, **args)
        return self._model

    @staticmethod
    def _chat(messages: Sequence[Message]) -> list[Any]:
        api = _inspect()
        kinds = {"system": api.ChatMessageSystem, "user": api.ChatMessageUser,
                 "assistant": api.ChatMessageAssistant}
        return [kinds[m.role](content=m.content) for m in messages]

    async def _generate(self, chat: list[Any], **config: Any) -> Any:
        api = _inspect()
        output = await self._get().generate(chat, config=api.GenerateConfig(**config))
        if output.error:
            raise BackendError(f"{self.spec}: {output.error}", transient=True)
        return output

    async def generate(self, messages: Sequence[Message], config: GenerationConfig) -> Completion:
        started = time.perf_counter()
        args: dict[str, Any] = {"max_tokens": config.max_tokens, "temperature": config.temperature,
                                "top_p": config.top_p}
        if config.seed is not None:
            args["seed"] = config.seed
        if config.stop:
            args["stop_seqs"] = list(config.stop)
        out = await self._generate(self._chat(messages), **args)
        usage = out.usage
        return Completion(text=out.completion or "", prompt_tokens=usage.input_tokens if usage else 0,
                          completion_tokens=usage.output_tokens if usage else 0,
                          prompt_tokens_encoded=usage.input_tokens if usage else 0,
                          seconds=time.perf_counter() - started)

    def _with_prefix(self, messages: Sequence[Message], prefix: str) -> list[Message]:
        text = prefix.strip()
        if not text:
            return list(messages)
        out = list(messages)
        instruction = PREFIX_INSTRUCTION.format(prefix=text)
        for i in range(len(out) - 1, -1, -1):
            if out[i].role == "user":
                out[i] = out[i].model_copy(update={"content": out[i].content + instruction})
                return out
        return [*out, Message(role="user", content=instruction.lstrip())]

    async def score_choices(self, messages: Sequence[Message], choices: Sequence[str], *,
                            prefix: str = "") -> Scores:
        if not choices or any(not c.strip() for c in choices):
            raise ValueError("score_choices needs choices with non-space text")
        chat = self._chat(self._with_prefix(messages, prefix))
        started = time.perf_counter()
        if self._logprobs_missing is None:
            scores = await self._first_token(chat, choices)
            if scores is not None:
                scores.seconds = time.perf_counter() - started
                return scores
            self._logprobs_missing = "the provider returned no logprobs"
            self.capabilities = self.capabilities.model_copy(
                update={"logprobs": False, "score_method": ScoreMethod.SAMPLED})
        scores = await self._sampled(chat, choices, prefix)
        scores.seconds = time.perf_counter() - started
        return scores

    async def _first_token(self, chat: list[Any], choices: Sequence[str]) -> Scores | None:
        out = await self._generate(chat, max_tokens=1, temperature=0.0, seed=0, logprobs=True,
                                   top_logprobs=self.top_logprobs)
        lp = out.choices[0].logprobs if out.choices else None
        if lp is None or not lp.content:
            return None
        first = lp.content[0]
        pairs: dict[str, float] = {}
        for t in first.top_logprobs or []:
            pairs.setdefault(t.token, float(t.logprob))
        pairs.setdefault(first.token, float(first.logprob))
        candidates = list(pairs.items())
        # the computation every backend makes; a NaN, +inf or positive candidate makes the scores invalid
        logprobs, detail = score_candidates(candidates, choices)
        scored = [ChoiceScore(choice=c, logprob=v) for c, v in zip(choices, logprobs, strict=True)]
        usage = out.usage
        return Scores(choices=scored, method=ScoreMethod.FIRST_TOKEN,
                      prompt_tokens=usage.input_tokens if usage else 0,
                      prompt_tokens_encoded=usage.input_tokens if usage else 0,
                      detail={**detail, "via": "inspect"})

    async def _sampled(self, chat: list[Any], choices: Sequence[str], prefix: str) -> Scores:
        longest = max(len(prefix) + len(c) for c in choices)
        counts = [0] * len(choices)
        unmatched = 0
        for seed in range(self.samples):
            out = await self._generate(chat, max_tokens=min(64, 4 + longest // 2), temperature=1.0, seed=seed)
            index = _leading_choice(out.completion or "", choices, prefix)
            if index is None:
                unmatched += 1
            else:
                counts[index] += 1
        n, k = self.samples, len(choices)
        scored = [ChoiceScore(choice=c, logprob=math.log((counts[i] + 0.5) / (n + 0.5 * k)))
                  for i, c in enumerate(choices)]
        return Scores(choices=scored, method=ScoreMethod.SAMPLED,
                      detail={"reason": self._logprobs_missing, "samples": n, "unmatched": unmatched,
                              "counts": dict(zip(choices, counts, strict=True)), "via": "inspect",
                              "smoothing": "(count + 0.5) / (samples + 0.5 * choices)"})


def _value(text: str) -> Any:
    """A model argument from the spec's text: true/false, an integer, a number, else the text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def build_inspect(rest: str, params: dict[str, str], spec: str) -> InspectBackend:
    """The registry's factory for ``inspect:PROVIDER/MODEL`` (and ``inspect:active``)."""
    if rest != ACTIVE and "/" not in rest:
        raise BackendSpecError(f"backend spec {spec!r} must look like inspect:PROVIDER/MODEL (or inspect:active)")
    return InspectBackend(rest, dict(params), spec)
