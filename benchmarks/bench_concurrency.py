"""Games side by side on the embedded model vs one at a time: wall time and the prompt tokens encoded.

The grid of issue 23: four games with chat and trait assessment on ``embedded`` (Prisoner's Dilemma,
all-default and one-malicious groups, 2 repetitions, 3 rounds, 1 chat turn, 3 measured items per trait
of every built-in trait). It is run by ``contagion run`` in a fresh child process at each ``concurrency``
setting (``--settings 1,4``), into a fresh run directory, the float32 weights already written; printed per
setting: wall time, the prompt tokens run through the model (games, post-play and pre-play profiles; from
the store's records), tokens generated, and the console's note when it ran fewer games at once than asked.
The records themselves are the same at every setting (tests/experiment/test_concurrency_embedded.py).
Goal: concurrency 4 takes ≤ 1.1 × the time of concurrency 1.

Run::

    PYTHONPATH=src python benchmarks/bench_concurrency.py [--settings 1,4] [--traits 2] [--items 3]
        [--repetitions 2] [--rounds 3] [--order alternate]

``--traits N`` measures only the first N built-in traits (a smaller grid for a busy machine). Timings
depend on what else runs on the cores: the load average is printed before and after each run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def grid(traits: int | None, items: int, repetitions: int, rounds: int) -> dict[str, Any]:
    sys.path.insert(0, str(SRC))
    from contagion.traits.inventory import load_inventory

    assessment: dict[str, Any] = {"items": items}
    if traits:
        assessment["traits"] = load_inventory("builtin").traits()[:traits]
    return {
        "name": "concurrency benchmark", "models": ["embedded"], "games": ["prisoners-dilemma"],
        "compositions": {"all-default": ["default", "default", "default"],
                         "one-malicious": ["default", "default", "malicious"]},
        "interventions": ["none"], "rounds": rounds, "chat_turns": [1], "repetitions": repetitions,
        "assessment": assessment, "generation": {"max_tokens": 32},
    }


def tokens(out: Path) -> dict[str, int]:
    from contagion.experiment.store import Store

    t = {"games": 0, "game_prompt": 0, "post_prompt": 0, "pre_prompt": 0, "generated": 0}
    pre_seen: set[str] = set()
    with Store.open_existing(out) as store:
        for record in store.iter_records(status=None):
            assert record.error is None, record.error
            t["games"] += 1
            for p in record.players:
                t["game_prompt"] += p.prompt_tokens_encoded
                t["generated"] += p.completion_tokens
                t["post_prompt"] += int(((p.post_profile or {}).get("cost") or {}).get("prompt_tokens_encoded", 0))
                pre = p.pre_profile or {}
                key = repr(pre.get("context_messages"))
                if pre and key not in pre_seen:
                    pre_seen.add(key)
                    t["pre_prompt"] += int((pre.get("cost") or {}).get("prompt_tokens_encoded", 0))
    return t


def run(config: dict[str, Any], concurrency: int, tmp: Path) -> dict[str, Any]:
    path = tmp / f"grid-{concurrency}.yaml"
    path.write_text(yaml.safe_dump({**config, "concurrency": concurrency}), encoding="utf-8")
    out = tmp / f"run-{concurrency}-{time.monotonic_ns()}"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    load = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "contagion", "run", str(path), "--out", str(out), "--no-progress"],
                          env=env, text=True, capture_output=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"contagion run failed at concurrency {concurrency}:\n{proc.stdout}\n{proc.stderr}")
    notes = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if "at a time" in line]
    return {"wall": wall, "tokens": tokens(out), "load": (load, os.getloadavg()[0]), "notes": notes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="1,4", help="Concurrency settings, comma-separated.")
    parser.add_argument("--traits", type=int, default=0, help="Only the first N built-in traits (0 = all).")
    parser.add_argument("--items", type=int, default=3, help="Measured items per trait.")
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=1, help="Runs per setting, interleaved (best is printed).")
    args = parser.parse_args()
    settings = [int(s) for s in args.settings.split(",")]
    config = grid(args.traits or None, args.items, args.repetitions, args.rounds)
    sys.path.insert(0, str(SRC))
    from contagion.backends.embedded import embedded_run_path

    embedded_run_path()  # the float32 copy, written once before any timing
    print(f"grid: {config['repetitions'] * 2} games (PD, all-default + one-malicious, {config['rounds']} rounds, "
          f"1 chat turn, {args.items} items per trait, traits: {args.traits or 'all'}); {os.cpu_count()} CPUs")
    results: dict[int, list[dict[str, Any]]] = {s: [] for s in settings}
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
        for _ in range(args.repeat):
            for s in settings:  # interleaved, so a change in the machine's load hits every setting alike
                r = run(config, s, Path(tmp))
                results[s].append(r)
                t = r["tokens"]
                encoded = t["game_prompt"] + t["post_prompt"] + t["pre_prompt"]
                print(f"concurrency {s}: {r['wall']:.1f} s; prompt tokens encoded {encoded:,} (games "
                      f"{t['game_prompt']:,}, post-play {t['post_prompt']:,}, pre-play {t['pre_prompt']:,}); "
                      f"generated {t['generated']:,}; load {r['load'][0]:.2f} -> {r['load'][1]:.2f}"
                      + (f"\n  console: {r['notes'][0]}" if r["notes"] else ""))
    best = {s: min(r["wall"] for r in rs) for s, rs in results.items()}
    base = best[settings[0]]
    for s in settings[1:]:
        print(f"concurrency {s} / concurrency {settings[0]}: {best[s] / base:.2f} x (best of {args.repeat})")


if __name__ == "__main__":
    main()
