"""The pure forecasting core: ingestion and validation, windowing, training, evaluation, backtests,
model files, figures and the report text.

Functions of data and small specs (:mod:`flows.core.config`) to data and typed records. Nothing
here imports Prefect or MLflow (``tests/pipeline/test_layers.py`` checks it), so every stage runs
and is tested with NumPy alone; :mod:`flows.runtime` adapts the results to MLflow and Prefect, and
the flows (:mod:`flows.nightly`, :mod:`flows.sweep`, :mod:`flows.backfill`) only wire the stages as tasks.
"""
