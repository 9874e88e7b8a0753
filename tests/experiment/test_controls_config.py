"""The design controls of a grid (issue 14): option order counterbalanced within each cell, seats shuffled
by seed, sampled actions by default (a no-chat grid has as many distinct games as repetitions), the
ablations (framing, horizon, the conversation game) and the analysis columns that record them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from contagion.analysis.contrasts import compute_contrasts
from contagion.analysis.tables import load_tables
from contagion.errors import UserError
from contagion.experiment.config import parse_config
from contagion.experiment.runner import Runner
from contagion.experiment.store import Store
from tests.experiment.experiment_helpers import SMALL


def cells(cfg_data: dict) -> dict[tuple, list]:
    cfg = parse_config(cfg_data)
    out: dict[tuple, list] = {}
    for spec, lab in cfg.expand():
        out.setdefault((lab["model"], lab["game"], lab["composition"], lab["intervention"], lab["chat_turns"]),
                       []).append((spec, lab))
    return out


def test_option_order_alternates_within_every_cell() -> None:
    grid = cells({**SMALL, "repetitions": 6, "seed": 11})
    for games in grid.values():
        orders = [spec.game.option_order for spec, _ in games]
        assert orders == ["defect-first", "cooperate-first"] * 3  # seeds 11..16: odd, even, ...
        assert [lab["option_order"] for _, lab in games] == orders  # recorded in the labels too
        assert Counter(orders) == {"cooperate-first": 3, "defect-first": 3}
    fixed = cells({**SMALL, "repetitions": 3, "option_order": "defect-first"})
    assert {spec.game.option_order for games in fixed.values() for spec, _ in games} == {"defect-first"}


def test_seats_are_shuffled_by_seed_and_recorded() -> None:
    grid = cells({**SMALL, "repetitions": 12})
    seats_of_bot = Counter()
    for (_, _, comp, _, _), games in grid.items():
        for spec, lab in games:
            order = lab["seats"]
            assert sorted(order) == [0, 1, 2]
            composition = SMALL["compositions"][comp]
            assert [p.backend if p.backend.startswith("scripted:") else p.persona for p in spec.game.players] == \
                [composition[i] for i in order]
            if comp == "scripted-defector":
                seats_of_bot[[p.backend for p in spec.game.players].index("scripted:always-defect")] += 1
    assert set(seats_of_bot) == {0, 1, 2}  # the scripted co-player sits in every seat over the seeds
    # the same seed gives the same seating in every cell: conditions are compared on common seatings
    by_seed: dict[int, set[tuple[int, ...]]] = {}
    for games in grid.values():
        for spec, lab in games:
            by_seed.setdefault(spec.game.seed, set()).add(tuple(lab["seats"]))
    assert all(len(v) == 1 for v in by_seed.values()) and len({next(iter(v)) for v in by_seed.values()}) > 1
    fixed = cells({**SMALL, "repetitions": 4, "seat_order": "fixed"})
    assert {tuple(lab["seats"]) for games in fixed.values() for _, lab in games} == {(0, 1, 2)}


def test_grids_sample_actions_by_default_and_pass_the_ablations_on() -> None:
    cfg = parse_config(SMALL)
    assert cfg.action_mode == "sample" and cfg.option_order == "counterbalanced" and cfg.seat_order == "shuffled"
    assert {spec.game.action_mode for spec, _ in cfg.expand()} == {"sample"}
    hidden = parse_config({**SMALL, "horizon": "hidden", "framing": "neutral"})
    assert hidden.reveal_horizon is False and hidden.model_dump()["reveal_horizon"] is False
    assert {(s.game.reveal_horizon, s.game.framing) for s, _ in hidden.expand()} == {(False, "neutral")}
    legacy = parse_config({**SMALL, "reveal_horizon": False})
    assert legacy.horizon == "hidden"  # one setting, whichever key names it
    with pytest.raises(UserError, match="horizon: revealed contradicts reveal_horizon: false"):
        parse_config({**SMALL, "horizon": "revealed", "reveal_horizon": False})
    with pytest.raises(UserError, match="framing"):
        parse_config({**SMALL, "framing": "moral"})


def test_a_config_refuses_a_game_that_ties_at_its_group_size(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "old-stag.yaml"
    path.write_text(yaml.safe_dump({"name": "old-stag", "kind": "stag-hunt", "cooperate": "stag", "defect": "hare",
                                    "R": 5, "T": 3, "P": 2, "S": 0}), encoding="utf-8")
    with pytest.raises(UserError, match=r"compositions\.all-default: game 'old-stag' pays 'stag' and 'hare' the same"):
        parse_config({**SMALL, "games": [str(path)]})


def run(tmp_path: Path, name: str, data: dict) -> Path:
    out = tmp_path / name
    Runner(parse_config(data), out, progress=False, console=Console(quiet=True)).run()
    return out


NO_CHAT = {**SMALL, "games": ["prisoners-dilemma"], "compositions": {"all-default": ["default"] * 3},
           "interventions": ["none"], "chat_turns": [0], "rounds": 6, "repetitions": 8, "measure_traits": False}


@pytest.mark.parametrize("model", ["sim:planted", "sim:null"])
def test_a_sampled_grid_without_chat_has_as_many_distinct_games_as_repetitions(tmp_path: Path, model: str) -> None:
    # Each repetition is an independent draw of 18 actions (6 rounds x 3 players), so two repetitions play
    # the same game only by chance (with p(cooperate) near 0.75, three rounds made one such pair); seats and
    # option order are fixed here so that sampling alone must make the games differ.
    sampled = run(tmp_path, "sampled", {**NO_CHAT, "models": [model], "seat_order": "fixed",
                                        "option_order": "cooperate-first"})
    argmax = run(tmp_path, "argmax", {**NO_CHAT, "models": [model], "seat_order": "fixed",
                                      "option_order": "cooperate-first", "action_mode": "auto"})
    with Store.open_existing(sampled) as store:
        records = list(store.iter_records())
        assert len(records) == 8
        assert len({r.transcript_key() for r in records}) == 8
        for r in records:
            for p in r.players:
                assert all(a.selection == "sample" and a.sample_seed is not None for a in p.actions)
    with Store.open_existing(argmax) as store:
        assert len({r.transcript_key() for r in store.iter_records()}) == 1  # the replays sampling removes
    assert load_tables(sampled).games["cluster"].nunique() == 8


def test_a_run_with_every_control_is_analysable(tmp_path: Path) -> None:
    data = {**SMALL, "games": ["prisoners-dilemma", "conversation"],
            "compositions": {"one-malicious": ["default", "default", "malicious"]},
            "interventions": ["none", "sit:k=1,n=2", "placebo:kind=neutral,k=1,n=2"],
            "chat_turns": [1], "repetitions": 4, "framing": "neutral"}
    out = run(tmp_path, "controls", data)
    tables = load_tables(out)
    assert (tables.games["status"] == "ok").all() and len(tables.games) == 2 * 3 * 4
    for col in ("option_order", "co_player_seat", "framing"):
        assert col in tables.drift.columns and col in tables.games.columns and col in tables.actions.columns
    games = tables.games
    assert set(games["option_order"]) == {"cooperate-first", "defect-first"}
    assert set(games["framing"]) == {"neutral"}
    assert games["co_player_seat"].nunique() > 1 and set(games["co_player_seat"]) <= {0, 1, 2}
    # the conversation's default agents drift like any others' (pre and post measured), with no actions
    talk = tables.drift[tables.drift["game"].astype(str) == "conversation"]
    assert len(talk) > 0 and talk["post"].notna().all()
    assert (tables.actions["game"].astype(str) == "conversation").sum() == 0
    # the seats as played, put back in the composition's order
    assert tables.info.composition_seats["one-malicious"] == ["sim:planted", "sim:planted", "malicious=sim:planted"]
    mitigation = compute_contrasts(tables, ("mitigation",))["mitigation"]
    assert mitigation.available
    comparisons = set(mitigation.rows["comparison"])
    assert {"placebo:k=1,kind=neutral,n=2 − none", "sit:k=1,n=2 − placebo:k=1,kind=neutral,n=2"} <= comparisons


def test_the_conversation_is_played_only_with_talk() -> None:
    cfg = parse_config({**SMALL, "games": ["prisoners-dilemma", "conversation"], "chat_turns": [0, 2]})
    expanded = list(cfg.expand())
    assert len(expanded) == cfg.size() == (2 + 1) * 2 * 2  # conversation x chat 0 is no game: not in the grid
    assert {s.game.chat_turns for s, lab in expanded if lab["game"] == "conversation"} == {2}
    with pytest.raises(UserError, match="the conversation game needs chat_turns above 0"):
        parse_config({**SMALL, "games": ["conversation"], "chat_turns": [0]})
