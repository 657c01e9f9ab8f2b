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
