"""The embedded model's weights as llama.cpp runs them: the Q4_1 file as it is, or de-quantised to
float16 or float32 — how fast each is, and how far each is from transformers on the same weights.

For each ``embedded?weights=...`` (``asis``, ``f16``, ``f32``) it scores 24 trait items (12
agreeableness, 12 machiavellianism) twice: after the pre-play context (short prompts), and after a
synthetic ~1,500-token game history (the post-play case: each item decodes its own ~22 tokens after the
history it reuses), and generates 64 tokens greedily after the pre-play context (a player's turn). It
prints the best wall time of ``--repeat`` runs of each (the model loaded and the
history already in the cache before timing), the size of the file llama.cpp loads, and — when
transformers is installed (extra ``whitebox``) — each item's largest and median |score difference| from
``hf:embedded`` (transformers in float32 on the de-quantised weights), the pre-play items only.

Run on an otherwise idle machine::

    PYTHONPATH=src python benchmarks/bench_weights.py [--repeat 3] [--no-hf]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from contagion.backends.base import Backend, run_sync
from contagion.backends.registry import build
from contagion.games.engine import system_messages
from contagion.games.record import GameSpec, PlayerSpec
from contagion.messages import Message, assistant, user
from contagion.traits.assess import assess, pre_play_context
from contagion.traits.inventory import Inventory, load_builtin

WEIGHTS = ("asis", "f16", "f32")


def inventory() -> Inventory:
    full = load_builtin()
    chosen = [it for it in full.items if it.trait == "agreeableness"][:12]
    chosen += [it for it in full.items if it.trait == "machiavellianism"][:12]
    return full.model_copy(update={"items": chosen})


def contexts() -> tuple[list[Message], list[Message]]:
    spec = GameSpec(players=(PlayerSpec(backend="embedded"), PlayerSpec(backend="scripted:tit-for-tat", focal=False),
                             PlayerSpec(backend="scripted:always-defect", focal=False)), rounds=4, chat_turns=0, seed=5)
    pre = pre_play_context(system_messages(spec)[0])
    history = list(pre)
    for i in range(24):
        history.append(user(f"Round {i + 1}. Blake said he would keep his word this time; Casey said nothing and "
                            "took the larger share again. What do you choose this round, and why?"))
        history.append(assistant("I will keep to what I said last round. Casey's choice hurts all three of us, so "
                                 "I am going to say so plainly and give Blake the benefit of the doubt again."))
    return pre, history


def profile_scores(backend: Backend, context: list[Message], items: Inventory) -> tuple[list[float], float]:
    started = time.perf_counter()
    profile = run_sync(assess(backend, context, items, context_kind="pre", bootstrap=20))
    return [it.score for it in profile.items], time.perf_counter() - started


def generation_seconds(backend: Backend, context: list[Message]) -> tuple[float, int]:
    from contagion.backends.base import GenerationConfig

    config = GenerationConfig(max_tokens=64, temperature=0.0)
    messages = [*context, user("Describe in a few sentences how you will play this game.")]
    started = time.perf_counter()
    completion = run_sync(backend.generate(messages, config))
    return time.perf_counter() - started, completion.completion_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per setting (best is printed)")
    parser.add_argument("--no-hf", action="store_true", help="skip the comparison with hf:embedded")
    args = parser.parse_args()
    items = inventory()
    pre, history = contexts()
    scores: dict[str, list[float]] = {}
    print(f"{len(items.items)} items; history {len(history)} messages; best of {args.repeat}", flush=True)
    print(f"{'weights':8} {'file MB':>8} {'pre-play s':>11} {'after history s':>16} {'generate s':>11} {'tokens':>7}")
    for weights in WEIGHTS:
        backend = build(f"embedded?weights={weights}")
        size = backend.path.stat().st_size / 1e6  # type: ignore[attr-defined]
        scores[weights], _ = profile_scores(backend, pre, items)  # warm: loads the model
        profile_scores(backend, history, items)  # the history enters a lane
        best_pre = min(profile_scores(backend, pre, items)[1] for _ in range(args.repeat))
        best_post = min(profile_scores(backend, history, items)[1] for _ in range(args.repeat))
        runs = [generation_seconds(backend, pre) for _ in range(args.repeat)]
        gen, tokens = min(runs)
        print(f"{weights:8} {size:8.0f} {best_pre:11.2f} {best_post:16.2f} {gen:11.2f} {tokens:7d}", flush=True)
        run_sync(backend.aclose())
    if args.no_hf:
        return
    try:
        hf = build("hf:embedded")
        reference, seconds = profile_scores(hf, pre, items)
    except Exception as exc:  # transformers missing: say so, the timings above stand
        print(f"hf:embedded skipped: {exc}", file=sys.stderr)
        return
    print(f"\n|score - hf:embedded| per item (pre-play, transformers took {seconds:.1f} s):")
    for weights in WEIGHTS:
        gaps = [abs(a - b) for a, b in zip(scores[weights], reference, strict=True)]
        print(f"  {weights:6} median {statistics.median(gaps):.4f}  max {max(gaps):.4f}")


if __name__ == "__main__":
    main()
