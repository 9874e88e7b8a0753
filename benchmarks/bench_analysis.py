"""How long the analysis takes at paper scale (about 3,500 games), and how fast tables stream from a store.

    PYTHONPATH=src python benchmarks/bench_analysis.py [--games 3500] [--run RUN_DIR]

The contrast statistics run on synthetic tidy tables of the given size (same columns as a real run);
``--run`` also times :func:`load_tables` and the whole report on a real run directory.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from contagion.analysis.contrasts import AnalysisSettings, compute_contrasts, drift_by_cell
from contagion.analysis.tables import PROSOCIAL, RunInfo, RunTables

TRAITS = [("agreeableness", "pro"), ("conscientiousness", "pro"), ("honesty", "pro"), ("cooperativeness", "pro"),
          ("machiavellianism", "anti"), ("narcissism", "anti"), ("psychopathy", "anti"),
          ("willingness-to-deceive", "anti"), ("power-seeking", "anti")]
COMPOSITIONS = [("all-default", "all-default", 3), ("one-malicious", "malicious-lm", 2),
                ("scripted-defector", "scripted-defector", 2)]
INTERVENTIONS = ["none", "repeat-system:k=2", "sit:k=2,n=3", "sit-adaptive"]
GAMES = ["prisoners-dilemma", "chicken", "stag-hunt"]


def synthetic(games: int, seed: int = 0) -> RunTables:
    rng = np.random.default_rng(seed)
    cells = [(g, c, i, t) for g in GAMES for c in COMPOSITIONS for i in INTERVENTIONS for t in (0, 1)]
    reps = max(1, games // len(cells))
    cols: dict[str, list[object]] = {k: [] for k in (
        "game_id", "cluster", "model", "game", "composition", "composition_kind", "intervention",
        "intervention_kind", "chat_turns", "rep", "seed", "player", "persona", "pre_key", "trait", "polarity",
        "pre", "post", "drift", "n_items")}
    for game, (comp, kind, seats), iv, chat in cells:
        for r in range(reps):
            gid = f"{game}-{comp}-{iv}-{chat}-{r}"
            for s in range(seats):
                deltas = {t: rng.normal(-0.02 if kind != "all-default" else 0, 0.03) for t, _ in TRAITS}
                index = (np.mean([deltas[t] for t, p in TRAITS if p == "pro"])
                         - np.mean([deltas[t] for t, p in TRAITS if p == "anti"]))
                for trait, pol in [*TRAITS, (PROSOCIAL, "index")]:
                    d = float(index if trait == PROSOCIAL else deltas[trait])
                    for key, value in (("game_id", gid), ("cluster", gid), ("model", "m"), ("game", game),
                                       ("composition", comp), ("composition_kind", kind), ("intervention", iv),
                                       ("intervention_kind", iv.split(":")[0]), ("chat_turns", chat), ("rep", r),
                                       ("seed", r), ("player", f"P{s}"), ("persona", "default"),
                                       ("pre_key", f"{game}-{s}"), ("trait", trait), ("polarity", pol),
                                       ("pre", 0.5), ("post", 0.5 + d), ("drift", d), ("n_items", 10)):
                        cols[key].append(value)
    drift = pd.DataFrame(cols)
    for c in ("model", "game", "composition", "composition_kind", "intervention", "intervention_kind", "player",
              "persona", "trait", "polarity"):
        drift[c] = drift[c].astype("category")
    empty = pd.DataFrame()
    return RunTables(drift=drift, actions=empty, players=empty, games=empty, info=RunInfo())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--games", type=int, default=3500)
    parser.add_argument("--run", type=Path)
    args = parser.parse_args()
    tables = synthetic(args.games)
    n_games = tables.drift["game_id"].nunique()
    print(f"synthetic: {n_games} games, {len(tables.drift):,} drift rows")
    started = time.perf_counter()
    contrasts = compute_contrasts(tables)
    print(f"compute_contrasts (2,000 cluster-bootstrap resamples, MixedLM checks): "
          f"{time.perf_counter() - started:.1f} s, {sum(len(c.rows) for c in contrasts.values())} rows")
    started = time.perf_counter()
    cells = drift_by_cell(tables.drift, settings=AnalysisSettings())
    print(f"drift_by_cell: {time.perf_counter() - started:.1f} s, {len(cells)} cells")
    if args.run:
        from contagion.analysis.report import write_report
        from contagion.analysis.tables import load_tables

        tracemalloc.start()
        started = time.perf_counter()
        real = load_tables(args.run)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        n = len(real.games)
        print(f"load_tables: {n} games in {seconds:.1f} s ({n / seconds:.0f} games/s), peak {peak / 1e6:.0f} MB")
        started = time.perf_counter()
        write_report(args.run, Path("/tmp/bench-report.html"))
        print(f"write_report: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
