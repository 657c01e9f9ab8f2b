"""Prefect's temporary local server, started by the CLI before its heavy imports.

With no ``PREFECT_API_URL``, Prefect starts a temporary server (uvicorn serving
``prefect.server.api.server:create_app`` in ephemeral mode, UI off) the first time a flow runs,
and waits for it: ~8 s on this machine, mostly the server process importing Prefect's API.
``python -m flows.nightly`` starts that same server first thing instead, so it boots on the
second core while this process imports NumPy, Prefect, MLflow and matplotlib (~6 s), then
points ``PREFECT_API_URL`` at it and stops it at exit. Measured by ``benchmarks/bench_pipeline.py``.

The server runs exactly as Prefect's own ``SubprocessASGIServer`` (prefect 3.9) runs it; if it
cannot start, the error says so and names ``PREFECT_API_URL`` as the way to use another server.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

#: Environment Prefect's SubprocessASGIServer gives its server: ephemeral services only, no UI.
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:  # Linux: SIGTERM the server if this process dies, even by SIGKILL (no atexit then)
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class TemporaryServer:
    """One Prefect API server on a free loopback port, owned by this process."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
            env={**os.environ, **SERVER_ENV}, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        atexit.register(self.stop)

    def wait_ready(self, timeout: float) -> None:
        """Block until ``/health`` answers; a clear error if the server exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(f"the temporary Prefect server on port {self.port} exited with code {code} "
                                   "before it was ready; set PREFECT_API_URL to use a running server instead")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the temporary Prefect server on port {self.port} was not ready after {timeout:.0f} s "
                           "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


_server: TemporaryServer | None = None


def start_early(argv: list[str]) -> None:
    """Start the server and set ``PREFECT_API_URL``, unless a server is configured or only help is asked."""
    global _server
    if os.environ.get("PREFECT_API_URL") or {"-h", "--help"} & set(argv):
        return
    _server = TemporaryServer()
    os.environ["PREFECT_API_URL"] = _server.api_url


def wait_ready() -> None:
    """Wait for the server ``start_early`` started (no-op otherwise)."""
    if _server is not None:
        _server.wait_ready(float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")))


def started() -> bool:
    """Whether this process runs its own temporary server (it ends with the process)."""
    return _server is not None


def stop() -> None:
    if _server is not None:
        _server.stop()
