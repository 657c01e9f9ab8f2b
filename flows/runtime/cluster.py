"""The Dask task runner the sweep, the backfill and ``--dask`` nightly runs map their tasks onto.

A worker of an existing cluster (``dask scheduler`` and ``dask worker`` started on their own, here or on other
machines) does not share the flow's environment: left alone, the tasks it runs would open its own default
MLflow store (``MlflowException: No Experiment with id=1 exists``). So the runner registers a worker plugin,
:class:`TrackingEnv`, on every worker of the cluster before the first task: it sets the flow's
``MLFLOW_TRACKING_URI`` (and ``PREFECT_API_URL``) in the worker and checks that the worker can reach the store;
a worker that cannot fails the flow at once with a message naming the worker and the store. Prefect's own
settings (the API URL) travel with each task anyway (prefect-dask serialises the flow's settings context).
The plugin sets the worker's environment: flows with different tracking stores should not share one cluster.
"""
from __future__ import annotations

import os
import socket

from distributed.comm.core import CommClosedError
from distributed.diagnostics.plugin import WorkerPlugin
from prefect_dask import DaskTaskRunner

#: what a worker needs from the flow's environment to record its tasks
TRAVELS = ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")


class TrackingEnv(WorkerPlugin):
    """Sets the flow's tracking environment in a Dask worker and checks the MLflow store is reachable from it."""

    name = "nnforecast-tracking-env"

    def __init__(self, env: dict[str, str]):
        self.env = env

    def setup(self, worker) -> None:
        os.environ.update(self.env)
        from flows.runtime import tracking

        problem = tracking.unreachable(self.env["MLFLOW_TRACKING_URI"])
        if problem:
            raise RuntimeError(f"Dask worker {worker.address} on {socket.gethostname()}: {problem}")


class PipelineDaskTaskRunner(DaskTaskRunner):
    """prefect-dask's runner, with :class:`TrackingEnv` registered on the cluster's workers when it starts."""

    def __enter__(self):
        super().__enter__()
        from flows.runtime import tracking

        env = {"MLFLOW_TRACKING_URI": tracking.tracking_uri(),
               **({"PREFECT_API_URL": os.environ["PREFECT_API_URL"]} if os.environ.get("PREFECT_API_URL") else {})}
        for attempt in range(3):
            try:   # a worker that dies while the plugin is being registered: the scheduler drops it, ask again
                self.client.register_plugin(TrackingEnv(env))
                break
            except CommClosedError:
                if attempt == 2:
                    raise
        return self


def dashboard_link(runner) -> str | None:
    """The Dask dashboard of the cluster a running flow's task runner uses (None: no Dask, or no dashboard)."""
    client = getattr(runner, "_client", None) if isinstance(runner, DaskTaskRunner) else None
    try:
        if client is None or "dashboard" not in client.scheduler_info().get("services", {}):
            return None
        return client.dashboard_link
    except (OSError, KeyError, AttributeError, RuntimeError):
        return None


def dask_runner(address: str | None = None, n_workers: int | None = None) -> DaskTaskRunner:
    """The scheduler at ``address`` (or ``$DASK_SCHEDULER_ADDRESS``), else a LocalCluster sized to the machine:
    one single-threaded worker process per core on 127.0.0.1, no dashboard."""
    address = address or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        return PipelineDaskTaskRunner(address=address)
    return PipelineDaskTaskRunner(cluster_kwargs={
        "n_workers": n_workers or os.cpu_count() or 1, "threads_per_worker": 1, "processes": True,
        "host": "127.0.0.1", "dashboard_address": None, "preload": ["flows.runtime.dask_worker"]})
