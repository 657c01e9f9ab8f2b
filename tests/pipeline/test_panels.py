"""Panels: windows series by series, one scaler per series, per-series scores, forecasts and the served model."""
import numpy as np
import pandas as pd
import pytest

from flows.core.config import DataSpec, RunConfig, WindowSpec
from flows.core.evaluation import evaluate, forecast_next
from flows.core.ingest import load_series
from flows.core.model_io import forecast_frame, load_forecaster, save_forecaster
from flows.core.training import train
from flows.core.windowing import make_windows, window_panel


def panel(lengths=(60, 45, 12), seed=0):
    rng = np.random.default_rng(seed)
    values = np.concatenate([100 * (s + 1) + np.cumsum(rng.normal(size=n)) for s, n in enumerate(lengths)])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    times = np.concatenate([pd.date_range("2015-01-01", periods=n, freq="MS").values.astype("datetime64[D]")
                            for n in lengths])
    return values, offsets, times, np.array(["a", "b", "c"][:len(lengths)], dtype=object)


class Naive:
    """Forecasts no change: on the delta or return target, exactly the naive forecast."""

    stateful = False
    dtype = np.float64

    def __init__(self, horizon):
        self.horizon = horizon

    def forward(self, X, state=None):
        return np.zeros((len(X), self.horizon)), ()


def test_every_series_is_windowed_on_its_own_and_a_short_one_is_listed():
    values, offsets, times, ids = panel()
    spec = WindowSpec(window=6, horizon=3, test_size=2, target="level")
    w = window_panel(values, offsets, spec, np.float64, times, "MS", None, ids)
    assert list(w.ids) == ["a", "b"] and w.skipped == ("c",)            # 12 values: too short for 6 → 3 + splits
    for split in (w.train, w.val, w.test):
        start, end = w.starts[split.series], w.ends[split.series]
        assert np.all(split.index - spec.window >= start) and np.all(split.index + spec.horizon <= end)
    for s in range(2):   # the last test_size windows of each series end at its last value
        rows = w.test.series == s
        assert rows.sum() == 2 and w.test.index[rows][-1] + spec.horizon == w.ends[s]
        # each series scaled on its own training part (min-max of the values its training windows touch)
        assert w.scalers.params["lo"][s] == values[w.starts[s]:w.train_ends[s]].min()
        assert w.scalers.params["hi"][s] == values[w.starts[s]:w.train_ends[s]].max()
    one = make_windows(values[:60], spec, np.float64, times[:60], "MS")
    np.testing.assert_array_equal(one.train.X, w.train.X[w.train.series == 0])
    np.testing.assert_array_equal(one.test.y, w.test.y[w.test.series == 0])


def test_per_series_scores_and_the_panel_aggregates():
    values, offsets, times, ids = panel(lengths=(60, 50))
    w = window_panel(values, offsets, WindowSpec(window=6, horizon=3, test_size=4, target="delta"), np.float64,
                     times, "MS", None, ids)
    ev = evaluate(Naive(3), w)
    t = ev.per_series
    np.testing.assert_allclose(t["model_mae"], t["naive_mae"])
    for s in range(2):  # one series by hand: MAE of its test windows, scaled by its history before the test period
        rows = w.test.series == s
        mae = np.mean(np.abs(w.test.actual[rows] - w.test.last[rows, None]))
        before = values[w.starts[s]:w.test.index[rows][0]]
        assert t["naive_mae"][s] == pytest.approx(mae) and t["naive_mase"][s] == pytest.approx(
            mae / np.mean(np.abs(np.diff(before))))
    agg = ev.panel()
    assert agg["model_mase_mean"] == pytest.approx(np.mean(t["naive_mase"])) and agg["share_beating_naive"] == 0.0
    assert agg["series"] == 2


def test_the_employment_panel_reproduces_the_reference_baselines(seeded_cache, monkeypatch):
    """The issue's protocol: horizon 12, the last 12 months of every series as test, MASE scaled by each series'
    in-sample one-step naive MAE: naive 2.561 (median 2.030), seasonal naive 3.392 (2.180)."""
    monkeypatch.setenv("NNFORECAST_CACHE_DIR", str(seeded_cache))
    p = load_series(DataSpec(source="us_employment"))
    w = window_panel(p.values, p.offsets, WindowSpec(window=36, horizon=12, test_size=1), np.float32, p.times,
                     p.freq, None, p.ids)
    agg = evaluate(Naive(12), w).panel()
    assert (round(agg["naive_mase_mean"], 3), round(agg["naive_mase_median"], 3)) == (2.561, 2.030)
    assert (round(agg["snaive_mase_mean"], 3), round(agg["snaive_mase_median"], 3)) == (3.392, 2.180)
    assert w.season == 12 and agg["series"] == 148 and not w.skipped


def test_forecasts_of_every_series_and_the_served_model_agree(tmp_path):
    values, offsets, times, ids = panel(lengths=(60, 50))
    cfg = RunConfig.resolve(None, dict(window=6, horizon=3, test_size=2, target="delta", hidden_size=4, epochs=2,
                                       model="gru", dtype="float64"))
    w = window_panel(values, offsets, cfg.windows, np.float64, times, "MS", None, ids)
    result = train(w, cfg.model, cfg.training)
    f = forecast_next(result.model, w)
    assert list(f.unique_id) == ["a"] * 3 + ["b"] * 3 and list(f.step) == [1, 2, 3] * 2
    assert [str(d) for d in f.ds[:3]] == ["2020-01-01", "2020-02-01", "2020-03-01"]    # after each series' end
    assert [str(d) for d in f.ds[3:]] == ["2019-03-01", "2019-04-01", "2019-05-01"]
    forecaster = load_forecaster(save_forecaster(result.model, w, tmp_path / "model"))
    history = pd.DataFrame({"unique_id": np.repeat(["b", "a"], 8),      # any order, more rows than the window
                            "ds": np.concatenate([times[offsets[1] + 42:], times[52:60]]),
                            "y": np.concatenate([values[offsets[1] + 42:], values[52:60]])})
    served = forecast_frame(forecaster, history.sample(frac=1.0, random_state=1))
    expected = pd.DataFrame({"unique_id": f.unique_id.astype(str), "ds": f.ds, "step": f.step, "yhat": f.yhat})
    served = served.sort_values(["unique_id", "step"]).reset_index(drop=True)
    np.testing.assert_allclose(served["yhat"], expected["yhat"], rtol=1e-12)
    assert list(served["ds"].dt.strftime("%Y-%m-%d")) == [str(d) for d in f.ds]
    with pytest.raises(ValueError, match=r"series the model was not trained on: \['z'\]"):
        forecast_frame(forecaster, history.assign(unique_id="z"))
    with pytest.raises(ValueError, match="fewer than window=6"):
        forecast_frame(forecaster, history.groupby("unique_id").tail(3))


@pytest.mark.flow
def test_the_nightly_flow_trains_one_model_on_a_panel_and_serves_every_series(harness, tmp_path):
    import mlflow
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.nightly import nightly
    from flows.runtime import tracking

    values, offsets, times, ids = panel(lengths=(60, 48, 12))
    path = tmp_path / "shops.csv"
    pd.DataFrame({"shop": np.repeat(ids, np.diff(offsets)), "ds": times, "sales": values}).to_csv(path, index=False)
    state = nightly(overrides=dict(source=str(path), id_column="shop", value_column="sales", window=6, horizon=3,
                                   test_size=2, hidden_size=4, epochs=3, experiment="panel-flow",
                                   model_name="panel-model"), return_state=True)
    assert state.is_completed(), state
    summary = state.result()
    c = tracking.client()
    run = c.get_run(summary.run_id)
    m, tags = run.data.metrics, run.data.tags
    assert m["panel_series"] == 2 and 0 <= m["panel_share_beating_naive"] <= 1 and "panel_model_mase_median" in m
    assert tags["data_series"] == "3" and tags["data_freq"] == "MS" and tags["series_skipped"] == "1"
    local = c.download_artifacts(summary.run_id, "", str(tmp_path / "artifacts"))
    forecasts = pd.read_csv(f"{local}/forecasts.csv")
    assert list(forecasts.columns) == ["unique_id", "ds", "step", "yhat"] and len(forecasts) == 2 * 3
    assert list(pd.read_csv(f"{local}/per_series.csv")["unique_id"]) == ["a", "b"]
    assert (tmp_path / "artifacts" / "skipped_series.txt").read_text() == "c\n"
    # the registered model answers recent history of each series with the forecasts the run logged
    model = mlflow.pyfunc.load_model(f"models:/panel-model/{summary.version}")
    history = pd.DataFrame({"unique_id": np.repeat(["a", "b"], 6),
                            "ds": np.concatenate([times[54:60], times[offsets[1] + 42:offsets[2]]]),
                            "y": np.concatenate([values[54:60], values[offsets[1] + 42:offsets[2]]])})
    served = model.predict(history)
    np.testing.assert_allclose(served["yhat"], forecasts["yhat"], rtol=1e-6)
    with get_client(sync_client=True) as client:
        only = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        report = {a.key: a for a in client.read_artifacts(flow_run_filter=only)}["nightly-report"].data
    assert "## Across the 2 series (one global model)" in report and "left out: `c`" in report


@pytest.mark.parametrize("target", ["level", "delta", "return"])
def test_encoding_in_chunks_gives_the_same_windows(target, monkeypatch):
    from flows.core import windowing

    values, offsets, times, ids = panel(lengths=(60, 45, 50))
    spec = WindowSpec(window=6, horizon=2, test_size=3, target=target)
    whole = window_panel(values, offsets, spec, np.float32, times, "MS", None, ids)
    monkeypatch.setattr(windowing, "CHUNK", 7)   # chunks that cut through series and splits
    chunked = window_panel(values, offsets, spec, np.float32, times, "MS", None, ids)
    for a, b in ((whole.train, chunked.train), (whole.val, chunked.val), (whole.test, chunked.test)):
        np.testing.assert_array_equal(a.X, b.X)
        np.testing.assert_array_equal(a.y, b.y)
