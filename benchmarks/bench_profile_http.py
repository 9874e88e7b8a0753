"""A 60-item trait profile against an OpenAI-compatible server with a fixed latency: batched vs one by one.

A profile's items go to the server together (``OpenAIBackend.score_concurrency`` requests at once), so
the profile waits about ``ceil(60 / 16)`` round trips instead of 60. This prints both wall times, their
ratio (goal ≤ 1/5 at 200 ms) and whether the two profiles' item scores are identical. The server is the
project's loopback server (aiohttp, waiting without CPU, as a model server waiting on its GPU). Run::

    PYTHONPATH=src python benchmarks/bench_profile_http.py [--latency 0.2] [--items 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from contagion.backends.registry import resolve
from contagion.experiment.trial import measure_agent
from contagion.testing import LoopbackServer
from contagion.traits.settings import AssessmentSettings


def profile_once(base_url: str, settings: AssessmentSettings, concurrency: int) -> tuple[float, list[float]]:
    backend = resolve(f"openai:loopback@{base_url}")
    inner = backend.inner
    inner.score_concurrency = concurrency  # type: ignore[attr-defined]
    started = time.perf_counter()
    profile = asyncio.run(measure_agent(backend, "You are a helpful assistant.", settings))
    wall = time.perf_counter() - started
    return wall, [round(i.score, 12) for i in profile.items]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--items", type=int, default=6, help="items per trait (10 traits)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from contagion.traits.inventory import load_inventory

    traits = tuple(load_inventory("builtin").traits()[:10])  # 10 traits x 6 items = 60 items
    settings = AssessmentSettings(items=args.items, source_items=0, traits=traits, bootstrap=100)
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; server latency {args.latency * 1000:.0f} ms; "
          f"{len(traits)} traits x {args.items} items")
    with LoopbackServer(latency=args.latency) as server:
        rows = {}
        for concurrency in (1, 16):
            walls, scores = [], None
            for _ in range(args.repeats):
                before = len(server.requests)
                wall, got = profile_once(server.base_url, settings, concurrency)
                walls.append(wall)
                requests = len(server.requests) - before
                assert scores is None or scores == got
                scores = got
            rows[concurrency] = (min(walls), scores, requests)
            print(f"  score_concurrency {concurrency:>2}: {requests} requests, best of {args.repeats} "
                  f"{min(walls):.2f} s (all: {', '.join(f'{w:.2f}' for w in walls)})")
    (seq, seq_scores, _), (bat, bat_scores, _) = rows[1], rows[16]
    print(f"batched / sequential: {bat / seq:.3f} (goal <= 0.200); item scores identical: {seq_scores == bat_scores}")


if __name__ == "__main__":
    main()
