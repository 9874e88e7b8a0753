"""Dilemmas as data: the orderings that define each game hold for every N and every k; bad games are
rejected with the reason; the rules text players read states exactly what :meth:`Dilemma.payoff` pays."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from contagion.errors import UserError
from contagion.games.dilemmas import (
    BUILTIN,
    CHICKEN,
    PRISONERS_DILEMMA,
    STAG_HUNT,
    Dilemma,
    dilemma_from_file,
    format_points,
    load_dilemma,
    rules_text,
    tie_problem,
)

players = st.integers(min_value=2, max_value=12)


def c(d: Dilemma, k: int, n: int) -> float:
    return d.payoff(True, k, n)


def x(d: Dilemma, k: int, n: int) -> float:
    return d.payoff(False, k, n)


def all_payoffs(d: Dilemma, n: int) -> list[float]:
    return [p for k in range(n) for p in (c(d, k, n), x(d, k, n))]


# -- the defining orderings, per kind (module docstring of contagion.games.dilemmas) ---------------


def check_prisoners_dilemma(d: Dilemma, n: int) -> None:
    for k in range(n):
        assert x(d, k, n) > c(d, k, n), f"defection must strictly dominate at k={k}, n={n}"
        if k < n - 1:  # everyone is better off the more others cooperate
            assert c(d, k + 1, n) > c(d, k, n) and x(d, k + 1, n) > x(d, k, n)
    assert c(d, n - 1, n) > x(d, 0, n), "all cooperating must beat all defecting"
    # the 2-player anchor: mutual cooperation beats taking turns exploiting each other
    assert 2 * c(d, n - 1, n) > x(d, n - 1, n) + c(d, 0, n)


def check_chicken(d: Dilemma, n: int) -> None:
    assert x(d, n - 1, n) > c(d, n - 1, n), "go straight when everyone else swerves"
    assert c(d, 0, n) > x(d, 0, n), "swerve when nobody else does"
    payoffs = all_payoffs(d, n)
    crash = x(d, 0, n)
    assert min(payoffs) == crash and payoffs.count(crash) == 1, "the crash is the unique worst outcome"
    assert max(payoffs) == x(d, n - 1, n), "the lone straight driver earns the most"


def check_stag_hunt(d: Dilemma, n: int) -> None:
    assert c(d, n - 1, n) > x(d, n - 1, n), "hunt stag when everyone else does"
    assert x(d, 0, n) > c(d, 0, n), "hunt hare when nobody else hunts stag"
    assert max(all_payoffs(d, n)) == c(d, n - 1, n), "everyone hunting stag is the best outcome"
    assert min(all_payoffs(d, n)) == c(d, 0, n), "a lone stag hunter gets the least"
    hare = [x(d, k, n) for k in range(n)]
    stag = [c(d, k, n) for k in range(n)]
    assert min(hare) > min(stag), "hare is the safe choice"
    assert max(hare) - min(hare) < max(stag) - min(stag), "hare's payoff varies less than stag's"


CHECKS = {"prisoners-dilemma": check_prisoners_dilemma, "chicken": check_chicken, "stag-hunt": check_stag_hunt}


@settings(max_examples=60, deadline=None)
@given(n=players, name=st.sampled_from(sorted(BUILTIN)))
def test_builtin_games_keep_their_ordering_for_every_n(n: int, name: str) -> None:
    d = BUILTIN[name]
    CHECKS[d.kind](d, n)


@settings(max_examples=60, deadline=None)
@given(n=players)
def test_prisoners_dilemma_defection_strictly_better_for_every_k(n: int) -> None:
    d = PRISONERS_DILEMMA
    assert all(x(d, k, n) > c(d, k, n) for k in range(n))
    assert c(d, n - 1, n) > x(d, 0, n)


def test_two_players_is_exactly_the_two_by_two_game() -> None:
    for d in BUILTIN.values():
        assert (c(d, 1, 2), c(d, 0, 2), x(d, 1, 2), x(d, 0, 2)) == (d.R, d.S, d.T, d.P)


# Random anchors satisfying each kind's ordering: the N-player interpolation keeps the ordering.
anchor = st.integers(min_value=-20, max_value=20)


@st.composite
def valid_anchors(draw: st.DrawFn, kind: str) -> dict[str, float]:
    a, b, cc, dd = sorted(draw(st.lists(anchor, min_size=4, max_size=4, unique=True)), reverse=True)
    if kind == "prisoners-dilemma":  # T > R > P > S and 2R > T + S
        assume(2 * b > a + dd)
        return {"T": a, "R": b, "P": cc, "S": dd}
    if kind == "chicken":  # T > R > S > P and 2R > T + S
        assume(2 * b > a + cc)
        return {"T": a, "R": b, "S": cc, "P": dd}
    # stag hunt: R > T >= P > S (T == P allowed)
    tie = draw(st.booleans())
    return {"R": a, "T": b, "P": b if tie else cc, "S": dd}


@settings(max_examples=80, deadline=None)
@given(data=st.data(), n=players, kind=st.sampled_from(sorted(CHECKS)))
def test_any_valid_anchors_keep_the_ordering_for_every_n(data: st.DataObject, n: int, kind: str) -> None:
    anchors = data.draw(valid_anchors(kind))
    d = Dilemma(name="g", title="G", kind=kind, cooperate="coop", defect="other", **anchors)
    CHECKS[kind](d, n)


@settings(max_examples=80, deadline=None)
@given(T=anchor, R=anchor, P=anchor, S=anchor, kind=st.sampled_from(sorted(CHECKS)))
def test_anchors_violating_the_ordering_are_rejected_with_the_reason(
    T: int, R: int, P: int, S: int, kind: str
) -> None:
    ok = {
        "prisoners-dilemma": T > R > P > S and 2 * R > T + S,
        "chicken": T > R > S > P and 2 * R > T + S,
        "stag-hunt": R > T >= P > S,
    }[kind]
    kwargs = {"name": "g", "title": "G", "kind": kind, "cooperate": "a", "defect": "b", "T": T, "R": R, "P": P,
              "S": S}
    if ok:
        Dilemma(**kwargs)
        return
    with pytest.raises(ValueError, match=f"payoffs are not a valid {kind}: needs"):
        Dilemma(**kwargs)


def test_a_custom_game_imposes_no_ordering() -> None:
    d = Dilemma(name="odd", title="Odd", kind="custom", cooperate="give", defect="take", T=0, R=0, P=5, S=9)
    assert d.payoff(True, 0, 3) == 9


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"cooperate": "give", "defect": "give"}, "two different"),
        ({"cooperate": "give up", "defect": "take"}, "single words"),
        ({"cooperate": "", "defect": "take"}, "non-empty"),
    ],
)
def test_action_labels_must_be_parseable(args: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Dilemma(name="g", title="G", kind="custom", T=1, R=1, P=1, S=1, **args)


def test_payoff_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="at least 2 players"):
        PRISONERS_DILEMMA.payoff(True, 0, 1)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        PRISONERS_DILEMMA.payoff(True, 3, 3)


# -- custom games from YAML --------------------------------------------------------------------


def write_game(path: Path, **fields: object) -> Path:
    data = {"name": "my-pd", "kind": "prisoners-dilemma", "cooperate": "share", "defect": "grab",
            "T": 5, "R": 3, "P": 1, "S": 0, **fields}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_valid_yaml_game_loads(tmp_path: Path) -> None:
    d = load_dilemma(str(write_game(tmp_path / "mine.yaml")))
    assert (d.name, d.title, d.cooperate, d.defect) == ("my-pd", "my-pd", "share", "grab")
    assert "share" in rules_text(d, 3, 2) and "grab" in rules_text(d, 3, 2)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        # temptation below reward
        ({"T": 2, "R": 3}, "payoffs are not a valid prisoners-dilemma: needs T > R > P > S, got T=2.0, R=3.0"),
        ({"T": 9}, "needs 2R > T + S"),  # taking turns beats mutual cooperation
        ({"kind": "chicken"}, "needs T > R > S > P"),  # PD numbers are not chicken
        # a lone defector costs the group nothing (the old built-in Chicken: 2R = T + S)
        ({"kind": "chicken", "T": 5, "R": 3, "S": 1, "P": 0}, "needs 2R > T + S (a lone defector must cost"),
        ({"kind": "stag-hunt"}, "needs R > T >= P > S"),
    ],
)
def test_a_yaml_game_with_a_wrong_ordering_is_rejected_clearly(
    tmp_path: Path, fields: dict[str, object], needle: str
) -> None:
    path = write_game(tmp_path / "bad.yaml", **fields)
    with pytest.raises(UserError) as info:
        dilemma_from_file(path)
    message = str(info.value)
    assert needle in message and str(path) in message
    assert "\n" not in message
    with pytest.raises(UserError, match=re.escape(needle)):
        load_dilemma(str(path))


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("name: [unclosed\nkind: chicken\n", "is not valid YAML"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("name: x\nkind: chicken\ncooperate: a\ndefect: b\nT: 5\nR: 3\nS: 1\n", "P: Field required"),
        ("name: x\nkind: poker\ncooperate: a\ndefect: b\nT: 5\nR: 3\nS: 1\nP: 0\n", "kind: Input should be"),
        ("name: x\nkind: custom\ncooperate: a\ndefect: b\nT: 5\nR: 3\nS: 1\nP: 0\nbonus: 2\n", "bonus"),
    ],
)
def test_malformed_yaml_games_give_one_clear_line(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "game.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as info:
        load_dilemma(str(path))
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_game_names_the_builtins() -> None:
    with pytest.raises(UserError, match="unknown game 'poker'; built-in games: prisoners-dilemma, chicken"):
        load_dilemma("poker")
    with pytest.raises(UserError, match="does not exist"):
        load_dilemma("missing.yaml")


def test_aliases() -> None:
    assert load_dilemma("pd") is PRISONERS_DILEMMA
    assert load_dilemma("stag") is STAG_HUNT
    assert load_dilemma("chicken") is CHICKEN


# -- the rules text states exactly what is paid ---------------------------------------------------

ROW = re.compile(
    r"^- (\d+) other\(s\) choose '(\w+)': you get (-?[\d.]+) if you choose '(\w+)', "
    r"(-?[\d.]+) if you choose '(\w+)'\.$"
)


def rules_rows(d: Dilemma, n: int) -> dict[int, tuple[str, str]]:
    rows: dict[int, tuple[str, str]] = {}
    for line in rules_text(d, n, 5).splitlines():
        m = ROW.match(line)
        if m:
            k, coop_label, pc, coop_label2, pd, defect_label = m.groups()
            assert coop_label == coop_label2 == d.cooperate and defect_label == d.defect
            rows[int(k)] = (pc, pd)
    return rows


@settings(max_examples=60, deadline=None)
@given(n=players, name=st.sampled_from(sorted(BUILTIN)))
def test_rules_text_lists_exactly_the_payoffs_paid(n: int, name: str) -> None:
    d = BUILTIN[name]
    rows = rules_rows(d, n)
    assert sorted(rows) == list(range(n)), "one line for every number of cooperating others"
    for k, (pc, pd) in rows.items():
        # the printed number is the paid number, not a rounded cousin (2.333333, not 2.33333)
        assert float(pc) == d.payoff(True, k, n)
        assert float(pd) == d.payoff(False, k, n)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=players, kind=st.sampled_from(sorted(CHECKS)))
def test_rules_text_matches_payoffs_of_any_valid_game(data: st.DataObject, n: int, kind: str) -> None:
    anchors = data.draw(valid_anchors(kind))
    d = Dilemma(name="g", title="G", kind=kind, cooperate="coop", defect="other", **anchors)
    for k, (pc, pd) in rules_rows(d, n).items():
        assert float(pc) == d.payoff(True, k, n) and float(pd) == d.payoff(False, k, n)


def test_rules_text_states_the_horizon_and_the_player_count() -> None:
    text = rules_text(CHICKEN, 4, 7)
    assert "with 3 other players" in text and "The game lasts 7 rounds." in text
    assert "unknown number of rounds" in rules_text(CHICKEN, 4, None)
    assert "'swerve' or 'straight'" in text


@pytest.mark.parametrize(("value", "text"), [(3.0, "3"), (2.333333, "2.333333"), (1.5, "1.5"), (-0.0, "0"),
                                             (1.666667, "1.666667"), (-2.25, "-2.25")])
def test_format_points(value: float, text: str) -> None:
    assert format_points(value) == text


# -- issue 14: no free-riding Chicken, no tie in a three-player Stag Hunt ---------------------------


@settings(max_examples=60, deadline=None)
@given(n=players)
def test_a_lone_defector_costs_the_group_in_chicken(n: int) -> None:
    d = CHICKEN
    assert 2 * d.R > d.T + d.S
    everyone_swerves = n * c(d, n - 1, n)
    one_goes_straight = x(d, n - 1, n) + (n - 1) * c(d, n - 2, n)
    assert one_goes_straight < everyone_swerves


@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_no_builtin_game_ties_for_two_to_five_players(name: str, n: int) -> None:
    d = BUILTIN[name]
    assert d.ties(n) == []
    assert all(c(d, k, n) != x(d, k, n) for k in range(n))
    assert tie_problem(d, n) is None


def test_stag_hunt_with_three_players_has_a_best_reply_at_one_hunter() -> None:
    assert c(STAG_HUNT, 1, 3) != x(STAG_HUNT, 1, 3)
    assert (c(STAG_HUNT, 1, 3), x(STAG_HUNT, 1, 3)) == (3.0, 2.5)


def test_a_game_that_ties_at_the_player_count_is_refused() -> None:
    old_stag = Dilemma(name="old-stag", title="Old", kind="stag-hunt", cooperate="stag", defect="hare",
                       R=5, T=3, P=2, S=0)
    assert old_stag.ties(3) == [1] and old_stag.ties(2) == []
    problem = tie_problem(old_stag, 3)
    assert problem is not None and "when 1 of the 2 other players choose 'stag'" in problem
    assert tie_problem(old_stag, 2) is None
    custom = Dilemma(name="flat", title="Flat", kind="custom", cooperate="a", defect="b", T=1, R=1, P=1, S=1)
    assert custom.ties(3) == [0, 1, 2] and tie_problem(custom, 3) is None  # custom games state, not judge
