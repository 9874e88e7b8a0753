"""Games side by side on the embedded model vs one at a time: wall time and the prompt tokens encoded.

The grid of issue 23: four games with chat and trait assessment on ``embedded`` (Prisoner's Dilemma,
all-default and one-malicious groups, 2 repetitions, 3 rounds, 1 chat turn, 3 measured items per trait
of every built-in trait). It is run by ``contagion run`` in a fresh child process at each ``concurrency``
setting (``--settings 1,4``), into a fresh run directory, the float32 weights already written; printed per
setting: wall time, the prompt tokens run through the model (games, post-play and pre-play profiles; from
the records), tokens generated, and the console's note when the runner ran fewer games at once than asked
(the in-process models declare ``parallel_games`` = 1). ``--side-by-side`` also plays the same games all at
once in one child process straight through ``run_trial`` (no runner, no cap): what ``concurrency: 4`` did
before the cap. The records are the same in every mode (tests/experiment/test_concurrency_embedded.py).
Goal: concurrency 4 takes ≤ 1.1 × the time of concurrency 1.

Run::

    PYTHONPATH=src python benchmarks/bench_concurrency.py [--settings 1,4] [--side-by-side] [--traits 2]
        [--items 3] [--repetitions 2] [--rounds 3] [--repeat 1]

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

    with Store.open_existing(out) as store:
        return _tally(list(store.iter_records(status=None)))


def run(config: dict[str, Any], concurrency: int, tmp: Path) -> dict[str, Any]:
    path = tmp / f"grid-{concurrency}.yaml"
    path.write_text(yaml.safe_dump({**config, "concurrency": concurrency}), encoding="utf-8")
    out = tmp / f"run-{concurrency}-{time.monotonic_ns()}"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["COLUMNS"] = "400"  # the console's note on one line
    load = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "contagion", "run", str(path), "--out", str(out), "--no-progress"],
                          env=env, text=True, capture_output=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"contagion run failed at concurrency {concurrency}:\n{proc.stdout}\n{proc.stderr}")
    notes = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if "at a time" in line]
    return {"wall": wall, "tokens": tokens(out), "load": (load, os.getloadavg()[0]), "notes": notes}


def _tally(records: list[Any]) -> dict[str, int]:
    t = {"games": 0, "game_prompt": 0, "post_prompt": 0, "pre_prompt": 0, "generated": 0}
    pre_seen: set[str] = set()
    for record in records:
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


def child_side_by_side(config_path: str) -> None:
    """Every game of the config at once through run_trial (no runner): prints tokens as JSON."""
    import asyncio
    import json

    from contagion.experiment.config import load_config
    from contagion.experiment.trial import run_trial

    config = load_config(Path(config_path))

    async def play() -> list[Any]:
        return await asyncio.gather(*(run_trial(spec, labels=labels, personas=config.persona_map())
                                      for spec, labels in config.expand()))

    print(json.dumps(_tally(asyncio.run(play()))))


def side_by_side(config: dict[str, Any], tmp: Path) -> dict[str, Any]:
    import json

    path = tmp / "grid-side-by-side.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    load = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child-side-by-side", str(path)], env=env, text=True,
                          capture_output=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"side by side failed:\n{proc.stdout}\n{proc.stderr}")
    return {"wall": wall, "tokens": json.loads(proc.stdout.strip().splitlines()[-1]),
            "load": (load, os.getloadavg()[0]), "notes": []}


def _line(label: str, r: dict[str, Any]) -> str:
    t = r["tokens"]
    encoded = t["game_prompt"] + t["post_prompt"] + t["pre_prompt"]
    return (f"{label}: {r['wall']:.1f} s; prompt tokens encoded {encoded:,} (games {t['game_prompt']:,}, post-play "
            f"{t['post_prompt']:,}, pre-play {t['pre_prompt']:,}); generated {t['generated']:,}; load "
            f"{r['load'][0]:.2f} -> {r['load'][1]:.2f}" + (f"\n  console: {r['notes'][0]}" if r["notes"] else ""))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child-side-by-side":
        sys.path.insert(0, str(SRC))
        child_side_by_side(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="1,4", help="Concurrency settings, comma-separated.")
    parser.add_argument("--traits", type=int, default=0, help="Only the first N built-in traits (0 = all).")
    parser.add_argument("--items", type=int, default=3, help="Measured items per trait.")
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=1, help="Runs per setting, interleaved (best is printed).")
    parser.add_argument("--side-by-side", action="store_true",
                        help="Also play every game at once through run_trial (no runner, so no cap).")
    args = parser.parse_args()
    settings = [int(s) for s in args.settings.split(",")]
    config = grid(args.traits or None, args.items, args.repetitions, args.rounds)
    sys.path.insert(0, str(SRC))
    from contagion.backends.embedded import embedded_run_path

    embedded_run_path()  # the float32 copy, written once before any timing
    print(f"grid: {config['repetitions'] * 2} games (PD, all-default + one-malicious, {config['rounds']} rounds, "
          f"1 chat turn, {args.items} items per trait, traits: {args.traits or 'all'}); {os.cpu_count()} CPUs")
    results: dict[str, list[dict[str, Any]]] = {}
    labels = [f"concurrency {s}" for s in settings] + (["side by side (run_trial, no cap)"] if args.side_by_side
                                                        else [])
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
        for _ in range(args.repeat):
            for label in labels:  # interleaved, so a change in the machine's load hits every setting alike
                if label.startswith("concurrency"):
                    r = run(config, int(label.split()[1]), Path(tmp))
                else:
                    r = side_by_side(config, Path(tmp))
                results.setdefault(label, []).append(r)
                print(_line(label, r), flush=True)
    best = {label: min(r["wall"] for r in rs) for label, rs in results.items()}
    base = best[labels[0]]
    for label in labels[1:]:
        print(f"{label} / {labels[0]}: {best[label] / base:.2f} x (best of {args.repeat})")


if __name__ == "__main__":
    main()
