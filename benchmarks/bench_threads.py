"""Thread settings of the embedded model with and without a competing busy process (issue 18).

Times a short trait assessment (``--items`` items after a ``--history-tokens`` history, from an empty
cache) with the default thread setting (the CPUs of this process's affinity mask, OpenMP threads waiting
passively) and with 1 and 2 threads, first on the machine as it is, then with one busy process
spinning on a core. Each setting runs ``--repeat`` times, interleaved, and the fastest run counts.
Prints each setting's time and the default's ratio to the best (goal: within 1.10 under contention).
Run::

    PYTHONPATH=src python benchmarks/bench_threads.py [--items 20] [--history-tokens 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from typing import Any

from contagion.backends.base import run_sync
from contagion.backends.embedded import LlamaCppBackend, default_threads, embedded_model_path
from contagion.traits.assess import assess
from contagion.traits.inventory import Inventory, load_inventory


def _spin(stop: Any) -> None:
    while not stop.is_set():
        for _ in range(100_000):
            pass


def main() -> None:
    from bench_assess import game_history  # the same plausible history as the assessment benchmark

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--history-tokens", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    settings = {"default": 0, "1 thread": 1, "2 threads": 2}
    backends = {name: LlamaCppBackend(embedded_model_path(), spec="embedded", n_threads=n)
                for name, n in settings.items()}
    history = game_history(backends["default"], args.history_tokens)
    full = load_inventory("builtin")
    inventory = Inventory(source=full.source, items=full.items[: args.items])
    print(f"default threads: {default_threads()} (affinity) of {os.cpu_count()} CPUs; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')};"
          f" load average {os.getloadavg()[0]:.1f}")
    for load in ("as it is", "one busy process"):
        stop = multiprocessing.Event()
        spinner = multiprocessing.Process(target=_spin, args=(stop,), daemon=True) if load != "as it is" else None
        if spinner is not None:
            spinner.start()
        try:
            times: dict[str, list[float]] = {name: [] for name in settings}
            for _ in range(args.repeat):
                for name, backend in backends.items():
                    backend.clear_cache()
                    started = time.perf_counter()
                    run_sync(assess(backend, history, inventory, context_kind="post"))
                    times[name].append(time.perf_counter() - started)
        finally:
            stop.set()
            if spinner is not None:
                spinner.join()
        best = {name: min(t) for name, t in times.items()}
        fastest = min(best.values())
        print(f"\nmachine {load}:")
        for name, t in times.items():
            print(f"  {name:<10} {best[name]:7.2f} s  (runs {', '.join(f'{x:.2f}' for x in t)})")
        ratio = best["default"] / fastest
        print(f"  default / best = {ratio:.2f}  (goal <= 1.10: {'met' if ratio <= 1.10 else 'MISSED'})")


if __name__ == "__main__":
    main()
