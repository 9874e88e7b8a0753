"""Analysis of a run's store: tidy tables, statistics, validation on simulated models, and the HTML report.

* :mod:`contagion.analysis.tables` — tidy pandas tables streamed from the store;
* :mod:`contagion.analysis.stats` — paired drift and the named contrasts, clustered by game;
* :mod:`contagion.analysis.validation` — power and false positives on ``sim:planted`` / ``sim:null``;
* :mod:`contagion.analysis.report` — ``write_report(run_dir)``: one self-contained HTML file.
"""
