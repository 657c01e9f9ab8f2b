"""ops/services.py without starting servers: clear refusals, and stop never signals a process it did not start."""
import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("services", ROOT / "ops" / "services.py")
services = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(services)


def test_status_and_env_of_nothing(tmp_path, capsys):
    assert services.main(["status", "--state-dir", str(tmp_path)]) == 3
    assert services.main(["env", "--state-dir", str(tmp_path)]) == 3
    assert services.main(["stop", "--state-dir", str(tmp_path)]) == 0
    assert "nothing was running" in capsys.readouterr().out


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
