"""Measurements that need a model's internals: they run white-box models, so they are not analysis.

* :mod:`contagion.whitebox.attention` — ``contagion attention``: replays stored histories through a
  transformers model (``hf:…``) and writes the attention table whose schema
  :mod:`contagion.analysis.attention` owns (the report reads it from there).

This layer sits above :mod:`contagion.analysis` (it writes tables in analysis' schema and draws them
with analysis' figures) and below the CLI.
"""
