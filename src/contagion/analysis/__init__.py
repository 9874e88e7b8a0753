"""Analysis of a run's records: tidy tables, estimators, the study's contrasts, figures and the HTML report.

It only reads records (from a store or a list of records) and the tables other commands wrote; nothing
here runs a model. Measuring attention (:mod:`contagion.whitebox`) and the statistical check
(:mod:`contagion.check`) run models, so they sit above; this package keeps the schema of their results.

* :mod:`contagion.analysis.tables` — tidy pandas tables streamed from the store;
* :mod:`contagion.analysis.estimators` — clustered one/two-sample tests, bootstrap, Holm/BH, mixed model;
* :mod:`contagion.analysis.contrasts` — the study's named contrasts (contagion, amplification, …);
* :mod:`contagion.analysis.validation` — the check's figures: power and false positives, saved and found;
* :mod:`contagion.analysis.attention` — the attention table's columns and aggregation;
* :mod:`contagion.analysis.figures` — plotting primitives;
* :mod:`contagion.analysis.report_text`, :mod:`~contagion.analysis.report_figures` and
  :mod:`~contagion.analysis.report` — the report's text, its figures, and ``write_report(run_dir)``.
"""
