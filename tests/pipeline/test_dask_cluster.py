"""A Dask cluster started on its own (``dask scheduler``, ``dask worker --nworkers 2``), whose workers do not share
the flow's environment: the sweep's tasks still record into the flow's MLflow store, give the same results as
``--sequential``, the backfill's nights run there as they run in threads, and a worker that cannot reach the store
fails the flow with a message naming it."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SWEEP = ["--grid", "model=rnn,mlp", "--set", "n_values=900", "--set", "window=20", "--set", "test_size=60",
         "--set", "hidden_size=4", "--set", "epochs=3", "--folds", "2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, seeded_cache):
    """A scheduler and two single-threaded worker processes on loopback, in a directory and an environment of
    their own (no MLFLOW_TRACKING_URI, no PREFECT_API_URL): the address of the scheduler."""
    from distributed import Client

    home = tmp_path_factory.mktemp("dask")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = [open(home / name, "w") for name in ("scheduler.log", "workers.log")]
    scheduler = subprocess.Popen([BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--dashboard-address", "127.0.0.1:0"], cwd=home, env=env, stdout=logs[0],
                                 stderr=subprocess.STDOUT)
    workers = subprocess.Popen([BIN / "dask", "worker", address, "--nworkers", "2", "--nthreads", "1",
                                "--no-dashboard", "--local-directory", str(home)], cwd=home, env=env, stdout=logs[1],
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:   # the scheduler listens once it has started
            try:
                with Client(address, timeout=5) as client:
                    client.wait_for_workers(2, timeout=60)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        stop(workers)
        stop(scheduler)
        for log in logs:
            log.close()


def sweep(*where: str, experiment: str, threads: int | None = None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, "-m", "flows.sweep", *SWEEP, *where, "--experiment", experiment],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    c = MlflowClient()
    exp = c.get_experiment_by_name(experiment).experiment_id
    runs = c.search_runs([exp], "tags.sweep_config != ''")
    assert all(r.info.status == "FINISHED" for r in runs)
    (parent,) = c.search_runs([exp], "tags.sweep = 'parent'")
    return {r.data.tags["sweep_config"]: r.data.metrics["mean_test_mae"] for r in runs}, parent.data.tags


def test_a_sweep_on_a_cluster_of_its_own_records_into_the_flows_store_with_the_sequential_results(cluster):
    on_cluster, tags = sweep("--address", cluster, experiment="sweep-cluster")   # workers without the flow's environment
    # the kernels' results are bitwise reproducible for a given thread count (the gradient sums' order follows
    # it); Dask's workers run one OpenMP thread, so the sequential run here does too
    alone, alone_tags = sweep("--sequential", experiment="sweep-sequential", threads=1)
    assert set(on_cluster) == {"model=rnn", "model=mlp"} and on_cluster == pytest.approx(alone, rel=1e-9)
    # the parent run links to the cluster's dashboard (the sweep report too); a sweep without Dask has none
    from distributed import Client

    with Client(cluster, timeout=10) as client:
        port = client.scheduler_info()["services"]["dashboard"]
    assert tags["dask_dashboard"] == f"http://127.0.0.1:{port}/status" and "dask_dashboard" not in alone_tags


def test_a_cold_backfill_on_the_cluster_replays_the_nights_as_in_threads(cluster, sp500, tmp_path):
    """``python -m flows.backfill --dask ADDRESS``: each night a nightly run on a worker, recording into the flow's
    MLflow store and ledger (a SQLite file the workers were not told about), with the forecasts of the same nights
    replayed in threads."""
    import pandas as pd

    from flows.runtime import ledger

    tail = pd.DataFrame({"ds": pd.to_datetime(sp500.dates[-300:]), "y": sp500.values[-300:]})
    tail.to_csv(tmp_path / "sp500.csv", index=False, date_format="%Y-%m-%d")
    nights = tail["ds"].iloc[-6:-2]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}

    def backfill(name: str, *where: str) -> pd.DataFrame:
        out = subprocess.run([sys.executable, "-m", "flows.backfill", "--start", str(nights.iloc[0].date()), "--end",
                              str(nights.iloc[-1].date()), "--source", str(tmp_path / "sp500.csv"), "--window", "20",
                              "--horizon", "2", "--test-size", "30", "--hidden-size", "6", "--epochs", "4", "--seed",
                              "1", "--experiment", name, "--model-name", name, *where],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "done: 4 night(s) replayed" in out.stdout
        engine = ledger.open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        try:
            rows = ledger.read(engine, name)
        finally:
            engine.dispose()
        return rows[rows["role"] == "candidate"].sort_values(["origin", "step"]).reset_index(drop=True)

    ledger_url = ["--ledger-url", f"sqlite:///{tmp_path / 'ledger.db'}"]
    on_cluster = backfill("bf-cluster", "--dask", cluster, *ledger_url)
    in_threads = backfill("bf-threads", *ledger_url)
    assert sorted(pd.to_datetime(on_cluster["origin"].unique())) == list(nights)
    assert len(on_cluster) == 4 * 2 and on_cluster["yhat"].tolist() == pytest.approx(in_threads["yhat"].tolist(),
                                                                                       rel=1e-9)
    c = MlflowClient()
    runs = c.search_runs([c.get_experiment_by_name("bf-cluster").experiment_id], "tags.model_version != ''")
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.fault(fault="a Dask worker that cannot reach the flow's MLflow store (a SQLite file on another machine)",
                   did="the flow fails before any task: 'Dask worker tcp://… on <host>: the MLflow store … is not a "
                       "file on this machine; … need a tracking server'",
                   kept="the store untouched: no run opened in a worker's own default store")
def test_a_worker_that_cannot_reach_the_store_is_named(cluster, tmp_path):
    from distributed import Client

    from flows.runtime.cluster import TrackingEnv

    missing = f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
    with Client(cluster, timeout=10) as client:
        with pytest.raises(RuntimeError, match=r"Dask worker tcp://127\.0\.0\.1:\d+ on .*: the MLflow store "
                                               r"sqlite:///.*elsewhere/mlflow.db is not a file on this machine"):
            client.register_plugin(TrackingEnv({"MLFLOW_TRACKING_URI": missing}))


def test_services_start_a_loopback_dask_cluster_and_stop_it(tmp_path):
    """``ops/services.py start --dask-workers 2``: a scheduler and two workers, every socket on 127.0.0.1, the address
    in the exports (the Prefect worker's environment too), and ``stop`` ends them."""
    state = tmp_path / "services"
    ports = [str(free_port()) for _ in range(4)]

    def services(*args):
        return subprocess.run([sys.executable, str(ROOT / "ops" / "services.py"), *args, "--state-dir", str(state)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)

    try:
        started = services("start", "--prefect-port", ports[0], "--mlflow-port", ports[1], "--dask-workers", "2",
                           "--dask-port", ports[2], "--dask-dashboard-port", ports[3], "--no-worker")
        assert started.returncode == 0, started.stdout + started.stderr
        status = services("status").stdout
        scheduler = next(line for line in status.splitlines() if line.startswith("dask-scheduler"))
        workers = [line for line in status.splitlines() if line.startswith("dask-worker-")]
        assert "running" in scheduler and f"tcp://127.0.0.1:{ports[2]}" in scheduler and \
            f"dashboard http://127.0.0.1:{ports[3]}/status" in scheduler and "connected=2/2" in scheduler
        assert len(workers) == 2 and all("running" in w and "connected=True" in w for w in workers), workers
        listening = [a for line in status.splitlines() if "listening " in line
                     for a in line.split("listening ", 1)[1].split(", ")]
        assert listening and all(a.startswith("127.0.0.1:") for a in listening), listening
        assert f"export DASK_SCHEDULER_ADDRESS=tcp://127.0.0.1:{ports[2]}" in services("env").stdout
    finally:
        stopped = services("stop").stdout
    assert "stopped dask-worker-1" in stopped and "stopped dask-worker-2" in stopped
    assert "stopped dask-scheduler" in stopped
    assert services("status").returncode == 3
