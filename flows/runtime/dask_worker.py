"""Preloaded into every Dask worker the sweep's LocalCluster starts (``preload=["flows.runtime.dask_worker"]``).

A worker that imported Prefect, MLflow and the pipeline spends seconds in the interpreter's final
garbage collection when it exits, longer than the nanny's 4 s grace: every sweep ended with
"Worker process still alive after 4.0 seconds, killing". Freezing the objects at teardown lets the
worker exit at once (refcounting still frees them); see also ``flows/cli.py``.
"""
import gc


def dask_teardown(worker) -> None:  # called by distributed when the worker closes
    gc.freeze()
