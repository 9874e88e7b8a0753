"""The first-token computation every backend shares (format v2): which tokens own which choice, top-k
candidates from a full distribution, floors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from contagion.backends.first_token import TOP_K, owner, score_candidates, targets_of, top_candidates


@pytest.mark.parametrize(
    ("token", "choices", "expected"),
    [
        (" Yes", ("Yes", "No"), 0),
        ("YES", ("Yes", "No"), 0),
        ("Y", ("Yes", "No"), 0),  # begins Yes only
        ("no", ("Yes", "No"), 1),
        ("N", ("Yes", "No"), 1),
        ("Not", ("Yes", "No"), None),  # not a prefix of either
        ("I", ("Yes", "No"), None),
        ("co", ("cooperate", "defect"), 0),
        (" Def", ("cooperate", "defect"), 1),
        ("s", ("swerve", "straight"), None),  # begins both: counts for neither
        ("sw", ("swerve", "straight"), 0),
        ("stag", ("stag", "stagnate"), 0),  # the whole name wins over a prefix of the other
        ("  ", ("Yes", "No"), None),
    ],
)
def test_owner(token: str, choices: tuple[str, str], expected: int | None) -> None:
    assert owner(token, targets_of(choices)) == expected


def test_a_choice_without_text_is_an_error() -> None:
    with pytest.raises(ValueError):
        targets_of(["Yes", " "])


def test_scores_sum_owned_candidates_and_floor_the_rest() -> None:
    candidates = [("No", math.log(0.4)), ("I", math.log(0.3)), ("Yes", math.log(0.2)), ("yes", math.log(0.05)),
                  ("Y", math.log(0.03))]
    logprobs, detail = score_candidates(candidates, ["Yes", "No", "Maybe"])
    assert logprobs[0] == pytest.approx(math.log(0.28))
    assert logprobs[1] == pytest.approx(math.log(0.4))
    assert logprobs[2] == pytest.approx(math.log(0.03) - math.log(2))  # half the least likely candidate
    assert detail["floored"] == ["Maybe"] and detail["matched"]["Yes"] == ["Yes", "yes", "Y"]
    assert detail["candidates"] == 5


def test_top_candidates_are_the_k_most_likely_one_per_text() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=500)
    logprobs = logits - np.log(np.exp(logits).sum())
    texts = {i: f"t{i % 300}" for i in range(500)}  # some texts repeat, as byte pieces can
    top = top_candidates(logprobs, texts.__getitem__)
    order = np.argsort(-logprobs)[:TOP_K]
    expected: dict[str, float] = {}
    for i in order:
        expected.setdefault(texts[int(i)], float(logprobs[i]))
    assert top == list(expected.items())
    assert [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
