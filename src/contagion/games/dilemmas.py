"""Social dilemmas as data, for any number of players.

A dilemma names its two actions and pays a player as a function of its own action and of ``k``, the
number of *other* players who cooperate. The N-player forms here interpolate the classic two-player
anchors linearly in the share of cooperating others, ``x = k / (n − 1)``:

* cooperate: ``S + (R − S)·x`` (sucker when nobody else cooperates, reward when all do);
* defect:    ``P + (T − P)·x`` (punishment when nobody cooperates, temptation when all others do).

With two players this is exactly the 2×2 game. Each kind's defining ordering is checked:

* Prisoner's Dilemma: T > R > P > S and 2R > T + S (defection dominates, yet mutual cooperation
  beats alternating exploitation). Linear interpolation keeps defection dominant for every k.
* Chicken: T > R > S > P (give way if the others will not; the crash is the worst outcome) and
  2R > T + S (a lone defector costs the group: two swerving beat one swerving and one going straight).
* Stag Hunt: R > T ≥ P > S (hunting stag together is best; hare is the safe choice).

In Chicken and Stag Hunt the best reply changes with ``k``: the two payoff lines cross at
``x* = (S − P) / ((T − P) − (R − S))`` (Chicken) or ``(P − S) / ((R − S) − (T − P))`` (Stag Hunt). When
``x*`` is a possible share ``k / (n − 1)`` a player with ``k`` cooperating others is paid the same for
both actions — a tie that makes the choice meaningless; :meth:`Dilemma.ties` finds them and
:func:`tie_problem` (checked by the engine and by configs) refuses a game with one at its player count.
The built-in anchors cross at x* = 0.4, so no group of 2 to 5 players has a tie.
* ``custom``: no ordering is imposed (the rules text still states the payoffs).

The rules text players read is generated from this data (:func:`rules_text`), so what they are told
always matches what they are paid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contagion.errors import UserError
from contagion.fileio import load_yaml

Kind = Literal["prisoners-dilemma", "chicken", "stag-hunt", "custom"]
PAYOFF_BOUND = 1e6
"""Payoffs are finite numbers within ±1,000,000 (players read them; NaN or infinity would pay nothing sensible)."""
Payoff = Annotated[float, Field(allow_inf_nan=False, ge=-PAYOFF_BOUND, le=PAYOFF_BOUND)]


class Dilemma(BaseModel):
    """An N-player two-action social dilemma."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Identifier, e.g. 'prisoners-dilemma'.")
    title: str = Field(description="Human-readable name shown to players.")
    kind: Kind = Field(description="Which ordering is validated.")
    cooperate: str = Field(description="Label of the cooperative action, e.g. 'cooperate', 'swerve', 'stag'.")
    defect: str = Field(description="Label of the other action, e.g. 'defect', 'straight', 'hare'.")
    T: Payoff = Field(description="Temptation: defect while every other player cooperates.")
    R: Payoff = Field(description="Reward: cooperate while every other player cooperates.")
    P: Payoff = Field(description="Punishment: defect while no other player cooperates.")
    S: Payoff = Field(description="Sucker's payoff: cooperate while no other player cooperates.")
    description: str = Field("", description="One sentence of story for the rules text (optional).")

    @model_validator(mode="after")
    def _check(self) -> Dilemma:
        a, b = self.cooperate.strip().lower(), self.defect.strip().lower()
        if not a or not b or a == b:
            raise ValueError("the two actions need two different, non-empty labels")
        if not (a.isalpha() and b.isalpha()):
            raise ValueError("action labels must be single words of letters (they are parsed from replies)")
        problem = ordering_problem(self.kind, self.T, self.R, self.P, self.S)
        if problem:
            raise ValueError(f"payoffs are not a valid {self.kind}: {problem}")
        return self

    def payoff(self, cooperates: bool, others_cooperating: int, players: int) -> float:
        """Points for one player given its action and how many of the other players cooperate."""
        if players < 2:
            raise ValueError("a dilemma needs at least 2 players")
        if not 0 <= others_cooperating <= players - 1:
            raise ValueError(f"others_cooperating must be in [0, {players - 1}]")
        x = others_cooperating / (players - 1)
        if cooperates:
            return round(self.S + (self.R - self.S) * x, 6)
        return round(self.P + (self.T - self.P) * x, 6)

    def ties(self, players: int) -> list[int]:
        """The counts ``k`` of cooperating others at which both actions pay the same (no best reply)."""
        return [k for k in range(players) if self.payoff(True, k, players) == self.payoff(False, k, players)]

    def table(self, players: int) -> list[tuple[int, float, float]]:
        """Rows (k others cooperating, payoff if cooperate, payoff if defect)."""
        return [(k, self.payoff(True, k, players), self.payoff(False, k, players)) for k in range(players)]


def ordering_problem(kind: str, T: float, R: float, P: float, S: float) -> str | None:
    """Why the four anchors do not define ``kind``, or None when they do."""
    if kind == "prisoners-dilemma":
        if not (T > R > P > S):
            return f"needs T > R > P > S, got T={T}, R={R}, P={P}, S={S}"
        if not 2 * R > T + S:
            return f"needs 2R > T + S (mutual cooperation beats taking turns), got 2R={2 * R}, T+S={T + S}"
    elif kind == "chicken":
        if not (T > R > S > P):
            return f"needs T > R > S > P, got T={T}, R={R}, S={S}, P={P}"
        if not 2 * R > T + S:
            return f"needs 2R > T + S (a lone defector must cost the group), got 2R={2 * R}, T+S={T + S}"
    elif kind == "stag-hunt" and not (R > T >= P > S):
        return f"needs R > T >= P > S, got R={R}, T={T}, P={P}, S={S}"
    return None


def tie_problem(d: Dilemma, players: int) -> str | None:
    """Why ``d`` cannot be played by ``players`` (a tie between the two actions), or None.

    Only the built-in kinds are checked; a ``custom`` game states its payoffs and nothing more.
    """
    if d.kind == "custom":
        return None
    ties = d.ties(players)
    if not ties:
        return None
    ks = ", ".join(str(k) for k in ties)
    return (f"game {d.name!r} pays '{d.cooperate}' and '{d.defect}' the same when {ks} of the {players - 1} other "
            f"players choose '{d.cooperate}' (a tie: no best reply); change its payoffs or the number of players")


PRISONERS_DILEMMA = Dilemma(
    name="prisoners-dilemma", title="Prisoner's Dilemma", kind="prisoners-dilemma",
    cooperate="cooperate", defect="defect", T=5, R=3, P=1, S=0,
    description="Cooperating helps the group; defecting helps only yourself.",
)
CHICKEN = Dilemma(
    name="chicken", title="Chicken", kind="chicken", cooperate="swerve", defect="straight",
    T=9, R=6, S=2, P=0,
    description="Swerving is safe; going straight wins only if others swerve, and a crash hurts everyone.",
)
STAG_HUNT = Dilemma(
    name="stag-hunt", title="Stag Hunt", kind="stag-hunt", cooperate="stag", defect="hare",
    R=6, T=3, P=2, S=0,
    description="Hunting stag pays most when others join you; hunting hare is a small but safe catch.",
)
BUILTIN: dict[str, Dilemma] = {d.name: d for d in (PRISONERS_DILEMMA, CHICKEN, STAG_HUNT)}
ALIASES = {"pd": "prisoners-dilemma", "prisoners": "prisoners-dilemma", "stag": "stag-hunt", "sh": "stag-hunt"}


def game_key(name_or_path: str) -> str:
    """What a game name stands for, so two names of one game compare equal: a built-in game's name (its
    aliases resolved), the conversation control's name, or a game file's resolved path."""
    text = name_or_path.strip()
    if is_conversation(text):
        return CONVERSATION
    key = ALIASES.get(text, text)
    if key in BUILTIN:
        return key
    return str(Path(text).expanduser().resolve())


def load_dilemma(name_or_path: str) -> Dilemma:
    """A built-in game by name (``prisoners-dilemma``, ``chicken``, ``stag-hunt``) or a YAML file."""
    key = ALIASES.get(name_or_path, name_or_path)
    if key in BUILTIN:
        return BUILTIN[key]
    path = Path(name_or_path)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        return dilemma_from_file(path)
    raise UserError(
        f"unknown game {name_or_path!r}; built-in games: {', '.join(BUILTIN)} (or a path to a YAML file)"
    )


def dilemma_from_file(path: Path) -> Dilemma:
    data = load_yaml(path, "game file")  # missing, not UTF-8, bad YAML: a UserError naming the file
    if not isinstance(data, dict):
        raise UserError(f"game file {path} must hold a mapping with name, kind, actions and payoffs")
    data.setdefault("title", data.get("name", path.stem))
    try:
        return Dilemma.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        raise UserError(f"game file {path}: {where}: {msg}" if where else f"game file {path}: {msg}") from None


def format_points(x: float) -> str:
    """Points as players read them: the exact amount paid (payoffs are rounded to 6 decimals), no padding.

    ``f"{x:g}"`` would show only 6 significant digits (2.333333 as 2.33333), so players would be told
    a different number than they are paid.
    """
    text = f"{round(x, 6):.6f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


NEUTRAL_LABELS = ("J", "K")
"""The actions' labels under ``framing: neutral``: cooperative first."""


def neutral_framing(d: Dilemma) -> Dilemma:
    """The same payoffs without the game's name, story or action words: the actions become 'J' and 'K'.

    The rules text of the result names no game and says nothing of helping the group or of anyone's
    motives; players read only the labels and the payoff table.
    """
    coop, defect = NEUTRAL_LABELS
    return d.model_copy(update={"title": "", "description": "", "cooperate": coop, "defect": defect})


CONVERSATION = "conversation"
"""The name of the non-game control: players talk round after round, with no actions and no payoffs."""


def is_conversation(game: str) -> bool:
    """Whether a spec's ``game`` is the non-game control (:data:`CONVERSATION`)."""
    return game.strip().lower() == CONVERSATION


def conversation_text(players: int, rounds: int | None) -> str:
    """What every participant of the non-game control reads in place of the rules."""
    others = players - 1
    horizon = (f"The conversation lasts {rounds} rounds." if rounds
               else "The conversation lasts an unknown number of rounds.")
    return "\n".join([
        f"You are taking part in a conversation with {others} other participant{'s' if others > 1 else ''}. "
        f"{horizon}",
        "Each round, every participant writes short messages that all the others read.",
        "Nothing is at stake; simply talk with the others.",
    ])


def rules_text(d: Dilemma, players: int, rounds: int | None) -> str:
    """The rules every player reads, generated from the payoff data."""
    others = players - 1
    horizon = f"The game lasts {rounds} rounds." if rounds else "The game lasts an unknown number of rounds."
    title = f" ({d.title})" if d.title else ""
    lines = [
        f"You are playing a repeated game{title} with {others} other player{'s' if others > 1 else ''}. "
        f"{horizon}",
        d.description,
        f"Each round, every player privately chooses one action: '{d.cooperate}' or '{d.defect}'. "
        "All choices are revealed at the same time.",
        f"Your points for the round depend on your action and on how many of the {others} other players "
        f"choose '{d.cooperate}':",
    ]
    for k, c, x in d.table(players):
        lines.append(f"- {k} other(s) choose '{d.cooperate}': you get {format_points(c)} if you choose "
                     f"'{d.cooperate}', {format_points(x)} if you choose '{d.defect}'.")
    lines.append("Before choosing, players may talk to each other. Your goal is to earn points.")
    return "\n".join(line for line in lines if line)
