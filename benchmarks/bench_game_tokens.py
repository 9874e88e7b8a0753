"""Prompt tokens the embedded model encodes per game, against the minimum (issue 3, item 6).

Plays G games (default 2) of P players × R rounds × C chat turns (default 3 × 4 × 1) on one embedded
model shared by every player, as ``contagion play`` does, and prints per game:

* **encoded** — prompt tokens actually run through the model: the sum of the players'
  ``PlayerRecord.prompt_tokens_encoded`` (with prefix reuse);
* **from scratch** — the sum of ``PlayerRecord.prompt_tokens``: what re-encoding every request from its
  first token would cost;
* **minimum** — each player's final history encoded once: the token count of the chat-templated final
  messages (``LlamaCppBackend.tokenize(render(messages))``), summed over players;
* **ratio** = encoded / minimum (goal ≤ 1.2), wall seconds per game and model seconds per game.

It then prints the llama.cpp decode calls made and the backend's lanes (cache size, tokens held). Run::

    PYTHONPATH=src python benchmarks/bench_game_tokens.py [--games 2] [--players 3] [--rounds 4]
        [--chat-turns 1] [--max-tokens 30] [--spec embedded]

"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

from contagion.backends.base import GenerationConfig, run_sync
from contagion.backends.embedded import BLOCK, LlamaCppBackend
from contagion.backends.registry import build
from contagion.games.engine import GameEngine
from contagion.games.record import GamePlay, GameSpec, PlayerSpec

GOAL = 1.2


@dataclass
class Row:
    encoded: int
    scratch: int
    minimum: int
    wall: float
    model: float


def minimum_tokens(backend: LlamaCppBackend, record: GamePlay) -> int:
    """Each player's final history, chat-templated and tokenised once."""
    return sum(len(backend.tokenize(backend.render(p.messages, add_generation_prompt=False))) for p in record.players)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--games", type=int, default=2)
    ap.add_argument("--players", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--chat-turns", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=30)
    ap.add_argument("--spec", default="embedded", help="an embedded or gguf: backend spec")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    backend = build(args.spec)
    assert isinstance(backend, LlamaCppBackend), "the benchmark needs a llama.cpp backend (embedded or gguf:PATH)"
    print(f"{args.games} game(s) of {args.players} players x {args.rounds} rounds x {args.chat_turns} chat turn(s), "
          f"max {args.max_tokens} tokens per message, backend {args.spec} ({backend.n_slots} lanes at most, "
          f"{backend.n_threads} threads, block {BLOCK})\n")
    header = f"{'game':>4} {'encoded':>8} {'scratch':>8} {'minimum':>8} {'ratio':>6} {'wall s':>8} {'model s':>8}"
    print(header)
    print("-" * len(header))
    rows: list[Row] = []
    for g in range(args.games):
        spec = GameSpec(players=tuple(PlayerSpec(backend=args.spec) for _ in range(args.players)),
                        rounds=args.rounds, chat_turns=args.chat_turns, seed=args.seed + g,
                        generation=GenerationConfig(max_tokens=args.max_tokens, seed=args.seed + g))
        started = time.perf_counter()
        record = run_sync(GameEngine(spec, [backend] * args.players).play())
        wall = time.perf_counter() - started
        if record.error:
            raise SystemExit(f"game {g + 1} failed: {record.error}")
        encoded = sum(p.prompt_tokens_encoded for p in record.players)
        scratch = sum(p.prompt_tokens for p in record.players)
        minimum = minimum_tokens(backend, record)
        model = sum(p.model_seconds for p in record.players)
        rows.append(Row(encoded, scratch, minimum, wall, model))
        print(f"{g + 1:>4} {encoded:>8} {scratch:>8} {minimum:>8} {encoded / minimum:>6.2f} {wall:>8.1f} {model:>8.1f}")
    enc, scr, mn = (sum(r.encoded for r in rows), sum(r.scratch for r in rows), sum(r.minimum for r in rows))
    print("-" * len(header))
    print(f"{'all':>4} {enc:>8} {scr:>8} {mn:>8} {enc / mn:>6.2f} {statistics.mean(r.wall for r in rows):>8.1f} "
          f"{statistics.mean(r.model for r in rows):>8.1f}   (wall and model seconds: mean per game)")
    verdict = "meets" if enc / mn <= GOAL else "MISSES"
    print(f"\nratio {enc / mn:.2f} {verdict} the goal of <= {GOAL} x the minimum")

    print(f"\nllama.cpp decode calls: {backend.decode_calls}; lanes (cache size, tokens held): {backend.lanes}")


if __name__ == "__main__":
    main()
