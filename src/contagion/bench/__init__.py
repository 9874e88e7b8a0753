"""The contagion benchmark: a frozen, versioned protocol, the contagion card, the leaderboard, an Inspect task.

* :mod:`contagion.bench.protocol` — the protocol file (``data/bench-v2.yaml``; v1 frozen) resolved for a size and model;
* :mod:`contagion.bench.run` — ``run_bench``: plays the protocol into a run directory (resumable), then the card;
* :mod:`contagion.bench.card` — the card's headline numbers and significance, read off the full report's rows;
* :mod:`contagion.bench.power` — achieved power and games needed;
* :mod:`contagion.bench.render` — ``card.json``/``card.html``, ``leaderboard.html``/``leaderboard.csv``;
* :mod:`contagion.bench.inspect_task` — the benchmark as an Inspect AI task (extra ``inspect``).
"""
