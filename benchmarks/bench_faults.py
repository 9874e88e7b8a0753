"""Fault soak: a grid run against an OpenAI-compatible server that fails 30 % of requests the ways real
servers fail, then resumed once.

The loopback server (:class:`contagion.testing.LoopbackServer`) injects each of the seven server faults
of issue 15 — HTTP 500, HTTP 503, HTTP 429 with ``Retry-After``, a hang past the client's timeout,
truncated JSON, a reply without the logprobs asked for, an empty ``choices`` list — each drawn with
equal chance, 30 % of requests in all. The grid (default 48 games: 3 games × 2 compositions × 2
interventions × 2 chat settings × 2 repetitions, 2 rounds each) measures every focal agent's traits
before and after play.

Printed: games finished and failed after the first run and after the resume (failures grouped by
cause), the retries the robust wrapper made, the faults served by kind, the scoring methods recorded,
the median and longest game wall time, and wall times. Target (issue 15): ≥ 99 % of games finished after at most
one resume, every failure recorded with its cause, nothing hung past the configured timeouts.

Run::

    PYTHONPATH=src python benchmarks/bench_faults.py [--rate 0.3] [--repetitions 2] [--timeout 1]
        [--hang 3] [--retry-after 0.2] [--seed 0]

Timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from contagion.backends.registry import resolve  # noqa: E402
from contagion.experiment.config import parse_config  # noqa: E402
from contagion.experiment.runner import Runner, RunSummary  # noqa: E402
from contagion.experiment.store import Store  # noqa: E402
from contagion.testing import SERVER_FAULTS, FaultPlan, LoopbackServer, game_responder  # noqa: E402


def grid(model: str, repetitions: int) -> dict[str, Any]:
    return {
        "name": "fault soak",
        "models": [model],
        "games": ["prisoners-dilemma", "chicken", "stag-hunt"],
        "compositions": {
            "all-default": ["default", "default", "default"],
            "scripted-defector": ["default", "default", "scripted:always-defect"],
        },
        "interventions": ["none", "sit:k=1,n=1"],
        "rounds": 2,
        "chat_turns": [0, 1],
        "repetitions": repetitions,
        "assessment": {"traits": ["agreeableness", "machiavellianism"], "items": 1, "bootstrap": 100},
        "generation": {"max_tokens": 12},
        "concurrency": 16,
        "max_failure_rate": 1.0,
    }


def cause(error: str) -> str:
    """A short cause for a failure: the HTTP status or the kind of fault named in the error."""
    for pattern, label in ((r"HTTP (\d{3})", "HTTP {}"), (r"did not answer within", "timeout"),
                           (r"not valid JSON", "truncated JSON"), (r"empty choices", "empty choices"),
                           (r"without logprobs", "missing logprobs"),
                           (r"lost the connection|connection", "connection")):
        match = re.search(pattern, error)
        if match:
            return label.format(*match.groups())
    return error.splitlines()[0][:80]


def report_run(label: str, summary: RunSummary, seconds: float, out: Path) -> tuple[int, int]:
    with Store.open_existing(out) as store:
        counts = store.counts()
        failures = store.failures()
        methods: Counter[str] = Counter()
        for record in store.iter_records():
            for player in record.players:
                for action in player.actions:
                    methods[f"action {action.method}"] += 1
                for profile in (player.pre_profile, player.post_profile):
                    if profile:
                        methods[f"profile {profile.get('method', '?')}"] += 1
    total = counts["ok"] + counts["failed"]
    print(f"{label}: {summary.finished} finished and {summary.failed} failed now ({summary.skipped} skipped); "
          f"store: {counts['ok']} ok, {counts['failed']} failed of {total}; wall {seconds:.1f} s")
    for text, n in Counter(cause(e) for _, e in failures).most_common():
        print(f"  failed by {text}: {n}")
    if any(not e for _, e in failures):
        print("  WARNING: a failed game without a recorded cause")
    print("  scoring methods recorded: " + ", ".join(f"{m} ×{n}" for m, n in sorted(methods.items())))
    return counts["ok"], total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=0.3, help="share of requests that fault (default 0.3)")
    parser.add_argument("--repetitions", type=int, default=2, help="repetitions per cell (24 games each)")
    parser.add_argument("--timeout", type=float, default=1.0, help="client timeout per request, seconds")
    parser.add_argument("--hang", type=float, default=3.0, help="how long a hung request is held, seconds")
    parser.add_argument("--retry-after", type=float, default=0.2, help="Retry-After of a 429 fault, seconds")
    parser.add_argument("--seed", type=int, default=0, help="fault plan seed")
    args = parser.parse_args()

    plan = FaultPlan(rate=args.rate, kinds=SERVER_FAULTS, seed=args.seed, hang_seconds=args.hang,
                     retry_after=args.retry_after)
    print(f"fault soak: {args.rate:.0%} of requests fault, kinds {', '.join(SERVER_FAULTS)}; client timeout "
          f"{args.timeout:g} s, hangs {args.hang:g} s, Retry-After {args.retry_after:g} s; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp, LoopbackServer(game_responder, faults=plan) as server:
        model = f"openai:loopback@{server.base_url}?timeout={args.timeout:g}"
        config = parse_config(grid(model, args.repetitions))
        out = Path(tmp) / "run"
        print(f"grid: {config.size()} games, {len(config.games)} games × {len(config.compositions)} compositions × "
              f"{len(config.interventions)} interventions × {len(config.chat_turns)} chat settings × "
              f"{config.repetitions} repetitions; traits measured before and after play")
        backend = resolve(model)
        results = []
        for label in ("first run", "resume"):
            started = time.perf_counter()
            summary = Runner(config, out, progress=False).run()
            results.append(report_run(label, summary, time.perf_counter() - started, out))
        with Store.open_existing(out) as store:
            walls = sorted(r.wall_seconds for r in store.iter_records(status=None))
        usage = backend.usage
        faults = Counter(kind for _, kind in server.fault_log)
        requests = len(server.requests)
    ok, total = results[-1]
    print(f"requests served: {requests}; faults injected: {sum(faults.values())} "
          f"({sum(faults.values()) / max(1, requests):.1%}): " + ", ".join(f"{k} {faults[k]}" for k in SERVER_FAULTS))
    print(f"robust wrapper: {usage.calls} calls, {usage.retries} retries, {usage.failures} calls failed for good")
    if walls:
        print(f"game wall time: median {walls[len(walls) // 2]:.1f} s, longest {walls[-1]:.1f} s "
              f"(hung requests are cut at {args.timeout:g} s; the server holds them {args.hang:g} s)")
    share = ok / total if total else 0.0
    print(f"finished after one resume: {ok} of {total} ({share:.1%}); target >= 99%: "
          f"{'met' if share >= 0.99 else 'MISSED'}")


if __name__ == "__main__":
    main()
