"""Tidy tables from a run's store, built by streaming the records one at a time.

Every analysis, figure and statistic of the report starts from these tables; they are plain pandas
data frames with one row per observation, so they can also be used directly in a notebook:

* :attr:`RunTables.drift` — one row per **focal agent and trait** (a focal agent is a player with
  both a pre-play and a post-play profile): the condition (model, game, composition, intervention,
  chat turns, rep, seed; the design factors ``option_order`` — which action the act prompt listed
  first —, ``co_player_seat`` — the seat of the non-default co-player, -1 for none — and ``framing``),
  the player, ``pre``, ``post`` and ``drift``, the primary estimand: **post − sham** (the *susceptibility*:
  (post − pre) − (sham − pre), the drift beyond what a neutral history of the same length does; ``sham``
  holds the sham trait mean) when every measured agent of the run has a sham profile, else post − pre
  (:attr:`RunInfo.estimand` says which). ``raw_drift`` is post − pre always (secondary), and
  ``flat_drift`` is post − pre net of flattening (post minus what pure flattening toward ½ predicts from
  the pre-play score, :func:`flattening_factor` ``flat_k`` estimated on the control traits). Pre and post
  are trait means over the items both profiles scored (paired, as :func:`contagion.traits.profile.drift`
  does); post − sham pairs the post and sham profiles the same way. Each agent also has one row with
  ``trait == PROSOCIAL`` for the pro-social index (mean of the pro-social trait means minus mean of the
  anti-social ones; ``polarity == "index"``).
  ``cluster`` identifies what was played (:func:`history_key`): games with identical transcripts
  share it, and the statistics treat them as one game.
* :attr:`RunTables.actions` — one row per game, round and player: action and payoff.
* :attr:`RunTables.players` — one row per game and player: total payoff, cooperation rate, invalid
  rate, injections received and the round of the first (``first_injection``, NaN for none).
* :attr:`RunTables.games` — one row per game (failed ones too): status, error, cooperation, invalid
  rate, injections, the winner.

Memory holds the tidy rows and nothing else: records are decoded one at a time and dropped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import pandas as pd

from contagion.errors import UserError
from contagion.experiment.record import GameRecord
from contagion.experiment.store import Store
from contagion.experiment.support import Support, tally
from contagion.games.record import PlayerRecord
from contagion.traits.inventory import Polarity
from contagion.traits.profile import prosocial_index

SHAM_ESTIMAND = "post − sham"
"""The primary estimand's label when the run has sham profiles: (post − pre) − (sham − pre)."""
RAW_ESTIMAND = "post − pre"
"""The raw drift's label (the primary estimand of runs without sham profiles; secondary otherwise)."""

PROSOCIAL = "prosocial-index"
"""The ``trait`` value of the pro-social index rows in :attr:`RunTables.drift`."""

CONDITION = ("model", "game", "composition", "intervention", "chat_turns")
"""The columns that name a condition cell (a rep is one game of a cell)."""

ALL_DEFAULT = "all-default"
MALICIOUS_LM = "malicious-lm"
SCRIPTED_DEFECTOR = "scripted-defector"
SCRIPTED_OTHER = "scripted-other"
ALWAYS_DEFECT = "always-defect"
"""The scripted strategy (``PlayerRecord.strategy``) that makes a seating ``scripted-defector``."""
BENEVOLENT = "benevolent"
OTHER = "other"


class SeatFacts(Protocol):
    """What :func:`composition_kind` needs to know of a seat (a :class:`PlayerRecord` says it; :class:`Seat`
    holds it for a seating not yet played)."""

    @property
    def persona(self) -> str: ...
    @property
    def language_model(self) -> bool: ...
    @property
    def strategy(self) -> str | None: ...


@dataclass(frozen=True)
class Seat:
    """A seat's facts outside a record: its persona, whether it is a language model, its scripted strategy."""

    persona: str
    language_model: bool
    strategy: str | None = None


def composition_kind(players: Iterable[SeatFacts]) -> str:
    """What a seating is, whatever the user named it, from what its players say they are (their records'
    ``language_model`` and ``strategy``: no backend is asked).

    ``malicious-lm`` (a language model with the malicious persona sits at the table),
    ``scripted-defector`` (a scripted always-defect player), ``scripted-other`` (another scripted
    player), ``all-default`` (every player a default-persona LM), ``benevolent`` or ``other``.
    """
    seats = list(players)
    lm = [p.persona for p in seats if p.language_model]
    scripted = [p.strategy for p in seats if not p.language_model]
    if "malicious" in lm:
        return MALICIOUS_LM
    if ALWAYS_DEFECT in scripted:
        return SCRIPTED_DEFECTOR
    if scripted:
        return SCRIPTED_OTHER
    if all(p == "default" for p in lm):
        return ALL_DEFAULT
    if "benevolent" in lm:
        return BENEVOLENT
    return OTHER


@dataclass
class RunInfo:
    """Facts about a run that the methods section states (collected while streaming)."""

    run_dir: str | None = None
    config: dict[str, Any] | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})
    failures: list[tuple[str, str]] = field(default_factory=list)
    methods: Counter[str] = field(default_factory=Counter)
    debiased: Counter[bool] = field(default_factory=Counter)
    inventories: Counter[str] = field(default_factory=Counter)
    items_per_trait: dict[str, int] = field(default_factory=dict)
    bootstrap: set[int] = field(default_factory=set)
    question_formats: set[int] = field(default_factory=set)
    action_formats: set[int] = field(default_factory=set)
    """Action format versions of the actions (1 for records made before actions carried one)."""
    seeds: set[int] = field(default_factory=set)
    action_methods: Counter[str] = field(default_factory=Counter)
    """How actions were chosen, by full method (``score:first-token-top-logprobs``, ``generate``, ...)."""
    record_methods: Counter[str] = field(default_factory=Counter)
    """Finished records by the scoring methods they used (actions and profiles), e.g. ``first-token-top-logprobs``."""
    backend_methods: dict[str, Counter[str]] = field(default_factory=dict)
    """backend spec -> scoring method -> finished records in which that backend used it."""
    configs: list[dict[str, Any]] = field(default_factory=list)
    """Every config run into the store (``Store.configs``); more than one when a run was extended."""
    versions: Counter[str] = field(default_factory=Counter)
    compositions: dict[str, str] = field(default_factory=dict)
    """composition name -> composition kind."""
    composition_seats: dict[str, list[str]] = field(default_factory=dict)
    """composition name -> seat labels as played (``persona=backend``)."""
    support: dict[str, Support] = field(default_factory=dict)
    """backend -> the answer masses its scores rest on (:mod:`contagion.experiment.support`)."""
    estimand: str = RAW_ESTIMAND
    """What ``drift`` is: ``post − sham`` (every measured agent has a sham profile) or ``post − pre`` (set by
    :meth:`TableBuilder.build`; tables built by hand, without sham columns, are post − pre)."""
    sham_missing: int = 0
    """Measured agents without a sham profile (any makes the run fall back to post − pre)."""
    sham_match: list[tuple[int, int, float | None, float | None]] = field(default_factory=list)
    """Per measured agent with a sham: (post-play context characters, sham characters, prompt tokens per
    question after each, where the backend counted them)."""


@dataclass
class RunTables:
    """The tidy tables of one run (see the module docstring) and its :class:`RunInfo`."""

    drift: pd.DataFrame
    actions: pd.DataFrame
    players: pd.DataFrame
    games: pd.DataFrame
    info: RunInfo
    drift_sets: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Drift of the pro-social index on other item sets, per agent: ``set`` = ``source`` (SIT's own items:
    how much of SIT's effect is echo), ``yes-keyed`` / ``no-keyed`` (measured items by key: a change of
    yes-saying moves the two apart)."""
    instrument: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per agent: answer mass, toward-½ and excluded items, pre and post (flattening and lost confidence)."""
    item_drift: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The primary drift (post − sham, or post − pre: :attr:`RunInfo.estimand`) per measured item, summed over
    the agents of a cell that share a baseline (``drift_sum``, ``n``): the item-resampling estimate of the
    error a finite item sample leaves in the mean (:mod:`contagion.analysis.contrasts`)."""
    item_drift_raw: pd.DataFrame = field(default_factory=pd.DataFrame)
    """As :attr:`item_drift`, of post − pre (the raw, secondary rows)."""
    monitor: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The white-box monitor's readings (runs with ``monitor``): per player, turn (``round``, ``phase`` talk/act,
    ``turn``) and trait, the projection ``value`` of the prompt's last-token residual on the trait's direction."""

    @property
    def agents(self) -> pd.DataFrame:
        """One row per focal agent: its pro-social index pre, post and drift."""
        return self.drift[self.drift["trait"] == PROSOCIAL].reset_index(drop=True)

    @property
    def traits(self) -> list[str]:
        """The measured traits (without the index), in the order first seen."""
        return [t for t in pd.unique(self.drift["trait"]) if t != PROSOCIAL] if len(self.drift) else []

    @property
    def ok_games(self) -> pd.DataFrame:
        """The finished games (failed ones are in :attr:`games` with their error)."""
        return self.games[self.games["status"] == "ok"]

    @functools.cached_property
    def default_agents(self) -> pd.DataFrame:
        """Drift rows of default-persona agents, one per distinct agent (see :func:`distinct_agents`)."""
        if self.drift.empty:
            return self.drift
        return distinct_agents(self.drift[self.drift["persona"].astype(str) == "default"])


def distinct_agents(drift: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct agent: replayed games (same transcript, same condition) are averaged into one."""
    if drift.empty:
        return drift
    keys = ["model", "game", "composition", "composition_kind", "intervention", "intervention_kind",
            "chat_turns", "cluster", "player", "persona", "pre_key", "trait", "polarity"]
    dup = drift.duplicated(subset=keys, keep=False)
    if not dup.any():
        return drift
    first = drift.groupby(keys, observed=True, sort=False, as_index=False).agg(
        game_id=("game_id", "first"), rep=("rep", "first"), seed=("seed", "first"), pre=("pre", "mean"),
        post=("post", "mean"), drift=("drift", "mean"), n_items=("n_items", "first"), records=("game_id", "size"),
        **{c: (c, "mean") for c in _SECONDARY if c in drift.columns},
        **{c: (c, "first") for c in ("option_order", "co_player_seat", "framing") if c in drift.columns})
    return first


# -- building ---------------------------------------------------------------------------------------

_COND_COLS = ("game_id", "cluster", "model", "game", "composition", "composition_kind", "intervention",
              "intervention_kind", "chat_turns", "rep", "seed", "option_order", "co_player_seat", "framing")
_SECONDARY = ("sham", "raw_drift", "flat_drift", "flat_k", "flat_k_var")
"""Drift columns beside the primary ``drift`` (see the module docstring)."""
_DRIFT_COLS = (*_COND_COLS, "player", "persona", "pre_key", "trait", "polarity", "pre", "post", "drift", "n_items",
               "adjusted", *_SECONDARY)
_ACTION_COLS = (*_COND_COLS, "round", "player", "persona", "focal", "lm", "action", "payoff")
_PLAYER_COLS = (*_COND_COLS, "player", "index", "persona", "backend", "focal", "lm", "total", "cooperation",
                "invalid_rate", "injections", "tokens", "first_injection")
_GAME_COLS = (*_COND_COLS, "status", "error", "players", "rounds", "cooperation", "invalid_rate", "injections",
              "winner", "wall_seconds")
_SET_COLS = (*_COND_COLS, "player", "persona", "set", "pre", "post", "drift", "n_items")
_MONITOR_COLS = (*_COND_COLS, "player", "persona", "focal", "round", "phase", "turn", "trait", "value")
_ITEM_COLS = ("model", "game", "composition", "intervention", "intervention_kind", "chat_turns", "persona",
              "pre_key", "trait", "item_id", "drift_sum", "n")
_INSTRUMENT_COLS = (*_COND_COLS, "player", "persona", "mass_pre", "mass_post", "mass_drift", "toward_half_pre",
                    "toward_half_post", "toward_half_drift", "excluded_pre", "excluded_post", "measured_items",
                    "control_half_pre", "control_half_post")


class _Columns:
    """Rows appended column-wise (lists of scalars: the cheapest way to hold tidy rows)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.data: dict[str, list[Any]] = {n: [] for n in names}

    def add(self, values: tuple[Any, ...]) -> None:
        for name, value in zip(self.names, values, strict=True):
            self.data[name].append(value)

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.data, columns=list(self.names))
        for name in ("model", "game", "composition", "composition_kind", "intervention", "intervention_kind",
                     "trait", "polarity", "persona", "player", "action", "status", "backend"):
            if name in df.columns:
                df[name] = df[name].astype("category")
        return df


def _chosen(it: dict[str, Any], role: str, keyed: str | None) -> bool:
    return (it.get("role", "measure") == role and it.get("included", True)
            and (keyed is None or it.get("matching") == keyed))


def paired_trait_means(pre: dict[str, Any], post: dict[str, Any], *, role: str = "measure",
                       keyed: str | None = None) -> dict[str, tuple[str, float, float, int]]:
    """trait -> (polarity, pre mean, post mean, items) over the items both profiles scored and included,
    of ``role`` (the measurement set by default; ``source`` for SIT's source set), keyed ``keyed`` if given."""
    before = {(it["trait"], it["item_id"]): float(it["score"]) for it in pre.get("items", [])
              if _chosen(it, role, keyed)}
    sums: dict[str, list[float]] = {}
    for it in post.get("items", []):
        key = (it["trait"], it["item_id"])
        if key in before and _chosen(it, role, keyed):
            acc = sums.setdefault(it["trait"], [0.0, 0.0, 0.0])
            acc[0] += before[key]
            acc[1] += float(it["score"])
            acc[2] += 1
    out: dict[str, tuple[str, float, float, int]] = {}
    polarity = {t: s.get("polarity", "neutral") for t, s in {
        **pre.get("source_traits", {}), **post.get("source_traits", {}),
        **pre.get("traits", {}), **post.get("traits", {})}.items()}
    for trait, (a, b, n) in sums.items():
        out[trait] = (str(polarity.get(trait, "neutral")), a / n, b / n, int(n))
    return out


def control_toward_half(pre: dict[str, Any], post: dict[str, Any]) -> tuple[float | None, float | None]:
    """(pre, post) mean |score − ½| over the measured items of the neutral (control) traits that both profiles
    scored and included: how far from ½ answers sit on items no planted or real trait change should move, so a
    change between pre and post is lost confidence (flattening) and nothing else. (None, None) without
    control items."""
    polarity = {t: str(v.get("polarity", "neutral")) for t, v in {**pre.get("traits", {}),
                                                                  **post.get("traits", {})}.items()}
    before = {it["item_id"]: float(it["score"]) for it in pre.get("items", [])
              if _chosen(it, "measure", None) and polarity.get(it["trait"]) == "neutral"}
    pairs = [(before[it["item_id"]], float(it["score"])) for it in post.get("items", [])
             if it["item_id"] in before and _chosen(it, "measure", None)]
    if not pairs:
        return None, None
    return (sum(abs(a - 0.5) for a, _ in pairs) / len(pairs), sum(abs(b - 0.5) for _, b in pairs) / len(pairs))


def paired_index(means: dict[str, tuple[str, float, float, int]], which: int) -> float | None:
    """The pro-social index (:func:`contagion.traits.profile.prosocial_index`, the profile's definition) of
    :func:`paired_trait_means` output: ``which`` = 1 for pre, 2 for post."""
    polarity = {t: cast(Polarity, v[0]) for t, v in means.items()}
    index = prosocial_index({t: float(v[which]) for t, v in means.items()}, polarity)
    return None if index is None else float(index)


def flattening_factor(pre: dict[str, Any], post: dict[str, Any]) -> tuple[float, float]:
    """``k``: how far an agent's answers kept their distance from ½, estimated on its control traits (those
    of neutral polarity, which should not drift): the root-mean-square distance from ½ of the control items'
    post-play scores over that of their pre-play scores (the items both profiles scored) — 1 when nothing
    flattened, 0 when every answer went to ½. A ratio of spreads rather than a regression slope of post on
    pre: the pre-play scores' own noise would pull a slope below 1 with no flattening at all. NaN with fewer
    than two control items or no spread of their pre-play scores.

    Returns ``(k, var)``: ``var`` is the jackknife variance of ``k`` over the control items (which items were
    drawn and how their scores fell), the error the analysis adds when it subtracts ``k`` · pre."""
    means = paired_items(pre, post)
    polarity = _polarities(pre, post)
    pairs = [(a - 0.5, b - 0.5) for (trait, _), (a, b) in means.items() if polarity.get(trait) == "neutral"]

    def ratio(chosen: list[tuple[float, float]]) -> float:
        den = sum(a * a for a, _ in chosen)
        return math.sqrt(sum(b * b for _, b in chosen) / den) if den > 1e-9 else math.nan

    if len(pairs) < 2:
        return math.nan, math.nan
    k = ratio(pairs)
    if not math.isfinite(k):
        return math.nan, math.nan
    loo = [ratio(pairs[:i] + pairs[i + 1:]) for i in range(len(pairs))]
    if not all(math.isfinite(x) for x in loo):
        return k, math.nan
    mean = sum(loo) / len(loo)
    n = len(loo)
    return k, (n - 1) / n * sum((x - mean) ** 2 for x in loo)


def paired_items(pre: dict[str, Any], post: dict[str, Any]) -> dict[tuple[str, str], tuple[float, float]]:
    """(trait, item id) -> (pre score, post score) of the measured items both profiles scored and included."""
    before = {(it["trait"], it["item_id"]): float(it["score"]) for it in pre.get("items", [])
              if _chosen(it, "measure", None)}
    return {(it["trait"], it["item_id"]): (before[(it["trait"], it["item_id"])], float(it["score"]))
            for it in post.get("items", []) if (it["trait"], it["item_id"]) in before and _chosen(it, "measure", None)}


def _polarities(*profiles: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for prof in profiles:
        for t, body in {**prof.get("source_traits", {}), **prof.get("traits", {})}.items():
            out[t] = str(body.get("polarity", "neutral"))
    return out


def _pre_key(profile: dict[str, Any]) -> str:
    """An id of one pre-play measurement (agents sharing it share their baseline's measurement error)."""
    payload = json.dumps([(it["item_id"], round(float(it["score"]), 12)) for it in profile.get("items", [])])
    return hashlib.blake2b(f"{profile.get('backend')}|{payload}".encode(), digest_size=6).hexdigest()


def history_key(record: GameRecord) -> str:
    """An id of what was played (:meth:`GameRecord.transcript_key`): games with identical transcripts share it.

    A deterministic model without chat replays the very same game for every seed; such replays are
    one observation, not several, so the statistics cluster on this key rather than on the record.
    Failed games keep their own id.
    """
    return record.transcript_key()


def co_player_seat(record: GameRecord) -> int:
    """The seat (0-based) of the first co-player that is not a default-persona language model — the
    malicious, benevolent or scripted player whose seat configs randomise — or -1 when there is none (and
    for a failed game, whose players were not recorded)."""
    for i, p in enumerate(record.players):
        if p.persona != "default" or not p.language_model:
            return i
    return -1


def _winner(players: list[PlayerRecord]) -> str:
    if not players:
        return ""
    best = max(p.total for p in players)
    top = [p.name for p in players if p.total == best]
    return top[0] if len(top) == 1 else "tie"


class TableBuilder:
    """Accumulates tidy rows record by record; :meth:`build` returns the :class:`RunTables`."""

    def __init__(self, info: RunInfo | None = None) -> None:
        self.info = info or RunInfo()
        self._drift = _Columns(_DRIFT_COLS)
        self._actions = _Columns(_ACTION_COLS)
        self._players = _Columns(_PLAYER_COLS)
        self._games = _Columns(_GAME_COLS)
        self._sets = _Columns(_SET_COLS)
        self._instrument = _Columns(_INSTRUMENT_COLS)
        self._monitor = _Columns(_MONITOR_COLS)
        self._items: dict[tuple[Any, ...], list[float]] = {}
        self._items_raw: dict[tuple[Any, ...], list[float]] = {}

    def add(self, record: GameRecord) -> None:
        """Add one game's rows (the record can be dropped afterwards)."""
        labels = record.labels
        players = record.players
        composition = str(labels.get("composition", ""))
        # a failed game recorded no players: its kind is its composition's, from the games that were played
        # (filled in by build(); empty where no game of the composition finished)
        kind = composition_kind(players) if players else ""
        if composition and composition not in self.info.compositions and players:
            self.info.compositions[composition] = kind
        if composition and composition not in self.info.composition_seats and record.spec.game.players:
            seats = [p.label() for p in record.spec.game.players]
            order = labels.get("seats")  # a shuffled seating: composition seat order[k] sits in place k
            if isinstance(order, list) and sorted(order) == list(range(len(seats))):
                seats = [seats[order.index(j)] for j in range(len(seats))]
            self.info.composition_seats[composition] = seats
        cond = (
            record.spec_hash, history_key(record), str(labels.get("model", players[0].backend if players else "")),
            str(labels.get("game", record.spec.game.game)), composition, kind,
            str(labels.get("intervention", record.spec.intervention.label())), record.spec.intervention.name,
            int(labels.get("chat_turns", record.spec.game.chat_turns)), int(labels.get("rep", 0)),
            record.spec.game.seed, record.spec.game.option_order, co_player_seat(record), record.spec.game.framing,
        )
        self.info.seeds.add(record.spec.game.seed)
        if record.contagion_version:
            self.info.versions[record.contagion_version] += 1
        if record.error:
            self.info.counts["failed"] = self.info.counts.get("failed", 0) + 1
            self._games.add((*cond, "failed", record.error, len(record.spec.game.players), len(record.rounds),
                             None, None, None, "", record.wall_seconds))
            return
        self.info.counts["ok"] = self.info.counts.get("ok", 0) + 1
        tally(record, self.info.support)
        lm = [p.language_model for p in players]
        for rnd in record.rounds:
            if not rnd.actions:  # the non-game control (conversation): talk only, no actions
                continue
            for i, p in enumerate(players):
                self._actions.add((*cond, rnd.round, p.name, p.persona, p.focal, lm[i], rnd.actions[i],
                                   rnd.payoffs[i]))
        n_inj = 0
        used: dict[str, set[str]] = {}  # backend -> scoring methods in this record
        for i, p in enumerate(players):
            acts = [a.action for a in p.actions]
            for a in p.actions:
                self.info.action_methods[a.method or "?"] += 1
                _one_format("action", self.info.action_formats, a.format_version or 1)
                if a.method and a.method.startswith("score:"):
                    used.setdefault(p.backend, set()).add(a.method.removeprefix("score:"))
            for prof in (p.pre_profile, p.post_profile):
                if prof and prof.get("method"):
                    used.setdefault(p.backend, set()).add(str(prof["method"]))
            coop = sum(a == "cooperate" for a in acts) / len(acts) if acts else None
            n_inj += len(p.injections)
            self._players.add((*cond, p.name, p.index, p.persona, p.backend, p.focal, lm[i], p.total, coop,
                               p.invalid_rate, len(p.injections),
                               p.prompt_tokens + p.completion_tokens,
                               min((e.round for e in p.injections), default=None)))
            if p.pre_profile and p.post_profile:
                self._add_agent(cond, p)
            for reading in p.monitor:
                for trait, value in reading.values.items():
                    self._monitor.add((*cond, p.name, p.persona, p.focal, reading.round, reading.phase, reading.turn,
                                       trait, value))
        for backend, methods in used.items():
            _one_position(backend, set(self.info.backend_methods.get(backend, ())) | methods)
            counter = self.info.backend_methods.setdefault(backend, Counter())
            counter.update(methods)
        self.info.record_methods[" + ".join(sorted(set().union(*used.values()))) or "none"] += 1
        all_acts = [a for r in record.rounds for a in r.actions]
        coop_all = sum(a == "cooperate" for a in all_acts) / len(all_acts) if all_acts else None
        self._games.add((*cond, "ok", None, len(players), len(record.rounds), coop_all, record.invalid_rate,
                         n_inj, _winner(players), record.wall_seconds))

    def _add_agent(self, cond: tuple[Any, ...], p: PlayerRecord) -> None:
        pre, post, sham = p.pre_profile or {}, p.post_profile or {}, p.sham_profile
        info = self.info
        if sham is None:
            info.sham_missing += 1
        elif p.sham_context:
            c = p.sham_context
            info.sham_match.append((int(c.get("chars_post", 0)), int(c.get("chars_sham", 0)),
                                    c.get("prompt_tokens_post"), c.get("prompt_tokens_sham")))
        for prof in (pre, post, *((sham,) if sham else ())):
            info.methods[str(prof.get("method", "?"))] += 1
            info.debiased[bool(prof.get("debiased", False))] += 1
            info.inventories[str(prof.get("inventory", "?"))] += 1
            if "bootstrap" in prof:
                info.bootstrap.add(int(prof["bootstrap"]))
            if "question_format_version" in prof:
                _one_format("question", info.question_formats, int(prof["question_format_version"]))
        means = paired_trait_means(pre, post)
        key = _pre_key(pre)
        for items, reference in ((self._items_raw, pre), *(((self._items, sham),) if sham else ())):
            for (trait, item_id), (a, b) in paired_items(reference, post).items():
                acc = items.setdefault((*cond[2:5], *cond[6:9], p.persona, key, trait, item_id), [0.0, 0])
                acc[0] += b - a
                acc[1] += 1
        # post − sham over the items both scored; the flattening factor from the control traits
        adjusted = paired_trait_means(sham, post) if sham else {}
        k, k_var = flattening_factor(pre, post)
        nan = math.nan
        for trait, (polarity, a, b, n) in means.items():
            info.items_per_trait[trait] = max(info.items_per_trait.get(trait, 0), n)
            s_row = adjusted.get(trait)
            flat = b - (0.5 + k * (a - 0.5)) if math.isfinite(k) else nan
            self._drift.add((*cond, p.name, p.persona, key, trait, polarity, a, b, b - a, n,
                             s_row[2] - s_row[1] if s_row else nan, s_row[1] if s_row else nan, b - a, flat, k,
                             k_var))
        pre_i, post_i = paired_index(means, 1), paired_index(means, 2)
        if pre_i is not None and post_i is not None:
            sham_i, post_s = (paired_index(adjusted, 1), paired_index(adjusted, 2)) if adjusted else (None, None)
            adj = post_s - sham_i if post_s is not None and sham_i is not None else nan
            # pure flattening predicts post = ½ + k (pre − ½) item by item, so an index of k · pre
            flat = post_i - k * pre_i if math.isfinite(k) else nan
            self._drift.add((*cond, p.name, p.persona, key, PROSOCIAL, "index", pre_i, post_i, post_i - pre_i,
                             sum(v[3] for v in means.values() if v[0] != "neutral"), adj,
                             nan if sham_i is None else sham_i, post_i - pre_i, flat, k, k_var))
        for name, role, keyed in (("source", "source", None), ("yes-keyed", "measure", "Yes"),
                                  ("no-keyed", "measure", "No")):
            sub = paired_trait_means(pre, post, role=role, keyed=keyed)
            a_i, b_i = paired_index(sub, 1), paired_index(sub, 2)
            if a_i is not None and b_i is not None:
                self._sets.add((*cond, p.name, p.persona, name, a_i, b_i, b_i - a_i,
                                sum(v[3] for v in sub.values() if v[0] != "neutral")))
        def delta(field: str) -> tuple[float | None, float | None, float | None]:
            a, b = pre.get(field), post.get(field)
            return a, b, (None if a is None or b is None else float(b) - float(a))

        measured = sum(1 for it in pre.get("items", []) if it.get("role", "measure") == "measure")
        self._instrument.add((*cond, p.name, p.persona, *delta("mass_mean"), *delta("toward_half"),
                              int(pre.get("excluded", 0)), int(post.get("excluded", 0)), measured,
                              *control_toward_half(pre, post)))

    def build(self) -> RunTables:
        """The tables of every record added so far."""
        kinds, names = self._games.data["composition_kind"], self._games.data["composition"]
        for i, (kind, name) in enumerate(zip(kinds, names, strict=True)):
            if not kind:  # a failed game: its composition's kind, from the games of it that were played
                kinds[i] = self.info.compositions.get(name, "")
        drift = self._drift.frame()
        raw_items = _item_frame(self._items_raw)
        items = raw_items
        # the primary estimand: post − sham where every measured agent has a sham profile, else post − pre
        if self.info.sham_missing == 0 and len(drift):
            self.info.estimand = SHAM_ESTIMAND
            drift = drift.assign(drift=drift["adjusted"]).dropna(subset=["drift"]).reset_index(drop=True)
            items = _item_frame(self._items)
        else:
            self.info.estimand = RAW_ESTIMAND
        drift = drift.drop(columns=["adjusted"])
        return RunTables(drift=drift, actions=self._actions.frame(), players=self._players.frame(),
                         games=self._games.frame(), info=self.info, drift_sets=self._sets.frame(),
                         instrument=self._instrument.frame(), item_drift=items, item_drift_raw=raw_items,
                         monitor=self._monitor.frame())


def _item_frame(items: dict[tuple[Any, ...], list[float]]) -> pd.DataFrame:
    return pd.DataFrame([(*k, v[0], int(v[1])) for k, v in items.items()], columns=list(_ITEM_COLS))


def _one_format(kind: str, seen: set[int], version: int) -> None:
    """Add a record's question or action format version; scores of two formats are never mixed."""
    if seen and version not in seen:
        other = min(seen)
        raise UserError(
            f"these records mix {kind} format versions {min(other, version)} and {max(other, version)}: "
            "scores measured in different formats are not comparable, so they are not analysed together. "
            "Analyse the runs separately (or re-run the older one with this version of contagion)."
        )
    seen.add(version)


POSITION_METHODS = ("first-token-top-logprobs", "answer-token-top-logprobs")
"""Scoring methods that read different positions of a reply: one model's scores by both are two instruments."""


def _one_position(backend: str, methods: set[str]) -> None:
    """Refuse records that score one model at two positions (its first token, and where its answer is):
    every comparison of the analysis is within one model, so it would compare two instruments."""
    both = [m for m in POSITION_METHODS if any(m in used for used in methods)]
    if len(both) > 1:
        raise UserError(
            f"these records score {backend} by two methods, {' and '.join(both)}: the first reply token and the "
            "answer's token are different measurements, so its scores are not compared across them. Analyse "
            "the runs separately, or re-run one of them with the other's `score=` option."
        )


def tables_from_records(records: Iterable[GameRecord], info: RunInfo | None = None) -> RunTables:
    """Tidy tables from any stream of records (e.g. games played in-process)."""
    builder = TableBuilder(info)
    for record in records:
        builder.add(record)
    return builder.build()


def load_tables(run_dir: Path) -> RunTables:
    """Tidy tables of the run in ``run_dir``, streamed from its store (failed games included in ``games``)."""
    with Store.open_existing(run_dir) as store:
        info = RunInfo(run_dir=str(run_dir), config=store.config(), failures=store.failures(),
                       configs=store.configs())
        tables = tables_from_records(store.iter_records(status=None), info)
    return tables


# -- derived tables ---------------------------------------------------------------------------------


def cooperation_by_round(tables: RunTables, by: tuple[str, ...] = ("composition",), *,
                         who: str = "focal") -> pd.DataFrame:
    """Cooperation rate per round by condition: ``who`` = ``focal`` (measured agents), ``lm`` or ``all``.

    Columns: the ``by`` columns, ``round``, ``rate`` (share of actions that were cooperate; invalid
    actions count as not cooperating), ``invalid`` (share invalid), ``n`` (actions), ``games``.
    """
    df = tables.actions
    if who == "focal":
        df = df[df["focal"]]
    elif who == "lm":
        df = df[df["lm"]]
    if df.empty:
        return pd.DataFrame(columns=[*by, "round", "rate", "invalid", "n", "games"])
    df = df.assign(coop=(df["action"] == "cooperate").astype(float), inv=(df["action"] == "invalid").astype(float))
    out = (df.groupby([*by, "round"], observed=True)
           .agg(rate=("coop", "mean"), invalid=("inv", "mean"), n=("coop", "size"), games=("game_id", "nunique"))
           .reset_index())
    return out


def payoffs_by_condition(tables: RunTables, by: tuple[str, ...] = ("game", "composition", "intervention"),
                         ) -> pd.DataFrame:
    """Mean total payoff per player, by condition and persona (scripted players are their own persona)."""
    df = tables.players
    if df.empty:
        return pd.DataFrame(columns=[*by, "seat", "payoff", "cooperation", "players"])
    seat = df["persona"].astype(str).where(df["lm"], df["backend"].astype(str))
    df = df.assign(seat=seat)
    return (df.groupby([*by, "seat"], observed=True)
            .agg(payoff=("total", "mean"), cooperation=("cooperation", "mean"), players=("total", "size"))
            .reset_index())


def invalid_rates(tables: RunTables, by: tuple[str, ...] = ("model", "game", "composition", "intervention")
                  ) -> pd.DataFrame:
    """Invalid-action rate of language-model players, by condition."""
    df = tables.actions
    df = df[df["lm"]]
    if df.empty:
        return pd.DataFrame(columns=[*by, "invalid", "actions", "games"])
    df = df.assign(inv=(df["action"] == "invalid").astype(float))
    return (df.groupby(list(by), observed=True)
            .agg(invalid=("inv", "mean"), actions=("inv", "size"), games=("game_id", "nunique")).reset_index())


def injections_by_condition(tables: RunTables, by: tuple[str, ...] = ("intervention", "chat_turns")
                            ) -> pd.DataFrame:
    """Injected steering messages per game (all players), by condition."""
    df = tables.ok_games
    if df.empty:
        return pd.DataFrame(columns=[*by, "injections", "games"])
    return (df.groupby(list(by), observed=True)
            .agg(injections=("injections", "mean"), games=("game_id", "size")).reset_index())


def games_per_cell(tables: RunTables) -> pd.DataFrame:
    """Finished and failed games per condition cell."""
    df = tables.games
    if df.empty:
        return pd.DataFrame(columns=[*CONDITION, "ok", "failed"])
    counts = (df.assign(ok=(df["status"] == "ok").astype(int), failed=(df["status"] == "failed").astype(int))
              .groupby(list(CONDITION), observed=True)[["ok", "failed"]].sum().reset_index())
    return counts
