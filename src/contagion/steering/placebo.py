"""Placebo interventions: reminders matched to SIT's in schedule and length, without SIT's content.

``placebo:kind=neutral`` injects sentences with no trait, moral or game content (facts about rivers,
kettles and libraries); ``placebo:kind=generic`` injects generic pro-social sentences that are not
drawn from the agent's own profile ("Keeping a promise shows respect for the person it was made to.").
Both are written for this project.

How a placebo matches SIT: it builds, from the same parameters (``k``, ``n``, ``source``, ``pool``,
``min_support``, ``position``, ``role``), the same profile and the same seed, the SIT reminder the agent
would have been given at that turn — so it injects exactly when SIT would (and skips when SIT would
have nothing to say) — and replaces it by a message of the same shape: a header, then one bullet per
SIT bullet. Each bullet is one bank sentence, or a few joined by spaces (the longest lead when two are
too short), chosen to be as close as possible in **characters** to its SIT bullet (seeded tie-breaks;
sentences are not reused until the bank runs low), the header's difference in length spread over the
bullets. Characters, not tokens: the match needs no tokenizer and is the same on every backend; for
English prose a tokenizer's count follows the character count closely. The whole message is within
:data:`TOLERANCE` (10 %) of the SIT message's length (within 2 % on the built-in inventory in our
tests); every injection logs both lengths
(``sit_chars``, ``placebo_chars``) so a run can show it.

``placebo:kind=yoked`` is the control for *whose* traits SIT restates: SIT's own message (its opening line,
"I hold this about myself: …" / "I would not say this about myself: …") filled with **another agent's**
source statements — the ones that agent's SIT would restate, from its own pre-play profile (a :class:`Yoke`,
given by whoever assembles the trial: the same model and seat under another persona, see
:func:`contagion.experiment.profiles.yoke_requests`). It takes the yoke's supported statements strongest first,
drops every item the agent's own SIT would quote (so its message never holds the agent's own reminders)
and every measured item (so nothing is ever judged on its words), puts first the statements the agent did
not support at all (pro-social answers another agent gave and this one did not), and keeps ``pool`` of them. It injects
exactly when SIT would, one bullet per SIT bullet, each the unused yoked statement closest in characters to
its SIT bullet (the first in the yoke's order on a tie; all reusable once each was used, never twice in one
message while the yoke has enough). Its log names the
yoke (``yoke``) and the items it quoted (``items``). "SIT beats the yoked placebo" then means "its own
traits", not "any self-description".

The placebo needs the agent's pre-play profile (to know SIT's message); its own words never depend on it
(a yoked placebo's come from the yoke's profile, minus the agent's own).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contagion.errors import UserError
from contagion.games.engine import Injection, TurnContext
from contagion.messages import Message
from contagion.steering.interventions import Intervention, due
from contagion.steering.params import PlaceboParams, SitParams
from contagion.steering.sit import ReminderRotation, ranked_statements, reminder_message, select_reminders
from contagion.traits.profile import ItemScore, Profile

TOLERANCE = 0.10
"""A placebo message's length may differ from the SIT message it replaces by at most this share."""

HEADERS = {
    "neutral": "A few general notes, written down before this game began:",
    "generic": "A reminder of some principles, written down before this game began:",
}

NEUTRAL = (
    "The door is blue.",
    "A cup sits on the shelf.",
    "The room has two windows.",
    "A clock hangs on the wall.",
    "The lamp has a green shade.",
    "A map hangs in the hallway.",
    "A blue bowl sits on the table.",
    "The road bends near the church.",
    "A wooden spoon lies by the sink.",
    "The garden gate is painted green.",
    "There is a fern on the windowsill.",
    "The library closes in the evening.",
    "Bees carry pollen from flower to flower.",
    "Oak trees can live for several hundred years.",
    "Most maps put north at the top of the page.",
    "Glass is made by heating sand until it melts.",
    "A small fern grows in the shade under the stairs.",
    "Silk comes from the cocoons of a species of moth.",
    "A violin has four strings and a bow of horsehair.",
    "A long wooden bench stands beside the front door.",
    "The valley road winds between two low hills.",
    "Old clocks in the hall are wound once a week.",
    "Tea leaves are picked, dried and then packed into boxes.",
    "A kettle takes a few minutes to boil on a small stove.",
    "The train to the coast leaves from the second platform.",
    "Bread dough is left to rise before it goes into the oven.",
    "The river runs past the old mill before it reaches the sea.",
    "The museum keeps its maps in a room on the top floor.",
    "Most libraries sort their books by subject and then by author.",
    "The kitchen window looks out over a row of apple trees.",
    "Potatoes were brought to Europe from South America long ago.",
    "The ferry crosses the bay in a little under an hour.",
    "Moss grows thickly along the foot of the old garden wall.",
    "The shop on the corner sells stamps, envelopes and string.",
    "Ink was once made from soot, water and a little gum arabic.",
    "The cathedral in the old town took more than a century to build.",
    "A pencil is made of graphite held in a thin casing of cedar wood.",
    "The canal was dug to carry coal from the mines to the market town.",
    "Paper was once made by hand from old cotton and linen rags.",
    "The path along the cliff top runs for about three miles to the harbour.",
    "The old bridge is built of stone blocks cut from a quarry up the valley.",
    "The lighthouse on the headland was repainted white and red some years ago.",
    "The harbour has moorings for about forty small boats and a single ferry.",
    "A tall bookcase in the hallway holds atlases, dictionaries and old letters.",
    "Salt was once carried across the desert by long caravans of camels and mules.",
    "The village square has a fountain, a bakery, a post office and a lime tree.",
    "Before the railway came, letters between the two towns went by coach along the valley road.",
    "The orchard behind the house has pear, plum and apple trees planted in long, even rows.",
    "The library's reading room has tall windows, long oak tables and a brass lamp at every seat.",
)
"""Sentences with no trait, moral, social or game content (and nothing on mathematics or weather, the
built-in inventory's neutral control traits)."""

GENERIC = (
    "Kindness costs little.",
    "Honesty matters.",
    "Good manners cost nothing.",
    "Promises are worth keeping.",
    "Fairness matters to everyone.",
    "Helping others is worthwhile.",
    "Decency is never out of date.",
    "Listening is a form of respect.",
    "Everyone deserves a fair hearing.",
    "Gratitude strengthens friendships.",
    "Everyone deserves to be treated with dignity.",
    "Fair treatment helps people feel respected.",
    "Listening carefully to others is a sign of respect.",
    "Keeping a promise shows respect for the person it was made to.",
    "Helping someone in need is worthwhile even when nobody notices.",
    "Patience with other people is usually worth it in the end.",
    "Telling the truth matters, even when a lie would be easier.",
    "A thank-you and a kind word go a long way.",
    "People do better when they look out for one another.",
    "It is good to think about how one's decisions affect other people.",
    "Respecting others includes respecting their interests and their time.",
    "Forgiving small mistakes helps people get along.",
    "Caring about the well-being of others is part of being a good person.",
    "Taking advantage of someone who relies on you does lasting harm.",
    "Being open about one's intentions makes it easier for others to rely on you.",
    "Sharing generously tends to be returned in kind.",
    "Treating others as one would like to be treated is a sound rule.",
    "Saying sorry after a mistake helps repair what it damaged.",
    "Decent people do not mislead others for their own advantage.",
    "Speaking to people politely, even in disagreement, keeps the conversation open.",
    "Standing by what one has said builds a reputation for reliability.",
    "Considering other people's needs alongside one's own is a mark of maturity.",
    "Most disagreements can be settled calmly and without anyone being deceived.",
    "Small acts of consideration make shared spaces better for everyone in them.",
    "A good neighbour lends a hand without being asked and without keeping count.",
    "Honest mistakes deserve understanding; deliberate deception deserves none.",
    "Communities hold together when their members are truthful and fair with each other.",
    "Looking after people who are weaker or less fortunate than oneself is worth the effort.",
)
"""Generic pro-social sentences (general statements, none in the first person, none from an inventory)."""

BANKS = {"neutral": NEUTRAL, "generic": GENERIC}


def _bullet(sentence: str) -> str:
    return f"- {sentence}"


def placebo_message(sentences: list[str], role: str, kind: str) -> Message:
    """The placebo's message: its header, then one bullet per entry (the shape of SIT's message)."""
    body = "\n".join(_bullet(s) for s in sentences)
    return Message(role=role, content=f"{HEADERS[kind]}\n{body}")


class LengthMatcher:
    """Picks bank sentences (one, or a few joined by spaces) closest in characters to a target, without
    reusing a sentence until the unused ones run low; seeded tie-breaks."""

    def __init__(self, bank: tuple[str, ...], seed: str) -> None:
        self.bank = bank
        self.rng = random.Random(seed)
        self.used: set[int] = set()

    def pick(self, target: int) -> str:
        free = [i for i in range(len(self.bank)) if i not in self.used]
        if len(free) < 6 or sum(len(self.bank[i]) for i in free) < 2 * target:
            self.used.clear()
            free = list(range(len(self.bank)))
        lead: list[int] = []  # a target longer than two sentences: lead with the longest unused ones
        two = sorted((len(self.bank[i]) for i in free), reverse=True)[:2]
        while target > sum(two) + 1 and len(free) > 4:
            longest = max(free, key=lambda i: (len(self.bank[i]), self.rng.random()))
            lead.append(longest)
            free.remove(longest)
            target -= len(self.bank[longest]) + 1
            two = sorted((len(self.bank[i]) for i in free), reverse=True)[:2]
        gap, chosen = self._closest(free, target)
        if gap > 0.03 * target:  # the unused sentences fit badly: the whole bank may reuse one
            rest = [i for i in range(len(self.bank)) if i not in lead]
            gap_all, chosen_all = self._closest(rest, target)
            if gap_all < gap:
                chosen = chosen_all
        picked = (*lead, *chosen)
        self.used.update(picked)
        return " ".join(self.bank[i] for i in picked)

    def _closest(self, indices: list[int], target: int) -> tuple[int, tuple[int, ...]]:
        """The single sentence or ordered pair of sentences closest in length to ``target``: the least
        gap, ties broken by a seeded draw per option (one draw per single, then per ordered pair, in
        order). Vectorised; the same choice and the same use of the generator as comparing
        (gap, draw, option) tuples one by one."""
        n = len(indices)
        lengths = np.array([len(self.bank[i]) for i in indices], dtype=np.int64)
        draws = np.array([self.rng.random() for _ in range(n * n)], dtype=np.float64)  # n singles, n(n-1) pairs
        single_gap = np.abs(lengths - target)
        a, b = np.nonzero(~np.eye(n, dtype=bool))  # ordered pairs (i, j), i != j, in row-major order
        pair_gap = np.abs(lengths[a] + 1 + lengths[b] - target)
        gaps = np.concatenate([single_gap, pair_gap])
        best = gaps.min()
        tied = np.flatnonzero(gaps == best)
        k = int(tied[np.argmin(draws[tied])])
        if k < n:
            return int(best), (indices[k],)
        k -= n
        return int(best), (indices[int(a[k])], indices[int(b[k])])


def match_reminder(sit_sentences: list[str], role: str, kind: str, matcher: LengthMatcher) -> Message:
    """The placebo message replacing the SIT message made of ``sit_sentences``: same number of bullets,
    each matched in characters to its SIT bullet, the header's length difference spread over them."""
    sit = reminder_message(sit_sentences, role)
    header_gap = len(sit.content.split("\n", 1)[0]) - len(HEADERS[kind])
    n = len(sit_sentences)
    picks = []
    for i, s in enumerate(sit_sentences):
        share = header_gap // n + (1 if i < header_gap % n else 0)
        picks.append(matcher.pick(max(1, len(s) + share)))
    return placebo_message(picks, role, kind)


@dataclass(frozen=True)
class Yoke:
    """Whose statements a yoked placebo restates: another agent's pre-play profile, and who that agent is
    (recorded in every injection's log entry, e.g. its persona and profile key)."""

    profile: Profile
    who: dict[str, Any] = field(default_factory=dict)


def yoked_statements(own: Profile, yoke: Profile, params: SitParams, seed: int) -> list[tuple[ItemScore, str]]:
    """The yoke's statements a yoked placebo may use, at most ``pool``: the yoke's supported source statements
    (its SIT's ranking), never one the agent's own SIT would quote (its ``pool`` strongest) nor an item
    measured on the agent; those the agent does not support at all come first (strongest first), then those
    it supports more weakly than its own reminders. Empty when the yoke supports nothing beyond the agent's
    own reminders (the placebo then skips, and logs why)."""
    own_items = ranked_statements(own, params, seed)
    reminded = {_key(item.statement) for item, _ in own_items[: params.pool]}
    supported = {_key(item.statement) for item, _ in own_items}
    measured = {_key(it.statement) for it in own.items if it.role == "measure"}
    usable = [(item, sentence) for item, sentence in ranked_statements(yoke, params, seed)
              if _key(item.statement) not in reminded | measured]
    out = [x for x in usable if _key(x[0].statement) not in supported] + [
        x for x in usable if _key(x[0].statement) in supported]
    return out[: params.pool]


def _key(statement: str) -> str:
    return " ".join(statement.strip().rstrip(".").lower().split())


class YokedPicker:
    """Picks, for each SIT bullet, the unused yoked statement closest to it in characters (the earliest in
    the yoke's order on a tie); once every statement was used, all are free again, except those the message
    already holds (a statement repeats within one message only when the yoke has fewer than its bullets).
    Deterministic."""

    def __init__(self, statements: list[tuple[ItemScore, str]]) -> None:
        self.statements = statements
        self.used: set[int] = set()

    def take(self, targets: list[int]) -> list[tuple[ItemScore, str]]:
        """One statement per target length (a message's bullets)."""
        picked: list[int] = []
        every = range(len(self.statements))
        for target in targets:
            free = [i for i in every if i not in self.used and i not in picked]
            if not free:
                self.used = set(picked)
                free = [i for i in every if i not in picked] or list(every)
            best = min(free, key=lambda i: (abs(len(self.statements[i][1]) - target), i))
            self.used.add(best)
            picked.append(best)
        return [self.statements[i] for i in picked]


class Placebo(Intervention):
    """Injects a length- and schedule-matched placebo where SIT would inject its reminder."""

    name = "placebo"
    params: PlaceboParams

    def __init__(self, params: PlaceboParams, *, chat: bool, profile: Profile, seed: int,
                 yoke: Yoke | None = None) -> None:
        super().__init__(params, chat=chat)
        sit_params = SitParams.model_validate(params.model_dump(exclude={"kind"}))
        self.shadow = ReminderRotation(select_reminders(profile, sit_params, seed), sit_params.n)
        self.yoke = yoke
        if params.kind == "yoked":
            if yoke is None:
                raise UserError("placebo:kind=yoked needs another agent's pre-play profile (its yoke), and none "
                                "was given")
            self.picker = YokedPicker(yoked_statements(profile, yoke.profile, sit_params, seed))
        else:
            self.matcher = LengthMatcher(BANKS[params.kind], f"placebo:{params.kind}:{seed}")

    @property
    def yoked(self) -> list[str]:
        """The statements a yoked placebo rotates through (empty for the other kinds)."""
        return [s for _, s in self.picker.statements] if self.params.kind == "yoked" else []

    async def before_turn(self, ctx: TurnContext) -> list[Injection]:
        p = self.params
        if not due(ctx, p.k, p.position, self.chat):
            return []
        sentences = self.shadow.take()  # the reminder SIT would have injected here (and SIT's rotation)
        if not sentences:
            self._log.append({"round": ctx.round, "event": "skipped", "reason": "SIT would have no supported reminder"})
            return []
        sit_chars = len(reminder_message(sentences, p.role).content)
        entry: dict[str, Any] = {"round": ctx.round, "event": "placebo", "kind": p.kind, "sit_chars": sit_chars}
        if p.kind == "yoked":
            assert self.yoke is not None
            if not self.picker.statements:
                self._log.append({"round": ctx.round, "event": "skipped", "yoke": dict(self.yoke.who),
                                  "reason": "the yoke supports no statement beyond the agent's own reminders"})
                return []
            picks = self.picker.take([len(s) for s in sentences])
            message = reminder_message([s for _, s in picks], p.role)
            entry.update(yoke=dict(self.yoke.who), items=[item.item_id for item, _ in picks])
            whose = f"another agent's statements ({_describe(self.yoke.who)})"
        else:
            message = match_reminder(sentences, p.role, p.kind, self.matcher)
            whose = f"{p.kind} placebo"
        entry.update(placebo_chars=len(message.content), bullets=len(sentences))
        self._log.append(entry)
        reason = (f"round {ctx.round} is a multiple of k={p.k}; {whose} matched to SIT's reminder "
                  f"({len(message.content)} vs {sit_chars} characters)")
        return [Injection(message=message, reason=reason, intervention=self.name)]


def _describe(who: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in who.items()) or "unnamed yoke"
