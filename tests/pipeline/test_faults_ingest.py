"""The malformed-input catalogue at flow level: a bad source fails the nightly flow, nothing else moves.

One successful short run first makes a champion. Then every case feeds the flow one fault — bytes
written by the test to a temporary file, a corrupted copy of the registered S&P 500 file in a
separate cache directory, or an HTML page served on 127.0.0.1 — and checks

* the flow run FAILED in the stage that validates the input (``load_series``; ``make_windows``
  for a series too short to window), with an error naming the problem and the line;
* the model registry did not move: no new version, ``champion`` on the same version;
* the MLflow run of the failed flow is FAILED;
* the data cache holds exactly the bytes it held before (a corrupt file is not replaced).

Each parameter carries a ``fault`` mark: one row of the README's fault table
(``tests/pipeline/test_fault_table.py``).
"""
from __future__ import annotations

import http.server
import re
import threading
import traceback
from pathlib import Path

import numpy as np
import pytest


pytestmark = pytest.mark.flow

EXPERIMENT, MODEL_NAME = "faults", "faults-model"
CONFIG = dict(n_values=900, window=20, test_size=60, hidden_size=6, epochs=4, lr=0.01, seed=1, log_every=2,
              experiment=EXPERIMENT, model_name=MODEL_NAME)  # the short configuration of test_flow.py
SP500_SHA256 = "80c6aeb546bad43fb68b2facdb1972c2693e565838d45d8fe0eae0715f177c32"
KEPT = "champion and registry untouched; MLflow run FAILED"

# ----------------------------------------------------------------------------------------------
# Input files: a valid base series, then one fault at a known line
# ----------------------------------------------------------------------------------------------
N_ROWS = 1000  # long enough for the SHORT config (n_values 900), so each fault is the only problem
BAD_ROW = 500  # 0-based data row that receives the fault: file line BAD_ROW + 2 (line 1 is the header)
BAD_LINE = BAD_ROW + 2


def base_rows(n: int = N_ROWS) -> list[tuple[str, str]]:
    """A valid daily series as (date, value) text pairs: business days, a positive random walk."""
    rng = np.random.default_rng(20260101)
    dates = np.busday_offset("2019-01-01", np.arange(n), roll="forward")  # gaps of at most 3 days
    values = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, size=n)))
    return [(str(d), f"{v:.4f}") for d, v in zip(dates, values)]


def to_csv(rows, header: str = "ds,y", sep: str = ",") -> bytes:
    return (header + "\n" + "".join(f"{d}{sep}{v}\n" for d, v in rows)).encode()


def with_value(value: str, row: int = BAD_ROW) -> bytes:
    """The base file with the value of one data row replaced."""
    rows = base_rows()
    rows[row] = (rows[row][0], value)
    return to_csv(rows)


def with_date_of(source_row: int, row: int = BAD_ROW) -> bytes:
    """The base file with the date of ``row`` replaced by the date of ``source_row``."""
    rows = base_rows()
    rows[row] = (rows[source_row][0], rows[row][1])
    return to_csv(rows)


def with_gap(business_days: int, row: int = BAD_ROW) -> bytes:
    """The base file with every date from ``row`` on moved ``business_days`` later (still sorted, still weekdays)."""
    rows = base_rows()
    shifted = np.busday_offset(np.array([d for d, _ in rows[row:]], dtype="datetime64[D]"), business_days)
    rows[row:] = [(str(d), v) for d, (_, v) in zip(shifted, rows[row:])]
    return to_csv(rows)


def long_csv(freq: str, n: int = 24, drop: tuple | None = None, duplicate: tuple | None = None) -> bytes:
    """Two series, A and B, in long format at ``freq``; ``drop=(id, k)`` removes B's k-th row,
    ``duplicate=(id, k)`` repeats A's k-th row."""
    import pandas as pd

    times = [str(t.date()) for t in pd.date_range("2019-01-01", periods=n, freq=freq)]
    rows = []
    for sid in ("A", "B"):
        for k, t in enumerate(times):
            if drop == (sid, k):
                continue
            rows.append(f"{sid},{t},{100 + k}")
            if duplicate == (sid, k):
                rows.append(f"{sid},{t},{100 + k}")
    return ("unique_id,ds,y\n" + "\n".join(rows) + "\n").encode()


def truncated() -> bytes:
    """The base file cut inside the last line's date, as an interrupted download leaves it."""
    rows = base_rows()
    return to_csv(rows[:-1]) + rows[-1][0][:7].encode()


def non_utf8() -> bytes:
    data = to_csv(base_rows())
    lines = data.split(b"\n")
    lines[BAD_LINE - 1] = lines[BAD_LINE - 1].split(b",")[0] + b",\xff\xfe1.0"  # Latin-1 debris
    return b"\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Sources: each maker puts the fault in place and returns what the flow's ``source`` parameter gets
# ----------------------------------------------------------------------------------------------
def file_source(make_bytes):
    """A maker that writes ``make_bytes()`` to a temporary CSV file."""

    def make(tmp_path: Path, cache: Path, request) -> str:
        path = tmp_path / "prices.csv"
        path.write_bytes(make_bytes())
        return str(path)

    return make


def corrupt_cached_sp500(tmp_path: Path, cache: Path, request) -> str:
    """The registered source with a cached copy whose bytes changed: one digit of line 1000 differs.

    ``resolve_source`` looks in the cache directory first and only consults mirrors or the network
    when the file is absent, so the corrupt copy is what the flow finds.
    """
    good = request.getfixturevalue("seeded_cache") / "SP500_Datos.csv"
    data = good.read_bytes()
    assert data.count(b"\n1983-03-21,152.00\r\n") == 1  # line 1000 of the file (CRLF line ends)
    (cache / "SP500_Datos.csv").write_bytes(data.replace(b"\n1983-03-21,152.00", b"\n1983-03-21,153.00"))
    return "sp500"


def html_page(tmp_path: Path, cache: Path, request) -> str:
    """A URL on a loopback server that answers 200 with an HTML error page (a proxy or a soft 404)."""
    return request.getfixturevalue("html_server") + "/SP500_Datos.csv"


HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>Not Found</title></head><body>No such file</body></html>\n"


class _HtmlHandler(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):  # noqa: N802
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(HTML_PAGE)))
        self.end_headers()
        self.wfile.write(HTML_PAGE)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def html_server():
    """Base URL of an HTTP server on 127.0.0.1 that serves an HTML page for every path."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HtmlHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


# ----------------------------------------------------------------------------------------------
# The catalogue: (maker, flow overrides, failing task, error regex) + the fault-table row
# ----------------------------------------------------------------------------------------------
L = BAD_LINE  # short alias for the patterns below


def case(id, make, task, pattern, *, fault, did, overrides=None, kept=KEPT):
    return pytest.param(make, overrides or {}, task, pattern, id=id,
                        marks=pytest.mark.fault(fault=fault, did=did, kept=kept))


CASES = [
    case("empty-file", file_source(lambda: b""), "load_series", r"prices\.csv: the file is empty",
         fault="empty file", did="flow FAILED in load_series: the file is empty"),
    case("header-only", file_source(lambda: b"ds,y\n"), "load_series",
         r"prices\.csv: the file has a header but no data rows",
         fault="header only", did="flow FAILED in load_series: header but no data rows"),
    case("missing-date-column", file_source(lambda: to_csv(base_rows(), header="date,y")), "load_series",
         r"prices\.csv line 1: missing column\(s\) 'ds'; the header has \['date', 'y'\]",
         fault="missing date column", did="flow FAILED in load_series: line 1: missing column 'ds'"),
    case("missing-value-column", file_source(lambda: to_csv(base_rows(), header="ds,close")), "load_series",
         r"prices\.csv line 1: missing column\(s\) 'y'; the header has \['ds', 'close'\]",
         fault="missing value column", did="flow FAILED in load_series: line 1: missing column 'y'"),
    case("non-numeric", file_source(lambda: with_value("n/a")), "load_series",
         rf"line {L}: value 'n/a' in column 'y' is not a number",
         fault="non-numeric value", did=f"flow FAILED in load_series: line {L}: value 'n/a' is not a number"),
    case("nan", file_source(lambda: with_value("NaN")), "load_series",
         rf"line {L}: value 'NaN' in column 'y' is not finite",
         fault="NaN value", did=f"flow FAILED in load_series: line {L}: value 'NaN' is not finite"),
    case("plus-inf", file_source(lambda: with_value("inf")), "load_series",
         rf"line {L}: value 'inf' in column 'y' is not finite",
         fault="+inf value", did=f"flow FAILED in load_series: line {L}: value 'inf' is not finite"),
    case("minus-inf", file_source(lambda: with_value("-Infinity")), "load_series",
         rf"line {L}: value '-Infinity' in column 'y' is not finite",
         fault="−inf value", did=f"flow FAILED in load_series: line {L}: value '-Infinity' is not finite"),
    case("negative-price", file_source(lambda: with_value("-12.5")), "load_series",
         rf"line {L}: value '-12.5' in column 'y' is not positive; the 'return' target takes logarithms",
         overrides={"target": "return"}, fault="negative price (target return)",
         did=f"flow FAILED in load_series: line {L}: value '-12.5' is not positive"),
    case("zero-price", file_source(lambda: with_value("0")), "load_series",
         rf"line {L}: value '0' in column 'y' is not positive",
         overrides={"target": "return"}, fault="zero price (target return)",
         did=f"flow FAILED in load_series: line {L}: value '0' is not positive"),
    case("duplicate-date", file_source(lambda: with_date_of(BAD_ROW - 1)), "load_series",
         rf"line {L}: duplicate date \d{{4}}-\d\d-\d\d \(also on line {L - 1}\)",
         fault="duplicate dates", did=f"flow FAILED in load_series: line {L}: duplicate date (also on line {L - 1})"),
    case("unsorted-dates", file_source(lambda: with_date_of(BAD_ROW - 2)), "load_series",
         rf"line {L}: date \S+ comes before \S+ on line {L - 1}; dates must be sorted",
         fault="unsorted dates", did=f"flow FAILED in load_series: line {L}: date comes before line {L - 1}'s"),
    case("gap", file_source(lambda: with_gap(42)), "load_series",
         rf"line {L}: 42 missing business days between \S+ \(line {L - 1}\) and \S+; the series must be complete "
         r"at frequency B: fill gaps with --fill ffill\|interpolate, accept up to N missing with --max-gap N \(now 5\)",
         fault="a gap of 42 business days (2 months) in a business-day series (market holidays: at most 5)",
         did=f"flow FAILED in load_series: line {L}: the missing business days, naming --fill, --max-gap and --freq"),
    case("missing-month", file_source(lambda: long_csv("MS", drop=("B", 5))), "load_series",
         r"line \d+: series 'B': 1 missing months between 2019-05-01 \(line \d+\) and 2019-07-01",
         overrides={"id_column": "unique_id"}, fault="a missing month in one series of a monthly panel",
         did="flow FAILED in load_series: names the series, the month before and after, --fill and --max-gap"),
    case("weekend-in-business-days", file_source(lambda: to_csv(base_rows()).replace(b"2020-11-20,", b"2020-11-21,")),
         "load_series", r"line \d+: 2020-11-21 is not on the B grid \(business days\); is the frequency right\? "
         r"\(--freq\)", overrides={"freq": "B"}, fault="a Saturday in a business-day series (--freq B)",
         did="flow FAILED in load_series: the date is not on the B grid; --freq named"),
    case("time-of-day-in-daily", file_source(lambda: long_csv("D").replace(b"2019-01-09,", b"2019-01-09 12:00,", 1)),
         "load_series", r"line 10: series 'A': 2019-01-09T12:00:00 is not on the D grid \(days\)",
         overrides={"id_column": "unique_id"}, fault="a time of day in a daily series",
         did="flow FAILED in load_series: the series and timestamp off the D grid"),
    case("duplicate-in-series", file_source(lambda: long_csv("MS", duplicate=("A", 3))), "load_series",
         r"line \d+: series 'A': duplicate date 2019-04-01 \(also on line \d+\)",
         overrides={"id_column": "unique_id"}, fault="a duplicate timestamp within one series of a panel",
         did="flow FAILED in load_series: the series, the date and both lines"),
    case("missing-id-column", file_source(lambda: long_csv("MS")), "load_series",
         r"line 1: missing column\(s\) 'store'; the header has \['unique_id', 'ds', 'y'\]; name the columns with "
         r"--id-column", overrides={"id_column": "store"}, fault="an id column the file does not have",
         did="flow FAILED in load_series: line 1: missing column, naming --id-column"),
    case("hole-in-wide-column", file_source(lambda: b"ds,a,b\n2019-01-01,1,\n2019-02-01,2,5\n2019-03-01,3,\n"
                                                    b"2019-04-01,4,6\n"),
         "load_series", r"line 4: missing value in column 'b'", overrides={"value_column": "a,b"},
         fault="an empty cell inside a series of a wide file (one column per series)",
         did="flow FAILED in load_series: line 4: missing value in column 'b' (a late start is allowed)"),
    case("too-short", file_source(lambda: to_csv(base_rows(50))), "make_windows",
         r"series too short: 50 values give 30 windows of 20 → 1, but test 60 .* need at least \d+ values",
         fault="series shorter than window + splits",
         did="flow FAILED in make_windows: series too short (50 values)"),
    case("semicolon-delimiter", file_source(lambda: to_csv(base_rows(), header="ds;y", sep=";")), "load_series",
         r"line 1: missing column\(s\) 'ds', 'y'.*delimited by something other than ','",
         fault="wrong delimiter (;)", did="flow FAILED in load_series: line 1: missing columns, delimiter hint"),
    case("non-utf8", file_source(non_utf8), "load_series", rf"line {L}: bytes that are not UTF-8 at byte offset \d+",
         fault="non-UTF-8 bytes", did=f"flow FAILED in load_series: line {L}: bytes that are not UTF-8"),
    case("truncated-last-line", file_source(truncated), "load_series",
         rf"line {N_ROWS + 1}: expected 2 fields, got 1 \('\d{{4}}-\d\d'; truncated or malformed line\)",
         fault="truncated last line",
         did=f"flow FAILED in load_series: line {N_ROWS + 1}: expected 2 fields, got 1"),
    case("corrupt-cached-sp500", corrupt_cached_sp500, "load_series",
         rf"sp500: cached file \S+SP500_Datos\.csv has sha256 [0-9a-f]{{64}}, expected {SP500_SHA256} "
         r"\(corrupt or changed; delete it to download again\)",
         fault="cached registered file with a wrong checksum",
         did="flow FAILED in load_series: sha256 mismatch of the cached file",
         kept=KEPT + "; corrupt file left as it was"),
    case("html-page", html_page, "load_series",
         r"http://127\.0\.0\.1:\d+/SP500_Datos\.csv: the server returned an HTML page \(text/html; charset=utf-8\), "
         r"not CSV",
         fault="HTML page served instead of CSV",
         did="flow FAILED in load_series: the server returned an HTML page",
         kept=KEPT + "; nothing cached"),
]


# ----------------------------------------------------------------------------------------------
# Fixtures and helpers
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def champion(harness, seeded_cache) -> str:
    """One successful short run of the flow, so that ``MODEL_NAME`` has a champion; returns its version."""
    from flows.nightly import nightly

    state = nightly(overrides=CONFIG, return_state=True)
    assert state.is_completed(), state
    summary = state.result()
    assert summary.status == "champion"
    return summary.version


def registry_state() -> tuple[list[str], str]:
    """The model's version numbers and the version the ``champion`` alias points at."""
    from flows.runtime import tracking

    c = tracking.client()
    versions = sorted(str(mv.version) for mv in c.search_model_versions(f"name='{MODEL_NAME}'"))
    return versions, str(c.get_model_version_by_alias(MODEL_NAME, "champion").version)


def failing_task(error: BaseException) -> str:
    """The task (of ``flows/tasks.py``) that raised ``error`` inside the nightly flow, from the traceback.

    Read from the traceback, not from the Prefect API: Prefect 3 records task-run states through
    events that the server processes asynchronously, so right after the flow returns the API may
    still show the task as running.
    """
    import flows.nightly
    import flows.tasks

    frames = [(frame.f_code.co_filename, frame.f_code.co_name) for frame, _ in traceback.walk_tb(error.__traceback__)]
    assert (flows.nightly.__file__, "nightly") in frames, frames  # raised through the flow
    tasks = [name for file, name in frames if file == flows.tasks.__file__]
    return tasks[0]  # the task function itself (further frames would be helpers it called)


def mlflow_run_of(flow_run_id):
    """The MLflow run the flow created (tagged with the Prefect flow run id)."""
    from flows.runtime import tracking

    c = tracking.client()
    experiment_id = c.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = c.search_runs([experiment_id], filter_string=f"tags.prefect_flow_run_id = '{flow_run_id}'")
    assert len(runs) == 1, runs
    return runs[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# ----------------------------------------------------------------------------------------------
# The test
# ----------------------------------------------------------------------------------------------
def test_base_series_is_valid_and_long_enough(tmp_path):
    """The faults below are the only problems: the unmodified base file loads and windows cleanly."""
    from flows.core.config import DataSpec, WindowSpec
    from flows.core.ingest import load_series
    from flows.core.windowing import make_windows

    path = Path(tmp_path) / "base.csv"
    path.write_bytes(to_csv(base_rows()))
    panel = load_series(DataSpec(source=str(path)), positive=True)
    assert len(panel) == N_ROWS and panel.freq == "B" and np.all(np.diff(panel.times).astype(int) > 0)
    w = make_windows(panel.values[-CONFIG["n_values"]:], WindowSpec(window=CONFIG["window"], test_size=CONFIG["test_size"]))
    assert len(w.test) == CONFIG["test_size"]
    for freq in ("MS", "D"):  # the panels the cases below spoil are valid as made
        path.write_bytes(long_csv(freq))
        assert load_series(DataSpec(source=str(path), id_column="unique_id")).n_series == 2


@pytest.mark.parametrize("make_source,overrides,task,pattern", CASES)
def test_bad_source_fails_the_flow_and_leaves_the_registry_alone(make_source, overrides, task, pattern,
                                                                 champion, tmp_path, monkeypatch,
                                                                 request):
    """The flow fails in the validating task with the problem and its line; registry, champion and cache stay."""
    from flows.core.sources import DataError
    from flows.core.windowing import WindowingError
    from flows.nightly import nightly

    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("NNFORECAST_CACHE_DIR", str(cache))
    source = make_source(tmp_path, cache, request)
    cache_before = snapshot(cache)
    registry_before = registry_state()
    html_hits = _HtmlHandler.hits
    assert registry_before[1] == champion

    state = nightly(overrides={**CONFIG, **overrides, "source": source}, return_state=True)

    assert state.is_failed(), state
    error = state.result(raise_on_failure=False)
    assert isinstance(error, WindowingError if task == "make_windows" else DataError), repr(error)
    assert re.search(pattern, str(error)), f"{pattern!r} not found in {str(error)!r}"
    assert failing_task(error) == task
    assert registry_state() == registry_before  # no new version, champion on the same version
    run = mlflow_run_of(state.state_details.flow_run_id)
    assert run.info.status == "FAILED"
    assert ("data_sha256" in run.data.tags) == (task != "load_series")  # tagged only once the data loaded
    assert snapshot(cache) == cache_before  # nothing downloaded, replaced or removed
    if make_source is html_page:  # bad data is not retried (the task retries I/O errors only)
        assert _HtmlHandler.hits == html_hits + 1
