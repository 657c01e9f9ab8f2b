"""The platform under load and under faults, for real: ``ops/services.py start --db postgres --dask-workers 2``
(PostgreSQL, the Prefect server, worker and deployments, the MLflow server, a 2-worker Dask cluster, all on
loopback), then

* ``ops/loadtest.py``: 8 nightly runs triggered at once through the deployment, plus a sweep on the cluster; the
  same against the SQLite services, to compare;
* one fault at a time, each with its expected outcome: the MLflow server killed mid-run; the Prefect server
  restarted mid-run; the worker's machine lost mid-training (the worker and its flow run SIGKILLed); a Dask worker
  killed during a sweep.

Run alone with ``pytest -m platform`` (about 9 minutes on 2 cores); skip with ``-m "not platform"``. The load
tests' results go to ``$E2E_ARTIFACTS_DIR/../load`` (default ``test-artifacts/load``) as JSON, with the table row
the README shows.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("E2E_ARTIFACTS_DIR", ROOT / "test-artifacts" / "e2e")).parent / "load"
sys.path.insert(0, str(ROOT / "ops"))
import loadtest  # noqa: E402  (ops/ is scripts, not a package)

pytestmark = pytest.mark.platform

#: a short night (about 15 s through the deployment)
SHORT = dict(source="sp500", n_values=900, window=20, test_size=60, hidden_size=6, epochs=5, stat_baselines="none",
             figures=False, experiment="faults")
#: a night whose training lasts long enough to be interrupted (about 40 ms an epoch), checkpointed every 20 epochs
LONG = dict(SHORT, n_values=0, window=60, hidden_size=32, epochs=400, checkpoint_every=20, log_every=10, seed=5,
            patience=0)
#: what the nightly deployment sets in its runs' environment (job variables replace it as a whole)
DEPLOYMENT_ENV = {"PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING", "DO_NOT_TRACK": "true",
                  "MLFLOW_DISABLE_TELEMETRY": "true"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Platform:
    """Services started by ``ops/services.py`` in a state directory of their own, and what the tests do with them."""

    def __init__(self, db: str, dask_workers: int = 2):
        # PostgreSQL runs as the `postgres` user: a state directory it may enter
        self.top = Path(tempfile.mkdtemp(prefix=f"nnforecast-platform-{db}-"))
        os.chmod(self.top, 0o755)
        self.dir = self.top / "services"
        args = ["start", "--db", db, "--prefect-port", str(_free_port()), "--mlflow-port", str(_free_port()),
                "--heartbeat", "30"]
        if db == "postgres":
            args += ["--postgres-port", str(_free_port())]
        if dask_workers:
            args += ["--dask-workers", str(dask_workers), "--dask-port", str(_free_port()),
                     "--dask-dashboard-port", str(_free_port())]
        started = self.ops(*args)
        if started.returncode != 0:
            self.stop()
            pytest.fail(f"ops/services.py {' '.join(args)} failed:\n{started.stdout}\n{started.stderr}")
        self.data = json.loads((self.dir / "services.json").read_text())
        self.api, self.mlflow = self.data["prefect_api_url"], self.data["mlflow_tracking_uri"]

    def ops(self, *args, timeout: float = 600) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
        env["PREFECT_WORKER_QUERY_SECONDS"] = "2"   # the worker polls for runs every 2 s (default 10)
        return subprocess.run([sys.executable, str(ROOT / "ops" / "services.py"), *args, "--state-dir",
                               str(self.dir)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        self.ops("stop", timeout=300)
        shutil.rmtree(self.top, ignore_errors=True)

    def restart(self, name: str) -> float:
        t0 = time.monotonic()
        out = self.ops("restart", name)
        assert out.returncode == 0, out.stdout + out.stderr + self.logs()
        return time.monotonic() - t0

    def kill(self, name: str) -> None:
        """SIGKILL a service's process group (as when its machine or container dies)."""
        rec = json.loads((self.dir / "services.json").read_text())["services"][name]
        os.killpg(rec["pid"], signal.SIGKILL)

    def prefect(self):
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        class _Client:   # a sync client of this platform's API, opened per use
            def __enter__(inner):
                inner.settings = temporary_settings({PREFECT_API_URL: self.api})
                inner.settings.__enter__()
                inner.client = get_client(sync_client=True)
                return inner.client.__enter__()

            def __exit__(inner, *exc):
                inner.client.__exit__(*exc)
                inner.settings.__exit__(*exc)

        return _Client()

    def trigger(self, overrides: dict, env: dict | None = None, deployment: str = "nightly/nightly",
                scheduled_in: float | None = None):
        from prefect.client.schemas.objects import StateType
        from prefect.states import Scheduled

        with self.prefect() as client:
            dep = client.read_deployment_by_name(deployment)
            params = {"overrides": overrides} if deployment == "nightly/nightly" else overrides
            state = Scheduled(scheduled_time=datetime.now(timezone.utc) + timedelta(seconds=scheduled_in)) \
                if scheduled_in is not None else None
            fr = client.create_flow_run_from_deployment(
                dep.id, parameters=params, state=state,
                job_variables={"env": {**DEPLOYMENT_ENV, **env}} if env else None)
            assert fr.state.type == StateType.SCHEDULED
            return fr

    def wait(self, flow_run, timeout: float = 600):
        with self.prefect() as client:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fr = client.read_flow_run(flow_run.id)
                except Exception:   # noqa: BLE001 - the server may be restarting: ask again
                    fr = None
                if fr is not None and fr.state is not None and fr.state.is_final():
                    return fr
                assert time.monotonic() < deadline, f"flow run {flow_run.name} still " \
                                                    f"{fr.state if fr else '?'} after {timeout:.0f} s{self.logs()}"
                time.sleep(1)

    def mlflow_client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.mlflow, registry_uri=self.mlflow)

    def mlflow_run(self, flow_run, experiment: str = "faults", timeout: float = 300):
        """The MLflow run of a flow run (waits until it exists)."""
        c = self.mlflow_client()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            exp = c.get_experiment_by_name(experiment)
            runs = c.search_runs([exp.experiment_id], f"tags.prefect_flow_run_id = '{flow_run.id}'") if exp else []
            if runs:
                return runs[0]
            time.sleep(0.5)
        pytest.fail(f"no MLflow run for flow run {flow_run.name} within {timeout:.0f} s{self.logs()}")

    def training(self, flow_run, epochs: int, experiment: str = "faults"):
        """The MLflow run of a flow run, once it has logged ``epochs`` epochs of training (mid-training)."""
        run, c = self.mlflow_run(flow_run, experiment), self.mlflow_client()
        self.wait_for(f"{epochs} epochs logged",
                      lambda: len(c.get_metric_history(run.info.run_id, "train_loss")) >= epochs)
        return run

    def wait_for(self, what: str, check, timeout: float = 300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.3)
        pytest.fail(f"{what}: not within {timeout:.0f} s{self.logs()}")

    def logs(self) -> str:
        return "".join(f"\n--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-25:])
                       for p in sorted((self.dir / "logs").glob("*.log")))


@pytest.fixture(scope="module")
def pg(seeded_cache):
    platform = Platform("postgres")
    yield platform
    platform.stop()


def _save(result: dict, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{name}.json").write_text(json.dumps({**result, "row": loadtest.row(result)}, indent=2,
                                                       default=str))
    print(f"\n{loadtest.HEADER}\n{loadtest.row(result)}")
    for problem in result["problems"]:
        print(f"  {problem}")


# ----------------------------------------------------------------------------------------------
# Load
# ----------------------------------------------------------------------------------------------
def test_eight_nightly_runs_and_a_sweep_at_once_on_sqlite(seeded_cache):
    """SQLite behind the Prefect server, the MLflow server and the ledger (the default services), first, while
    nothing else runs: what happens is reported for the README's comparison, not required to hold; every run must
    still end."""
    platform = Platform("sqlite")
    try:
        result = loadtest.run(platform.dir, runs=8, sweep=True, epochs=5, timeout=900, experiment="load")
    finally:
        platform.stop()
    _save(result, "sqlite")
    assert len(result["flow_runs"]) == 9
    unfinished = [r for r in result["flow_runs"] if r["state"].startswith("NOT FINISHED")]
    assert not unfinished, unfinished


def test_eight_nightly_runs_and_a_sweep_at_once_on_postgresql(pg):
    result = loadtest.run(pg.dir, runs=8, sweep=True, epochs=5, timeout=900, experiment="load")
    _save(result, "postgres")
    assert len(result["flow_runs"]) == 9
    assert result["problems"] == [], "\n".join(result["problems"])
    assert set(result["db_rejections"]) <= set(loadtest.HANDLED)


# ----------------------------------------------------------------------------------------------
# Faults
# ----------------------------------------------------------------------------------------------
@pytest.mark.fault(fault="the MLflow server SIGKILLed mid-training (a deployment run on the PostgreSQL platform)",
                   did="the flow run failed, its message naming the tracking server it could not reach; after "
                       "`ops/services.py restart mlflow-server` the next run completed and became champion",
                   kept="the registry: no model version of the failed run; the stores intact")
def test_the_mlflow_server_killed_mid_run(pg):
    c = pg.mlflow_client()
    name = "fault-mlflow"
    # an outage fails the run after 2 retries (MLflow's default, 7 with backoff, waits minutes)
    fr = pg.trigger(dict(LONG, model_name=name), env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                                                      "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"})
    run = pg.training(fr, epochs=20)
    pg.kill("mlflow-server")
    t0 = time.monotonic()
    failed = pg.wait(fr, timeout=300)
    seconds = time.monotonic() - t0
    assert failed.state.type.value == "FAILED", failed.state
    port = pg.mlflow.rsplit(":", 1)[1]
    assert f"127.0.0.1:{port}" in failed.state.message or f"127.0.0.1', port={port}" in failed.state.message, \
        failed.state.message
    print(f"the flow run failed {seconds:.0f} s after the kill: {failed.state.message[:300]}")

    pg.restart("mlflow-server")
    assert c.search_model_versions(f"name = '{name}'") == []
    assert c.get_run(run.info.run_id).info.status in ("RUNNING", "FAILED")   # never FINISHED
    following = pg.wait(pg.trigger(dict(SHORT, model_name=name)))
    assert following.state.type.value == "COMPLETED", following.state
    (version,) = c.search_model_versions(f"name = '{name}'")
    assert c.get_model_version_by_alias(name, "champion").version == version.version
    assert version.run_id == pg.mlflow_run(following).info.run_id


@pytest.mark.fault(fault="the Prefect server restarted mid-run (`ops/services.py restart prefect-server`)",
                   did="the flow run's client retried through the outage and the run completed; the worker "
                       "reconnected, and a run scheduled after the restart ran on time",
                   kept="the run's MLflow record and model version; Prefect's history in PostgreSQL")
def test_the_prefect_server_restarted_mid_run(pg):
    from prefect.settings import PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS, PREFECT_WORKER_PREFETCH_SECONDS

    c = pg.mlflow_client()
    fr = pg.trigger(dict(LONG, model_name="fault-prefect", epochs=300, checkpoint_every=0))
    run = pg.training(fr, epochs=20)
    down = pg.restart("prefect-server")
    final = pg.wait(fr, timeout=600)
    print(f"Prefect server down and back in {down:.0f} s; the run ended {final.state.type.value}")
    assert final.state.type.value in ("COMPLETED", "CRASHED"), final.state
    if final.state.type.value == "COMPLETED":
        assert c.get_run(run.info.run_id).info.status == "FINISHED"
        assert len(c.search_model_versions(f"run_id = '{run.info.run_id}'")) == 1
    scheduled = pg.trigger(dict(SHORT, model_name="fault-prefect-next"), scheduled_in=5)
    following = pg.wait(scheduled, timeout=300)
    assert following.state.type.value == "COMPLETED", following.state
    # on time: a worker claims scheduled runs up to its prefetch window ahead and starts them at once (Prefect
    # 3.9: the run began 0.4 s before its scheduled time once), and the server marks a run Late after 15 s
    assert following.start_time is not None
    early = (following.expected_start_time - following.start_time).total_seconds()
    assert -PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS.value().total_seconds() < early \
        <= PREFECT_WORKER_PREFETCH_SECONDS.value(), (following.start_time, following.expected_start_time)


def _descendants(pid: int) -> list[int]:
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.mark.fault(fault="the worker's machine lost mid-training: the Prefect worker and its flow run SIGKILLed "
                         "after a checkpoint",
                   did="the run was marked Crashed by the services' zombie automation (no heartbeat for 90 s); "
                       "after `restart worker`, a run with `resume: latest` continued from the last checkpoint",
                   kept="the registry (nothing registered by the killed run); the resumed run ends with the "
                        "uninterrupted run's weights (same SHA-256)")
def test_the_workers_machine_lost_mid_training(pg):
    c = pg.mlflow_client()
    night = dict(LONG, model_name="fault-worker")
    reference = pg.wait(pg.trigger(dict(night, model_name="fault-worker-reference")))
    assert reference.state.type.value == "COMPLETED", reference.state
    ref_hash = pg.mlflow_run(reference).data.tags["weights_sha256"]

    fr = pg.trigger(night)
    run = pg.mlflow_run(fr)
    pg.wait_for("a checkpoint", lambda: c.list_artifacts(run.info.run_id, "checkpoints"))
    worker = json.loads((pg.dir / "services.json").read_text())["services"]["worker"]["pid"]
    victims = [worker, *_descendants(worker)]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    killed_at = time.monotonic()
    crashed = pg.wait(fr, timeout=300)
    print(f"marked {crashed.state.type.value} {time.monotonic() - killed_at:.0f} s after the kill: "
          f"{crashed.state.message}")
    assert crashed.state.type.value == "CRASHED", crashed.state
    assert "heartbeat" in crashed.state.message
    assert c.search_model_versions(f"name = '{night['model_name']}'") == []

    pg.restart("worker")
    resumed = pg.wait(pg.trigger(dict(night, resume="latest")))
    assert resumed.state.type.value == "COMPLETED", resumed.state
    r = pg.mlflow_run(resumed)
    assert r.data.tags["resumed_from"] == run.info.run_id and int(r.data.tags["resumed_after_epoch"]) >= 20
    assert r.data.tags["weights_sha256"] == ref_hash
    assert c.get_run(run.info.run_id).info.status == "KILLED"


@pytest.mark.fault(fault="a Dask worker's machine lost during a sweep: the worker running a configuration SIGKILLed "
                         "with its nanny",
                   did="the scheduler gave its task to the other worker; the sweep completed",
                   kept="every configuration's backtest in the sweep's MLflow parent run")
def test_a_dask_worker_killed_during_a_sweep(pg):
    from distributed import Client

    grid = {"model": ["rnn", "gru"], "hidden_size": [16, 24]}
    params = {"grid": grid, "folds": 2, "experiment": "fault-sweep",
              "overrides": {"source": "sp500", "n_values": 3000, "window": 40, "test_size": 200, "epochs": 40,
                            "stat_baselines": "none"}}
    fr = pg.trigger(params, deployment="sweep/weekly-sweep")
    with Client(pg.data["dask_address"], timeout=30) as dask:
        busy = pg.wait_for("a Dask worker running a backtest",
                           lambda: [w for w, keys in dask.processing().items() if keys], timeout=300)[0]
        pid = dask.run(os.getpid, workers=[busy])[busy]
        services = json.loads((pg.dir / "services.json").read_text())["services"]
        (name,) = [n for n, rec in services.items() if n.startswith("dask-worker-") and rec["pid"] == os.getpgid(pid)]
        pg.kill(name)   # the worker and its nanny: as when its machine dies
        print(f"killed {name}: Dask worker {busy} (pid {pid}) and its nanny")
        done = pg.wait(fr, timeout=600)
        assert done.state.type.value == "COMPLETED", done.state
        assert busy not in dask.scheduler_info()["workers"]
    c = pg.mlflow_client()
    exp = c.get_experiment_by_name("fault-sweep")
    (parent,) = c.search_runs([exp.experiment_id], f"tags.prefect_flow_run_id = '{fr.id}'")
    children = c.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    finished = [r for r in children if r.info.status == "FINISHED" and "mean_test_mae" in r.data.metrics]
    assert len(finished) == 4, [(r.info.run_name, r.info.status) for r in children]
    assert parent.info.status == "FINISHED"
    # the sweep report links to the services' Dask dashboard
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

    with pg.prefect() as client:
        (report,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["sweep-report"])),
                                          flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[fr.id])))
    assert f"[The Dask dashboard]({pg.data['dask_dashboard']}/status)" in report.data
    pg.restart(name)
