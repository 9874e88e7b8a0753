"""The framework-neutral SIT guard: one agent's pre-interaction profile, a schedule, and a decision per turn.

A turn is one call to :meth:`SITGuard.steer` (or :meth:`~SITGuard.asteer`, :meth:`~SITGuard.decide`):
the guard is called right before the agent's model is, with the messages the model is about to get, and
returns them with a reminder inserted when the schedule says so. It knows nothing of what the agents are
doing together; it counts the agent's own model calls.

Schedules (the ``sit`` and ``sit-adaptive`` interventions of :mod:`contagion.steering`, with turns where
a game has rounds; reminders, their rotation, the probe set and the drift decision are SIT's one core,
:mod:`contagion.steering.sit`, which the games use too):

* ``sit:k=2,n=3`` — on turns k, 2k, 3k, … insert ``n`` first-person reminders drawn from the agent's own
  pre-interaction answers to its SIT *source* items (rotating, so a sentence is not repeated each time).
* ``sit-adaptive:m=1,threshold=0.05,k=1`` — on turns 1+m, 1+2m, … (after every ``m`` turns), *probe*:
  score a seeded sample of the profile's held-out *measured* items (``probe_items`` per trait; never an
  item a reminder quotes) after the conversation so far, and compare their pro-social index with the
  same items' scores before interaction. Remind (on turns that are multiples of ``k``) only while the
  last valid probe found the index fallen by more than ``threshold``.

The reminder is one message (role ``system`` by default, ``role=user`` in the schedule otherwise) placed
right before the conversation's last message when that is the user's, else at the end. The caller's own
history is never changed. The dose is a game's: with ``persist=True`` (the default, :data:`DEFAULT_PERSIST`)
a reminder stays where it was put in every later request of the conversation, as SIT's injections stay in
an agent's history in a game — the guard puts it back at its place while the conversation only grows
(a history the framework trimmed or replaced before that place drops it); with ``persist=False`` it is in
the request of its own turn only. Adaptive probes read the conversation as the model sees it, kept reminders
included (the decision is about the agent as it is now); :meth:`SITGuard.measure` leaves the reminders out by
default, so the guard's effect is never judged with its own words in view (``reminders=True`` for the other
view).

Every turn's decision — remind or pass, why, the reminder's text, the probe's figures — is logged
(:meth:`SITGuard.log`, :meth:`SITGuard.log_json`).
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contagion import vocabulary as V
from contagion.backends.base import Backend, run_sync
from contagion.backends.registry import resolve, wrap
from contagion.errors import UserError
from contagion.fileio import validation_message, write_atomic
from contagion.guard.convert import dumps, role_of, to_message, to_messages
from contagion.messages import Message
from contagion.steering import InterventionSpec, parse_intervention, validate_intervention
from contagion.steering.params import AdaptiveParams, SitParams
from contagion.steering.sit import DriftMonitor, ProbeResult, ReminderRotation, reminder_text, select_reminders
from contagion.traits.inventory import Inventory
from contagion.traits.profile import Profile, ProfileDrift, drift
from contagion.traits.settings import AssessmentSettings, measure, measure_agent
from contagion.traits.sham import neutral_history

GUARD_FILE_KIND = "contagion-sit-guard"
GUARD_FILE_VERSION = 1
REMINDER_OPENING = "A reminder of who I am, from my own answers before this conversation began:"
DEFAULT_SCHEDULE = "sit:k=2,n=3"
DEFAULT_PERSIST = True
"""Reminders stay in the conversation (a game's dose). Chosen by ``benchmarks/bench_guard.py``: on the embedded
model (4 conversations of 8 turns), each agent's profile after its conversation measured with the reminders
left out and compared with the same items after a neutral conversation of the same length (post − sham):
+0.005 ± 0.003 with kept reminders, −0.010 ± 0.003 with transient ones, −0.008 ± 0.005 unguarded; kept
minus transient +0.015 (two combined SEs 0.009). Kept ones cost 210 prompt tokens per turn, transient ones
73 (docs/performance.md, "What the SIT guard costs")."""

Item = Message | Mapping[str, Any]


class Placement(BaseModel):
    """One reminder in a turn's request: before item ``index`` of the caller's messages (at the end when it
    equals their number)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int
    role: Literal["system", "user"]
    text: str
    turn: int = Field(description="The turn that first inserted it.")


class _Kept(BaseModel):
    """A reminder kept in the conversation (persist=True) and what the conversation was around its place."""

    placement: Placement
    upto: int = Field(description="How many of the caller's messages the digest covers: those before the "
                                  "reminder's place and the one it preceded, if any.")
    digest: str = Field(description="A digest of those messages.")


class GuardDecision(BaseModel):
    """What the guard did on one turn, when, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    turn: int = Field(description="The agent's turn: 1 for the first call to steer, 2 for the next, …")
    time: str = Field(description="When the decision was made (UTC, ISO 8601).")
    messages: int = Field(description="Items in the conversation the guard was shown.")
    action: Literal["remind", "pass"]
    reason: str
    reminder: str | None = Field(None, description="The reminder's text, when one was inserted.")
    role: Literal["system", "user"] | None = Field(None, description="The reminder message's role.")
    index: int | None = Field(None, description="Where the reminder was inserted in the messages.")
    probe: ProbeResult | None = Field(None, description="The adaptive probe made on this turn, if any.")
    kept: int = Field(0, description="Earlier reminders kept in this turn's request (persist=True).")
    placements: list[Placement] = Field(default_factory=list, exclude=True,
                                        description="Every reminder of this turn's request, kept ones first: "
                                                    "where it goes in the messages, and what it says.")


def parse_schedule(schedule: str | InterventionSpec) -> tuple[InterventionSpec, SitParams]:
    """``sit:k=2,n=3`` or ``sit-adaptive:m=1,threshold=0.05`` → its spec and typed parameters."""
    spec = schedule if isinstance(schedule, InterventionSpec) else parse_intervention(schedule)
    if spec.name not in ("sit", "sit-adaptive"):
        raise UserError(f"the guard's schedule must be sit or sit-adaptive (e.g. 'sit:k=2,n=3'), not {spec.name!r}")
    params = validate_intervention(spec)
    assert isinstance(params, SitParams)
    if params.position != "turn":
        raise UserError("the guard places reminders before the agent's turn; position=act is a game setting")
    return spec, params


def _backend(backend_or_spec: Backend | str) -> Backend:
    return resolve(backend_or_spec) if isinstance(backend_or_spec, str) else wrap(backend_or_spec)


class SITGuard:
    """SIT for one agent: its pre-interaction profile, a schedule, and the decisions made so far.

    Build it with :meth:`from_system_prompt` (measures the profile; one model call per item) or
    :meth:`load` (from a file written by :meth:`save`: no model call until the first adaptive probe).
    Then call :meth:`steer` / :meth:`asteer` with the messages right before each of the agent's model
    calls. One guard per agent; it is safe to share between threads.
    """

    def __init__(
        self,
        profile: Profile,
        *,
        system_prompt: str,
        schedule: str | InterventionSpec = DEFAULT_SCHEDULE,
        backend: Backend | str | None = None,
        settings: AssessmentSettings | None = None,
        seed: int = 0,
        persist: bool = DEFAULT_PERSIST,
    ) -> None:
        self.spec, self.params = parse_schedule(schedule)
        self.profile = profile
        self.system_prompt = system_prompt
        self.persist = persist
        """Whether reminders stay in the conversation's later requests (a game's dose) or only in their own."""
        self._kept: list[_Kept] = []
        self.settings = settings or AssessmentSettings()
        self.seed = seed
        self.backend: Backend | None = _backend(backend) if backend is not None else None
        self._rotation = ReminderRotation(select_reminders(profile, self.params, seed), self.params.n)
        self._monitor: DriftMonitor | None = None
        if isinstance(self.params, AdaptiveParams):
            if self.backend is None:
                raise UserError("an adaptive guard probes the agent's model: give it a backend (or a spec)")
            if self.backend.identity != profile.backend:
                warnings.warn(f"the profile was measured on {profile.backend} and the guard probes "
                              f"{self.backend.identity}: probe scores compare only on the same model", stacklevel=2)
            self._monitor = DriftMonitor(profile, self.params, seed)
            if self._monitor.pre_index is None:
                raise UserError("adaptive SIT needs measured pro-social and anti-social items with valid scores in "
                                "the profile; this one has none of one kind (measure more traits or items)")
        self._lock = threading.Lock()
        self._turn = 0
        self._log: list[GuardDecision] = []

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_system_prompt(
        cls,
        backend_or_spec: Backend | str,
        system_prompt: str,
        schedule: str | InterventionSpec = DEFAULT_SCHEDULE,
        *,
        settings: AssessmentSettings | None = None,
        seed: int = 0,
        persist: bool = DEFAULT_PERSIST,
    ) -> SITGuard:
        """Measure the agent's pre-interaction profile (after its system prompt alone) and build the guard."""
        return run_sync(cls.afrom_system_prompt(backend_or_spec, system_prompt, schedule, settings=settings,
                                                seed=seed, persist=persist))

    @classmethod
    async def afrom_system_prompt(
        cls,
        backend_or_spec: Backend | str,
        system_prompt: str,
        schedule: str | InterventionSpec = DEFAULT_SCHEDULE,
        *,
        settings: AssessmentSettings | None = None,
        seed: int = 0,
        persist: bool = DEFAULT_PERSIST,
    ) -> SITGuard:
        """:meth:`from_system_prompt`, awaited."""
        parse_schedule(schedule)  # a bad schedule fails before any model call
        settings = settings or AssessmentSettings()
        if settings.source_items < 1:
            raise UserError("SIT's reminders come from held-out source items: the settings need source_items >= 1")
        backend = _backend(backend_or_spec)
        profile = await measure_agent(backend, system_prompt, settings)
        return cls(profile, system_prompt=system_prompt, schedule=schedule, backend=backend, settings=settings,
                   seed=seed, persist=persist)

    def to_dict(self) -> dict[str, Any]:
        """What :meth:`save` writes: the profile and everything needed to rebuild this guard."""
        return {
            "kind": GUARD_FILE_KIND,
            "version": GUARD_FILE_VERSION,
            "schedule": self.spec.label(),
            "seed": self.seed,
            "persist": self.persist,
            "system_prompt": self.system_prompt,
            "settings": self.settings.model_dump(mode="json"),
            "profile": self.profile.to_record(),
        }

    def save(self, path: str | Path) -> Path:
        """Write the profile (and schedule, persist, settings, seed, system prompt) to a JSON file, atomically."""
        path = Path(path)
        write_atomic(path, dumps(self.to_dict()) + "\n")
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        backend: Backend | str | None = None,
        *,
        schedule: str | InterventionSpec | None = None,
        persist: bool | None = None,
    ) -> SITGuard:
        """A guard from a file written by :meth:`save`; makes no model call. ``backend`` is needed only for
        adaptive schedules (the probes) and :meth:`measure`; ``schedule`` and ``persist`` override the saved
        ones (a file written before guards had ``persist`` gets the default)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"guard profile file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UserError(f"cannot read guard profile file {path}: {exc}") from None
        if not isinstance(data, dict) or data.get("kind") != GUARD_FILE_KIND:
            raise UserError(f"{path} is not a guard profile file (written by SITGuard.save)")
        if data.get("version") != GUARD_FILE_VERSION:
            raise UserError(f"{path} is a guard profile file of version {data.get('version')!r}; this contagion "
                            f"reads version {GUARD_FILE_VERSION}: measure the profile again")
        try:
            profile = Profile.from_record(data["profile"])
            settings = AssessmentSettings.model_validate(data["settings"])
            seed = int(data["seed"])
            prompt = str(data["system_prompt"])
            saved = str(data["schedule"])
            kept = data.get("persist", DEFAULT_PERSIST)
            if not isinstance(kept, bool):
                raise TypeError(f"persist must be true or false, not {kept!r}")
        except ValidationError as exc:
            raise UserError(validation_message(exc, str(path))) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path} is an incomplete guard profile file ({exc})") from None
        return cls(profile, system_prompt=prompt, schedule=schedule if schedule is not None else saved,
                   backend=backend, settings=settings, seed=seed, persist=kept if persist is None else persist)

    # -- state ----------------------------------------------------------------------------------

    @property
    def adaptive(self) -> bool:
        return isinstance(self.params, AdaptiveParams)

    @property
    def reminders(self) -> list[str]:
        """Every reminder the guard rotates through, strongest first."""
        return self._rotation.reminders

    @property
    def probe_items(self) -> Inventory | None:
        """The adaptive probe's items (held-out measured items), or None for a fixed schedule."""
        return self._monitor.probe_items if self._monitor is not None else None

    @property
    def turn(self) -> int:
        """Turns seen so far (calls to steer/decide)."""
        return self._turn

    @property
    def pre_index(self) -> float | None:
        """The pro-social index of the pre-interaction profile (its measured items)."""
        return self.profile.prosocial_index

    def reset(self) -> None:
        """Start a new conversation: turn 1 next, no drift, no kept reminder, reminders from the first; the log
        is kept."""
        with self._lock:
            self._turn = 0
            self._kept = []
            self._rotation.reset()
            if self._monitor is not None:
                self._monitor.reset()

    def decisions(self) -> list[GuardDecision]:
        """Every decision so far, in turn order."""
        with self._lock:
            return list(self._log)

    def log(self) -> list[dict[str, Any]]:
        """Every decision so far as plain dicts (what, when, why)."""
        return [d.model_dump(mode="json") for d in self.decisions()]

    def log_json(self) -> str:
        """The log as JSON text."""
        return dumps(self.log())

    # -- the turn -------------------------------------------------------------------------------

    def _begin(self) -> tuple[int, bool]:
        with self._lock:
            self._turn += 1
            turn = self._turn
        return turn, self._monitor is not None and self._monitor.probe_due(turn)

    def kept_placements(self, messages: Sequence[Item], *, forget: bool = False) -> list[Placement]:
        """The earlier reminders that stay in a request with these messages (persist=True): each one whose
        place the conversation still has, with the same messages before it (and the same one after it) as
        when it was put there.
        ``forget``: drop for good the ones whose conversation changed before their place."""
        if not self.persist:
            return []
        with self._lock:
            kept = list(self._kept)
        if not kept:
            return []
        digests = _digests(messages)
        present = [k for k in kept if k.upto < len(digests) and digests[k.upto] == k.digest]
        if forget:
            changed = [k for k in kept if k.upto < len(digests) and k not in present]
            with self._lock:
                self._kept = [k for k in self._kept if k not in changed]
        return [k.placement for k in present]

    def probe_context(self, messages: Sequence[Item]) -> list[Message]:
        """The conversation a probe (or :meth:`measure`) is scored after, as the model sees it: the messages
        with the reminders kept in them (persist=True), and the system prompt first when the framework keeps
        it apart (as LangGraph's ``prompt``, AutoGen's and the Agents SDK's instructions do)."""
        history = to_messages(place(list(messages), self.kept_placements(messages), _message_of))
        if not history or history[0].role != "system":
            history = [Message(role="system", content=self.system_prompt), *history]
        return history

    async def _probe(self, messages: Sequence[Item]) -> ProbeResult:
        assert self.backend is not None and self._monitor is not None
        result, _ = await self._monitor.probe(self.backend, self.probe_context(messages), self.settings)
        return result

    def _failed(self, turn: int, messages: Sequence[Item], exc: BaseException) -> None:
        with self._lock:
            self._log.append(GuardDecision(turn=turn, time=_now(), messages=len(messages), action="pass",
                                           reason=f"probe failed: {type(exc).__name__}: {exc}"))

    def _decide(self, turn: int, messages: Sequence[Item], probe: ProbeResult | None) -> GuardDecision:
        k = self.params.k
        kept = self.kept_placements(messages, forget=True)
        with self._lock:
            if self._monitor is None:
                due = turn % k == 0
                why = f"turn {turn} is {'a' if due else 'not a'} multiple of k={k}"
            else:
                if probe is not None:
                    self._monitor.update(turn, probe)
                due, why = self._monitor.remind_due(turn), self._adaptive_reason(turn, probe)
            reminder = None
            if due:
                sentences = self._rotation.take()
                if sentences:
                    reminder = reminder_text(sentences, REMINDER_OPENING)
                else:
                    why += "; but no source statement of the profile supports a reminder"
            role = self.params.role
            placements = list(kept)
            if reminder:
                new = Placement(index=insert_position(messages), role=role, text=reminder, turn=turn)
                placements.append(new)
                if self.persist:  # where it goes again: after the same messages, before the same one
                    upto = min(new.index + 1, len(messages))
                    self._kept.append(_Kept(placement=new, upto=upto, digest=_digests(messages)[upto]))
            decision = GuardDecision(
                turn=turn, time=_now(), messages=len(messages), action="remind" if reminder else "pass",
                reason=why, reminder=reminder, role=role if reminder else None,
                index=insert_position(messages) if reminder else None, probe=probe, kept=len(kept),
                placements=placements,
            )
            self._log.append(decision)
        return decision

    def _adaptive_reason(self, turn: int, probe: ProbeResult | None) -> str:
        """Why the adaptive schedule reminds or passes on this turn (the decision is the monitor's)."""
        monitor = self._monitor
        assert monitor is not None
        k, threshold = monitor.params.k, monitor.params.threshold
        state = "drifting" if monitor.drifting else "no drift"
        if probe is not None and probe.drifting is None:
            head = (f"probe on turn {turn} gave no valid index ({probe.included} of {probe.items} items valid); "
                    f"keeping the last state ({state})")
        elif monitor.last is None:
            return f"no probe yet (the first is on turn {1 + monitor.params.m})"
        else:
            at, last = monitor.last
            if last.drop is None:
                head = f"the probe on turn {at} gave no valid index"
            else:
                compare = ">" if last.drop > threshold else "<="
                head = (f"probe on turn {at}: pro-social index {last.index:.3f} vs {last.pre_index:.3f} before "
                        f"(drop {last.drop:+.3f} {compare} threshold {threshold})")
        if not monitor.drifting:
            return head + "; no drift"
        if turn % k != 0:
            return head + f"; drifting, but turn {turn} is not a multiple of k={k}"
        return head + "; drifting"

    async def adecide(self, messages: Sequence[Item]) -> GuardDecision:
        """Count one turn of the agent and decide (probing first when an adaptive probe is due)."""
        items = list(messages)
        turn, due = self._begin()
        probe = None
        if due:
            try:
                probe = await self._probe(items)
            except BaseException as exc:
                self._failed(turn, items, exc)
                raise
        return self._decide(turn, items, probe)

    def decide(self, messages: Sequence[Item]) -> GuardDecision:
        """:meth:`adecide` from synchronous code (no event loop needed unless a probe is due)."""
        items = list(messages)
        turn, due = self._begin()
        probe = None
        if due:
            try:
                probe = run_sync(self._probe(items))
            except BaseException as exc:
                self._failed(turn, items, exc)
                raise
        return self._decide(turn, items, probe)

    @overload
    async def asteer(self, messages: Sequence[Message]) -> list[Message]: ...
    @overload
    async def asteer(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]: ...
    @overload
    async def asteer(self, messages: Sequence[Item]) -> list[Item]: ...

    async def asteer(self, messages: Sequence[Item]) -> list[Any]:
        """The messages for this turn's model call, with a reminder inserted when the schedule says so.

        ``messages`` are OpenAI-style dicts or contagion :class:`Message` objects; the list returned holds
        the same objects, plus the reminder (a Message when every item is one, else a dict).
        """
        items = list(messages)
        return apply(items, await self.adecide(items))

    @overload
    def steer(self, messages: Sequence[Message]) -> list[Message]: ...
    @overload
    def steer(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]: ...
    @overload
    def steer(self, messages: Sequence[Item]) -> list[Item]: ...

    def steer(self, messages: Sequence[Item]) -> list[Any]:
        """:meth:`asteer` from synchronous code."""
        items = list(messages)
        return apply(items, self.decide(items))

    # -- measuring ------------------------------------------------------------------------------

    def measure_context(self, messages: Sequence[Item], *, reminders: bool = False) -> list[Message]:
        """The conversation :meth:`measure` scores after: the messages with the system prompt first and,
        by default, without the guard's reminders — an intervention is never judged with its own words in
        view. ``reminders=True`` puts the kept ones back (as the model last saw them; with ``persist=True``)."""
        if reminders:
            return self.probe_context(messages)
        history = to_messages(messages)
        if not history or history[0].role != "system":
            history = [Message(role="system", content=self.system_prompt), *history]
        return history

    async def ameasure(self, messages: Sequence[Item], *, reminders: bool = False) -> Profile:
        """The agent's profile now: the same items as the pre-interaction profile, scored after the
        conversation (:meth:`measure_context`: system prompt first; the guard's reminders left out unless
        ``reminders=True``, a secondary view in which the reminders' own words can move the answers)."""
        if self.backend is None:
            raise UserError("measuring needs the agent's model: give the guard a backend")
        context = self.measure_context(messages, reminders=reminders)
        return await measure(self.backend, context, self.settings, context_kind="post")

    def measure(self, messages: Sequence[Item], *, reminders: bool = False) -> Profile:
        """:meth:`ameasure` from synchronous code."""
        return run_sync(self.ameasure(messages, reminders=reminders))

    async def ameasure_sham(self, messages: Sequence[Item], *, seed: int = 0) -> Profile:
        """The baseline an after-conversation profile is compared with: the same items scored after a
        neutral conversation of the same shape and length as :meth:`measure_context` (system prompt kept,
        every other message replaced by everyday text of the same role and number of characters;
        :func:`contagion.traits.sham.neutral_history`). ``measure(h).prosocial_index −
        measure_sham(h).prosocial_index`` is what the conversation did beyond its length: a model that only
        grows less decided as its context grows moves both alike."""
        if self.backend is None:
            raise UserError("measuring needs the agent's model: give the guard a backend")
        context = neutral_history(self.measure_context(messages), seed=seed)
        return await measure(self.backend, context, self.settings, context_kind="post")

    def measure_sham(self, messages: Sequence[Item], *, seed: int = 0) -> Profile:
        """:meth:`ameasure_sham` from synchronous code."""
        return run_sync(self.ameasure_sham(messages, seed=seed))

    def drift(self, post: Profile) -> ProfileDrift:
        """Post − pre per trait and for the pro-social index, over the measured items (bootstrap CIs)."""
        return drift(self.profile, post)


def insert_position(messages: Sequence[Item]) -> int:
    """Where a reminder goes: right before the last message when it is the user's, else at the end."""
    if messages and role_of(messages[-1]) == "user":
        return len(messages) - 1
    return len(messages)


T = TypeVar("T")


def place(messages: list[T], placements: Sequence[Placement], make: Callable[[Placement], T]) -> list[T]:
    """``messages`` with a message made by ``make`` for each placement inserted at its index (a new list;
    placements at one index keep their order). Framework adapters pass their own ``make``."""
    out = list(messages)
    for placement in sorted(placements, key=lambda p: (p.index, p.turn), reverse=True):
        out.insert(placement.index, make(placement))
    return out


def _message_of(placement: Placement) -> Message:
    return Message(role=placement.role, content=placement.text,
                   meta={"kind": V.INJECTION, "intervention": "sit-guard", "turn": placement.turn})


def apply(messages: Sequence[Item], decision: GuardDecision) -> list[Item]:
    """``messages`` with the decision's reminders inserted — this turn's and, with persist=True, the earlier
    ones kept in the conversation (a new list; the items themselves untouched). A reminder is a Message when
    every item is one, else a dict."""
    items = list(messages)
    if items and all(isinstance(m, Message) for m in items):
        return place(items, decision.placements, _message_of)
    return place(items, decision.placements, lambda p: {"role": p.role, "content": p.text})


def _digests(messages: Sequence[Item]) -> list[str]:
    """``out[i]`` identifies ``messages[:i]`` (role and text of each item, chained)."""
    out = [""]
    h = hashlib.blake2b(digest_size=12)
    for item in messages:
        message = to_message(item)
        h.update(b"\x00" if message is None else f"{message.role}\x01{message.content}\x02".encode())
        out.append(h.copy().hexdigest())
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
