"""Answer mass before and after play: the distribution of p(Yes) + p(No) over every measured item.

A falling mass after a long game history is lost confidence, not a change of trait; this prints how the
mass of the trait items is distributed pre vs post in a run (a demo run by default), and how many items the
mass threshold left out.

    python benchmarks/bench_mass.py [RUN_DIR]     # e.g. the directory `contagion demo` wrote
    python benchmarks/bench_mass.py --play         # play a reduced demo (one game per cell) first
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def play_reduced_demo(out: Path) -> None:
    """The demo's grid on the embedded model, one game per (game, composition, intervention) cell."""
    import yaml

    from contagion.cli.demo import demo_config

    cfg = demo_config().model_dump(mode="json")
    cfg.update({"games": ["prisoners-dilemma"], "name": "mass benchmark (reduced demo)"})
    path = out.parent / "mass-demo.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "contagion", "run", str(path), "--out", str(out), "--no-progress"],
                   check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", type=Path, help="a run directory (default: contagion-demo)")
    parser.add_argument("--play", action="store_true", help="play a reduced demo into a temporary directory")
    args = parser.parse_args()
    from contagion.experiment.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir or Path("contagion-demo")
        if args.play:
            run_dir = Path(tmp) / "run"
            play_reduced_demo(run_dir)
        if not run_dir.is_dir():
            sys.exit(f"no run directory {run_dir}: give one, or --play")
        masses: dict[str, list[float]] = {"pre": [], "post": []}
        excluded = {"pre": 0, "post": 0}
        threshold: set[float] = set()
        with Store.open_existing(run_dir) as store:
            for record in store.iter_records():
                for p in record.players:
                    for when, prof in (("pre", p.pre_profile), ("post", p.post_profile)):
                        if not prof or not p.post_profile or not p.pre_profile:
                            continue
                        threshold.add(float(prof.get("min_mass", 0.0)))
                        for it in prof["items"]:
                            if it.get("role", "measure") == "measure" and it.get("mass") is not None:
                                masses[when].append(float(it["mass"]))
                                excluded[when] += not it.get("included", True)
    print(f"run: {run_dir}; mass threshold(s): {sorted(threshold)}")
    print("       n    " + "  ".join(f"q{int(q * 100):02d}" for q in QUANTILES) + "   mean")
    for when in ("pre", "post"):
        values = np.asarray(masses[when])
        if not len(values):
            print(f"{when:>4}: no measured items with a recorded mass")
            continue
        qs = np.quantile(values, QUANTILES)
        print(f"{when:>4}: {len(values):5d}  " + "  ".join(f"{q:.2f}" for q in qs) + f"  {values.mean():.3f}"
              + f"   left out: {excluded[when]}")
    if masses["pre"] and masses["post"]:
        print(f"mean mass post - pre: {np.mean(masses['post']) - np.mean(masses['pre']):+.3f}")


if __name__ == "__main__":
    main()
