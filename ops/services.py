"""Local services for the nightly pipeline: a Prefect server, the deployment and a worker, an MLflow server, and
optionally a Dask cluster.

    python ops/services.py start   [--prefect-port 4200] [--mlflow-port 5000] [--state-dir .services]
                                   [--dask-workers N [--dask-port 8786] [--dask-dashboard-port 8787]]
                                   [--db postgres [--postgres-port 5432]] [--heartbeat 60]
    python ops/services.py status  [--state-dir .services]
    python ops/services.py restart NAME [--state-dir .services]   # one service (a name `status` shows)
    python ops/services.py stop    [--state-dir .services]
    python ops/services.py env     [--state-dir .services]   # exports that point the CLI at them

``start`` runs, in order: a Prefect server on 127.0.0.1 (its own ``PREFECT_HOME`` under the state
directory) and waits for its health check; the process work pool (``--overwrite``); ``prefect deploy``
of every deployment in ``prefect.yaml`` without prompts; an MLflow tracking server on 127.0.0.1 with a
sqlite backend and a local artifact store that it proxies (``mlflow-artifacts:/``); a Prefect worker on
the pool whose flow runs log to that MLflow server; Prefect's automation that marks a flow run without
heartbeats Crashed. With ``--dask-workers N``, first a Dask scheduler on 127.0.0.1 (its dashboard too) and N
single-threaded workers, each its own ``dask worker`` process, each with the servers' URLs; the Prefect
worker gets ``DASK_SCHEDULER_ADDRESS``, so the sweep, backfill and ``--dask`` runs it executes use that
cluster (and so does the CLI once ``. <state-dir>/env`` is sourced). Every process gets its own session (process group);
its PID, start time and command go to ``<state-dir>/services.json`` and its output to
``<state-dir>/logs/``. ``stop`` ends exactly those process groups (SIGTERM, then SIGKILL after a
grace period), checking each PID's start time so a reused PID is never signalled. ``status`` says
what is running, healthy and listening where, and exits 0 only when everything is. Nothing listens
on a non-loopback address (``status`` lists every listening socket of the services).

Standard library only; the servers run from the same Python environment as this script.
"""
from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POOL = "nightly-pool"
ORDER = ("postgres", "prefect-server", "mlflow-server", "dask-scheduler", "dask-worker-*", "worker")  # stop: reverse
PG_USER = "nnforecast"
PG_DATABASES = ("prefect", "mlflow", "ledger")


class ServiceError(RuntimeError):
    pass


def _names(data: dict) -> list[str]:
    """The services of this state in start order (``dask-worker-*``: one per Dask worker)."""
    workers = sorted((n for n in data["services"] if n.startswith("dask-worker-")), key=lambda n: int(n.rsplit("-", 1)[1]))
    expected = [f"dask-worker-{i}" for i in range(1, int(data.get("dask_workers") or 0) + 1)]
    workers += [n for n in expected if n not in workers]
    return [m for n in ORDER for m in (workers if n == "dask-worker-*" else [n])]


# ----------------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------------
def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else int(fields[19])


def _alive(rec: dict) -> bool:
    return _start_time(rec["pid"]) == rec["start_time"]


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] != "Z":  # a zombie has ended already
                pids.append(int(d.name))
    return pids


def _listening(pids: list[int]) -> list[str]:
    """host:port of every TCP socket in LISTEN state owned by these processes."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] != "0A" or parts[9] not in inodes:  # 0A = LISTEN
                continue
            addr_hex, port_hex = parts[1].split(":")
            raw = bytes.fromhex(addr_hex)
            # /proc/net/tcp stores the address as host-order 32-bit words
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.append(f"{socket.inet_ntop(family, raw)}:{int(port_hex, 16)}")
    return sorted(set(found))


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # a port in TIME_WAIT after a stop is free
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _wait_healthy(name: str, url: str, rec: dict, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(rec):
            raise ServiceError(f"{name} exited during startup; last lines of {log}:\n{_tail(log)}")
        if _healthy(url):
            return
        time.sleep(0.25)
    raise ServiceError(f"{name} not healthy at {url} after {timeout:.0f} s; see {log}")


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# ----------------------------------------------------------------------------------------------
# State
# ----------------------------------------------------------------------------------------------
class State:
    def __init__(self, state_dir: Path):
        self.dir = state_dir.resolve()
        self.file = self.dir / "services.json"
        self.logs = self.dir / "logs"

    def load(self) -> dict:
        try:
            return json.loads(self.file.read_text())
        except FileNotFoundError:
            return {"services": {}}

    def save(self, data: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.file)

    def env(self, data: dict) -> dict:
        """Environment of every service and CLI call: the server URLs and this state's Prefect home."""
        env = dict(os.environ)
        env.update({
            "PREFECT_HOME": str(self.dir / "prefect-home"),
            "PREFECT_API_URL": data["prefect_api_url"],
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "true",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_TRACKING_URI": data["mlflow_tracking_uri"],
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(data.get("heartbeat", 60)),   # see ZOMBIE_AUTOMATION
            **({"DASK_SCHEDULER_ADDRESS": data["dask_address"]} if data.get("dask_address") else {}),
            **({"NNFORECAST_LEDGER_URL": data["ledger_url"]} if data.get("ledger_url") else {}),
            **({"PGPASSWORD": _pg_password(self), "PREFECT_API_DATABASE_CONNECTION_URL": data["prefect_database_url"],
                "MLFLOW_BACKEND_STORE_URI": data["mlflow_backend_store_uri"]}
               if data.get("db") == "postgres" else {}),
            "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": env.get("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING"),
        })
        return env


def _spawn(state: State, data: dict, name: str, cmd: list[str], env: dict) -> dict:
    state.logs.mkdir(parents=True, exist_ok=True)
    log = state.logs / f"{name}.log"
    with open(log, "ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        out.flush()
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
    time.sleep(0.05)
    rec = {"pid": p.pid, "start_time": _start_time(p.pid), "cmd": cmd, "log": str(log),
           "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if rec["start_time"] is None:
        raise ServiceError(f"{name} exited at once; see {log}:\n{_tail(log)}")
    data["services"][name] = rec
    state.save(data)
    return rec


def _run(cmd: list[str], env: dict, what: str, timeout: float = 300) -> None:
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise ServiceError(f"{what} failed (exit {out.returncode}): {' '.join(cmd)}\n{out.stdout}\n{out.stderr}")


def _worker_online(api_url: str) -> bool:
    req = urllib.request.Request(f"{api_url}/work_pools/{POOL}/workers/filter", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return any(w.get("status") == "ONLINE" for w in json.load(r))
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
        return False


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------
def _pg_bindir() -> Path:
    """Debian's newest PostgreSQL server binaries (``/usr/lib/postgresql/N/bin``), else those on the PATH."""
    debian = sorted((p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.parts[-3].isdigit()),
                    key=lambda b: int(b.parts[-2]))
    if debian:
        return debian[-1]
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if (Path(d) / "initdb").exists():
            return Path(d)
    raise ServiceError("--db postgres needs PostgreSQL's server (initdb, postgres): apt-get install -y postgresql")


def _as_postgres() -> tuple[list[str], pwd.struct_passwd | None]:
    """PostgreSQL refuses to run as root: as root, run it as the ``postgres`` user."""
    if os.geteuid() != 0:
        return [], None
    try:
        return ["runuser", "-u", "postgres", "--"], pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceError("PostgreSQL refuses to run as root and there is no `postgres` user to run it as "
                           "(apt-get install -y postgresql creates it)") from None


def _pg_password(state: State) -> str:
    path = state.dir / "postgres" / "password"
    return path.read_text().strip()


def _pg_ready(port: int) -> bool:
    """``pg_isready`` as the project's role (as root it would ask for the role ``root``: a FATAL line in the log)."""
    return subprocess.run([str(_pg_bindir() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER,
                           "-d", "postgres"]).returncode == 0


def _start_postgres(state: State, data: dict, env: dict, timeout: float) -> None:
    """A PostgreSQL server on 127.0.0.1 with password (SCRAM) authentication, its cluster under the state directory
    (created on first use, the password generated into ``postgres/password``, mode 600), and the databases of the
    Prefect server, the MLflow server and the forecast ledger."""
    bindir, (prefix, owner) = _pg_bindir(), _as_postgres()
    home = state.dir / "postgres"
    pgdata, sockets, pwfile = home / "data", home / "sockets", home / "password"
    home.mkdir(parents=True, exist_ok=True)
    sockets.mkdir(exist_ok=True)
    if not pwfile.exists():
        pwfile.write_text(secrets.token_urlsafe(24) + "\n")
    os.chmod(pwfile, 0o600)
    if owner is not None:
        for path in (home, sockets, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    if prefix and subprocess.run([*prefix, "test", "-w", str(home)]).returncode != 0:
        raise ServiceError(f"the postgres user cannot reach {home} (PostgreSQL runs as that user, not root): give "
                           "--state-dir a directory whose parents it may enter (e.g. under /var/tmp)")
    env = dict(env, PGPASSWORD=_pg_password(state))   # psql reads it; never on a command line
    if not (pgdata / "PG_VERSION").exists():
        print("initialising the PostgreSQL cluster", flush=True)
        _run([*prefix, str(bindir / "initdb"), "-D", str(pgdata), "-A", "scram-sha-256", f"--pwfile={pwfile}",
              "-U", PG_USER, "-E", "UTF8", "--locale=C"], env, "initdb")
    rec = _spawn(state, data, "postgres", [*prefix, str(bindir / "postgres"), "-D", str(pgdata), "-c",
                                           "listen_addresses=127.0.0.1", "-p", str(data["postgres_port"]), "-k",
                                           str(sockets)], env)
    deadline = time.monotonic() + timeout
    while not _pg_ready(data["postgres_port"]):
        if not _alive(rec):
            raise ServiceError(f"PostgreSQL exited during startup; see {rec['log']}:\n{_tail(Path(rec['log']))}")
        if time.monotonic() > deadline:
            raise ServiceError(f"PostgreSQL did not accept connections within {timeout:.0f} s; see {rec['log']}")
        time.sleep(0.3)
    psql = [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(data["postgres_port"]), "-U", PG_USER, "-d",
            "postgres", "-v", "ON_ERROR_STOP=1", "-tAc"]
    for db in PG_DATABASES:
        found = subprocess.run([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{db}'"], env=env,
                               capture_output=True, text=True, timeout=60)
        if found.returncode != 0:
            raise ServiceError(f"PostgreSQL: cannot connect as {PG_USER}: {found.stderr.strip()}")
        if found.stdout.strip() != "1":
            _run([*psql, f"CREATE DATABASE {db}"], env, f"creating the database {db}")


def _dask_workers(dashboard: str) -> int | None:
    """The number of workers connected to the scheduler (its dashboard's JSON), None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{dashboard}/json/counts.json", timeout=5) as r:
            return int(json.load(r)["workers"])
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError, KeyError):
        return None


def _dask_worker_names(dashboard: str) -> set[str]:
    """The names of the workers connected to the scheduler (``--name``), empty when it does not answer."""
    try:
        with urllib.request.urlopen(f"{dashboard}/json/identity.json", timeout=5) as r:
            return {str(w.get("name")) for w in json.load(r)["workers"].values()}
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError, KeyError, AttributeError):
        return set()


def _start_dask(state: State, data: dict, env: dict, n: int, timeout: float) -> None:
    """A scheduler and ``n`` worker processes (one thread each) on loopback; waits until every worker is connected."""
    bin_dir = Path(sys.executable).parent
    scheduler = _spawn(state, data, "dask-scheduler", [
        str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(data["dask_port"]),
        "--dashboard-address", f"127.0.0.1:{data['dask_dashboard_port']}"], env)
    _wait_healthy("the Dask scheduler", f"{data['dask_dashboard']}/health", scheduler, Path(scheduler["log"]),
                  timeout)
    # one `dask worker` process (a nanny and its worker) per worker, as on separate machines: when one dies, or
    # its nanny, the others go on (`--nworkers N` is one process whose N nannies all end when one of them does)
    workers = [_spawn(state, data, f"dask-worker-{i}", [
        str(bin_dir / "dask"), "worker", data["dask_address"], "--host", "127.0.0.1", "--nworkers", "1",
        "--nthreads", "1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0",   # every socket on loopback
        "--name", f"dask-worker-{i}", "--local-directory", str(state.dir / "dask"),
        "--preload", "flows.runtime.dask_worker"], env) for i in range(1, n + 1)]
    deadline = time.monotonic() + timeout
    while (_dask_workers(data["dask_dashboard"]) or 0) < n:
        for rec in workers:
            if not _alive(rec):
                raise ServiceError(f"a Dask worker exited during startup; see {rec['log']}:\n{_tail(Path(rec['log']))}")
        if time.monotonic() > deadline:
            raise ServiceError(f"{n} Dask workers did not connect within {timeout:.0f} s; see {workers[0]['log']}")
        time.sleep(0.5)


#: Prefect's automation for "zombie" flow runs (https://docs.prefect.io/v3/advanced/detect-zombie-flows): a flow run
#: whose heartbeats stop (its machine, worker or process killed) is marked Crashed ``ZOMBIE_AFTER`` heartbeats after
#: the last one, instead of staying Running for ever
ZOMBIE_AUTOMATION = "crash-zombie-flow-runs"
ZOMBIE_AFTER = 3


def _zombie_automation(api_url: str, heartbeat: int) -> None:
    """Create (or replace) the automation that marks flow runs without heartbeats Crashed."""
    def call(method: str, path: str, body=None):
        req = urllib.request.Request(f"{api_url}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read()
        return json.loads(text) if text else None

    states = ["heartbeat", "Completed", "Failed", "Cancelled", "Crashed"]
    for old in call("POST", "/automations/filter", {}):
        if old["name"] == ZOMBIE_AUTOMATION:
            call("DELETE", f"/automations/{old['id']}")
    call("POST", "/automations/", {
        "name": ZOMBIE_AUTOMATION, "enabled": True,
        "description": f"a flow run without a heartbeat for {ZOMBIE_AFTER * heartbeat} s is marked Crashed",
        "trigger": {"type": "event", "posture": "Proactive", "threshold": 1, "within": ZOMBIE_AFTER * heartbeat,
                    "match": {"prefect.resource.id": ["prefect.flow-run.*"]}, "for_each": ["prefect.resource.id"],
                    "after": ["prefect.flow-run.heartbeat"], "expect": [f"prefect.flow-run.{s}" for s in states]},
        "actions": [{"type": "change-flow-run-state", "state": "CRASHED",
                     "message": f"no heartbeat for {ZOMBIE_AFTER * heartbeat} s: the flow run's process, worker or "
                                "machine died"}]})


def start(state: State, prefect_port: int, mlflow_port: int, timeout: float, worker: bool = True,
          dask_workers: int = 0, dask_port: int = 8786, dask_dashboard_port: int = 8787, db: str = "sqlite",
          postgres_port: int = 5432, heartbeat: int = 60) -> None:
    data = state.load()
    running = [n for n, rec in data["services"].items() if _alive(rec)]
    if running:
        raise ServiceError(f"already running from {state.dir}: {', '.join(running)} "
                           f"(`python ops/services.py stop --state-dir {state.dir}` first)")
    ports = [(prefect_port, "--prefect-port"), (mlflow_port, "--mlflow-port")]
    if dask_workers:
        ports += [(dask_port, "--dask-port"), (dask_dashboard_port, "--dask-dashboard-port")]
    if db == "postgres":
        ports += [(postgres_port, "--postgres-port")]
    for port, what in ports:
        if not _port_free(port):
            raise ServiceError(f"{what} {port}: 127.0.0.1:{port} is already in use")
    data = {"services": {}, "prefect_api_url": f"http://127.0.0.1:{prefect_port}/api",
            "prefect_ui_url": f"http://127.0.0.1:{prefect_port}",
            "mlflow_tracking_uri": f"http://127.0.0.1:{mlflow_port}",
            "ledger_url": f"sqlite:///{state.dir / 'ledger.db'}", "heartbeat": heartbeat}
    if dask_workers:
        data.update({"dask_address": f"tcp://127.0.0.1:{dask_port}", "dask_port": dask_port,
                     "dask_dashboard_port": dask_dashboard_port,
                     "dask_dashboard": f"http://127.0.0.1:{dask_dashboard_port}", "dask_workers": dask_workers})
    if db == "postgres":   # the URLs carry no password: every service reads PGPASSWORD from its environment
        pg = f"{PG_USER}@127.0.0.1:{postgres_port}"
        data.update({"db": "postgres", "postgres_port": postgres_port,
                     "prefect_database_url": f"postgresql+asyncpg://{pg}/prefect",
                     "mlflow_backend_store_uri": f"postgresql+psycopg://{pg}/mlflow",
                     "ledger_url": f"postgresql+psycopg://{pg}/ledger",
                     "pg_password_file": str(state.dir / "postgres" / "password")})
    state.save(data)
    py = sys.executable
    try:
        if db == "postgres":
            state.dir.mkdir(parents=True, exist_ok=True)
            print(f"postgresql:     127.0.0.1:{postgres_port} (databases {', '.join(PG_DATABASES)})", flush=True)
            _start_postgres(state, data, dict(os.environ), timeout)
        env = state.env(data)
        print(f"prefect server: {data['prefect_ui_url']}\nmlflow server:  {data['mlflow_tracking_uri']}", flush=True)
        (state.dir / "mlflow").mkdir(parents=True, exist_ok=True)
        # both servers boot at once (each is mostly a Python process importing its framework)
        prefect_rec = _spawn(state, data, "prefect-server",
                             [py, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port),
                              "--analytics-off"], env)
        mlflow_rec = _spawn(state, data, "mlflow-server",
                            [py, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
                             "--workers", "1", *([] if db == "postgres" else [   # postgres: MLFLOW_BACKEND_STORE_URI
                                 "--backend-store-uri", f"sqlite:///{state.dir / 'mlflow' / 'mlflow.db'}"]),
                             "--serve-artifacts", "--artifacts-destination",
                             (state.dir / "mlflow" / "artifacts").as_uri()], env)
        _wait_healthy("the Prefect server", f"{data['prefect_api_url']}/health", prefect_rec,
                      Path(prefect_rec["log"]), timeout)
        _wait_healthy("the MLflow server", f"{data['mlflow_tracking_uri']}/health", mlflow_rec,
                      Path(mlflow_rec["log"]), timeout)
        if dask_workers:
            print(f"dask cluster:   {data['dask_address']} ({dask_workers} workers), dashboard "
                  f"{data['dask_dashboard']}/status", flush=True)
            _start_dask(state, data, env, dask_workers, timeout)

        print(f"work pool {POOL}; deploying prefect.yaml", flush=True)
        _run([py, "-m", "prefect", "work-pool", "create", POOL, "--type", "process", "--overwrite"], env,
             "creating the work pool")
        _run([py, "-m", "prefect", "--no-prompt", "deploy", "--all"], env, "prefect deploy")
        _zombie_automation(data["prefect_api_url"], heartbeat)

        if worker:
            print(f"worker on {POOL}", flush=True)
            rec = _spawn(state, data, "worker", [py, "-m", "prefect", "worker", "start", "--pool", POOL,
                                                 "--type", "process"], env)
            deadline = time.monotonic() + timeout
            while not _worker_online(data["prefect_api_url"]):
                if not _alive(rec):
                    raise ServiceError(f"the worker exited during startup; see {rec['log']}:\n{_tail(Path(rec['log']))}")
                if time.monotonic() > deadline:
                    raise ServiceError(f"the worker did not come online within {timeout:.0f} s; see {rec['log']}")
                time.sleep(0.5)
    except BaseException:
        stop(state, quiet=True)
        raise
    (state.dir / "env").write_text(_exports(data))
    print(f"ready. Prefect UI {data['prefect_ui_url']}  MLflow UI {data['mlflow_tracking_uri']}\n"
          f"point the CLI at them: . {state.dir / 'env'}", flush=True)


def _exports(data: dict) -> str:
    return (f"export PREFECT_API_URL={data['prefect_api_url']}\n"
            f"export MLFLOW_TRACKING_URI={data['mlflow_tracking_uri']}\n"
            + (f"export DASK_SCHEDULER_ADDRESS={data['dask_address']}\n" if data.get("dask_address") else "")
            + (f"export NNFORECAST_LEDGER_URL={data['ledger_url']}\n" if data.get("ledger_url") else "")
            + (f"export PGPASSWORD=\"$(cat {data['pg_password_file']})\"\n" if data.get("db") == "postgres" else ""))


def _end(rec: dict, grace: float) -> bool:
    """SIGTERM the service's process group, SIGKILL after ``grace`` seconds; False when it was not running."""
    if not _alive(rec):
        return False
    pgid = rec["pid"]  # start_new_session: the service leads its own process group
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 10)
        while time.monotonic() < deadline and _group_pids(pgid):
            time.sleep(0.2)
        if not _group_pids(pgid):
            break
    return True


def stop(state: State, grace: float = 20.0, quiet: bool = False) -> list[str]:
    """End the process groups this state started (workers first); returns the names stopped."""
    data = state.load()
    stopped = []
    for name in reversed(_names(data)):
        rec = data["services"].get(name)
        if rec is None:
            continue
        if _end(rec, grace):
            stopped.append(name)
            if not quiet:
                print(f"stopped {name} (pid {rec['pid']})", flush=True)
        del data["services"][name]
        state.save(data)
    if not quiet and not stopped:
        print("nothing was running", flush=True)
    return stopped


def restart(state: State, name: str, timeout: float, grace: float = 20.0) -> None:
    """Stop one service (if it still runs) and start it again with the same command and environment; waits until
    it answers. For a server that died or hangs, and for maintenance: the others keep running, and clients retry."""
    data = state.load()
    rec = data["services"].get(name)
    if rec is None:
        raise ServiceError(f"{name} was not started from {state.dir} (started: {', '.join(data['services']) or 'none'})")
    was = "restarted" if _end(rec, grace) else "started again (it was not running)"
    rec = _spawn(state, data, name, rec["cmd"], state.env(data))
    log, deadline = Path(rec["log"]), time.monotonic() + timeout
    if name == "prefect-server":
        _wait_healthy("the Prefect server", f"{data['prefect_api_url']}/health", rec, log, timeout)
    elif name == "mlflow-server":
        _wait_healthy("the MLflow server", f"{data['mlflow_tracking_uri']}/health", rec, log, timeout)
    elif name == "dask-scheduler":
        _wait_healthy("the Dask scheduler", f"{data['dask_dashboard']}/health", rec, log, timeout)
    else:
        if name == "worker":
            def ready():
                return _worker_online(data["prefect_api_url"])
        elif name == "postgres":
            def ready():
                return _pg_ready(data["postgres_port"])
        else:   # a dask-worker-i
            def ready():
                return name in _dask_worker_names(data["dask_dashboard"])
        while not ready():
            if not _alive(rec):
                raise ServiceError(f"{name} exited while restarting; see {log}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise ServiceError(f"{name} was not ready within {timeout:.0f} s of restarting; see {log}")
            time.sleep(0.5)
    print(f"{name} {was} (pid {rec['pid']})", flush=True)


def status(state: State) -> int:
    data = state.load()
    if not data["services"]:
        print(f"no services started from {state.dir}")
        return 3
    ok = True
    for name in _names(data):
        rec = data["services"].get(name)
        if rec is None:
            if (name.startswith("dask") and not data.get("dask_address")) or (name == "postgres"
                                                                               and data.get("db") != "postgres"):
                continue   # not asked for
            print(f"{name:15s} not started")
            ok = False
            continue
        alive = _alive(rec)
        health = ""
        if alive and name == "prefect-server":
            healthy = _healthy(f"{data['prefect_api_url']}/health")
            health = f" healthy={healthy}  UI {data['prefect_ui_url']}"
            ok &= healthy
        elif alive and name == "mlflow-server":
            healthy = _healthy(f"{data['mlflow_tracking_uri']}/health")
            health = f" healthy={healthy}  UI {data['mlflow_tracking_uri']}"
            ok &= healthy
        elif alive and name == "postgres":
            ready = _pg_ready(data["postgres_port"])
            health = f" ready={ready}  127.0.0.1:{data['postgres_port']} (databases {', '.join(PG_DATABASES)})"
            ok &= ready
        elif alive and name == "dask-scheduler":
            healthy = _healthy(f"{data['dask_dashboard']}/health")
            connected = _dask_workers(data["dask_dashboard"]) or 0
            health = (f" healthy={healthy}  {data['dask_address']}  dashboard {data['dask_dashboard']}/status  "
                      f"workers connected={connected}/{data['dask_workers']}")
            ok &= healthy
        elif alive and name.startswith("dask-worker-"):
            connected = name in _dask_worker_names(data["dask_dashboard"])
            health = f" connected={connected}"
            ok &= connected
        elif alive and name == "worker":
            online = _worker_online(data["prefect_api_url"])
            health = f" online={online}  pool {POOL}"
            ok &= online
        listen = ", ".join(_listening(_group_pids(rec["pid"]))) if alive else ""
        print(f"{name:15s} {'running' if alive else 'STOPPED':8s} pid {rec['pid']:<7d}{health}"
              f"{'  listening ' + listen if listen else ''}")
        ok &= alive
    return 0 if ok else 3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python ops/services.py", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["start", "stop", "status", "env", "restart"])
    p.add_argument("service", nargs="?", help="restart: the service to restart (a name `status` shows)")
    p.add_argument("--state-dir", type=Path, default=ROOT / ".services",
                   help="PIDs, logs, the Prefect home and the MLflow store (default: .services in the project)")
    p.add_argument("--prefect-port", type=int, default=4200)
    p.add_argument("--mlflow-port", type=int, default=5000)
    p.add_argument("--timeout", type=float, default=180, help="seconds each service may take to become ready")
    p.add_argument("--no-worker", action="store_true", help="start the servers and deploy, but no worker")
    p.add_argument("--dask-workers", type=int, default=0, metavar="N",
                   help="also a Dask scheduler and N worker processes on 127.0.0.1 (default: none)")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite",
                   help="the Prefect and MLflow servers' and the ledger's database: SQLite files (default) or a "
                        "PostgreSQL server started here (Debian's postgresql; data under the state directory)")
    p.add_argument("--postgres-port", type=int, default=5432)
    p.add_argument("--dask-port", type=int, default=8786)
    p.add_argument("--dask-dashboard-port", type=int, default=8787)
    p.add_argument("--heartbeat", type=int, default=60, metavar="SECONDS",
                   help=f"flow runs' heartbeat period (>= 30); a run silent for {ZOMBIE_AFTER} periods is marked "
                        "Crashed (default 60)")
    args = p.parse_args(argv)
    if args.heartbeat < 30:
        p.error(f"--heartbeat {args.heartbeat}: Prefect accepts 30 s or more")
    if (args.command == "restart") != (args.service is not None):
        p.error("restart takes the name of one service (as `status` shows it); the other commands none")
    state = State(args.state_dir)
    try:
        if args.command == "start":
            start(state, args.prefect_port, args.mlflow_port, args.timeout, worker=not args.no_worker,
                  dask_workers=args.dask_workers, dask_port=args.dask_port,
                  dask_dashboard_port=args.dask_dashboard_port, db=args.db, postgres_port=args.postgres_port,
                  heartbeat=args.heartbeat)
        elif args.command == "restart":
            restart(state, args.service, args.timeout)
        elif args.command == "stop":
            stop(state)
        elif args.command == "status":
            return status(state)
        else:
            data = state.load()
            if not data["services"]:
                print(f"no services started from {state.dir}", file=sys.stderr)
                return 3
            print(_exports(data), end="")
    except ServiceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
