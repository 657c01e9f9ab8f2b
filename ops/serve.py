"""Serve the champion over HTTP with MLflow's own scoring server, on loopback.

    python ops/serve.py [--model-name nncore-forecaster] [--port 5001] [--host 127.0.0.1] [--timeout 120]

runs ``mlflow models serve -m models:/<name>@champion --env-manager local --host 127.0.0.1 --port <port>``
with this environment's scripts directory first on ``PATH`` (with ``--env-manager local`` MLflow starts the
server as ``bash -c "exec uvicorn …"``, so ``uvicorn`` must be found on the ``PATH``; without the virtual
environment's ``bin`` there it exits 127) and ``MLFLOW_TRACKING_URI`` set: the environment's, else the
project's store (``flows.runtime.tracking.tracking_uri``). Before anything starts, the registry is asked for
the champion: a missing model or alias is a clear error, not a server that dies while loading. Once
``GET /ping`` answers 200 (the server loads the model before it listens) the URL and an example request
(the model's own ``serving_input_example.json``) are printed; Ctrl-C, SIGTERM or SIGHUP stop the server's
whole process group (SIGTERM, then SIGKILL after a grace period).

From Python (tests): ``proc = start(name, port, env)``, ``wait_ready(url, timeout, proc)``, ``stop(proc)``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:   # `python ops/serve.py` from a checkout that is not installed
    sys.path.insert(0, str(ROOT))

# the project's environment defaults (telemetry off, no download progress bars) before MLflow is imported
from flows.core.sources import redact
from flows.runtime import env as _env_defaults
from flows.runtime import tracking

DEFAULT_MODEL = "nncore-forecaster"
DEFAULT_PORT = 5001
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SCRIPTS = sysconfig.get_path("scripts")   # this environment's bin/: uvicorn, mlflow


class ServeError(RuntimeError):
    pass


def server_env(env: dict | None = None) -> dict:
    """The scoring server's environment: ``env`` (default: this process's) with the tracking URI resolved, this
    environment's scripts directory (where ``uvicorn`` is) first on ``PATH`` and no artifact progress bars."""
    env = dict(os.environ if env is None else env)
    env["MLFLOW_TRACKING_URI"] = env.get("MLFLOW_TRACKING_URI") or tracking.tracking_uri()
    env["PATH"] = os.pathsep.join([SCRIPTS, *[p for p in env.get("PATH", "").split(os.pathsep) if p and p != SCRIPTS]])
    for key, value in _env_defaults.DEFAULTS.items():
        if key.startswith(("MLFLOW_", "DO_NOT_TRACK")):
            env.setdefault(key, value)
    return env


def champion_version(model_name: str, env: dict | None = None) -> str:
    """The version of ``model_name`` that holds the alias ``champion`` in the store ``env`` names; a
    :class:`ServeError` saying what is missing (the model, or the alias) otherwise."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    env = server_env(env)
    uri = env["MLFLOW_TRACKING_URI"]
    c = MlflowClient(tracking_uri=uri, registry_uri=env.get("MLFLOW_REGISTRY_URI") or uri)
    try:
        return str(c.get_model_version_by_alias(model_name, tracking.CHAMPION).version)
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
    try:
        aliases = sorted(c.get_registered_model(model_name).aliases)
    except MlflowException:
        raise ServeError(f"no registered model {model_name!r} in {redact(uri)}: run `python -m flows.nightly "
                         f"--model-name {model_name}` first, or give --model-name") from None
    raise ServeError(f"{model_name!r} has no version with the alias {tracking.CHAMPION!r} in {redact(uri)} "
                     f"(its aliases: {', '.join(aliases) or 'none'}); set one with "
                     f"MlflowClient().set_registered_model_alias({model_name!r}, {tracking.CHAMPION!r}, VERSION)")


def command(model_name: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """``mlflow models serve`` of the champion, run by this Python (the same MLflow as the project's)."""
    return [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{model_name}@{tracking.CHAMPION}",
            "--env-manager", "local", "--host", host, "--port", str(port)]


def start(model_name: str, port: int, env: dict | None = None, host: str = "127.0.0.1",
          log: Path | None = None) -> subprocess.Popen:
    """Check the champion exists, then start its scoring server in a new session (its own process group, so
    :func:`stop` ends the server and nothing else). Output goes to ``log`` (a file, appended) or is inherited."""
    env = server_env(env)
    if not (Path(SCRIPTS) / "uvicorn").exists():
        raise ServeError(f"uvicorn is not installed in {SCRIPTS}: MLflow's scoring server "
                         "needs it (pip install -e . installs it with mlflow)")
    champion_version(model_name, env)
    if not _port_free(host, port):
        raise ServeError(f"--port {port}: {host}:{port} is already in use")
    with open(log, "ab") if log is not None else contextlib.nullcontext() as out:   # the child keeps its own copy
        return subprocess.Popen(command(model_name, port, host), env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT if out else None, start_new_session=True)


def wait_ready(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> float:
    """Poll ``<url>/ping`` until it answers 200; the seconds it took. A :class:`ServeError` when ``proc`` exits
    first or ``timeout`` passes."""
    t0 = time.monotonic()
    while True:
        if proc is not None and proc.poll() is not None:
            raise ServeError(f"the scoring server exited with code {proc.returncode} before it answered {url}/ping")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=3) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() - t0 > timeout:
            raise ServeError(f"the scoring server did not answer {url}/ping within {timeout:.0f} s")
        time.sleep(0.2)


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """End the server's process group (``mlflow`` and the ``uvicorn`` it runs): SIGTERM, SIGKILL after ``grace``."""
    pgid = proc.pid   # start_new_session: the server leads its own group
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(pgid):
                break
            time.sleep(0.1)
        if proc.poll() is not None and not _group_alive(pgid):
            break
    proc.wait(timeout=5)


def example_request(model_name: str, version: str, url: str, env: dict | None = None) -> str:
    """A curl command the served model answers: its logged ``serving_input_example.json`` (recent history it
    was registered with), else the payload shapes in words."""
    import mlflow
    from mlflow.exceptions import MlflowException

    env = server_env(env)
    uri = env["MLFLOW_TRACKING_URI"]
    registry = env.get("MLFLOW_REGISTRY_URI") or uri
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{model_name}/{version}/serving_input_example.json", dst_path=tmp,
                tracking_uri=uri, registry_uri=registry)
            payload = json.dumps(json.loads(Path(path).read_text()), separators=(",", ":"))
    except (MlflowException, OSError, ValueError):   # a version logged without an example
        return (f"curl -s {url}/invocations -H 'Content-Type: application/json' -d '{{\"inputs\": [[V1, ..., VW]]}}'"
                "\n  (one series: its last `window` values, oldest first; a panel: "
                '{"dataframe_split": {"columns": ["unique_id", "ds", "y"], "data": [[ID, DATE, VALUE], ...]}})')
    return f"curl -s {url}/invocations -H 'Content-Type: application/json' -d {shlex.quote(payload)}"


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        # as uvicorn binds: connections of a server stopped a moment ago (TIME_WAIT) do not make the port busy
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process of group ``pgid`` remains (``/proc``; else ``kill(0)``)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for d in proc.iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


class _Stop(Exception):
    """SIGTERM or SIGHUP: leave the wait and stop the server."""


def _raise_stop(signum, frame):
    raise _Stop(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python ops/serve.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model-name", default=DEFAULT_MODEL, help=f"the registered model (default {DEFAULT_MODEL})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument("--host", default="127.0.0.1",
                   help="the address to listen on (default 127.0.0.1; the scoring server has no authentication)")
    p.add_argument("--timeout", type=float, default=120, help="seconds the server may take to answer /ping")
    args = p.parse_args(argv)
    env = server_env()
    url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"
    if args.host not in LOOPBACK:
        print(f"warning: listening on {args.host}, not loopback: anyone who reaches it can call the model "
              "(MLflow's scoring server has no authentication)", file=sys.stderr, flush=True)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stop)
    proc = None
    try:
        version = champion_version(args.model_name, env)
        print(f"serving {args.model_name} v{version} (alias {tracking.CHAMPION}) of "
              f"{redact(env['MLFLOW_TRACKING_URI'])}:\n  {shlex.join(command(args.model_name, args.port, args.host))}",
              flush=True)
        t0 = time.monotonic()
        proc = start(args.model_name, args.port, env, args.host)
        example = example_request(args.model_name, version, url, env)   # while the server loads the model
        wait_ready(url, args.timeout, proc)
        print(f"ready in {time.monotonic() - t0:.1f} s: {url}/invocations (health: {url}/ping); Ctrl-C stops it\n"
              f"example (the history the model was registered with):\n  {example}", flush=True)
        code = proc.wait()
        print(f"error: the scoring server exited with code {code}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, _Stop):
        print("stopping the scoring server", flush=True)
        return 0
    except ServeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if proc is not None:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):   # a second Ctrl-C must not orphan it
                signal.signal(sig, signal.SIG_IGN)
            stop(proc)


if __name__ == "__main__":
    sys.exit(main())
