"""What a grid will cost: requests, tokens and wall time, counted by playing its games dry.

:func:`estimate_grid` expands a config (or the benchmark's blocks), and plays one game of every distinct
shape — game, seating, rounds, chat turns and action mode — with :class:`DryModel` in every language-model
seat: a stand-in that answers instantly with a reply of the expected length and counts what it was sent.
The game's own engine makes the requests, so the count follows the engine (talk turns, act prompts,
re-asks) rather than a formula kept beside it. Trait profiles are counted from the assessment settings:
the items (and SIT's source items, in both answer orders when debiased) after each pre-play context (one
per distinct system prompt, as the runner measures them) and after each focal agent's final history — twice
with the sham baseline on (``sham``), whose neutral history is as long as the game's.

Not counted: the interventions' own messages and probes (SIT's reminders lengthen histories a little;
``sit-adaptive`` scores a few probe items per turn), the secondary post-play profile with injections in
view (agents that received injections), retries, and the ``auto`` probe (three short requests
per model).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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
from contagion.backends.registry import kind_of, resolve
from contagion.experiment.config import ExperimentConfig
from contagion.experiment.trial import needed_profiles
from contagion.games.engine import GameEngine
from contagion.messages import Message
from contagion.traits.assess import question_text

MESSAGE_OVERHEAD = 4
"""Template tokens per message (role markers), added to each message's text."""


class DryModel(Backend):
    """A stand-in model for counting a game's requests: replies of ``talk_tokens`` words, a cooperative
    lean on actions; it measures nothing and is never used to play a game that is kept."""

    def __init__(self, talk_tokens: int, chars_per_token: float) -> None:
        self.spec = "dry"
        self.capabilities = Capabilities(language_model=True, local=True, score_method=ScoreMethod.FIRST_TOKEN)
        self.talk_tokens = talk_tokens
        self.chars_per_token = chars_per_token
        self.generations = 0
        self.generated = 0
        self.scores = 0
        self.generation_prompt = 0.0
        self.score_prompt = 0.0

    def tokens(self, messages: Sequence[Message]) -> float:
        return sum(len(m.content) / self.chars_per_token + MESSAGE_OVERHEAD for m in messages)

    async def generate(self, messages: Sequence[Message], config: GenerationConfig) -> Completion:
        self.generations += 1
        self.generation_prompt += self.tokens(messages)
        words = max(1, min(self.talk_tokens, config.max_tokens))
        self.generated += words
        return Completion(text=" ".join(["word"] * words))

    async def score_choices(self, messages: Sequence[Message], choices: Sequence[str], *, prefix: str = ""
                            ) -> Scores:
        self.scores += 1
        self.score_prompt += self.tokens(messages)
        lps = [-0.5] + [-1.0] * (len(choices) - 1)
        return Scores(choices=[ChoiceScore(choice=c, logprob=lp) for c, lp in zip(choices, lps, strict=True)],
                      method=ScoreMethod.FIRST_TOKEN)


@dataclass
class Estimate:
    """What a grid asks of one model, and how long that takes at a measured pace."""

    games: int = 0
    generations: int = 0
    """Generated replies (talk, generated actions)."""
    scores: int = 0
    """Scoring calls (actions, trait items)."""
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    notes: list[str] = field(default_factory=list)

    samples: int = 0
    """Sampled answers per score where the server has no logprobs (each one a request); 0 with logprobs."""

    @property
    def requests(self) -> int:
        return self.generations + self.scores * max(1, self.samples)

    def seconds(self, score_seconds: float, generation_seconds: float, in_flight: int) -> float:
        """Wall time when a scoring call takes ``score_seconds`` at the measured pace (``in_flight`` at once,
        the overlap included) and a generation ``generation_seconds`` alone."""
        return self.scores * score_seconds + self.generations * generation_seconds / max(1, in_flight)

    def as_dict(self) -> dict[str, Any]:
        return {"games": self.games, "requests": self.requests, "generations": self.generations,
                "scores": self.scores, "samples": self.samples, "prompt_tokens": round(self.prompt_tokens),
                "completion_tokens": round(self.completion_tokens)}


def _shape(spec: Any) -> tuple[Any, ...]:
    game = spec.game
    return (game.game, tuple((p.backend, p.persona, p.focal) for p in game.players), game.rounds, game.chat_turns,
            game.action_mode, game.reveal_horizon, game.framing)


async def estimate_grid(configs: Iterable[ExperimentConfig], *, talk_tokens: int, chars_per_token: float = 4.0,
                        score_completion_tokens: float = 1.0, samples: int = 0) -> Estimate:
    """Requests and tokens of every game of ``configs`` (see the module docstring).

    ``score_completion_tokens`` is what one scoring call generates (1 at the first token; the mean generation
    of an answer-token score). With ``samples`` > 0 (a server without logprobs) every scoring call is that
    many short generated answers instead, each resending the prompt.
    """
    out = Estimate()
    score_prompt = 0.0  # prompt tokens of the scoring calls, kept apart: the sampled fallback resends them
    for config in configs:
        settings = config.assessment
        sample = settings.inventory_sample() if config.measure_traits else None
        source = settings.inventory_source() if config.measure_traits else None
        orders = 2 if settings.debias else 1
        calls = ((len(sample.items) if sample else 0) + (len(source.items) if source else 0)) * orders
        asked = sample.items if sample else []
        question = sum(len(question_text(it.statement)) for it in asked) / max(1, len(asked)) / chars_per_token
        shapes: dict[tuple[Any, ...], list[Any]] = {}
        pre_keys: dict[str, Message] = {}
        for spec, _labels in config.expand():
            shapes.setdefault(_shape(spec), []).append(spec)
            if config.measure_traits:
                for request in needed_profiles(spec, config.persona_map()):
                    pre_keys.setdefault(request.key, request.system)
        for specs in shapes.values():
            spec, n = specs[0], len(specs)
            model = DryModel(talk_tokens, chars_per_token)
            backends = [model if kind_of(p.backend).language_model else resolve(p.backend) for p in spec.game.players]
            engine = GameEngine(spec.game, backends=backends, personas=config.persona_map())
            await engine.play()
            out.games += n
            out.generations += model.generations * n
            out.scores += model.scores * n
            out.prompt_tokens += model.generation_prompt * n
            score_prompt += model.score_prompt * n
            out.completion_tokens += model.generated * n + model.scores * score_completion_tokens * n
            if config.measure_traits:
                focal = [i for i, p in enumerate(spec.game.players) if p.focal and kind_of(p.backend).language_model]
                # the post-play profile after the agent's whole history and, with the sham baseline, the same
                # items after a neutral history of the same length (in characters)
                times = 2 if config.sham else 1
                for i in focal:
                    out.scores += calls * n * times
                    score_prompt += calls * (model.tokens(engine.players[i].messages) + question
                                             + MESSAGE_OVERHEAD) * n * times
                    out.completion_tokens += calls * score_completion_tokens * n * times
        for system in pre_keys.values():  # one pre-play profile per distinct system prompt
            out.scores += calls
            score_prompt += calls * (len(system.content) / chars_per_token + question + 2 * MESSAGE_OVERHEAD)
            out.completion_tokens += calls * score_completion_tokens
    if samples:
        out.samples = samples
        score_prompt *= samples
        out.completion_tokens += out.scores * (samples - 1) * score_completion_tokens
        out.notes.append(f"no logprobs: every score is {samples} sampled answers, each a request")
    out.prompt_tokens += score_prompt
    out.notes.append("not counted: the interventions' own messages and probes, the secondary post-play profile "
                     "with injections in view, retries, the auto probe")
    return out
