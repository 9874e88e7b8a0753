"""What the white-box monitor costs: the same games with and without it, on ``hf:embedded``, in one run.

Each repetition plays one game (prisoner's dilemma, ``--rounds`` rounds with chat, two language-model seats —
a default agent under study and a malicious co-player — and a scripted tit-for-tat player; no trait
measurement) twice: unmonitored and monitored on ``--traits`` of the vectors file, the order alternating
between repetitions so a warming cache or a busy neighbour does not favour one side. Printed per side: wall
seconds (median and total), the seconds the model spent, the prompt tokens encoded (equal on both sides:
every game starts from an empty prompt cache, and a monitored backend shares its parent's), the readings
recorded, and the ratio monitored ÷ unmonitored of the medians (issue 29's goal: ≤ 1.05). Also checked:
both sides played the same game (the same messages and actions).

Without ``--vectors`` a vectors file for cooperativeness is made first (``contagion vectors``' method; its
time is printed apart and not part of the ratio).

    HF_HUB_OFFLINE=1 PYTHONPATH=src python benchmarks/bench_monitor.py [--reps 4] [--rounds 3] [--vectors FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


async def main() -> None:
    from contagion.backends.base import GenerationConfig
    from contagion.backends.registry import resolve
    from contagion.experiment.record import TrialSpec
    from contagion.experiment.trial import run_trial
    from contagion.games.record import GameSpec, PlayerSpec
    from contagion.steering.monitor import MonitorSpec
    from contagion.steering.vector import VectorFile
    from contagion.traits.inventory import load_inventory
    from contagion.whitebox.vectors import extract_vectors, vectors_backend

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="hf:embedded")
    ap.add_argument("--vectors", type=Path, help="A vectors file (default: make one for cooperativeness).")
    ap.add_argument("--traits", default="", help="Traits of the file to monitor (comma list; default: all).")
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=24)
    args = ap.parse_args()

    print(f"monitor cost on {args.model}: {args.reps} repetitions x 2 sides, {args.rounds} rounds with chat, "
          f"load {os.getloadavg()[0]:.2f}")
    vectors = args.vectors
    if vectors is None:
        t0 = time.perf_counter()
        backend = vectors_backend(args.model)
        inventory = load_inventory("builtin", traits=["cooperativeness"])
        vf: VectorFile = await extract_vectors(backend, inventory)
        vectors = Path(tempfile.mkdtemp()) / "coop.json"
        vectors.write_text(vf.model_dump_json())
        print(f"vectors made in {time.perf_counter() - t0:.1f} s (not part of the ratio): {vectors}")
    monitor = MonitorSpec(file=str(vectors), traits=tuple(t for t in args.traits.split(",") if t))

    def spec(seed: int, watched: bool) -> TrialSpec:
        game = GameSpec(game="prisoners-dilemma", rounds=args.rounds, chat_turns=1, seed=seed,
                        generation=GenerationConfig(max_tokens=args.max_tokens),
                        players=(PlayerSpec.parse(args.model), PlayerSpec.parse(f"malicious={args.model}", focal=False),
                                 PlayerSpec.parse("scripted:tit-for-tat", focal=False)))
        return TrialSpec(game=game, measure=False, monitor=monitor if watched else None)

    plain = resolve(args.model)
    await run_trial(spec(10_000, False))  # load the model and warm up; not counted
    walls: dict[bool, list[float]] = {False: [], True: []}
    model_s: dict[bool, float] = {False: 0.0, True: 0.0}
    encoded: dict[bool, int] = {False: 0, True: 0}
    readings = 0
    for rep in range(args.reps):
        order = (False, True) if rep % 2 == 0 else (True, False)
        records = {}
        for watched in order:
            plain.inner._invalidate()  # type: ignore[attr-defined]  # each game starts from an empty prompt cache
            t0 = time.perf_counter()
            record = await run_trial(spec(rep, watched))
            walls[watched].append(time.perf_counter() - t0)
            if record.error:
                raise SystemExit(f"game failed: {record.error}")
            model_s[watched] += sum(p.model_seconds for p in record.players)
            encoded[watched] += sum(p.prompt_tokens_encoded for p in record.players)
            records[watched] = record
        same = all([m.content for m in a.messages] == [m.content for m in b.messages]
                   and [x.action for x in a.actions] == [x.action for x in b.actions]
                   for a, b in zip(records[False].players, records[True].players, strict=True))
        readings += sum(len(p.monitor) for p in records[True].players)
        print(f"  rep {rep}: unmonitored {walls[False][-1]:6.2f} s, monitored {walls[True][-1]:6.2f} s, "
              f"same game: {same}")
    for watched in (False, True):
        name = "monitored  " if watched else "unmonitored"
        print(f"{name}: median {statistics.median(walls[watched]):6.2f} s, total {sum(walls[watched]):7.2f} s, "
              f"model {model_s[watched]:7.2f} s, prompt tokens encoded {encoded[watched]:,}")
    ratio = statistics.median(walls[True]) / statistics.median(walls[False])
    total_ratio = sum(walls[True]) / sum(walls[False])
    print(f"readings recorded: {readings}")
    print(f"ratio monitored / unmonitored: median {ratio:.3f}, total {total_ratio:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    asyncio.run(main())
