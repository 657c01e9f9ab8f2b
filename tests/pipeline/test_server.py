"""The CLI's temporary Prefect server: started before the heavy imports, healthy, never left behind."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flows.runtime import server

ROOT = Path(__file__).resolve().parents[2]
SHORT_ARGS = ["--source", "sp500", "--n-values", "900", "--window", "20", "--test-size", "60", "--hidden-size", "6",
              "--epochs", "3", "--seed", "1", "--experiment", "cli-test", "--model-name", "cli-test-model"]


def _servers_of(prefect_home: str) -> list[int]:
    """PIDs of Prefect API servers running with this PREFECT_HOME."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
            env = (d / "environ").read_bytes()
        except OSError:
            continue
        if b"prefect.server.api.server:create_app" in cmd and f"PREFECT_HOME={prefect_home}".encode() in env:
            pids.append(int(d.name))
    return pids


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


def test_start_early_leaves_a_configured_server_and_help_alone(monkeypatch):
    monkeypatch.setattr(server, "_server", None)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    server.start_early([])
    assert server._server is None and os.environ["PREFECT_API_URL"] == "http://127.0.0.1:9/api"
    monkeypatch.delenv("PREFECT_API_URL")
    server.start_early(["--model", "gru", "--help"])
    assert server._server is None and "PREFECT_API_URL" not in os.environ
    server.wait_ready()  # nothing started: returns at once


@pytest.mark.flow
def test_cli_runs_on_its_own_temporary_server_and_stops_it(seeded_cache):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    before = set(_servers_of(os.environ["PREFECT_HOME"]))  # e.g. the session's test harness
    out = subprocess.run([sys.executable, "-m", "flows.nightly", *SHORT_ARGS], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "done: test MAE" in out.stdout and "forecast " in out.stdout
    assert set(_servers_of(os.environ["PREFECT_HOME"])) - before == set()


@pytest.mark.flow
def test_temporary_server_dies_with_a_killed_parent(tmp_path):
    """SIGKILL skips atexit: the server must still go (PR_SET_PDEATHSIG), not linger on its port."""
    script = textwrap.dedent("""
        import sys, time
        from flows.runtime import server
        s = server.TemporaryServer()
        s.wait_ready(120)
        print(s.process.pid, s.port, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"})
    pid = None
    try:
        pid, port = map(int, parent.stdout.readline().split())
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=10) as r:
            assert r.status == 200
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        assert _gone(pid, 30), f"the temporary server {pid} outlived its killed parent"
    finally:
        parent.kill()
        parent.wait()
        if pid is not None and not _gone(pid, 0):
            os.kill(pid, signal.SIGKILL)  # a failed test leaves no server behind either
