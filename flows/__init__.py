"""The forecasting pipeline, in three layers (imports point down only):

* :mod:`flows.nightly`, :mod:`flows.sweep` — the Prefect flows and their command lines; they only
  wire the stages of :mod:`flows.tasks` (one task per stage, each calling one pure function) and
  :mod:`flows.cli` (flags generated from the run specs);
* :mod:`flows.runtime` — adapters to the services: MLflow tracking and registry, the pyfunc model,
  the temporary Prefect server, environment defaults, Dask;
* :mod:`flows.core` — the pure stages (ingestion, windowing, training, evaluation, backtests, model
  files, report text and figures) and the run configuration; NumPy, SciPy, matplotlib and nncore
  only, no Prefect or MLflow.
"""
