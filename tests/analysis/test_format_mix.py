"""The analysis refuses to mix question or action formats (issue 13, item 5)."""

from __future__ import annotations

import pytest

from contagion.analysis.tables import _one_format
from contagion.errors import UserError


def test_one_format_per_analysis() -> None:
    seen: set[int] = set()
    _one_format("question", seen, 2)
    _one_format("question", seen, 2)
    with pytest.raises(UserError, match="mix question format versions 1 and 2"):
        _one_format("question", seen, 1)
    with pytest.raises(UserError, match="mix action format versions 2 and 3"):
        _one_format("action", {2}, 3)


def test_one_scoring_position_per_model() -> None:
    """Issue 27: a model scored at its first token in some records and at its answer's token in others (an
    ``auto`` probe that decided otherwise in another process) is refused, like a format mix; sampled
    estimates beside log-probabilities stay a warning of the report."""
    from contagion.analysis.tables import _one_position

    _one_position("m", {"first-token-top-logprobs", "sampled-fallback"})
    _one_position("m", {"answer-token-top-logprobs"})
    with pytest.raises(UserError, match="two methods, first-token-top-logprobs and answer-token-top-logprobs"):
        _one_position("m", {"first-token-top-logprobs", "answer-token-top-logprobs"})
    with pytest.raises(UserError, match="two methods"):
        _one_position("m", {"mixed: first-token-top-logprobs, answer-token-top-logprobs"})


def test_records_of_one_model_scored_at_two_positions_are_refused() -> None:
    from contagion.analysis.tables import tables_from_records
    from contagion.backends.base import run_sync
    from contagion.experiment.trial import TrialSpec, run_trial
    from contagion.games.record import GameSpec, PlayerSpec
    from contagion.testing.loopback import LoopbackServer
    from contagion.testing.styles import StyleResponder
    from contagion.traits.settings import AssessmentSettings

    with LoopbackServer(StyleResponder("markdown")) as server:
        spec = f"openai:served@{server.base_url}?score=auto"
        game = GameSpec(players=(PlayerSpec(backend=spec), PlayerSpec(backend="scripted:always-defect", focal=False)),
                        rounds=1, chat_turns=0, action_mode="score")
        settings = AssessmentSettings(traits=("agreeableness",), items=2, source_items=0, bootstrap=100)
        record = run_sync(run_trial(TrialSpec(game=game, assessment=settings)))
    assert record.error is None
    assert tables_from_records([record, record]).info.backend_methods  # one method: analysed
    other = record.model_copy(deep=True)
    for player in other.players[:1]:
        player.pre_profile = {**(player.pre_profile or {}), "method": "first-token-top-logprobs"}
    with pytest.raises(UserError, match="two methods"):
        tables_from_records([record, other])
