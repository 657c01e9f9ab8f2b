"""The Dask task runner the sweep maps its configurations onto."""
from __future__ import annotations

import os

from prefect_dask import DaskTaskRunner


def dask_runner(address: str | None = None, n_workers: int | None = None) -> DaskTaskRunner:
    """The scheduler at ``address`` (or ``$DASK_SCHEDULER_ADDRESS``), else a LocalCluster sized to the machine:
    one single-threaded worker process per core on 127.0.0.1, no dashboard."""
    address = address or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs={
        "n_workers": n_workers or os.cpu_count() or 1, "threads_per_worker": 1, "processes": True,
        "host": "127.0.0.1", "dashboard_address": None, "preload": ["flows.runtime.dask_worker"]})
