"""A plain-text summary of a run, printed when no HTML report is wanted."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from contagion.experiment.store import Store


def print_summary(run_dir: Path, console: Console) -> None:
    """Per condition: games, cooperation rate, invalid rate, mean pro-social drift of focal agents."""
    acc: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0])
    with Store.open_existing(run_dir) as store:
        for rec in store.iter_records():
            key = (str(rec.labels.get("game")), str(rec.labels.get("composition")), str(rec.labels.get("intervention")))
            a = acc[key]
            a[0] += 1
            acts = [x for r in rec.rounds for x in r.actions]
            a[1] += sum(x == "cooperate" for x in acts) / max(1, len(acts))
            a[2] += rec.invalid_rate
            for p in rec.players:
                if p.pre_profile and p.post_profile:
                    pre, post = p.pre_profile.get("prosocial_index"), p.post_profile.get("prosocial_index")
                    if pre is not None and post is not None:
                        a[3] += post - pre
                        a[4] += 1
    table = Table(title=f"Summary of {run_dir}", title_justify="left")
    for col in ("game", "composition", "intervention", "games", "cooperation", "invalid", "pro-social drift"):
        table.add_column(col)
    for (g, c, i), (n, coop, inv, drift, nd) in sorted(acc.items()):
        table.add_row(g, c, i, str(int(n)), f"{coop / n:.0%}", f"{inv / n:.0%}",
                      f"{drift / nd:+.3f}" if nd else "-")
    console.print(table)
