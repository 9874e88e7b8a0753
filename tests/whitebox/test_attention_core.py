"""White-box attention shares: segment labels, the hook read-out against a full output_attentions pass."""

from __future__ import annotations

import math
import os
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from contagion.analysis.attention import COLUMNS, SEGMENTS
from contagion.analysis.attention import TEMPLATE as SCHEMA_TEMPLATE
from contagion.backends.hf import TEMPLATE, HFBackend
from contagion.messages import Message, assistant, system, user
from contagion.whitebox.attention import history_attention_rows, segment_labels

HISTORY = [
    system("You are Avery, a fair and kind player."),
    user("Rules: each round you choose cooperate or defect. Say something to the others."),
    assistant("Let us all cooperate."),
    user("Casey says: I will crush you all.", kind="talk", speaker="Casey"),
    system("Remember: you value fairness and honesty.", kind="injection", intervention="sit"),
    user("Choose: cooperate or defect.", kind="act", cooperate="cooperate", defect="defect"),
    assistant("cooperate"),
    user("Round 1: you cooperated; 0 others cooperated, 2 defected.", kind="observation", round=1),
]
LABELS = ["system", "other_prompts", "own", "others", "injection", "other_prompts", "own", "observation"]


@pytest.fixture(scope="module")
def hf() -> HFBackend:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return HFBackend("embedded")


def test_segment_labels() -> None:
    assert segment_labels(HISTORY) == LABELS
    # a system message that is not first and not an injection is a prompt, not the system prompt
    assert segment_labels([user("hi"), system("note")]) == ["other_prompts", "other_prompts"]


def test_the_table_schema_names_every_label_the_measurement_produces() -> None:
    # the schema lives in analysis (which does not import the backend); its template label must match
    assert SCHEMA_TEMPLATE == TEMPLATE
    assert set(LABELS) | {TEMPLATE} <= set(SEGMENTS)


def reference_shares(hf: HFBackend, messages: list[Message], labels: list[str]) -> list[dict[str, float]]:
    """Per-layer shares from one plain forward pass with output_attentions=True (short inputs only)."""
    import torch

    seg = hf.segment_tokens(messages, labels)
    model: Any = hf.loaded().model
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([seg.ids]), output_attentions=True, use_cache=False)
    assert out.attentions is not None and len(out.attentions) == model.config.num_hidden_layers
    result = []
    for layer in out.attentions:  # [1, heads, seq, seq]
        row = layer[0, :, -1, :].mean(dim=0)
        shares: dict[str, float] = {}
        for label, weight in zip(seg.labels, row.tolist(), strict=True):
            shares[label] = shares.get(label, 0.0) + weight
        result.append(shares)
    return result


@pytest.mark.slow
def test_segment_tokens_map_contents_and_template(hf: HFBackend) -> None:
    seg = hf.segment_tokens(HISTORY[:3], LABELS[:3])
    tokenizer = hf.loaded().tokenizer
    by_label: dict[str, str] = {}
    for token, label in zip(seg.ids, seg.labels, strict=True):
        by_label[label] = by_label.get(label, "") + tokenizer.decode([token])
    assert by_label["system"] == HISTORY[0].content
    assert by_label["own"] == HISTORY[2].content
    assert "<|im_start|>" in by_label[TEMPLATE] and by_label[TEMPLATE].endswith("assistant\n")


@pytest.mark.slow
async def test_hook_shares_match_full_output_attentions(hf: HFBackend) -> None:
    for upto in (6, 8):  # the second call reuses the first call's cache
        messages, labels = HISTORY[:upto], LABELS[:upto]
        shares = await hf.attention_to_segments(messages, labels)
        expected = reference_shares(hf, messages, labels)
        assert len(shares.per_layer) == len(expected) == 30
        assert shares.tokens == sum(shares.tokens_per_label.values())
        assert shares.labels[-1] == TEMPLATE
        for got, want in zip(shares.per_layer, expected, strict=True):
            assert math.isclose(sum(got.values()), 1.0, abs_tol=1e-5)
            for label in shares.labels:
                assert abs(got[label] - want.get(label, 0.0)) < 1e-5, (label, got, want)


@pytest.mark.slow
async def test_history_rows_are_tidy_and_sum_to_one(hf: HFBackend) -> None:
    rows = await history_attention_rows(hf, HISTORY)
    assert {r["turn"] for r in rows} == {1, 2}
    assert len(rows) == 2 * 30
    for row in rows:
        assert tuple(row) == COLUMNS
        assert math.isclose(sum(float(row[f"share_{s}"]) for s in SEGMENTS), 1.0, abs_tol=1e-5)
    first, second = rows[0], rows[30]
    assert first["message_index"] == 2 and second["message_index"] == 6
    assert int(second["tokens_so_far"]) > int(first["tokens_so_far"])
    assert first["share_injection"] == 0.0 and float(second["share_injection"]) > 0.0


@pytest.mark.slow
async def test_history_rows_carry_the_dilution_baseline(hf: HFBackend) -> None:
    rows = await history_attention_rows(hf, HISTORY)
    first, second = rows[0], rows[30]
    system_tokens = (await hf.attention_to_segments(HISTORY[:2], LABELS[:2])).tokens_per_label["system"]
    for row in (first, second):  # the system prompt's tokens do not change; the context grows
        assert row["system_tokens"] == system_tokens > 0
        assert row["baseline_system"] == pytest.approx(system_tokens / int(row["tokens_so_far"]))
    assert float(second["baseline_system"]) < float(first["baseline_system"])  # dilution alone lowers it
