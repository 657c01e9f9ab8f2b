"""End to end, for real: Prefect server + worker + MLflow server started by ops/services.py, the
`nightly` deployment triggered through the API and executed by the worker, both UIs rendered in
headless Chromium.

Run alone with ``pytest -m e2e``; skip with ``-m "not e2e"``. Screenshots go to
``$E2E_ARTIFACTS_DIR`` (default ``test-artifacts/e2e`` in the project).
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from html import unescape
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("E2E_ARTIFACTS_DIR", ROOT / "test-artifacts" / "e2e"))
STAGES = {"open_forecast_ledger", "load_series", "score_forecasts", "check_data_advanced", "make_windows",
          "train_model", "evaluate_model", "log_results", "champion_forecast", "publish_model", "record_forecasts",
          "write_report"}
PARAMS = dict(source="sp500", n_values=900, window=20, test_size=60, hidden_size=6, epochs=3, seed=1,
              experiment="e2e", model_name="e2e-forecaster")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000", "--virtual-time-budget=30000"]

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _services(*args, state_dir: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env["PREFECT_WORKER_QUERY_SECONDS"] = "2"  # the worker polls for runs every 2 s (default 10)
    return subprocess.run([sys.executable, str(ROOT / "ops" / "services.py"), *args, "--state-dir", str(state_dir)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _chromium(url: str, screenshot: Path) -> str:
    """The rendered DOM of the page as visible text, and a screenshot of it."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("Debian's `chromium` is needed for the e2e test (apt-get install -y chromium; .ci/run installs "
                    "it), or deselect it with -m 'not e2e'")
    texts = []
    for mode in (["--dump-dom"], [f"--screenshot={screenshot}"]):
        with tempfile.TemporaryDirectory() as profile:
            out = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *mode, url],
                                 capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, f"chromium failed on {url}: {out.stderr[-2000:]}"
        texts.append(out.stdout)
    assert screenshot.exists() and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", texts[0])))


def test_nightly_deployment_on_real_servers_and_both_uis(seeded_cache, tmp_path):
    t0 = time.monotonic()
    state_dir = tmp_path / "services"
    prefect_port, mlflow_port = _free_port(), _free_port()
    started = _services("start", "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port),
                        state_dir=state_dir)
    try:
        assert started.returncode == 0, started.stdout + started.stderr + _logs(state_dir)
        api_url, mlflow_uri = f"http://127.0.0.1:{prefect_port}/api", f"http://127.0.0.1:{mlflow_port}"

        status = _services("status", state_dir=state_dir, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        listening = re.findall(r"listening (\S+(?:, \S+)*)", status.stdout)
        addresses = [a for line in listening for a in line.split(", ")]
        assert f"127.0.0.1:{prefect_port}" in addresses and f"127.0.0.1:{mlflow_port}" in addresses
        assert all(a.startswith("127.0.0.1:") for a in addresses), f"non-loopback listener: {addresses}"

        flow_run, task_runs, report = _run_deployment(api_url)
        assert flow_run.state.type.value == "COMPLETED", f"{flow_run.state}\n{_logs(state_dir)}"
        names = {t.name.rsplit("-", 1)[0]: t.state.type.value for t in task_runs}
        assert names == {s: "COMPLETED" for s in STAGES}

        # the report links to the MLflow UI page of the run
        link = re.search(r"\[Open the MLflow run\]\((\S+)\)", report)
        assert link and link.group(1).startswith(f"{mlflow_uri}/#/experiments/"), report[:2000]
        mlflow_url = link.group(1)

        run, test_mae = _check_mlflow(mlflow_uri, str(flow_run.id))
        assert mlflow_url.endswith(f"/runs/{run.info.run_id}")

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        prefect_text = _chromium(f"http://127.0.0.1:{prefect_port}/runs/flow-run/{flow_run.id}",
                                 ARTIFACTS / "prefect-flow-run.png")
        assert flow_run.name in prefect_text and "Completed" in prefect_text, prefect_text[:3000]
        mlflow_text = _chromium(mlflow_url, ARTIFACTS / "mlflow-run.png")
        assert run.info.run_name in mlflow_text, mlflow_text[:3000]
        shown = re.search(r"\btest_mae (\d+\.\d+)", mlflow_text)
        assert shown and float(shown.group(1)) == pytest.approx(test_mae, rel=1e-9), mlflow_text[:3000]
    finally:
        stopped = _services("stop", state_dir=state_dir, timeout=120)
        print(f"e2e wall time {time.monotonic() - t0:.0f} s; screenshots in {ARTIFACTS}")
    assert stopped.returncode == 0, stopped.stderr
    assert _services("status", state_dir=state_dir, timeout=60).returncode == 3  # nothing left running


def _run_deployment(api_url: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name("nightly/nightly")
            assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in dep.schedules] == \
                [("0 2 * * *", "America/New_York", True)]
            assert dep.global_concurrency_limit is not None and dep.global_concurrency_limit.limit == 1
            flow_run = run_deployment("nightly/nightly", parameters={"overrides": PARAMS}, timeout=0, as_subflow=False)
            deadline = time.monotonic() + 600
            while True:
                flow_run = client.read_flow_run(flow_run.id)
                if flow_run.state is not None and flow_run.state.is_final():
                    break
                assert time.monotonic() < deadline, f"flow run still {flow_run.state} after 600 s"
                time.sleep(2)
            runs_filter = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
            # task-run states reach the API through events, processed asynchronously: wait for them
            deadline = time.monotonic() + 60
            while True:
                task_runs = client.read_task_runs(flow_run_filter=runs_filter)
                if (len(task_runs) == len(STAGES) and all(t.state and t.state.is_final() for t in task_runs)) \
                        or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["nightly-report"])),
                                              flow_run_filter=runs_filter)
    assert len(artifacts) == 1, artifacts
    return flow_run, task_runs, artifacts[0].data


def _check_mlflow(mlflow_uri: str, flow_run_id: str):
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    exp = c.get_experiment_by_name(PARAMS["experiment"])
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.prefect_flow_run_id = '{flow_run_id}'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    for key in ("test_mae", "test_rmse", "test_mase", "carried_test_mae", "naive_test_mae", "drift_test_mae"):
        assert key in m and m[key] > 0
    assert len(c.get_metric_history(run.info.run_id, "train_loss")) == PARAMS["epochs"]
    figures = {Path(a.path).name for a in c.list_artifacts(run.info.run_id, "figures")}
    assert {"series.png", "test_forecast.png", "loss_curves.png", "residuals.png"} <= figures
    version = c.get_model_version_by_alias(PARAMS["model_name"], "champion")
    assert version.run_id == run.info.run_id and run.data.tags["model_role"] == "champion"
    return run, m["test_mae"]


def _logs(state_dir: Path) -> str:
    return "".join(f"\n--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-30:])
                   for p in sorted((state_dir / "logs").glob("*.log")))
