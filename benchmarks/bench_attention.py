"""Time and memory of the white-box attention read-out on the embedded model, by history length.

Builds synthetic game histories of about 500, 1,000 and 2,000 tokens and runs
``HFBackend.attention_to_segments`` (hf:embedded, SmolLM2-135M through transformers) on each, in a
fresh subprocess per size so that the memory figures do not mix. Memory is the peak resident set
size during the call minus the resident size just before it (sampled every 5 ms with psutil; torch
allocations are invisible to tracemalloc). ``--naive`` also measures one plain forward pass with
``output_attentions=True`` (every layer's full heads x length x length matrices) for comparison;
``--rows`` times ``history_attention_rows`` (shares before every turn, reusing the cache).

    HF_HUB_OFFLINE=1 PYTHONPATH=src python benchmarks/bench_attention.py [--sizes 500 1000 2000] [--naive]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def synthetic_history(target_tokens: int, count: Callable[[list[Any]], int]) -> list[Any]:
    """A player's history: system prompt, rules, then rounds of talk, act, reply and observation."""
    from contagion.messages import assistant, system, user

    messages = [
        system("You are Avery. You are fair, honest and kind, and you care about the other players."),
        user(
            "Rules: three players play repeated rounds. Each round you first talk, then each chooses "
            "cooperate or defect. Cooperating costs you 1 point and gives each other player 1 point."
        ),
    ]
    round_no = 0
    while count(messages) < target_tokens:
        round_no += 1
        messages += [
            user(f"Round {round_no}. Say something to the other players.", kind="talk_prompt"),
            assistant("I suggest we all cooperate again; it gives everyone the most points."),
            user("Blake says: I agree, I will cooperate.", kind="talk"),
            user("Casey says: you are naive, I will defect and take your points.", kind="talk"),
            user("Choose your action: cooperate or defect.", kind="act"),
            assistant("cooperate"),
            user(
                f"Round {round_no} result: you cooperated; 1 other cooperated and 1 defected.",
                kind="observation",
                round=round_no,
            ),
        ]
        if round_no % 3 == 0:
            messages.append(system("Remember: you value fairness and honesty.", kind="injection"))
    return messages


class PeakRSS:
    """Peak resident set size of this process while the block runs (sampled by a thread)."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.peak = self.before = self._proc.memory_info().rss
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRSS:
        gc.collect()
        self.peak = self.before = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.before) / 2**20


def child(size: int, mode: str) -> dict[str, Any]:
    """Measure one size in this (fresh) process."""
    import torch

    from contagion.backends.base import run_sync
    from contagion.backends.hf import HFBackend
    from contagion.whitebox.attention import history_attention_rows, segment_labels

    backend = HFBackend("embedded")
    t0 = time.perf_counter()
    backend.loaded()
    load_s = time.perf_counter() - t0
    messages = synthetic_history(size, lambda ms: len(backend.encode(backend.render(ms))))
    labels = segment_labels(messages)
    result: dict[str, Any] = {"size": size, "mode": mode, "load_s": round(load_s, 1)}
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        if mode == "hooks":
            shares = run_sync(backend.attention_to_segments(messages, labels))
            result["tokens"] = shares.tokens
            result["share_system_layer0_last"] = [
                round(shares.per_layer[0]["system"], 4),
                round(shares.per_layer[-1]["system"], 4),
            ]
        elif mode == "rows":
            rows = run_sync(history_attention_rows(backend, messages))
            result["tokens"] = int(rows[-1]["tokens_so_far"])
            result["turns"] = int(rows[-1]["turn"])
        else:  # naive: every layer's full attention matrices at once
            seg = backend.segment_tokens(messages, labels)
            with torch.inference_mode():
                out = backend.loaded().model(
                    input_ids=torch.tensor([seg.ids]), output_attentions=True, use_cache=False
                )
            result["tokens"] = len(seg.ids)
            del out
        result["seconds"] = round(time.perf_counter() - t0, 2)
    result["peak_delta_mb"] = round(mem.delta_mb, 1)
    result["rss_before_mb"] = round(mem.before / 2**20, 1)
    result["maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--naive", action="store_true", help="also measure a full output_attentions pass")
    parser.add_argument("--rows", action="store_true", help="also time history_attention_rows")
    parser.add_argument("--child", nargs=2, metavar=("SIZE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1])))
        return
    modes = ["hooks"] + (["naive"] if args.naive else []) + (["rows"] if args.rows else [])
    print(f"torch threads: default; cpus: {os.cpu_count()}; load average: {os.getloadavg()[0]:.1f}")
    print(f"{'mode':<6} {'tokens':>6} {'seconds':>8} {'peak MB':>8} {'RSS MB':>7}  notes")
    for mode in modes:
        for size in args.sizes:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(size), mode],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                print(f"{mode:<6} {size:>6} failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            notes = f"load {r['load_s']} s"
            if "share_system_layer0_last" in r:
                notes += f"; system share layer 0 / last: {r['share_system_layer0_last']}"
            if "turns" in r:
                notes += f"; {r['turns']} turns"
            print(
                f"{mode:<6} {r['tokens']:>6} {r['seconds']:>8.2f} {r['peak_delta_mb']:>8.1f} "
                f"{r['rss_before_mb']:>7.0f}  {notes}",
                flush=True,
            )
    print("peak MB = peak RSS during the call minus RSS just before it; RSS MB = RSS before the call")


if __name__ == "__main__":
    main()
