"""Dose-response of white-box steering on the embedded model: alpha -> scored cooperation and pro-social index.

1. Trait directions (``contagion vectors``' method) for ``--traits`` on ``--model``, or read from
   ``--vectors FILE``; prints each trait's chosen layer and held-out AUC (the best of all layers, so
   optimistic) with the median AUC over layers.
2. For each alpha in ``--alphas`` (a symmetric range), the ``vector:trait=T,alpha=A`` intervention on fixed
   one-round, no-chat games (prisoner's dilemma, chicken, stag hunt x both option orders, beside two
   scripted tit-for-tat players): the focal agent's scored p(cooperate) from the game's own action
   scoring, mean over the prompts valid at every alpha (the same prompts in every row) with a 95 % bootstrap
   CI over prompts; each alpha's invalid actions are counted.
3. For each alpha, the steered model's pro-social index (the profile's own index, with its bootstrap CI)
   after the prisoner's dilemma system prompt, on ``--index-items`` items per trait drawn from the items
   *not* used to build the steered trait's direction.
4. Wall time of each part (say whether the machine was shared when you quote it).

    HF_HUB_OFFLINE=1 PYTHONPATH=src python benchmarks/bench_vectors.py [--trait cooperativeness]
        [--alphas -2,-1,-0.5,0,0.5,1,2] [--traits all] [--vectors FILE] [--index-items 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def fmt(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:+.3f}"


def bootstrap_ci(values: list[float], seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    data = np.asarray(values)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


async def main() -> None:
    from contagion.backends.registry import resolve
    from contagion.games.engine import system_messages
    from contagion.games.record import GameSpec, PlayerSpec
    from contagion.steering.vector import load_vectors, steering_additions
    from contagion.traits.assess import assess, pre_play_context
    from contagion.traits.inventory import Inventory, load_inventory
    from contagion.whitebox.vectors import act_trials, cooperation_probability, extract_vectors, vectors_backend

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="hf:embedded")
    ap.add_argument("--trait", default="cooperativeness", help="The trait to steer along.")
    ap.add_argument("--traits", default="all", help="Traits to extract and print AUCs for (comma list or all).")
    ap.add_argument("--vectors", type=Path, help="Use this vectors file instead of extracting.")
    ap.add_argument("--alphas", default="-2,-1,-0.5,0,0.5,1,2")
    ap.add_argument("--index-items", type=int, default=8, help="Items per trait for the pro-social index.")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    alphas = [float(a) for a in args.alphas.split(",")]

    t0 = time.perf_counter()
    backend = resolve(args.model)
    vectors_backend(args.model)  # refuses a backend without activations
    backend.inner.loaded()  # type: ignore[attr-defined]  # loads the model
    load_s = time.perf_counter() - t0
    print(f"model {args.model} loaded in {load_s:.1f} s")

    t1 = time.perf_counter()
    if args.vectors is not None:
        path = args.vectors
    else:
        inv = load_inventory("builtin")
        wanted = None if args.traits == "all" else [t.strip() for t in args.traits.split(",")]
        if wanted is not None and args.trait not in wanted:
            wanted.append(args.trait)
        inv = inv.sample(traits=wanted)
        vf = await extract_vectors(backend.inner, inv, seed=args.seed)  # type: ignore[attr-defined]
        path = Path(tempfile.mkdtemp()) / "vectors.json"
        path.write_text(vf.model_dump_json(), encoding="utf-8")
    vf = load_vectors(path)
    extract_s = time.perf_counter() - t1
    print(f"\ndirections ({'read from ' + str(args.vectors) if args.vectors else f'extracted in {extract_s:.1f} s'}; "
          f"{vf.inventory}, held-out fraction {vf.held_out_fraction:.2f}, seed {vf.seed})")
    print(f"{'trait':<28} {'layer':>5} {'held-out AUC':>12} {'d':>6} {'median AUC':>10} {'|dir|':>7}")
    for name, t in vf.traits.items():
        median = float(np.median(t.auc_by_layer))
        print(f"{name:<28} {t.layer:>5} {t.auc:>12.3f} {t.separation:>6.2f} {median:>10.3f} "
              f"{t.norm_by_layer[t.layer]:>7.1f}")
    td = vf.traits[args.trait]

    # pro-social index items: every pro/anti-social trait, never the steered trait's training items
    trained = set(td.high_items) | set(td.low_items)
    full = load_inventory(vf.inventory)
    pool = Inventory(source=full.source, items=[i for i in full.items if i.id not in trained])
    measured = pool.sample(traits=[t for t in pool.traits() if not t.startswith(("liking", "preference"))],
                           per_trait=args.index_items, seed=args.seed)
    pd_system = system_messages(GameSpec(players=(PlayerSpec.parse(args.model),) * 3, rounds=1, chat_turns=0))[0]

    print(f"\ndose-response: steering {args.trait} at layer {td.layer} (direction norm "
          f"{td.norm_by_layer[td.layer]:.1f}); p(cooperate) over {len(act_trials(args.model, 'none'))} fixed act "
          f"prompts; pro-social index on {len(measured)} items ({args.index_items}/trait, none used to build "
          f"the direction)")
    scored_by: dict[float, list[float | None]] = {}
    rows: dict[float, tuple[Any, float]] = {}
    for alpha in alphas:
        t2 = time.perf_counter()
        spec = f"vector:file={path},trait={args.trait},alpha={alpha:g}"
        scored_by[alpha] = [await cooperation_probability(s) for s in act_trials(args.model, spec, seed=args.seed)]
        steered = backend.steered(steering_additions(vf, args.trait, alpha, [td.layer]),
                                  f"{args.trait}@{td.layer}*{alpha:g}") if alpha else backend
        profile = await assess(steered, pre_play_context(pd_system), measured, context_kind="pre",
                               seed=args.seed, bootstrap=1000)
        rows[alpha] = (profile, time.perf_counter() - t2)
    # the same prompts at every alpha: a prompt whose action is invalid at any alpha is left out of every mean
    # (an invalid action is never a default; the count of prompts left out is printed)
    n_prompts = len(next(iter(scored_by.values()))) if scored_by else 0
    common = [i for i in range(n_prompts) if all(scored_by[a][i] is not None for a in alphas)]
    print(f"p(cooperate): mean over the {len(common)} of {n_prompts} prompts valid at every alpha (95 % bootstrap "
          "CI over prompts); invalid: prompts whose action was invalid at this alpha")
    print(f"{'alpha':>6} {'p(coop)':>8} {'95% CI':>15} {'invalid':>7} {'index':>9} {'95% CI':>17} "
          f"{'excluded':>8} {'secs':>6}")
    for alpha in alphas:
        profile, secs = rows[alpha]
        probs = [float(scored_by[alpha][i]) for i in common]  # type: ignore[arg-type]
        invalid = sum(p is None for p in scored_by[alpha])
        lo, hi = bootstrap_ci(probs, args.seed) if probs else (float("nan"), float("nan"))
        index = profile.prosocial_index
        ilo, ihi = profile.prosocial_ci_low, profile.prosocial_ci_high
        mean = float(np.mean(probs)) if probs else float("nan")
        print(f"{alpha:>+6.2f} {mean:>8.3f} [{lo:.3f}, {hi:.3f}] {invalid:>7}   {fmt(index):>7} "
              f"[{fmt(ilo)}, {fmt(ihi)}] {profile.excluded:>8} {secs:>6.1f}", flush=True)
    total = time.perf_counter() - t0
    print(f"\ntotal {total:.1f} s (load {load_s:.1f} s, directions {extract_s:.1f} s, "
          f"{len(alphas)} alphas {total - load_s - extract_s:.1f} s); cores: {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
