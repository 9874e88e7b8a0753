"""Cost of a post-play trait assessment on the embedded model: prefix reuse vs re-encoding per item.

Scores N trait items (default 100) after a game history of about T tokens (default 2,000) three ways:

* **encode once** — the floor: raw llama.cpp decodes the part every item prompt shares (the history
  and the question's opening words) once, then each item's own remaining tokens once after it;
* **reuse** — :func:`contagion.traits.assess.assess` as the product runs it, starting from an empty
  cache: the backend encodes the history on the first item and reuses it for the rest;
* **naive** — the same assessment with the backend's cache cleared before every item
  (``LlamaCppBackend.clear_cache()``), so each item re-encodes the whole history.

Targets: reuse ≤ 1.15 × encode-once (issue 18; was 1.3 in issue 4), and ≥ 20 × faster than naive. It also
checks that reuse and the batch (``score_choices_many``) do not change a single score, and prints the
largest difference between the batched scores and one call per item. Run::

    PYTHONPATH=src python benchmarks/bench_assess.py [--items 100] [--history-tokens 2000]
        [--naive-items N] [--spec embedded]

``--naive-items N`` times the naive way on the first N items only and extrapolates to all items
(the naive way takes minutes); the output says when it did.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from contagion import vocabulary as P
from contagion.backends.base import Backend, GenerationConfig, Scores, run_sync
from contagion.backends.registry import build
from contagion.games.dilemmas import load_dilemma
from contagion.games.engine import system_prompt_for
from contagion.messages import Message
from contagion.personas import resolve_persona
from contagion.traits.assess import ANSWER_PREFIX, CHOICES, assess, question_message
from contagion.traits.inventory import DEFAULT_TRAIT_SETS, Inventory, load_inventory

TALK = (
    "I think we should all cooperate this round; it keeps everyone's points high and I will do the same.",
    "Last round went badly for me. If you defect again I will have to protect myself, so please cooperate.",
    "Trust is earned. I cooperated twice and got exploited; I will watch what you do before trusting you.",
)


def game_history(backend: Any, target_tokens: int) -> list[Message]:
    """A plausible three-player game history (Avery's view) grown round by round to ``target_tokens``."""
    prompt = system_prompt_for("Avery", load_dilemma("prisoners-dilemma"), resolve_persona("default"), 3, None)
    history = [Message(role="system", content=prompt, meta={"kind": "system_prompt", "persona": "default"})]
    r = 0
    while len(backend.tokenize(backend.render(history))) < target_tokens:
        r += 1
        history.append(
            Message(
                role="user",
                content=f"Round {r}, discussion. Write one short message (one or two sentences) to the other players.",
                meta={"kind": "talk_prompt", "round": r},
            )
        )
        history.append(Message(role="assistant", content=TALK[r % 3], meta={"kind": "own_talk", "round": r}))
        for k, who in enumerate(("Blake", "Casey")):
            history.append(
                Message(
                    role="user",
                    content=f"{who}: {TALK[(r + k + 1) % 3]}",
                    name=who,
                    meta={"kind": P.TALK, "speaker": who, "round": r},
                )
            )
        history.append(
            Message(
                role="user",
                content=f"Round {r}: choose your action. Reply with one word: 'cooperate' or 'defect'.",
                meta={"kind": P.ACT, "cooperate": "cooperate", "defect": "defect", "round": r},
            )
        )
        history.append(Message(role="assistant", content="I choose: cooperate", meta={"kind": "own_action"}))
        history.append(
            Message(
                role="user",
                content=f"Round {r} results: you chose 'cooperate' and earned 0 points "
                f"(total 0). Blake chose 'defect', Casey chose 'defect'.",
                meta={
                    "kind": P.OBSERVATION,
                    "round": r,
                    "own": "cooperate",
                    "others_cooperated": 0,
                    "others_defected": 2,
                },
            )
        )
    return history


class ColdBackend(Backend):
    """The embedded backend with its cache cleared before every call: each item re-encodes everything."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.capabilities = inner.capabilities

    async def generate(self, messages: Sequence[Message], config: GenerationConfig) -> Any:
        raise NotImplementedError

    async def score_choices(self, messages: Sequence[Message], choices: Sequence[str], *, prefix: str = "") -> Scores:
        if hasattr(self.inner, "clear_cache"):
            self.inner.clear_cache()
        else:  # older backends: a whole new model per item
            self.inner = build(self.inner.spec)
        scores: Scores = await self.inner.score_choices(messages, choices, prefix=prefix)
        return scores


def _common_prefix(prompts: list[list[int]]) -> int:
    n = min(map(len, prompts)) - 1  # every item keeps at least one token of its own
    first = prompts[0]
    for p in prompts[1:]:
        n = next((i for i in range(n) if p[i] != first[i]), n)
    return n


class EncodeOnce:
    """The floor: raw llama.cpp decodes the shared prefix once, then every prompt's own tokens once.

    Like the backend, it reads the next-token log-probs after each prompt (the answer's scores).
    """

    def __init__(self, backend: Any, prompts: list[list[int]]) -> None:
        from llama_cpp import Llama

        from contagion.backends.embedded import BLOCK

        self.prompts = prompts
        self.shared = _common_prefix(prompts)
        self.own = sum(len(p) - self.shared for p in prompts) / len(prompts)
        self.llm = Llama(
            model_path=str(backend.path),
            n_ctx=backend.n_ctx,
            n_threads=backend.n_threads,
            n_threads_batch=backend.n_threads,
            n_batch=BLOCK,
            logits_all=False,
            verbose=False,
            seed=0,
        )
        self.llm.eval(prompts[0][:8])  # warm-up
        self.logprobs = np.zeros(0)

    def seconds(self) -> float:
        llm = self.llm
        n_vocab = llm.n_vocab()
        llm.n_tokens = 0
        started = time.perf_counter()
        llm.eval(self.prompts[0][: self.shared])
        for p in self.prompts:
            llm.n_tokens = self.shared  # eval() drops the cache after n_tokens
            llm.eval(p[self.shared :])
            z = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,)).astype(np.float64)
            self.logprobs = z - z.max() - np.log(np.exp(z - z.max()).sum())
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--history-tokens", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3, help="Runs of encode-once and reuse (the minimum counts).")
    parser.add_argument("--naive-items", type=int, default=None, help="Time naive on this many items and extrapolate.")
    parser.add_argument("--spec", default="embedded", help="Backend spec (an embedded or gguf: llama.cpp model).")
    args = parser.parse_args()

    backend: Any = build(args.spec)
    history = game_history(backend, args.history_tokens)
    full = load_inventory("builtin")
    per_trait = -(-args.items // len(full.traits()))
    items = full.sample(None, per_trait=per_trait, seed=0).items[: args.items]
    inventory = Inventory(source=full.source, items=items)
    history_tokens = len(backend.tokenize(backend.render(history)))
    prompts = [
        backend.tokenize(
            backend.render([*history, question_message(i, DEFAULT_TRAIT_SETS.polarity(i.trait))])
            + ANSWER_PREFIX.rstrip()
        )
        for i in items
    ]
    print(
        f"model {backend.identity} ({backend.path.name}), {backend.n_threads} threads; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"history: {len(history)} messages, {history_tokens} tokens; {len(items)} items, "
        f"{sum(map(len, prompts)) / len(prompts):.0f} prompt tokens per item; choices {list(CHOICES)}",
        flush=True,
    )

    floor = EncodeOnce(backend, prompts)
    run_sync(assess(backend, history[:1], Inventory(source="warm", items=items[:1]), context_kind="warm-up"))
    once_runs: list[float] = []
    reuse_runs: list[float] = []
    reuse = None
    for _ in range(max(1, args.repeat)):  # interleaved, so both see the same machine load
        once_runs.append(floor.seconds())
        backend.clear_cache()
        started = time.perf_counter()
        reuse = run_sync(assess(backend, history, inventory, context_kind="post"))
        reuse_runs.append(time.perf_counter() - started)
    assert reuse is not None
    once, reuse_s = min(once_runs), min(reuse_runs)
    print(
        f"encode once : {once:8.2f} s  (shared prefix {floor.shared} tokens once + {floor.own:.1f} own tokens per "
        f"item; runs {', '.join(f'{x:.2f}' for x in once_runs)})"
    )
    print(
        f"reuse       : {reuse_s:8.2f} s  ({reuse_s / len(items) * 1000:.0f} ms per item; "
        f"{reuse.cost.prompt_tokens_encoded} of {reuse.cost.prompt_tokens} prompt tokens encoded; "
        f"runs {', '.join(f'{x:.2f}' for x in reuse_runs)})",
        flush=True,
    )

    n_naive = min(args.naive_items or len(items), len(items))
    naive_inventory = Inventory(source=full.source, items=items[:n_naive])
    started = time.perf_counter()
    naive = run_sync(assess(ColdBackend(backend), history, naive_inventory, context_kind="post"))
    naive_s = time.perf_counter() - started
    naive_total = naive_s * len(items) / n_naive
    note = "" if n_naive == len(items) else f", extrapolated from {n_naive} items"
    print(f"naive       : {naive_total:8.2f} s  ({naive_s / n_naive:.2f} s per item{note})")
    same = [a.score for a in naive.items] == [b.score for b in reuse.items[:n_naive]]
    print(f"scores identical with and without reuse: {same}")
    diff = max(abs(a.score - b.score) for a, b in zip(naive.items, reuse.items, strict=False))
    print(f"largest difference, batched (with reuse) vs one call per item (cold): {diff:.3g}")
    print(f"llama.cpp decode calls in all: {backend.decode_calls}")

    ratio = reuse_s / once
    speedup = naive_total / reuse_s
    print(f"reuse / encode-once = {ratio:.2f}x  (target <= 1.15x: {'met' if ratio <= 1.15 else 'MISSED'}; fastest run "
          f"of each; medians give {statistics.median(reuse_runs) / statistics.median(once_runs):.2f}x)")
    print(f"naive / reuse       = {speedup:.1f}x  (target >= 20x: {'met' if speedup >= 20 else 'MISSED'})")


if __name__ == "__main__":
    main()
