"""The round engine: players talk, act simultaneously, are paid and observe, round after round.

Each player owns its message history (its view of the game), which only ever grows: the system prompt
(rules + persona), prompts addressed to it, what others said, what it wrote, the round results and any
injected steering messages. A history that only grows lets prefix-caching backends encode each
player's context once, incrementally.

Phases of a round:

1. **talk** — ``chat_turns`` turns; in each, every player speaks once, in an order shuffled by the seed.
   What a player says is appended to every other player's history. ``chat_turns = 0`` is the no-chat
   control.
2. **act** — every player is asked for its action; no player's history holds another player's action of
   this round while it chooses (all results are appended only after every player chose).
   With a backend that can score, the action is the one whose name is the more likely start of the
   player's reply (action format :data:`ACTION_FORMAT_VERSION`, below); otherwise the reply text is
   parsed strictly (exactly one action name as a word), re-asking up to ``max_reasks`` times, and an
   unparseable answer is recorded as **invalid**.
3. **resolve** — payoffs from the dilemma data. An invalid action earns 0 points and does not count
   as cooperating for the others (documented in every summary through the invalid rate).
4. **observe** — each player is told every action and its own payoff.

**Action format, version 2** (:data:`ACTION_FORMAT_VERSION`, in every :class:`ActionRecord`): the act
prompt ends with its own instruction ("Reply with one word: 'cooperate' or 'defect'."), nothing is
pre-filled in the assistant's turn, and what is scored is the reply's first token right after the chat
template opens the assistant turn, by the first-token computation of
:mod:`contagion.backends.first_token` — the same tokens on every backend. An action name of several
tokens is scored by its first tokens: a token counts for an action when it is the whole name or begins
it and not the other name ("co" for *cooperate*, "st" for *stag*). The method is recorded as
``score:first-token-top-logprobs`` on every backend that has logits (local models compute the server's
top-k list themselves). The player's history then holds its reply as the action's name alone (an empty
reply when no action was valid), the answer the format asks for. Version 1 pre-filled ``"I choose: "``
in-process and appended an instruction on servers, so its scores differed by backend.

**Reasoning is the speaker's own.** A reasoning model's reply is taken apart into its answer and its
reasoning (:func:`~contagion.backends.reasoning.split_reasoning`: a server's reasoning field, or inline
``<think>`` tags); the co-players hear the answer only, and the speaker's own message records the
reasoning beside it (``Message.reasoning``). ``GameSpec.reasoning: keep`` leaves the reasoning inline in the
speaker's own history too, so it sees its earlier thoughts; the others never do.

Before each of a language-model player's turns the engine calls that player's :class:`TurnHook` (the
intervention) and appends what it returns; every injection is recorded as an event.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from contagion import vocabulary as P
from contagion.backends.base import Backend, GenerationConfig, ScoreMethod, ScoreRequest, Scores
from contagion.backends.reasoning import split_reasoning, with_reasoning
from contagion.games.dilemmas import (
    Dilemma,
    conversation_text,
    format_points,
    is_conversation,
    load_dilemma,
    neutral_framing,
    rules_text,
    tie_problem,
)
from contagion.games.parse import parse_choice
from contagion.games.record import (
    ActionName,
    ActionRecord,
    GamePlay,
    GameSpec,
    InjectionEvent,
    MonitorReading,
    PlayerRecord,
    RoundRecord,
)
from contagion.messages import Message
from contagion.personas import Persona, resolve_persona

NAMES = ("Avery", "Blake", "Casey", "Devon", "Emery", "Finley", "Harper", "Jordan", "Kendall", "Logan")
ACT_PREFIX = ""
"""Nothing is pre-filled in the assistant's turn when actions are scored (action format 2)."""
ACTION_FORMAT_VERSION = 2
"""1: ``"I choose: "`` pre-filled (an appended instruction on servers). 2: the reply's first token, no
pre-fill, the same tokens on every backend (module docstring)."""
Phase = Literal["talk", "act"]
ROUND_NOTE = "round_note"
"""The message kind that ends a round of the conversation control (in place of act prompt and results)."""


def player_name(index: int) -> str:
    return NAMES[index] if index < len(NAMES) else f"Player {index + 1}"


@dataclass(frozen=True)
class TurnContext:
    """What an intervention sees before one of an agent's turns."""

    player: int
    name: str
    round: int
    phase: Phase
    turn: int
    messages: tuple[Message, ...]
    system_prompt: str
    pre_profile: dict[str, Any] | None
    backend: Backend
    seed: int
    account: Callable[[Any], None] | None = None
    """Adds a hook's own model work (anything with ``prompt_tokens``, ``prompt_tokens_encoded``,
    ``completion_tokens``, ``seconds``) to the player's totals in the record; ``None`` outside a game."""


@dataclass(frozen=True)
class Injection:
    """A message an intervention adds, and why."""

    message: Message
    reason: str
    intervention: str


class TurnHook(Protocol):
    """Called before each of an agent's turns; returns the messages to inject (may be empty)."""

    async def before_turn(self, ctx: TurnContext) -> list[Injection]: ...

    def log(self) -> list[dict[str, Any]]: ...


EventSink = Callable[[str, dict[str, Any]], None]


@dataclass
class _Player:
    index: int
    name: str
    backend: Backend
    persona: Persona
    focal: bool
    system_prompt: str
    messages: list[Message]
    hook: TurnHook | None = None
    pre_profile: dict[str, Any] | None = None
    actions: list[ActionRecord] = field(default_factory=list)
    payoffs: list[float] = field(default_factory=list)
    injections: list[InjectionEvent] = field(default_factory=list)
    prompt_tokens: int = 0
    prompt_tokens_encoded: int = 0
    completion_tokens: int = 0
    model_seconds: float = 0.0
    monitor: list[MonitorReading] = field(default_factory=list)

    def read(self, probes: dict[str, float] | None, round_no: int, phase: Literal["talk", "act"], turn: int) -> None:
        """Keep a monitored backend's probes of this turn (nothing when the backend is not monitored)."""
        if probes:
            self.monitor.append(MonitorReading(round=round_no, phase=phase, turn=turn, values=dict(probes)))

    def account(self, result: Any) -> None:
        self.prompt_tokens += int(getattr(result, "prompt_tokens", 0))
        self.prompt_tokens_encoded += int(getattr(result, "prompt_tokens_encoded", 0))
        self.completion_tokens += int(getattr(result, "completion_tokens", 0))
        self.model_seconds += float(getattr(result, "seconds", 0.0))


def system_prompt_for(name: str, dilemma: Dilemma | None, persona: Persona, players: int,
                      rounds: int | None) -> str:
    """A player's system prompt: who it is, the rules (the conversation's description when ``dilemma`` is
    None), then its persona instruction."""
    rules = rules_text(dilemma, players, rounds) if dilemma is not None else conversation_text(players, rounds)
    text = f"You are {name}.\n{rules}"
    return f"{text}\n\n{persona.text}" if persona.text else text


def game_dilemma(spec: GameSpec) -> Dilemma | None:
    """The dilemma as the players read it (``framing`` applied), or None for the conversation control.

    A built-in kind whose payoffs tie at this number of players is refused (:func:`tie_problem`).
    """
    if is_conversation(spec.game):
        return None
    dilemma = load_dilemma(spec.game)
    problem = tie_problem(dilemma, len(spec.players))
    if problem:
        from contagion.errors import UserError

        raise UserError(problem)
    return neutral_framing(dilemma) if spec.framing == "neutral" else dilemma


def system_messages(spec: GameSpec, personas: dict[str, Persona] | None = None) -> list[Message]:
    """Each seat's first message (rules + persona): what it plays with and what its pre-play profile is
    measured on. The one place system prompts are made."""
    dilemma = game_dilemma(spec)
    horizon = spec.rounds if spec.reveal_horizon else None
    out = []
    for i, seat in enumerate(spec.players):
        persona = resolve_persona(seat.persona, personas)
        text = system_prompt_for(player_name(i), dilemma, persona, len(spec.players), horizon)
        out.append(Message(role="system", content=text, meta={"kind": "system_prompt", "persona": persona.name}))
    return out


def parse_action(text: str, dilemma: Dilemma) -> ActionName | None:
    """Exactly one of the two action names appears as a word and is not negated; otherwise None
    (:mod:`contagion.games.parse`: "I refuse to cooperate" is no choice, never cooperation)."""
    return parse_choice(text, dilemma.cooperate, dilemma.defect)


def _can_score(backend: Backend) -> bool:
    caps = backend.capabilities
    return caps.logprobs and caps.score_method != ScoreMethod.SAMPLED


class GameEngine:
    """Plays one game from a :class:`GameSpec` with the given backends, one per seat (the engine never
    resolves a backend spec: the caller — :func:`contagion.experiment.trial.run_trial` — has them)."""

    def __init__(
        self,
        spec: GameSpec,
        backends: Sequence[Backend],
        *,
        hooks: Sequence[TurnHook | None] | None = None,
        pre_profiles: Sequence[dict[str, Any] | None] | None = None,
        personas: dict[str, Persona] | None = None,
        on_event: EventSink | None = None,
        systems: Sequence[Message] | None = None,
    ) -> None:
        n = len(spec.players)
        if n < 2:
            from contagion.errors import UserError

            raise UserError("a game needs at least 2 players")
        self.spec = spec
        self.conversation = is_conversation(spec.game)
        dilemma = game_dilemma(spec)
        # the conversation control has no actions: a placeholder keeps the types simple, never read
        self.dilemma: Dilemma = dilemma if dilemma is not None else load_dilemma("prisoners-dilemma")
        self.on_event = on_event or (lambda kind, data: None)
        backends = list(backends)
        if len(backends) != n:
            raise ValueError(f"a game of {n} players needs {n} backends, got {len(backends)}")
        hooks = list(hooks) if hooks is not None else [None] * n
        profiles = list(pre_profiles) if pre_profiles is not None else [None] * n
        systems = list(systems) if systems is not None else system_messages(spec, personas)
        self.players: list[_Player] = []
        for i, (pspec, backend, first) in enumerate(zip(spec.players, backends, systems, strict=True)):
            self.players.append(
                _Player(
                    index=i, name=player_name(i), backend=backend,
                    persona=resolve_persona(pspec.persona, personas), focal=pspec.focal,
                    system_prompt=first.content, messages=[first], hook=hooks[i], pre_profile=profiles[i],
                )
            )
        self.rounds: list[RoundRecord] = []

    # -- helpers --------------------------------------------------------------------------------
    def _seed(self, *parts: object) -> int:
        return random.Random(":".join(map(str, (self.spec.seed, *parts)))).randrange(2**31)

    def _config(self, *parts: object) -> GenerationConfig:
        cfg = self.spec.generation
        return cfg.model_copy(update={"seed": self._seed(*parts)}) if cfg.seed is not None else cfg

    async def _before_turn(self, p: _Player, round_no: int, phase: Phase, turn: int) -> None:
        if p.hook is None or not p.backend.capabilities.language_model:
            return
        ctx = TurnContext(
            player=p.index, name=p.name, round=round_no, phase=phase, turn=turn,
            messages=tuple(p.messages), system_prompt=p.system_prompt, pre_profile=p.pre_profile,
            backend=p.backend, seed=self._seed("hook", p.index), account=p.account,
        )
        for inj in await p.hook.before_turn(ctx):
            meta = {**inj.message.meta, "kind": P.INJECTION, "intervention": inj.intervention, "round": round_no,
                    "phase": phase}
            msg = inj.message.model_copy(update={"meta": meta})
            p.messages.append(msg)
            event = InjectionEvent(round=round_no, phase=phase, role=msg.role, text=msg.content,
                                   intervention=inj.intervention, reason=inj.reason)
            p.injections.append(event)
            self.on_event("injection", {"player": p.name, **event.model_dump()})

    # -- phases ---------------------------------------------------------------------------------
    async def _talk(self, round_no: int) -> list[tuple[str, str]]:
        said: list[tuple[str, str]] = []
        for turn in range(self.spec.chat_turns):
            order = list(range(len(self.players)))
            random.Random(f"{self.spec.seed}:talk:{round_no}:{turn}").shuffle(order)
            for i in order:
                p = self.players[i]
                await self._before_turn(p, round_no, "talk", turn)
                p.messages.append(Message(
                    role="user",
                    content=f"Round {round_no}, discussion. Write one short message (one or two sentences) "
                            "to the other players.",
                    meta={"kind": "talk_prompt", "round": round_no},
                ))
                completion = await p.backend.generate(p.messages, self._config("talk", round_no, turn, i))
                p.account(completion)
                p.read(completion.probes, round_no, "talk", turn)
                reply = split_reasoning(completion.text, completion.reasoning)
                text = " ".join(reply.answer.split())  # what the others hear: never the speaker's reasoning
                p.messages.append(self._own(text, reply.reasoning, {"kind": "own_talk", "round": round_no}))
                for other in self.players:
                    if other is not p:
                        other.messages.append(Message(
                            role="user", content=f"{p.name}: {text}", name=p.name,
                            meta={"kind": P.TALK, "speaker": p.name, "round": round_no},
                        ))
                said.append((p.name, text))
                self.on_event("talk", {"round": round_no, "player": p.name, "text": text})
        return said

    def _own(self, text: str, reasoning: str | None, meta: dict[str, Any]) -> Message:
        """A player's own reply in its history: the answer, its reasoning recorded beside it; with
        ``reasoning: keep`` the reasoning also stays inline in what the player itself sees later."""
        if reasoning and self.spec.reasoning == "keep":
            text = " ".join(with_reasoning(text, reasoning).split())
        return Message(role="assistant", content=text, meta=meta, reasoning=reasoning)

    @property
    def options(self) -> tuple[str, str]:
        """The two action labels in the order the act prompt lists and the scorer receives them
        (``GameSpec.option_order``)."""
        d = self.dilemma
        return (d.defect, d.cooperate) if self.spec.option_order == "defect-first" else (d.cooperate, d.defect)

    async def _act_phase(self, round_no: int) -> list[ActionRecord]:
        """Every player's act prompt (after its hook), then the actions: the scoring players' scores go
        to their backend together (one ``score_choices_many`` per backend, in seat order — a batch
        fixed by the game, never by timing), then the generating players reply one after another."""
        d = self.dilemma
        first, second = self.options
        for p in self.players:
            await self._before_turn(p, round_no, "act", 0)
            p.messages.append(Message(
                role="user",
                content=f"Round {round_no}: choose your action. Reply with one word: '{first}' or '{second}'.",
                meta={"kind": P.ACT, "cooperate": d.cooperate, "defect": d.defect, "round": round_no},
            ))
        mode = self.spec.action_mode
        scoring = [p for p in self.players
                   if mode == "score" or (mode in ("auto", "sample") and _can_score(p.backend))]
        groups: dict[int, list[_Player]] = {}
        for p in scoring:
            groups.setdefault(id(p.backend), []).append(p)
        actions: dict[int, ActionRecord] = {}
        for group in groups.values():
            requests = [ScoreRequest(list(p.messages), self.options, ACT_PREFIX) for p in group]
            answers = await group[0].backend.score_choices_many(requests)
            for p, scores in zip(group, answers, strict=True):
                actions[p.index] = self._scored_action(p, round_no, scores)
        for p in self.players:
            if p.index not in actions:
                actions[p.index] = await self._generated_action(p, round_no)
        return [actions[p.index] for p in self.players]

    def _scored_action(self, p: _Player, round_no: int, scores: Scores) -> ActionRecord:
        """The action from the two scores (in :attr:`options` order): the more likely one, or in ``sample``
        mode a draw from their renormalised probabilities with a seed fixed by the game seed, round and
        seat (recorded). A tie (two floors, or equal scores) is no choice either way: recorded invalid,
        never read as cooperation."""
        d = self.dilemma
        p.account(scores)
        p.read(scores.probes, round_no, "act", 0)
        if scores.invalid is not None:  # no number of these scores is a value: an invalid action, said why
            p.messages.append(Message(role="assistant", content="", meta={"kind": "own_action", "round": round_no}))
            return ActionRecord(round=round_no, action="invalid", label=None, method=f"score:{scores.method.value}",
                                format_version=ACTION_FORMAT_VERSION, problem=scores.invalid,
                                selection="sample" if self.spec.action_mode == "sample" else "argmax")
        by_label = dict(zip(self.options, scores.logprobs, strict=True))
        lp = [by_label[d.cooperate], by_label[d.defect]]
        logprobs = {d.cooperate: lp[0], d.defect: lp[1]}
        floored = [str(c) for c in scores.detail.get("floored", [])]
        mass = float(sum(math.exp(x) for x in lp if math.isfinite(x)))
        action: ActionName
        p_coop: float | None = None
        sample_seed: int | None = None
        sampling = self.spec.action_mode == "sample"
        if any(math.isnan(x) for x in lp) or lp[0] == lp[1] or len(floored) == len(lp):
            action, label = "invalid", None
        else:
            p_coop = _p_first(lp[0], lp[1])
            if sampling:
                sample_seed = self._seed("sample", round_no, p.index)
                action = "cooperate" if random.Random(sample_seed).random() < p_coop else "defect"
            else:
                action = "cooperate" if lp[0] >= lp[1] else "defect"
            label = d.cooperate if action == "cooperate" else d.defect
        reply = label or ""  # the one-word reply the act prompt asks for (format 2)
        thought = scores.detail.get("reasoning")  # what an answer-token score's generation reasoned first
        p.messages.append(self._own(reply, thought if isinstance(thought, str) and thought else None,
                                    {"kind": "own_action", "round": round_no}))
        return ActionRecord(round=round_no, action=action, label=label, method=f"score:{scores.method.value}",
                            format_version=ACTION_FORMAT_VERSION,
                            logprobs={k: (v if math.isfinite(v) else -1e9) for k, v in logprobs.items()},
                            mass=min(1.0, mass), floored=floored, selection="sample" if sampling else "argmax",
                            p_cooperate=None if p_coop is None else round(p_coop, 12), sample_seed=sample_seed)

    async def _generated_action(self, p: _Player, round_no: int) -> ActionRecord:
        d = self.dilemma
        raw: list[str] = []
        parsed: ActionName | None = None
        for attempt in range(self.spec.max_reasks + 1):
            completion = await p.backend.generate(p.messages, self._config("act", round_no, p.index, attempt))
            p.account(completion)
            if attempt == 0:  # the state before it acted; a re-ask's prompt holds the failed answer
                p.read(completion.probes, round_no, "act", 0)
            reply = split_reasoning(completion.text, completion.reasoning)
            text = reply.answer.strip()  # the action is read from the answer, never from the reasoning
            raw.append(text)
            p.messages.append(self._own(text, reply.reasoning, {"kind": "own_action", "round": round_no}))
            parsed = parse_action(text, d)
            if parsed is not None or attempt == self.spec.max_reasks:
                break
            first, second = self.options
            p.messages.append(Message(
                role="user", content=f"Please answer with exactly one word: '{first}' or '{second}'.",
                meta={"kind": "reask", "round": round_no},
            ))
        action = parsed or "invalid"
        label = None if parsed is None else (d.cooperate if parsed == "cooperate" else d.defect)
        return ActionRecord(round=round_no, action=action, label=label, method="generate", raw=raw, attempts=len(raw),
                            format_version=ACTION_FORMAT_VERSION)

    def _resolve(self, round_no: int, actions: list[ActionRecord], talk: list[tuple[str, str]]) -> RoundRecord:
        n = len(self.players)
        coop = [a.action == "cooperate" for a in actions]
        payoffs: list[float] = []
        for i, a in enumerate(actions):
            k_others = sum(coop) - (1 if coop[i] else 0)
            payoffs.append(0.0 if a.action == "invalid" else self.dilemma.payoff(coop[i], k_others, n))
        for i, p in enumerate(self.players):
            p.actions.append(actions[i])
            p.payoffs.append(payoffs[i])
            others = [j for j in range(n) if j != i]
            desc = ", ".join(
                f"{self.players[j].name} chose '{actions[j].label}'" if actions[j].label
                else f"{self.players[j].name} gave no valid action"
                for j in others
            )
            own = f"'{actions[i].label}'" if actions[i].label else "no valid action"
            earned, total = format_points(payoffs[i]), format_points(sum(p.payoffs))
            p.messages.append(Message(
                role="user",
                content=f"Round {round_no} results: you chose {own} and earned {earned} points "
                        f"(total {total}). {desc}.",
                meta={
                    "kind": P.OBSERVATION, "round": round_no, "own": actions[i].action,
                    "others_cooperated": sum(actions[j].action == "cooperate" for j in others),
                    "others_defected": sum(actions[j].action == "defect" for j in others),
                    "others_invalid": sum(actions[j].action == "invalid" for j in others),
                },
            ))
        record = RoundRecord(round=round_no, actions=[a.action for a in actions], payoffs=payoffs, talk=talk)
        self.on_event("round", {
            "round": round_no, "players": [p.name for p in self.players],
            "labels": [a.label or "invalid" for a in actions], "payoffs": payoffs,
            "totals": [sum(p.payoffs) for p in self.players],
        })
        return record

    async def _close_conversation_round(self, round_no: int, talk: list[tuple[str, str]]) -> RoundRecord:
        """The conversation control's end of a round: a short note in place of the act prompt and the
        results (no action, no payoff), so its histories grow by about as much per round as a game's.
        The hooks run before it as before an act turn, so an intervention keeps its schedule."""
        turns = self.spec.chat_turns
        for p in self.players:
            await self._before_turn(p, round_no, "act", 0)
            others = [q.name for q in self.players if q is not p]
            names = ", ".join(others[:-1]) + f" and {others[-1]}" if len(others) > 1 else others[0]
            p.messages.append(Message(
                role="user",
                content=f"Round {round_no} of the conversation is over: {names} wrote {turns} message(s) each, "
                        "and so did you. Nothing else happened in this round of the conversation.",
                meta={"kind": ROUND_NOTE, "round": round_no},
            ))
        self.on_event("round", {"round": round_no, "players": [p.name for p in self.players],
                                "labels": ["-"] * len(self.players), "payoffs": [0.0] * len(self.players),
                                "totals": [0.0] * len(self.players)})
        return RoundRecord(round=round_no, actions=[], payoffs=[], talk=talk)

    async def play(self) -> GamePlay:
        started = time.perf_counter()
        error: str | None = None
        try:
            for round_no in range(1, self.spec.rounds + 1):
                talk = await self._talk(round_no)
                if self.conversation:
                    self.rounds.append(await self._close_conversation_round(round_no, talk))
                    continue
                actions = await self._act_phase(round_no)
                self.rounds.append(self._resolve(round_no, actions, talk))
        except Exception as exc:  # recorded: the run goes on and the record says what failed
            if not _recordable(exc):
                raise
            error = f"{type(exc).__name__}: {exc}"
        return self.record(time.perf_counter() - started, error)

    def record(self, wall: float, error: str | None = None) -> GamePlay:
        players = [
            PlayerRecord(
                index=p.index, name=p.name, backend=p.backend.identity, persona=p.persona.name,
                persona_text=p.persona.text, focal=p.focal,
                language_model=p.backend.capabilities.language_model, strategy=p.backend.capabilities.strategy,
                system_prompt=p.system_prompt,
                messages=list(p.messages), actions=p.actions, payoffs=p.payoffs, total=sum(p.payoffs),
                injections=p.injections, intervention_log=p.hook.log() if p.hook is not None else [],
                monitor=p.monitor, pre_profile=p.pre_profile, prompt_tokens=p.prompt_tokens,
                prompt_tokens_encoded=p.prompt_tokens_encoded, completion_tokens=p.completion_tokens,
                model_seconds=round(p.model_seconds, 6),
            )
            for p in self.players
        ]
        game = CONVERSATION_RECORD if self.conversation else self.dilemma.model_dump()
        return GamePlay(game=game, players=players, rounds=self.rounds,
                        wall_seconds=round(wall, 6), error=error)


CONVERSATION_RECORD: dict[str, Any] = {"name": "conversation", "title": "Conversation", "kind": "conversation"}
"""What a record's ``game`` holds for the conversation control (it has no actions and no payoffs)."""


def _p_first(lp_a: float, lp_b: float) -> float:
    """p(a) renormalised over two log-probabilities (either may be -inf, not both)."""
    if lp_b == -math.inf:
        return 1.0
    if lp_a == -math.inf:
        return 0.0
    return 1.0 / (1.0 + math.exp(lp_b - lp_a))


def _recordable(exc: Exception) -> bool:
    """Backend failures end the game with an error in its record; user errors and bugs propagate."""
    from contagion.errors import BackendError, UserError

    return isinstance(exc, BackendError) and not isinstance(exc, UserError)
