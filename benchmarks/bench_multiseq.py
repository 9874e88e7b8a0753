"""Why the embedded backend does not put several sequences in one llama.cpp cache (issue 18).

A profile's items after one history could be decoded as *one* batch: copy the history to N sequences
of one unified cache (``llama_memory_seq_cp``) and decode every item's tail, each on its own sequence,
in one call. This prints, for ``--items`` trait items after a ``--history-tokens`` game history:

* the time of the backend's way (one sequence, the items one decode call each after the shared history)
  and of the multi-sequence batch;
* the largest log-probability difference (over the whole vocabulary, at the answer position) between
  the backend's way and (a) the multi-sequence batch, (b) the same sequences decoded one call each while
  the other items' cells stay in the cache, (c) one extra sequence at a time, removed after each item.

On the bundled build (llama-cpp-python 0.3.36, 2 cores) (a) and (b) differ by up to ~0.9 in log
probability and (c) by 0: a sequence's scores change when other sequences' cells share the cache, so
a shared cache would make a score depend on what else is in flight. And the batch is no faster: on
the CPU the matrix kernels cost the same per token at 32 or 512 tokens a call. Run::

    PYTHONPATH=src python benchmarks/bench_multiseq.py [--items 33] [--history-tokens 2000]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from bench_assess import game_history

from contagion.backends.embedded import LlamaCppBackend
from contagion.backends.registry import build
from contagion.traits.assess import question_message
from contagion.traits.inventory import DEFAULT_TRAIT_SETS, load_inventory

Row = tuple[int, int, int, bool]  # token, position, sequence, logits wanted


def _context(backend: LlamaCppBackend, n_ctx: int, n_seq: int, batch: int) -> Any:
    import llama_cpp
    from llama_cpp import _internals

    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = params.n_ubatch = batch
    params.n_seq_max = n_seq
    params.kv_unified = True  # one cache whose cells the sequences share
    params.n_threads = params.n_threads_batch = backend.n_threads
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    params.no_perf = True
    return _internals.LlamaContext(model=backend._loaded(), params=params, verbose=False)


def _decode(ctx: Any, rows: list[Row], size: int, n_vocab: int) -> dict[int, np.ndarray]:
    """Decode rows in calls of at most ``size`` (never a one-token call); log-softmax of the wanted rows."""
    from llama_cpp import _internals

    batch = _internals.LlamaBatch(n_tokens=size, embd=0, n_seq_max=1, verbose=False)
    out: dict[int, np.ndarray] = {}
    start = 0
    while start < len(rows):
        n = min(size, len(rows) - start)
        if len(rows) - start - n == 1:
            n -= 1
        b = batch.batch
        b.n_tokens = n
        for j in range(n):
            token, pos, seq, wanted = rows[start + j]
            b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = token, pos, 1, wanted
            b.seq_id[j][0] = seq
        ctx.decode(batch)
        for j in range(n):
            if rows[start + j][3]:
                z = np.ctypeslib.as_array(ctx.get_logits_ith(j), shape=(n_vocab,)).astype(np.float64)
                out[start + j] = z - z.max() - np.log(np.exp(z - z.max()).sum())
        start += n
    batch.close()
    return out


def _tail(prompt: list[int], shared: int, seq: int) -> list[Row]:
    return [(t, shared + j, seq, j == len(prompt) - shared - 1) for j, t in enumerate(prompt[shared:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=33)
    parser.add_argument("--history-tokens", type=int, default=2000)
    args = parser.parse_args()
    import llama_cpp

    backend = build("embedded")
    assert isinstance(backend, LlamaCppBackend)
    history = game_history(backend, args.history_tokens)
    items = load_inventory("builtin").sample(None, per_trait=-(-args.items // 11) + 1, seed=0).items[: args.items]
    prompts = [backend.prompt_tokens([*history, question_message(i, DEFAULT_TRAIT_SETS.polarity(i.trait))])[0]
               for i in items]
    shared = min(map(len, prompts)) - 1
    for p in prompts[1:]:
        shared = next((k for k in range(shared) if p[k] != prompts[0][k]), shared)
    n, n_vocab = len(prompts), backend._loaded().n_vocab()
    tails = sum(len(p) - shared for p in prompts)
    print(f"{n} items after a shared prefix of {shared} tokens; {tails} item tokens; {backend.n_threads} threads")
    head = [(t, i, 0, False) for i, t in enumerate(prompts[0][:shared])]

    ctx = _context(backend, -(-(shared + 256) // 512) * 512, 1, 128)
    _decode(ctx, head, 128, n_vocab)
    started = time.perf_counter()
    one: list[np.ndarray] = []
    for p in prompts:  # the backend's way: sequence 0, one call per item, the tail removed after it
        ctx.kv_cache_seq_rm(0, shared, -1)
        rows = _tail(p, shared, 0)
        one.append(_decode(ctx, rows, 128, n_vocab)[len(rows) - 1])
    t_one = time.perf_counter() - started
    ctx.close()

    size = -(-(shared + tails + 64) // 256) * 256
    ctx = _context(backend, size, n + 1, 512)
    memory = llama_cpp.llama_get_memory(ctx.ctx)
    _decode(ctx, head, 128, n_vocab)
    started = time.perf_counter()
    rows, last = [], []
    for i, p in enumerate(prompts):
        llama_cpp.llama_memory_seq_cp(memory, 0, i + 1, 0, shared)
        rows += _tail(p, shared, i + 1)
        last.append(len(rows) - 1)
    out = _decode(ctx, rows, 512, n_vocab)
    t_batch = time.perf_counter() - started
    batched = [out[k] for k in last]

    def largest(other: list[np.ndarray]) -> float:
        return max(float(np.max(np.abs(a - b))) for a, b in zip(one, other, strict=True))

    print(f"one sequence, one call per item: {t_one:.2f} s ({t_one / n:.3f} s per item)")
    print(f"multi-sequence batch (one cache): {t_batch:.2f} s ({t_batch / n:.3f} s per item); "
          f"{t_batch / t_one:.2f} x the backend's way")
    print(f"(a) multi-sequence batch vs backend: largest log-probability difference {largest(batched):.4f}")

    ctx.kv_cache_clear()
    _decode(ctx, head, 128, n_vocab)
    separate = []
    for i, p in enumerate(prompts):  # other items' cells stay in the cache
        llama_cpp.llama_memory_seq_cp(memory, 0, i + 1, 0, shared)
        tail = _tail(p, shared, i + 1)
        separate.append(_decode(ctx, tail, 512, n_vocab)[len(tail) - 1])
    print(f"(b) one call per sequence, other sequences' cells present: {largest(separate):.4f}")

    ctx.kv_cache_clear()
    _decode(ctx, head, 128, n_vocab)
    alone = []
    for p in prompts:  # one extra sequence at a time, removed after each item
        llama_cpp.llama_memory_seq_cp(memory, 0, 1, 0, shared)
        tail = _tail(p, shared, 1)
        alone.append(_decode(ctx, tail, 512, n_vocab)[len(tail) - 1])
        llama_cpp.llama_memory_seq_rm(memory, 1, -1, -1)
    print(f"(c) one extra sequence at a time, removed after each item: {largest(alone):.4f}")
    ctx.close()
    backend.close()


if __name__ == "__main__":
    main()
