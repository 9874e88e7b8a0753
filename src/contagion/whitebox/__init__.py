"""Measurements that need a model's internals: they run white-box models, so they are not analysis.

* :mod:`contagion.whitebox.attention` — ``contagion attention``: replays stored histories through a
  transformers model (``hf:…``) and writes the attention table (:mod:`~contagion.whitebox.attention_table`,
  its schema and writer) for the players :mod:`~contagion.whitebox.attention_input` plans; the report reads
  the table (:mod:`contagion.analysis.attention`).
* :mod:`contagion.whitebox.vectors` — ``contagion vectors``: trait directions in a transformers model's
  residual stream (the file format and the ``vector`` intervention that steers with them are
  :mod:`contagion.steering.vector`), and the fixed act prompts of the dose-response benchmark.

This layer sits above :mod:`contagion.experiment` (it replays stored records) and below
:mod:`contagion.analysis`, which reads what it writes; it imports nothing of analysis (the caller hands
:func:`~contagion.whitebox.attention.measure_attention` the function that draws the plot).
"""
