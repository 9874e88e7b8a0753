"""Memory of planning a run: peak RSS before the first game, for a grid at 100 vs 100,000 repetitions.

Each size runs in a fresh process that loads the config, opens a new store, plans the run (counting what is
stored and what is missing) and walks every pending job the way the runner does before its first game (the
pre-play profile pass), without playing anything. Prints the peak RSS of each and their ratio (goal ≤ 1.2).

    python benchmarks/bench_planning.py [--small 100] [--large 100000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = {
    "name": "planning",
    "models": ["sim:null"],
    "games": ["prisoners-dilemma"],
    "compositions": {"all-default": ["default", "default", "default"]},
    "interventions": ["none"],
    "chat_turns": [0],
    "rounds": 2,
    "assessment": {"items": 2, "bootstrap": 100},
}


def child(repetitions: int) -> None:
    from contagion.experiment.config import parse_config
    from contagion.experiment.runner import plan
    from contagion.experiment.store import Store
    from contagion.experiment.trial import needed_profiles

    started = time.perf_counter()
    config = parse_config({**GRID, "repetitions": repetitions})
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "run") as store:
        todo = plan(config, store)
        keys = {r.key for spec, _ in todo.jobs() for r in needed_profiles(spec)}
        walked = sum(1 for _ in todo.jobs())
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"repetitions": repetitions, "pending": todo.pending, "walked": walked,
                      "profiles": len(keys), "peak_mib": peak_kib / 1024,
                      "seconds": time.perf_counter() - started}))


def measure(repetitions: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", str(repetitions)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    small, large = measure(args.small), measure(args.large)
    for row in (small, large):
        print(f"repetitions {row['repetitions']:>7,}: {row['pending']:>7,} games planned, peak RSS "
              f"{row['peak_mib']:.1f} MiB, {row['seconds']:.1f} s to plan and walk every job")
    print(f"ratio of peak RSS (large / small): {large['peak_mib'] / small['peak_mib']:.3f}  (goal <= 1.2)")


if __name__ == "__main__":
    main()
