"""REST serving of the champion (ops/serve.py): MLflow's scoring server, started on a free loopback port against
the test's MLflow store, answers recent history with the forecast the nightly run recorded (its RunSummary,
``forecasts.csv`` and the ledger's candidate rows) — one series as a window array, a panel as a long table — and
a bad request with a 4xx that says why, after which it still answers. Every server a test starts is stopped,
also when the test fails."""
import contextlib
import importlib.util
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .test_panels import panel

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("serve", ROOT / "ops" / "serve.py")
serve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serve)

pytestmark = pytest.mark.flow

SHORT = dict(n_values=600, horizon=3, hidden_size=4, epochs=3, lr=0.01, seed=1, stat_baselines="none",
             figures=False, experiment="serving-test")
ONE = dict(SHORT, source="sp500", window=20, test_size=40, model_name="serving-one")
PANEL = dict(SHORT, id_column="shop", value_column="sales", window=6, test_size=2, model_name="serving-panel")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else "(no log)"


@contextlib.contextmanager
def _serving(model_name: str, log: Path):
    """The champion's scoring server on a free loopback port: (URL, process), stopped on leaving, whatever happened."""
    port = _free_port()
    proc = serve.start(model_name, port, dict(os.environ), log=log)
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            serve.wait_ready(url, 90, proc)
        except serve.ServeError as e:
            pytest.fail(f"{e}\n{_tail(log)}")
        yield url, proc
    finally:
        serve.stop(proc)


def _post(url: str, payload) -> tuple[int, dict]:
    """POST a JSON payload to /invocations: (HTTP status, decoded body)."""
    req = urllib.request.Request(f"{url}/invocations", data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _recorded(summary, model_name: str, tmp: Path) -> pd.DataFrame:
    """The forecast the night recorded, ``unique_id, ds, step, yhat``: its ``forecasts.csv``, checked equal to the
    RunSummary's and to the ledger's candidate rows of the version."""
    from flows.runtime import ledger, tracking

    local = tracking.client().download_artifacts(summary.run_id, "forecasts.csv", str(tmp))
    logged = pd.read_csv(local, dtype={"unique_id": str}, parse_dates=["ds"], float_precision="round_trip")
    np.testing.assert_array_equal(logged["yhat"], summary.forecast.yhat)
    engine = ledger.open_ledger(None)
    try:
        rows = ledger.read(engine, model_name)
    finally:
        engine.dispose()
    rows = rows[(rows["role"] == "candidate") & (rows["model_version"] == summary.version)]
    np.testing.assert_array_equal(rows["yhat"], logged["yhat"])
    assert list(rows["unique_id"]) == list(logged["unique_id"]) and list(rows["step"]) == list(logged["step"])
    return logged


@pytest.fixture(scope="module")
def one_series(harness, sp500, tmp_path_factory):
    """sp500's nightly model, served: (URL, process, recorded forecast, the last window of values)."""
    from flows.nightly import nightly

    tmp = tmp_path_factory.mktemp("serving-one")
    summary = nightly(overrides=ONE)
    assert summary.status == "champion", summary
    recorded = _recorded(summary, ONE["model_name"], tmp)
    with _serving(ONE["model_name"], tmp / "server.log") as (url, proc):
        yield url, proc, recorded, [float(v) for v in sp500.values[-ONE["window"]:]]


@pytest.fixture(scope="module")
def panel_served(harness, tmp_path_factory):
    """A two-series panel's nightly model, served: (URL, process, recorded forecast, the recent history)."""
    from flows.nightly import nightly

    tmp = tmp_path_factory.mktemp("serving-panel")
    values, offsets, times, ids = panel(lengths=(60, 48))
    data = pd.DataFrame({"shop": np.repeat(ids, np.diff(offsets)), "ds": times, "sales": values})
    data.to_csv(tmp / "shops.csv", index=False)
    summary = nightly(overrides=dict(PANEL, source=str(tmp / "shops.csv")))
    assert summary.status == "champion", summary
    recorded = _recorded(summary, PANEL["model_name"], tmp)
    assert sorted(set(recorded["unique_id"])) == ["a", "b"]
    history = data.groupby("shop").tail(PANEL["window"]).rename(columns={"shop": "unique_id", "sales": "y"})
    with _serving(PANEL["model_name"], tmp / "server.log") as (url, proc):
        yield url, proc, recorded, history


def _split(history: pd.DataFrame) -> dict:
    """``dataframe_split`` of recent history, values at full precision (``DataFrame.to_json`` keeps 10 digits)."""
    return {"columns": ["unique_id", "ds", "y"],
            "data": [[str(u), pd.Timestamp(d).isoformat(), float(y)] for u, d, y in history.itertuples(index=False)]}


@pytest.mark.parametrize("key", ["inputs", "instances"])
def test_one_series_is_answered_with_the_recorded_forecast(one_series, key):
    url, _, recorded, window = one_series
    status, body = _post(url, {key: [window]})
    assert status == 200, body
    np.testing.assert_array_equal(np.array(body["predictions"]), recorded["yhat"].to_numpy()[None, :])


@pytest.mark.parametrize("form", ["dataframe_split", "dataframe_records"])
def test_a_panel_is_answered_with_the_recorded_forecast(panel_served, form):
    url, _, recorded, history = panel_served
    split = _split(history.sample(frac=1.0, random_state=3))   # any order: the model sorts by series and date
    payload = split if form == "dataframe_split" else [dict(zip(split["columns"], row)) for row in split["data"]]
    status, body = _post(url, {form: payload})
    assert status == 200, body
    served = pd.DataFrame(body["predictions"])
    assert list(served.columns) == ["unique_id", "ds", "step", "yhat"]
    assert list(served["unique_id"]) == list(recorded["unique_id"]) and list(served["step"]) == list(recorded["step"])
    assert list(pd.to_datetime(served["ds"])) == list(recorded["ds"])
    np.testing.assert_array_equal(served["yhat"], recorded["yhat"])


def _short_window(window):
    return {"inputs": [window[1:]]}


def _nan_window(window):
    return {"inputs": [window[:-1] + [float("nan")]]}   # json writes NaN, and MLflow's parser reads it


def _short_series(history):
    return {"dataframe_split": _split(history.drop(index=history.index[history["unique_id"] == "a"][0]))}


def _unknown_series(history):
    return {"dataframe_split": _split(history.assign(unique_id=history["unique_id"].replace("b", "z")))}


BAD = [  # (served model, payload from its recent history, what the body must say)
    ("one_series", _short_window, "Shape of input (1, 19) does not match expected shape (-1, 20)"),   # the signature
    ("one_series", _nan_window, "ValueError: input windows contain NaN or infinite values"),            # the model
    ("panel_served", _short_series, "ValueError: series with fewer than window=6 recent values: ['a']"),
    ("panel_served", _unknown_series, "ValueError: series the model was not trained on: ['z']"),
]


@pytest.mark.parametrize("served, bad, says", BAD, ids=[b[1].__name__.strip("_") for b in BAD])
def test_a_bad_request_gets_a_4xx_that_says_why_and_the_server_keeps_serving(request, served, bad, says):
    url, proc, recorded, recent = request.getfixturevalue(served)
    status, body = _post(url, bad(recent))
    assert status == 400, body
    assert says in body["message"] + body.get("stack_trace", ""), body
    assert proc.poll() is None
    with urllib.request.urlopen(f"{url}/ping", timeout=5) as r:
        assert r.status == 200
    status, body = _post(url, {"inputs": [recent]} if served == "one_series" else {"dataframe_split": _split(recent)})
    assert status == 200 and len(body["predictions"]) == (1 if served == "one_series" else len(recorded)), body


def test_a_missing_model_or_champion_is_refused_before_anything_starts(harness):
    from flows.runtime import tracking

    env = dict(os.environ)
    with pytest.raises(serve.ServeError, match=r"no registered model 'serving-nothing' in sqlite:///.*: run "
                                               r"`python -m flows.nightly --model-name serving-nothing` first"):
        serve.start("serving-nothing", _free_port(), env)
    tracking.client().create_registered_model("serving-no-champion")
    with pytest.raises(serve.ServeError, match=r"'serving-no-champion' has no version with the alias 'champion' .*"
                                               r"\(its aliases: none\)"):
        serve.start("serving-no-champion", _free_port(), env)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_the_command_line_serves_prints_a_working_example_and_stops_on_a_signal(one_series, tmp_path, stop_signal):
    """``python ops/serve.py``: ready line, an example curl the server answers; SIGTERM or Ctrl-C (SIGINT) → exit 0,
    nothing left listening."""
    _, _, recorded, _ = one_series
    port, out = _free_port(), tmp_path / "serve.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen([sys.executable, str(ROOT / "ops" / "serve.py"), "--model-name", ONE["model_name"],
                                 "--port", str(port)], cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while "ready in" not in out.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        text = out.read_text()
        assert "ready in" in text, text
        assert f"http://127.0.0.1:{port}/invocations" in text
        curl = shlex.split(next(line for line in text.splitlines() if line.strip().startswith("curl ")))
        status, body = _post(f"http://127.0.0.1:{port}", json.loads(curl[curl.index("-d") + 1]))
        assert status == 200 and len(body["predictions"][0]) == len(recorded), body
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=30) == 0, out.read_text()
    finally:
        if proc.poll() is None:   # the test failed before SIGTERM did its work: serve.py stops its server on SIGTERM
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in _serving_processes(port):   # the last resort: what this test's serve.py started
            os.kill(pid, signal.SIGKILL)
    assert "stopping the scoring server" in out.read_text()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # closed connections may linger in TIME_WAIT
        s.bind(("127.0.0.1", port))   # nothing listens on the port any more: uvicorn is gone
    assert not _serving_processes(port)


def _serving_processes(port: int) -> list[int]:
    """PIDs of live processes serving on this port: ``mlflow models serve`` and the ``uvicorn`` it runs."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        ours = b"mlflow.pyfunc.scoring_server.app:app" in cmd or (b"models" in cmd and b"serve" in cmd)
        if state != "Z" and ours and str(port).encode() in cmd:
            found.append(int(d.name))
    return found
