"""Isolation for pipeline tests: a temporary Prefect home, MLflow store and seeded data cache.

The environment is set at import time, before any test module imports ``flows`` (whose
``_env`` only fills in what is not already set) or Prefect.
"""
import http.server
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data" / "SP500_Datos.csv"

_TMP = Path(tempfile.mkdtemp(prefix="nnforecast-tests-"))
os.environ["PREFECT_HOME"] = str(_TMP / "prefect")
os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(_TMP / "prefect-results")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ["DO_NOT_TRACK"] = "true"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_TMP / 'mlflow.db'}"
os.environ["NNFORECAST_CACHE_DIR"] = str(_TMP / "cache")
os.environ["NNFORECAST_IO_RETRY_DELAYS"] = "0.2,0.5"  # the load_series task: 3 attempts, quickly
os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture(scope="session")
def seeded_cache() -> Path:
    """The data cache seeded with the S&P 500 file from ../shared/data (no network needed)."""
    if not SHARED_DATA.exists():
        pytest.fail(f"the reference data {SHARED_DATA} is missing; tests seed the cache from ../shared/data/")
    cache = Path(os.environ["NNFORECAST_CACHE_DIR"])
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copy(SHARED_DATA, cache / SHARED_DATA.name)
    return cache


@pytest.fixture(scope="session")
def sp500(seeded_cache):
    from flows.core.config import DataSpec
    from flows.core.ingest import load_series

    return load_series(DataSpec())


@pytest.fixture(scope="session")
def harness():
    """One Prefect test harness (temporary server and database) for every flow test of the session."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # no heartbeat thread to join after each flow (tests only: production keeps heartbeats)
    with prefect_test_harness(server_startup_timeout=120), temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def pytest_collection_finish(session):
    out = os.environ.get("NNFORECAST_FAULT_TABLE")
    if out:  # see test_fault_table.py
        from .test_fault_table import fault_table

        Path(out).write_text(fault_table(session.items))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_TMP, ignore_errors=True)


@pytest.fixture
def http_server():
    """A loopback HTTP server: (base URL, its Handler, whose ``routes`` the test fills)."""
    from .helpers import Handler, Server

    Handler.routes, Handler.hits = {}, {}
    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Handler
    server.shutdown()
    server.server_close()


@pytest.fixture
def sink():
    """A loopback webhook: (its URL, the handler class whose ``posts`` fill up)."""
    from .helpers import Sink

    Sink.posts, Sink.status = [], 200
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", Sink
    server.shutdown()
    server.server_close()


@pytest.fixture
def webhook(harness, sink) -> str:
    """A Custom Webhook notification block saved on the test server, posting to the sink: its "slug/name"."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    name = f"alerts-{uuid.uuid4().hex[:8]}"
    CustomWebhookNotificationBlock(name=name, url=sink[0],
                                   json_data={"subject": "{{subject}}", "body": "{{body}}"}).save(name)
    return f"{CustomWebhookNotificationBlock.get_block_type_slug()}/{name}"


def _postgres_bindir() -> Path | None:
    """The PostgreSQL server binaries: Debian's newest ``/usr/lib/postgresql/N/bin``, else ``initdb`` on the PATH."""
    debian = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.parts[-3].isdigit()]
    if debian:
        return max(debian, key=lambda bindir: int(bindir.parts[-2]))
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server on a free loopback port, password (SCRAM) authentication: the SQLAlchemy URL
    (``postgresql+psycopg://``) of an empty database on it. The server is stopped and its directory removed at the
    end of the session, whatever the tests did.

    ``initdb`` and ``postgres`` refuse to run as root: as root they run as the ``postgres`` user (``runuser``), in a
    directory that user owns; otherwise as the current user.
    """
    import pwd
    import secrets
    import socket
    import subprocess

    import sqlalchemy

    bindir = _postgres_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.fail("the PostgreSQL ledger tests need a PostgreSQL server (initdb, pg_ctl) and found none in "
                    "/usr/lib/postgresql/*/bin or on the PATH: install Debian's with `apt-get install -y postgresql` "
                    "(`make test` does)")
    as_server, owner = [], None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("PostgreSQL refuses to run as root and there is no `postgres` user to run it as; "
                        "`apt-get install -y postgresql` creates it")
        as_server = ["runuser", "-u", "postgres", "--"]

    home = Path(tempfile.mkdtemp(prefix="nnforecast-postgres-"))
    data, sockets, log, pwfile = home / "data", home / "sockets", home / "server.log", home / "pwfile"
    user, password = "nnforecast", secrets.token_hex(16)
    sockets.mkdir()
    pwfile.write_text(password + "\n")
    if owner is not None:
        for path in (home, sockets, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def server(program: str, *args: str) -> None:
        done = subprocess.run([*as_server, str(bindir / program), *args], cwd=home, capture_output=True, text=True,
                              timeout=120, check=False)
        if done.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            pytest.fail(f"PostgreSQL {program} {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-2000:]}"
                        f"{done.stderr[-2000:]}\n{tail}")

    try:
        # --no-sync and fsync=off: a throwaway server needs no crash durability (transactions are unchanged)
        server("initdb", "-D", str(data), "-A", "scram-sha-256", f"--pwfile={pwfile}", "-U", user, "-E", "UTF8",
               "--locale=C", "--no-sync")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
               f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off", "start")
        root = f"postgresql+psycopg://{user}:{password}@127.0.0.1:{port}"
        admin = sqlalchemy.create_engine(f"{root}/postgres", isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sqlalchemy.text("CREATE DATABASE forecasts"))
        finally:
            admin.dispose()
        yield f"{root}/forecasts"
    finally:
        try:
            if (data / "postmaster.pid").exists():   # started, even if `pg_ctl start` then failed
                server("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(home, ignore_errors=True)
