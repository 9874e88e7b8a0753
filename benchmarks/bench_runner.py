"""The experiment runner at scale: paper-size grid time, memory vs number of games, framework overhead.

Three measurements, each in a fresh child process so its numbers are its own:

* **grid** — ``contagion run examples/sim-grid.yaml`` (3,456 games on the simulated models, as the
  paper-scale grid) from start to finish: wall time and games per second. Goal: ≤ 10 min on 2 cores.
* **memory** — peak resident memory (``ru_maxrss`` of the child) of a run of 200 games vs one of 2,000
  games of the same design, and of streaming the 2,000 records back for analysis. Goal: the larger run
  needs ≤ 1.2 × the smaller one's memory.
* **overhead** — a few small games on the embedded model (SmolLM2-135M via llama.cpp), model loaded
  and warmed up first: the run's wall time beyond the time spent in the model (the records'
  ``model_seconds`` plus the trait assessments' ``cost.seconds``, each pre-play profile once), as a
  percentage of the wall time. Goal: ≤ 3 %.

Run::

    PYTHONPATH=src python benchmarks/bench_runner.py [--skip grid] [--skip memory] [--skip overhead]
        [--grid-repetitions 18] [--overhead-games 6]

Timings depend on the machine and on what else runs on it; the output prints the CPU count and load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

# 2 models x 1 game x 4 compositions x 5 interventions x 1 chat setting = 40 cells; x 5 / x 50 repetitions.
MEMORY_GRID: dict[str, Any] = {
    "name": "memory benchmark",
    "models": ["sim:planted", "sim:null"],
    "games": ["prisoners-dilemma"],
    "compositions": {
        "all-default": ["default", "default", "default"],
        "one-malicious": ["default", "default", "malicious"],
        "benevolent-malicious": ["default", "benevolent", "malicious"],
        "scripted-defector": ["default", "default", "scripted:always-defect"],
    },
    "interventions": ["none", "repeat-system:k=2", "sit:k=2,n=3", "sit:k=1,n=2", "sit-adaptive:m=1,threshold=0.05"],
    "rounds": 10,
    "chat_turns": [1],
    "assessment": {"inventory": "builtin", "items": 10, "debias": True},
    "generation": {"max_tokens": 120, "temperature": 0.7, "seed": 0},
    "concurrency": 4,
}

OVERHEAD_GRID: dict[str, Any] = {
    "name": "overhead benchmark",
    "models": ["embedded"],
    "games": ["prisoners-dilemma", "stag-hunt"],
    "compositions": {"all-default": ["default", "default", "default"]},
    "interventions": ["none", "sit:k=2,n=2"],
    "rounds": 2,
    "chat_turns": [1],
    "assessment": {"items": 2, "traits": ["agreeableness", "honesty", "machiavellianism", "narcissism"]},
    "generation": {"max_tokens": 24, "temperature": 0.0},
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _child(kind: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, *args], capture_output=True, text=True,
                          env=_env(), check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child {kind} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# -- children -----------------------------------------------------------------------------------------


def child_run(config_path: str, out: str) -> dict[str, Any]:
    from contagion.experiment.config import load_config
    from contagion.experiment.runner import Runner

    cfg = load_config(Path(config_path))
    started = time.perf_counter()
    summary = Runner(cfg, Path(out), progress=False).run()
    return {"games": summary.finished, "failed": summary.failed, "seconds": time.perf_counter() - started,
            "maxrss_mib": _maxrss_mib()}


def child_stream(out: str) -> dict[str, Any]:
    from contagion.experiment.store import Store

    baseline = _maxrss_mib()
    n = 0
    cooperation = 0.0
    with Store.open_existing(Path(out)) as store:
        for record in store.iter_records():
            n += 1
            acts = [a for r in record.rounds for a in r.actions]
            cooperation += sum(a == "cooperate" for a in acts) / max(1, len(acts))
    return {"records": n, "maxrss_mib": _maxrss_mib(), "baseline_mib": baseline, "mean_cooperation": cooperation / n}


def child_overhead(config_path: str, out: str) -> dict[str, Any]:
    import asyncio

    from contagion.backends.base import GenerationConfig
    from contagion.backends.registry import resolve
    from contagion.experiment.config import load_config
    from contagion.experiment.runner import Runner
    from contagion.experiment.store import Store
    from contagion.messages import Message

    cfg = load_config(Path(config_path))
    backend = resolve("embedded")
    warm = [Message(role="user", content="Say hello.")]
    asyncio.run(backend.generate(warm, GenerationConfig(max_tokens=4)))  # loads the model: not the runner's cost
    asyncio.run(backend.score_choices(warm, ["Yes", "No"], prefix="Answer: "))

    started = time.perf_counter()
    summary = Runner(cfg, Path(out), progress=False).run()
    wall = time.perf_counter() - started
    in_game = post = 0.0
    with Store.open_existing(Path(out)) as store:
        for record in store.iter_records():
            for p in record.players:
                in_game += p.model_seconds
                post += (p.post_profile or {}).get("cost", {}).get("seconds", 0.0)
        pre = sum(json.loads(text).get("cost", {}).get("seconds", 0.0)
                  for (text,) in store.conn.execute("SELECT profile FROM profiles"))
    model = in_game + pre + post
    return {"games": summary.finished, "failed": summary.failed, "wall": wall, "model_in_game": in_game,
            "model_pre_profiles": pre, "model_post_profiles": post, "model": model,
            "overhead_seconds": wall - model, "overhead_pct": 100 * (wall - model) / wall}


# -- the benchmark --------------------------------------------------------------------------------------


def _machine() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"


def bench_grid(tmp: Path, repetitions: int) -> None:
    grid = yaml.safe_load((ROOT / "examples" / "sim-grid.yaml").read_text())
    grid["repetitions"] = repetitions
    path = tmp / "sim-grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    out = tmp / "grid"
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "contagion", "run", str(path), "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, env=_env(), check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"contagion run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    games = 2 * 3 * 4 * 4 * 2 * repetitions
    size = (out / "store.sqlite").stat().st_size / 2**20
    print(f"[grid] examples/sim-grid.yaml, {games:,} games (repetitions {repetitions}), `contagion run` end to end")
    print(f"       wall {wall:,.1f} s = {wall / 60:.2f} min  ({games / wall:.1f} games/s, store {size:,.0f} MiB)"
          f"   goal <= 10 min on 2 cores: {'met' if wall <= 600 else 'NOT met'}")


def bench_memory(tmp: Path) -> None:
    rows = []
    for reps in (5, 50):
        path = tmp / f"memory-{reps}.yaml"
        path.write_text(yaml.safe_dump({**MEMORY_GRID, "repetitions": reps}))
        result = _child("run", str(path), str(tmp / f"memory-{reps}"))
        rows.append(result)
        print(f"[memory] {result['games']:>5,} games: peak RSS {result['maxrss_mib']:,.1f} MiB "
              f"({result['seconds']:,.1f} s)")
    ratio = rows[1]["maxrss_mib"] / rows[0]["maxrss_mib"]
    print(f"         ratio 2,000 / 200 games: {ratio:.3f}   goal <= 1.2: {'met' if ratio <= 1.2 else 'NOT met'}")
    small, large = (_child("stream", str(tmp / f"memory-{reps}")) for reps in (5, 50))
    print(f"[memory] streaming the records back: {small['records']:,} records peak {small['maxrss_mib']:,.1f} MiB, "
          f"{large['records']:,} records peak {large['maxrss_mib']:,.1f} MiB "
          f"(ratio {large['maxrss_mib'] / small['maxrss_mib']:.3f})")


def bench_overhead(tmp: Path, repetitions: int) -> None:
    path = tmp / "overhead.yaml"
    path.write_text(yaml.safe_dump({**OVERHEAD_GRID, "repetitions": repetitions}))
    r = _child("overhead", str(path), str(tmp / "overhead"))
    print(f"[overhead] {r['games']} games on the embedded model (model loaded and warm), failed {r['failed']}")
    print(f"           wall {r['wall']:.2f} s; in the model {r['model']:.2f} s (games {r['model_in_game']:.2f}, "
          f"pre-play profiles {r['model_pre_profiles']:.2f}, post-play profiles {r['model_post_profiles']:.2f})")
    print(f"           framework overhead {r['overhead_seconds']:.3f} s = {r['overhead_pct']:.2f} % of wall   "
          f"goal <= 3 %: {'met' if r['overhead_pct'] <= 3 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--skip", action="append", default=[], choices=["grid", "memory", "overhead"])
    parser.add_argument("--grid-repetitions", type=int, default=18, help="18 = the full 3,456-game grid")
    parser.add_argument("--overhead-repetitions", type=int, default=1, help="games per cell of the overhead grid")
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = {"run": child_run, "stream": child_stream, "overhead": child_overhead}[kind](*rest)
        print(json.dumps(result))
        return
    print(f"machine: {_machine()}")
    with tempfile.TemporaryDirectory(prefix="bench-runner-") as tmp:
        if "overhead" not in args.skip:
            bench_overhead(Path(tmp), args.overhead_repetitions)
        if "memory" not in args.skip:
            bench_memory(Path(tmp))
        if "grid" not in args.skip:
            bench_grid(Path(tmp), args.grid_repetitions)
    print(f"machine after: {_machine()}")


if __name__ == "__main__":
    main()
