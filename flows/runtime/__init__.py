"""Runtime adapters: what connects the pure core to the services it runs on.

:mod:`~flows.runtime.env` (environment defaults, imported before Prefect or MLflow),
:mod:`~flows.runtime.server` (the CLI's temporary Prefect server), :mod:`~flows.runtime.tracking`
(MLflow runs, checkpoints, the registry), :mod:`~flows.runtime.ledger` (the forecast ledger in SQL),
:mod:`~flows.runtime.alerts` (notification blocks and events), :mod:`~flows.runtime.progress` (progress
artifacts), :mod:`~flows.runtime.pyfunc_model` (the served model),
:mod:`~flows.runtime.cluster` and :mod:`~flows.runtime.dask_worker` (Dask). Importing this package
imports none of them: the CLI starts the server before the heavy imports.
"""
