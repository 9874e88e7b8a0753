"""Is the trait instrument valid on a model? Known-groups validity and test-retest agreement across items.

For each persona (benevolent, default, malicious) and each game, the persona's pre-play profile is
measured the way a trial measures it (the engine's system message for that seat, then the items; see
:func:`contagion.experiment.trial.measure_agent`), twice, on two **disjoint** item samples of the same
traits: sample A is the seeded sample a trial would ask (``--seed``), sample B a seeded sample
(``--seed + 1``) of the items A left out.

* **Known groups** — the pre-play pro-social index (mean pro-social trait mean minus mean anti-social
  trait mean; neutral control traits do not count) should order benevolent > default > malicious. Printed
  per game and sample with its 95 % bootstrap CI (over items), and whether the ordering holds; also the
  neutral control traits per persona, which should *not* follow the persona.
* **Test-retest across item seeds** — the Pearson correlation between sample A's and sample B's trait
  means over persona × game × trait (r and n), and the same after removing each (game, trait)'s mean
  over personas ("within trait": do the two samples agree on how the personas differ, not only on which
  traits score high).

It reports what it measures; on a 135M-parameter model the ordering need not hold. Run::

    PYTHONPATH=src python benchmarks/bench_instrument.py [--items 6] [--spec embedded]
        [--inventory builtin] [--games prisoners-dilemma] [--seed 0] [--no-debias]

``--items`` (per trait and sample) and ``--games`` set the run time: two samples × 3 personas × games ×
traits × items × 2 answer orders scoring calls (the defaults, 11 traits and one game: 792 calls; with
``--items 12`` the two samples together are the whole built-in inventory). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np

from contagion.backends.base import Backend, run_sync
from contagion.backends.registry import resolve
from contagion.games.engine import system_messages
from contagion.games.record import GameSpec, PlayerSpec
from contagion.messages import Message
from contagion.traits.assess import pre_play_context
from contagion.traits.inventory import Inventory
from contagion.traits.profile import Profile
from contagion.traits.settings import AssessmentSettings, measure

PERSONAS = ("benevolent", "default", "malicious")


@dataclass
class Cell:
    """One persona in one game, measured on the two samples."""

    game: str
    persona: str
    a: Profile
    b: Profile


def samples(settings: AssessmentSettings, items: int) -> tuple[Inventory, Inventory]:
    """Sample A (what a trial with ``settings.seed`` measures) and a disjoint sample B of the rest."""
    full = settings.inventory_full()
    a = full.sample(settings.traits, items, settings.seed)
    taken = {i.id for i in a.items}
    rest = Inventory(source=full.source, items=[i for i in full.items if i.id not in taken])
    b = rest.sample(settings.traits, items, settings.seed + 1)
    assert not taken & {i.id for i in b.items}
    return a, b


def persona_system_message(game: str, persona: str, spec: str) -> Message:
    """The system message the engine makes for a seat of this persona (seat 0 of a 3-player game)."""
    players = (PlayerSpec(backend=spec, persona=persona), PlayerSpec(backend=spec), PlayerSpec(backend=spec))
    return system_messages(GameSpec(game=game, players=players, rounds=10))[0]


async def measure_cells(backend: Backend, spec: str, games: list[str], settings: AssessmentSettings,
                        a: Inventory, b: Inventory) -> list[Cell]:
    cells = []
    for game in games:
        for persona in PERSONAS:
            system = persona_system_message(game, persona, spec)
            context = pre_play_context(system)
            started = time.perf_counter()
            pa = await measure(backend, context, settings, context_kind="pre", inventory=a)
            pb = await measure(backend, context, settings, context_kind="pre", inventory=b)
            cells.append(Cell(game, persona, pa, pb))
            print(f"  measured {game} / {persona}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return cells


def fmt_index(p: Profile) -> str:
    if p.prosocial_index is None:
        return "n/a"
    return f"{p.prosocial_index:+.3f} [{p.prosocial_ci_low:+.3f}, {p.prosocial_ci_high:+.3f}]"


def pearson(x: list[float], y: list[float]) -> float:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def report(cells: list[Cell], games: list[str], settings: AssessmentSettings, neutral: list[str]) -> None:
    print("\n(a) Known groups: pre-play pro-social index, 95% bootstrap CI over items")
    print(f"{'game':<20}{'persona':<12}{'sample A':>30}{'sample B':>30}")
    holds: list[tuple[str, str, bool]] = []
    for game in games:
        row = {c.persona: c for c in cells if c.game == game}
        for persona in PERSONAS:
            c = row[persona]
            print(f"{game:<20}{persona:<12}{fmt_index(c.a):>30}{fmt_index(c.b):>30}")
        for label in ("A", "B"):
            idx = [getattr(row[p], label.lower()).prosocial_index for p in PERSONAS]
            ok = None not in idx and idx[0] > idx[1] > idx[2]
            holds.append((game, label, bool(ok)))
    for game, label, ok in holds:
        verdict = "holds" if ok else "does NOT hold"
        print(f"  ordering benevolent > default > malicious, {game}, sample {label}: {verdict}")
    print(f"  holds in {sum(ok for *_, ok in holds)} of {len(holds)} (game, sample) cases")
    mean_idx = {p: [i for c in cells if c.persona == p for i in (c.a.prosocial_index, c.b.prosocial_index)
                    if i is not None] for p in PERSONAS}
    print("  mean over games and samples: "
          + ", ".join(f"{p} {np.mean(v):+.3f}" if v else f"{p} n/a" for p, v in mean_idx.items()))
    if neutral:
        print("  neutral control traits (mean of A and B over games; should not follow the persona):")
        for trait in neutral:
            vals = {p: float(np.mean([(c.a.traits[trait].mean + c.b.traits[trait].mean) / 2
                                      for c in cells if c.persona == p])) for p in PERSONAS}
            print(f"    {trait:<30}" + "  ".join(f"{p} {v:.3f}" for p, v in vals.items()))

    print("\n(b) Test-retest across item seeds: trait means of sample A vs disjoint sample B")
    xs, ys, keys = [], [], []
    for c in cells:
        for trait, ta in c.a.traits.items():
            if trait in c.b.traits:
                xs.append(ta.mean)
                ys.append(c.b.traits[trait].mean)
                keys.append((c.game, trait))
    print(f"  persona x game x trait: r = {pearson(xs, ys):.3f}, n = {len(xs)}")
    xa, ya = np.array(xs), np.array(ys)
    cx, cy = xa.copy(), ya.copy()
    for key in set(keys):
        sel = np.array([k == key for k in keys])
        cx[sel] -= xa[sel].mean()
        cy[sel] -= ya[sel].mean()
    print(f"  within trait (each game x trait centred over personas): r = {pearson(list(cx), list(cy)):.3f}, "
          f"n = {len(xs)} ({len(set(keys))} groups of {len(PERSONAS)})")
    ia = [c.a.prosocial_index for c in cells]
    ib = [c.b.prosocial_index for c in cells]
    if None not in ia and None not in ib:
        print(f"  pro-social index, persona x game: r = {pearson(ia, ib):.3f}, n = {len(ia)}")  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=6, help="Items per trait in each of the two samples.")
    parser.add_argument("--spec", default="embedded", help="Backend spec of the measured model.")
    parser.add_argument("--inventory", default="builtin", help="Inventory source (builtin = builtin:v2).")
    parser.add_argument("--traits", default=None, help="Comma-separated traits (default: all in the inventory).")
    parser.add_argument("--games", default="prisoners-dilemma", help="Comma-separated games, e.g. "
                        "prisoners-dilemma,chicken,stag-hunt.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of sample A (sample B uses seed + 1).")
    parser.add_argument("--no-debias", action="store_true", help="Ask in one answer order only.")
    args = parser.parse_args()

    traits = tuple(t.strip() for t in args.traits.split(",")) if args.traits else None
    games = [g.strip() for g in args.games.split(",") if g.strip()]
    settings = AssessmentSettings(inventory=args.inventory, traits=traits, items=args.items,
                                  debias=not args.no_debias, seed=args.seed)
    a, b = samples(settings, args.items)
    sets = settings.trait_sets()
    neutral = [t for t in a.traits() if sets.polarity(t) == "neutral"]
    print(f"model {args.spec}; inventory {a.source}; traits {len(a.traits())} "
          f"({len(neutral)} neutral); items per trait: A {len(a) // len(a.traits())}, "
          f"B {len(b) // max(1, len(b.traits()))} (disjoint; seeds {args.seed} and {args.seed + 1}); "
          f"games {', '.join(games)}; debias {settings.debias}")
    backend = resolve(args.spec)
    started = time.perf_counter()
    try:
        cells = run_sync(measure_cells(backend, args.spec, games, settings, a, b))
    finally:
        run_sync(backend.aclose())
    seconds = time.perf_counter() - started
    calls = sum(c.a.cost.calls + c.b.cost.calls for c in cells)
    methods = sorted({c.a.method for c in cells} | {c.b.method for c in cells})
    print(f"{len(cells) * 2} profiles, {calls} scoring calls, {seconds:.1f} s; method {', '.join(methods)}")
    report(cells, games, settings, neutral)


if __name__ == "__main__":
    main()
