"""One retry policy: the load_series task retries a source it could not reach, and never bad data.

A loopback HTTP server serves the S&P 500 file behind a URL source; the nightly flow runs under the
Prefect test harness with the retry delays of the test session (``NNFORECAST_IO_RETRY_DELAYS=0.2,0.5``
in conftest.py: three attempts).
"""
import time

import pytest

pytestmark = pytest.mark.flow

SHORT = dict(n_values=900, window=20, test_size=60, hidden_size=6, epochs=2, seed=1, experiment="retries")


def _url_cache(cache, url: str):
    """The cache file of a URL source (see flows.core.sources.resolve_source)."""
    import hashlib

    return cache / ("url-" + hashlib.sha256(url.encode()).hexdigest()[:16] + ".csv")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NNFORECAST_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    return tmp_path / "cache"


def _versions(name: str) -> list:
    from flows.runtime import tracking

    return tracking.client().search_model_versions(f"name = '{name}'")


@pytest.mark.fault(fault="a download that fails twice (HTTP 503), then succeeds",
                   did="the load_series task retried it with backoff; the third attempt succeeded",
                   kept="the cache replaced only by the complete, verified file")
def test_a_source_that_fails_twice_then_answers_gives_a_finished_run(harness, seeded_cache, http_server, cache):
    from flows.nightly import nightly

    base, handler = http_server
    body = (seeded_cache / "SP500_Datos.csv").read_bytes()
    handler.routes["/sp.csv"] = lambda n: (503, "text/plain", b"busy") if n < 3 else (200, "text/csv", body)
    state = nightly(overrides={**SHORT, "source": base + "/sp.csv", "model_name": "retry-ok"}, return_state=True)
    assert state.is_completed(), state
    assert handler.hits["/sp.csv"] == 3
    assert _url_cache(cache, base + "/sp.csv").read_bytes() == body
    assert [str(v.version) for v in _versions("retry-ok")] == [state.result().version]


@pytest.mark.fault(fault="a download that keeps failing (HTTP 500)",
                   did="3 attempts with backoff (the load_series task's retries), then the flow FAILED with an error "
                       "naming the URL and the HTTP 500",
                   kept="the previous cached file, byte for byte; no partial file; no model version")
def test_a_source_that_keeps_failing_fails_the_run_after_the_retries(harness, http_server, cache):
    from flows.core.sources import SourceUnavailable
    from flows.nightly import nightly

    base, handler = http_server
    handler.routes["/down.csv"] = lambda n: (500, "text/plain", b"oops")
    earlier = b"ds,y\n2020-01-01,1\n"
    _url_cache(cache, base + "/down.csv").write_bytes(earlier)  # what an earlier night downloaded
    state = nightly(overrides={**SHORT, "source": base + "/down.csv", "model_name": "retry-down"}, return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, SourceUnavailable) and str(error) == f"{base}/down.csv: download failed with HTTP 500 " \
                                                                  "Internal Server Error"
    assert handler.hits["/down.csv"] == 3
    assert [p.read_bytes() for p in cache.iterdir()] == [earlier]
    assert not _versions("retry-down")


@pytest.mark.fault(fault="a download that times out",
                   did="each attempt abandoned after the timeout ($NNFORECAST_DOWNLOAD_TIMEOUT), retried by the "
                       "task, then an error saying it timed out",
                   kept="the previous cached file; no partial file")
def test_a_source_that_does_not_answer_times_out_on_every_attempt(harness, http_server, cache, monkeypatch):
    from flows.nightly import nightly

    base, handler = http_server

    def slow(n):
        time.sleep(1.5)
        return 200, "text/csv", b"ds,y\n"

    handler.routes["/slow.csv"] = slow
    monkeypatch.setenv("NNFORECAST_DOWNLOAD_TIMEOUT", "0.3")
    t0 = time.monotonic()
    state = nightly(overrides={**SHORT, "source": base + "/slow.csv", "model_name": "retry-slow"}, return_state=True)
    assert state.is_failed() and "timed out" in str(state.result(raise_on_failure=False))
    assert handler.hits["/slow.csv"] == 3 and time.monotonic() - t0 < 60
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("status, ctype, body, message", [
    (404, "text/plain", b"no such file", "download failed with HTTP 404 Not Found"),
    (200, "text/html", b"<html><body>sign in</body></html>", "the server returned an HTML page (text/html), not CSV"),
])
@pytest.mark.fault(fault="a source answering HTTP 404, or an HTML page",
                   did="flow FAILED in load_series at once, no retry, naming the URL and the problem",
                   kept="the cache and the registry untouched")
def test_bad_data_from_a_source_fails_at_once(harness, http_server, cache, status, ctype, body, message):
    from flows.core.sources import DataError
    from flows.nightly import nightly

    base, handler = http_server
    handler.routes["/bad.csv"] = lambda n: (status, ctype, body)
    state = nightly(overrides={**SHORT, "source": base + "/bad.csv", "model_name": "retry-bad"}, return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, DataError) and str(error) == f"{base}/bad.csv: {message}"
    assert handler.hits["/bad.csv"] == 1
    assert list(cache.iterdir()) == [] and not _versions("retry-bad")
