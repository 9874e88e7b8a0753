"""`contagion demo` as a newcomer runs it: from a cold cache, start to finish, in a child process.

Each run gets a fresh temporary ``CONTAGION_CACHE_DIR`` (so the first-run float32 copy of the embedded
model's weights is written, as on a fresh install) and a fresh output directory. Printed: wall time, peak
resident memory of the child (``ru_maxrss`` of the waited-for children: the demo is one process), CPU
time, the tokens the games ran through the model (from the run's store), and the machine's load before
and after (other work on the same cores slows the demo down; say so when quoting the figures).
Goals (issue 23): ≤ 300 s and ≤ 1 GB on 2 cores.

Run::

    PYTHONPATH=src python benchmarks/bench_demo.py [--runs 1] [--simulated] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["CONTAGION_CACHE_DIR"] = str(cache)
    env.pop("BROWSER", None)
    return env


def _tokens(out: Path) -> dict[str, int]:
    """Prompt tokens run through the model and tokens generated: in the games (actions, chat and SIT probes
    included), in the post-play profiles, and in the pre-play profiles (each measured once)."""
    sys.path.insert(0, str(SRC))
    from contagion.experiment.store import Store

    counts = {"games": 0, "game_prompt": 0, "generated": 0, "post_prompt": 0, "pre_prompt": 0}
    with Store.open_existing(out) as store:
        pre_seen: set[str] = set()
        for record in store.iter_records(status=None):
            counts["games"] += 1
            for player in record.players:
                counts["game_prompt"] += player.prompt_tokens_encoded
                counts["generated"] += player.completion_tokens
                post = player.post_profile or {}
                counts["post_prompt"] += int((post.get("cost") or {}).get("prompt_tokens_encoded", 0))
                pre = player.pre_profile or {}
                key = repr(pre.get("context_messages"))
                if pre and key not in pre_seen:
                    pre_seen.add(key)
                    counts["pre_prompt"] += int((pre.get("cost") or {}).get("prompt_tokens_encoded", 0))
    return counts


def run_once(simulated: bool, keep: Path | None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    cache, out = tmp / "cache", (keep or tmp / "demo")
    if keep is not None and keep.exists():
        shutil.rmtree(keep)
    cmd = [sys.executable, "-m", "contagion", "demo", "--no-progress", "--out", str(out)]
    if simulated:
        cmd.append("--simulated")
    load_before = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(cache), text=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_after = os.getloadavg()
    try:
        if proc.returncode != 0:
            raise SystemExit(f"the demo failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        converted = any((cache / "models").glob("*.f32.*.gguf")) if not simulated else False
        return {
            "wall": wall, "maxrss_mib": after.ru_maxrss / 1024,  # Linux: KiB
            "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "load_before": load_before, "load_after": load_after, "converted": converted,
            "tokens": _tokens(out), "summary": [line for line in proc.stdout.splitlines()
                                                if line.startswith(("Demo finished", "What ran", "No claim"))],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="Cold-cache runs (each in a fresh directory).")
    parser.add_argument("--simulated", action="store_true", help="Time `contagion demo --simulated` instead.")
    parser.add_argument("--keep", type=Path, help="Keep the (last) demo's run directory here.")
    args = parser.parse_args()
    print(f"contagion demo{' --simulated' if args.simulated else ''}, cold cache; {os.cpu_count()} CPUs; "
          f"goal <= 300 s and <= 1024 MiB")
    for i in range(args.runs):
        # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: one run per process keeps it this run's
        if i:
            print("(runs after the first report the largest peak so far: run the script once per figure)")
        r = run_once(args.simulated, args.keep)
        t = r["tokens"]
        print(f"run {i + 1}: wall {r['wall']:.1f} s ({r['wall'] / 60:.2f} min), peak RSS {r['maxrss_mib']:.0f} MiB, "
              f"CPU {r['cpu']:.1f} s; float32 weights written this run: {'yes' if r['converted'] else 'no'}")
        print(f"  load average before {r['load_before'][0]:.2f} / after {r['load_after'][0]:.2f} (1 min), "
              f"{r['load_after'][1]:.2f} (5 min): above ~0.5, other work shared the cores")
        print(f"  tokens: games {t['games']}; prompt tokens encoded in games {t['game_prompt']:,}, post-play "
              f"profiles {t['post_prompt']:,}, pre-play profiles {t['pre_prompt']:,}; generated {t['generated']:,}")
        for line in r["summary"]:
            print(f"  demo: {line}")


if __name__ == "__main__":
    main()
