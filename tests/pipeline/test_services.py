"""ops/services.py without starting servers: clear refusals, and stop never signals a process it did not start."""
import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("services", ROOT / "ops" / "services.py")
services = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(services)


def test_status_and_env_of_nothing(tmp_path, capsys):
    assert services.main(["status", "--state-dir", str(tmp_path)]) == 3
    assert services.main(["env", "--state-dir", str(tmp_path)]) == 3
    assert services.main(["stop", "--state-dir", str(tmp_path)]) == 0
    assert "nothing was running" in capsys.readouterr().out


def test_restart_names_what_it_can_restart(tmp_path, capsys):
    (tmp_path / "services.json").write_text(json.dumps({
        "prefect_api_url": "http://127.0.0.1:9/api", "mlflow_tracking_uri": "http://127.0.0.1:9",
        "services": {"mlflow-server": {"pid": 1, "start_time": -1, "cmd": [], "log": ""}}}))
    assert services.main(["restart", "dask-worker-7", "--state-dir", str(tmp_path)]) == 1
    assert f"dask-worker-7 was not started from {tmp_path} (started: mlflow-server)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        services.main(["restart", "--state-dir", str(tmp_path)])            # which one?
    with pytest.raises(SystemExit):
        services.main(["start", "--heartbeat", "10", "--state-dir", str(tmp_path)])   # Prefect's minimum is 30
    assert "--heartbeat 10: Prefect accepts 30 s or more" in capsys.readouterr().err


def test_start_refuses_a_port_in_use(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert services.main(["start", "--state-dir", str(tmp_path), "--mlflow-port", str(port),
                              "--prefect-port", "0"]) == 1
    err = capsys.readouterr().err
    assert f"--mlflow-port {port}: 127.0.0.1:{port} is already in use" in err


def test_stop_leaves_a_reused_pid_alone(tmp_path):
    """A recorded PID whose start time differs belongs to another process now: never signal it."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        real = services._start_time(other.pid)
        (tmp_path / "services.json").write_text(json.dumps({
            "prefect_api_url": "http://127.0.0.1:9/api", "mlflow_tracking_uri": "http://127.0.0.1:9",
            "services": {"worker": {"pid": other.pid, "start_time": real - 1, "cmd": [], "log": ""}}}))
        assert services.stop(services.State(tmp_path)) == []
        assert other.poll() is None
        assert json.loads((tmp_path / "services.json").read_text())["services"] == {}
        # the same record with the true start time is ours: stop ends its process group
        (tmp_path / "services.json").write_text(json.dumps({
            "prefect_api_url": "http://127.0.0.1:9/api", "mlflow_tracking_uri": "http://127.0.0.1:9",
            "services": {"worker": {"pid": other.pid, "start_time": real, "cmd": [], "log": ""}}}))
        assert services.stop(services.State(tmp_path), grace=5) == ["worker"]
        assert other.wait(timeout=10) != 0
    finally:
        other.kill()
        other.wait()


def test_start_with_postgres_puts_prefect_mlflow_and_the_ledger_in_it(tmp_path, seeded_cache):
    """``start --db postgres``: a PostgreSQL server on loopback holds the Prefect server's, the MLflow server's and
    the ledger's data; a nightly run through the exports lands in all three; the generated password is in no
    command line, state file, log or MLflow parameter; ``stop`` ends it."""
    import os
    import shutil
    import tempfile

    state = Path(tempfile.mkdtemp(prefix="nnforecast-services-")) / "services"   # PostgreSQL runs as `postgres`:
    os.chmod(state.parent, 0o755)                                              # a directory it may enter
    ports = {}
    for name in ("prefect", "mlflow", "postgres"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports[name] = str(s.getsockname()[1])

    def run(*args, env=None):
        return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                              env=env)

    def ops(*args):
        return run(str(ROOT / "ops" / "services.py"), *args, "--state-dir", str(state))

    try:
        started = ops("start", "--db", "postgres", "--postgres-port", ports["postgres"], "--prefect-port",
                      ports["prefect"], "--mlflow-port", ports["mlflow"], "--no-worker")
        assert started.returncode == 0, started.stdout + started.stderr
        status = ops("status").stdout
        assert next(line for line in status.splitlines() if line.startswith("postgres")).count("ready=True") == 1
        assert f"listening 127.0.0.1:{ports['postgres']}" in status
        password = (state / "postgres" / "password").read_text().strip()
        exports = dict(line[len("export "):].split("=", 1) for line in ops("env").stdout.splitlines())
        env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
        env.update({k: v for k, v in exports.items() if k != "PGPASSWORD"}, PGPASSWORD=password,
                   PREFECT_HOME=str(state / "prefect-home"))
        night = run("-m", "flows.nightly", "--n-values", "900", "--window", "20", "--test-size", "60",
                    "--hidden-size", "6", "--epochs", "3", "--stat-baselines", "none", "--no-figures",
                    "--experiment", "pg", "--model-name", "pg-model", env=env)
        assert night.returncode == 0, night.stdout + night.stderr
        counts = {}
        for db, table in (("prefect", "flow_run"), ("mlflow", "runs"), ("ledger", "forecasts")):
            out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", ports["postgres"], "-U", "nnforecast", "-d", db,
                                  "-tAc", f"SELECT count(*) FROM {table}"], env={**os.environ, "PGPASSWORD": password},
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            counts[db] = int(out.stdout)
        assert counts["prefect"] >= 1 and counts["mlflow"] == 1 and counts["ledger"] == 1, counts
        from mlflow import MlflowClient

        run_params = MlflowClient(exports["MLFLOW_TRACKING_URI"]).search_runs(
            [MlflowClient(exports["MLFLOW_TRACKING_URI"]).get_experiment_by_name("pg").experiment_id])[0].data.params
        leaked = [p for p in [state / "services.json", *sorted((state / "logs").glob("*.log"))]
                  if password in p.read_text(errors="replace")]
        assert not leaked and password not in json.dumps(run_params) and password not in started.stdout
    finally:
        stopped = ops("stop").stdout
        shutil.rmtree(state.parent, ignore_errors=True)
    assert "stopped postgres" in stopped
