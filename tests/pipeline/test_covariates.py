"""Covariates: read and validated like the target, calendar features, and where each kind enters a window."""
import numpy as np
import pandas as pd
import pytest

from flows.core import covariates as cv
from flows.core.config import ConfigError, DataSpec, RunConfig, WindowSpec
from flows.core.ingest import load_series
from flows.core.sources import DataError
from flows.core.windowing import window_panel


def test_calendar_features_are_continuous_cycles():
    t = np.array(["2014-01-05T06:00", "2014-01-06T00:00", "2014-01-06T18:00", "2014-12-31T23:30"],
                 dtype="datetime64[s]")
    f = cv.calendar_features(t, "hour,dayofweek,month,weekend")
    assert cv.calendar_columns("hour,dayofweek,month,weekend") == (
        "hour_sin", "hour_cos", "dayofweek_sin", "dayofweek_cos", "month_sin", "month_cos", "weekend")
    np.testing.assert_allclose(f[:, 0], [1, 0, -1, np.sin(2 * np.pi * 23.5 / 24)], atol=1e-12)   # 06:00, 00:00, 18:00
    np.testing.assert_allclose(f[1, 2:4], [0, 1], atol=1e-12)        # Monday: phase 0
    np.testing.assert_allclose(f[0, 2:4], [np.sin(2 * np.pi * 6 / 7), np.cos(2 * np.pi * 6 / 7)])   # Sunday
    np.testing.assert_allclose(f[3, 4:6], [np.sin(2 * np.pi * 11 / 12), np.cos(2 * np.pi * 11 / 12)])
    assert list(f[:, 6]) == [1, 0, 0, 0]                             # Sunday is a weekend day, Wednesday not
    with pytest.raises(ConfigError, match=r"parameter calendar='hour,season': unknown calendar feature season"):
        DataSpec(calendar="hour,season")


def write_long(path, rows=None):
    rng = np.random.default_rng(0)
    n = 40
    frame = pd.DataFrame({
        "shop": np.tile(["a", "b"], n),    # the two series interleave, row by row
        "ds": np.repeat(pd.date_range("2020-01-01", periods=n, freq="D").strftime("%Y-%m-%d"), 2),
        "y": rng.normal(size=2 * n).round(3) + 10, "price": np.arange(2 * n, dtype=float),
        "promo": np.tile([0.0, 1.0], n)})
    for (i, col), v in (rows or {}).items():
        frame[col] = frame[col].astype(object)
        frame.loc[i, col] = v
    frame.to_csv(path, index=False)
    return frame


def test_covariates_are_read_per_series_in_panel_order(tmp_path):
    frame = write_long(tmp_path / "shops.csv")
    p = load_series(DataSpec(source=str(tmp_path / "shops.csv"), id_column="shop", past_covariates="price",
                             future_covariates="promo"))
    assert p.covariate_names == ("price", "promo") and p.covariates.shape == (80, 2)
    a = frame[frame.shop == "a"]
    np.testing.assert_array_equal(p.column("price")[:40], a["price"])   # series a first, in time order
    np.testing.assert_array_equal(p.column("promo")[40:], 1.0)
    c = cv.of_panel(p, "price", "promo", "dayofweek")
    assert c.past_names == ("price",) and c.future_names == ("promo", "dayofweek_sin", "dayofweek_cos")
    assert c.channels == 4 and c.n_future == 3


@pytest.mark.parametrize("rows,flags,pattern", [
    ({}, dict(past_covariates="volume"), r"shops.csv line 1: missing column\(s\) 'volume'; .* name the columns "
                                         r"with --past-covariates"),
    ({(6, "price"): "n/a"}, dict(past_covariates="price"), r"shops.csv line 8: value 'n/a' in column 'price' is not "
                                                           r"a number"),
    ({(9, "promo"): ""}, dict(future_covariates="promo"), r"shops.csv line 11: missing value in covariate column "
                                                         r"'promo' \(--future-covariates\)"),
    ({(3, "price"): "inf"}, dict(past_covariates="price"), r"shops.csv line 5: value 'inf' in column 'price' is not "
                                                           r"finite"),
])
@pytest.mark.fault(fault="a bad covariate: a missing column, a cell that is not a number, an empty or infinite cell",
                   did="rejected before any work: the file, the line, the column and the flag that named it",
                   kept="everything: no flow run, no MLflow run")
def test_a_bad_covariate_names_the_line_and_the_column(tmp_path, rows, flags, pattern):
    write_long(tmp_path / "shops.csv", rows)
    with pytest.raises(DataError, match=pattern):
        load_series(DataSpec(source=str(tmp_path / "shops.csv"), id_column="shop", **flags))


@pytest.mark.fault(fault="covariates with a wide file; one column named as both an observed and a known-in-advance "
                         "covariate",
                   did="rejected before any work, naming the columns and the flags",
                   kept="everything: no flow run, no MLflow run")
def test_covariates_need_one_value_column_and_one_kind(tmp_path):
    pd.DataFrame({"ds": ["2020-01-01", "2020-01-02"], "a": [1.0, 2.0], "b": [3.0, 4.0], "t": [5.0, 6.0]}).to_csv(
        tmp_path / "wide.csv", index=False)
    with pytest.raises(DataError, match=r"wide.csv: covariates \(t\) need one value column: a single series or the "
                                        r"long format \(--id-column\), not a wide file of 2 series"):
        load_series(DataSpec(source=str(tmp_path / "wide.csv"), value_column="a,b", past_covariates="t"))
    with pytest.raises(ConfigError, match=r"parameter future_covariates='t,u': t also named in --past-covariates"):
        RunConfig.resolve(None, dict(past_covariates="t", future_covariates="t,u"))


def windows_with(past, future, n=60, spec=None, values=None):
    values = np.cumsum(np.random.default_rng(1).normal(size=n)) + 50 if values is None else values
    covs = cv.Covariates(past.reshape(n, -1), future.reshape(n, -1), ("p",), ("f",))
    spec = spec or WindowSpec(window=5, horizon=3, test_size=4, target="delta")
    return window_panel(values, np.array([0, n]), spec, np.float64, None, None, None, None, covs), values


def test_observed_covariates_enter_at_the_window_steps_only_and_known_ones_at_the_targets_too():
    """A covariate holding its own position: unscaled, an observed covariate in a window never goes past the
    window's last step (the forecast origin); the known-in-advance one reaches exactly the h target steps."""
    n = 60
    pos = np.arange(n, dtype=np.float64)
    w, _ = windows_with(pos, pos + 1000)
    for split in (w.train, w.val, w.test):
        begin = split.index - w.window
        s = w.cov_scaler
        past = split.X[:, :, 1] * s.std[0, 0] + s.mean[0, 0]
        ahead_in = split.X[:, :, 2] * s.std[0, 1] + s.mean[0, 1]
        ahead = split.future * s.std[0, 1] + s.mean[0, 1]
        np.testing.assert_allclose(past, begin[:, None] + np.arange(w.window))
        np.testing.assert_allclose(past.max(axis=1), split.index - 1)   # the last input step: the origin, never later
        np.testing.assert_allclose(ahead_in, 1000 + begin[:, None] + np.arange(w.window))
        np.testing.assert_allclose(ahead, 1000 + split.index[:, None] + np.arange(w.horizon))
        assert split.X.shape[2] == 3 and split.future.shape == (len(split), w.horizon)


def test_covariates_are_scaled_on_the_training_part_only():
    n = 60
    rng = np.random.default_rng(2)
    past, future = rng.normal(5, 2, n), rng.normal(-3, 4, n)
    w, values = windows_with(past, future)
    end = int(w.train_ends[0])
    np.testing.assert_allclose(w.cov_scaler.mean[0], [past[:end].mean(), future[:end].mean()])
    np.testing.assert_allclose(w.cov_scaler.std[0], [past[:end].std(), future[:end].std()])
    later = past.copy()
    later[end:] *= 100                                           # anything after the training part changes nothing
    w2, _ = windows_with(later, future, values=values)
    np.testing.assert_array_equal(w2.cov_scaler.mean, w.cov_scaler.mean)
    np.testing.assert_array_equal(w2.train.X, w.train.X)


def test_test_windows_a_stride_apart_end_at_the_series_end():
    """Day-ahead at every midnight: 48 half-hours a window, one window a day, the last one ending the series."""
    n = 48 * 20
    t = np.arange(np.datetime64("2014-01-01T00:00"), np.datetime64("2014-01-01T00:00") + np.timedelta64(30 * n, "m"),
                  np.timedelta64(30, "m"))
    values = 3 + np.sin(np.arange(n) * 2 * np.pi / 48)
    spec = WindowSpec(window=96, horizon=48, test_size=5, test_stride=48, target="delta", val_fraction=0.2)
    w = window_panel(values, np.array([0, n]), spec, np.float64, t, "30min", None, None)
    assert len(w.test) == 5 and w.test.index[-1] + 48 == n
    assert np.all(np.diff(w.test.index) == 48)
    assert all(str(d).endswith("T00:00") for d in w.test.dates[:, 0]), w.test.dates[:, 0]   # every origin: midnight
    # nothing trained or validated on reaches the first test target
    first = w.test.index[0]
    assert w.val.index.max() + 48 <= first and w.train.index.max() + 48 <= first
    assert w.val.index.max() + 48 == first                                          # and nothing more is left out
    from flows.core.windowing import min_length
    assert min_length(spec) == min_length(WindowSpec(window=96, horizon=48, test_size=4 * 48 + 1,
                                                     target="delta", val_fraction=0.2))


def test_rows_after_a_series_last_value_hold_the_known_covariates_of_the_next_periods(tmp_path):
    frame = write_long(tmp_path / "shops.csv")
    future = pd.DataFrame({"shop": ["b", "a", "b", "a"], "ds": ["2020-02-10", "2020-02-10", "2020-02-11", "2020-02-11"],
                           "y": ["", "", "", ""], "price": ["", "", "", ""], "promo": [1.0, 0.0, 1.0, 1.0]})
    pd.concat([frame, future]).to_csv(tmp_path / "shops.csv", index=False)
    p = load_series(DataSpec(source=str(tmp_path / "shops.csv"), id_column="shop", past_covariates="price",
                             future_covariates="promo"))
    assert len(p) == 80 and list(p.lengths) == [40, 40]              # the rows ahead are not values
    assert [str(t) for t in p.future.times[:2]] == ["2020-02-10", "2020-02-11"]
    np.testing.assert_array_equal(p.future.of(0)[:, 0], [0.0, 1.0])     # series a
    np.testing.assert_array_equal(p.future.of(1)[:, 0], [1.0, 1.0])     # series b


@pytest.mark.parametrize("ahead,pattern", [
    (dict(ds=["2020-02-10", "2020-02-12"], promo=[1.0, 1.0]),
     r"line 83: series 'a': date 2020-02-12 in the rows after the series' last value \(2020-02-09\) should be "
     r"2020-02-11"),
    (dict(ds=["2020-02-10", "2020-02-11"], promo=[1.0, ""]),
     r"line 83: missing value in covariate column 'promo' \(--future-covariates\) \(a row after the series' last "
     r"value"),
])
@pytest.mark.fault(fault="rows after a series' last value (the known-in-advance covariates of the next periods) "
                         "with a skipped period or an empty known covariate",
                   did="rejected before any work: the line, the series, the date expected or the column",
                   kept="everything: no flow run, no MLflow run")
def test_bad_rows_ahead_are_named(tmp_path, ahead, pattern):
    frame = write_long(tmp_path / "shops.csv")
    future = pd.DataFrame({"shop": "a", "y": "", "price": "", **ahead})
    pd.concat([frame, future]).to_csv(tmp_path / "shops.csv", index=False)
    with pytest.raises(DataError, match=pattern):
        load_series(DataSpec(source=str(tmp_path / "shops.csv"), id_column="shop", past_covariates="price",
                             future_covariates="promo"))
    with pytest.raises(DataError, match=r"line 82: missing value in column 'y'"):   # without known covariates
        load_series(DataSpec(source=str(tmp_path / "shops.csv"), id_column="shop"))


# ----------------------------------------------------------------------------------------------
# Through training, evaluation, the next forecast and the saved model
# ----------------------------------------------------------------------------------------------
def demand_panel(tmp_path, n_days=30, ahead=0, seed=0):
    """Two half-hourly series driven by the time of day and a temperature known in advance, plus a noisy
    observed covariate; ``ahead`` rows after the end carry the temperature of the next periods."""
    rng = np.random.default_rng(seed)
    n = 48 * n_days
    t = pd.date_range("2014-01-01", periods=n + ahead, freq="30min")
    frames = []
    for sid, level in (("north", 3.0), ("south", 5.0)):
        temp = 20 + np.cumsum(rng.normal(0, 0.5, n + ahead))
        y = level + np.sin(2 * np.pi * t.hour / 24) + 0.2 * (temp - 20) + rng.normal(0, 0.05, n + ahead)
        frame = pd.DataFrame({"region": sid, "ts": t.strftime("%Y-%m-%d %H:%M"), "demand": y.round(4),
                              "temperature": temp.round(3), "load_index": (y + rng.normal(0, 1, n + ahead)).round(3)})
        frame.loc[n:, ["demand", "load_index"]] = np.nan
        frames.append(frame)
    path = tmp_path / "demand.csv"
    pd.concat(frames).to_csv(path, index=False)
    return path


def demand_config(path, **over):
    base = dict(source=str(path), id_column="region", date_column="ts", value_column="demand",
                past_covariates="load_index", future_covariates="temperature", calendar="hour", window=48, horizon=12,
                test_size=6, test_stride=12, target="delta", model="gru", hidden_size=8, epochs=3)
    return RunConfig.resolve(None, {**base, **over})


def windows_of(cfg):
    p = load_series(cfg.data, cfg.windows.positive_only)
    covs = cv.of_panel(p, cfg.data.past_covariates, cfg.data.future_covariates, cfg.data.calendar)
    return p, window_panel(p.values, p.offsets, cfg.windows, np.dtype(cfg.model.dtype), p.times, p.freq, None,
                           p.ids, covs)


@pytest.mark.parametrize("kind", ["gru", "mlp", "linear"])
def test_a_model_with_covariates_serves_what_it_was_evaluated_on(tmp_path, kind):
    """Train with observed, known-in-advance and calendar covariates; the saved model, given a test window's
    history and the known covariates after it, forecasts what the evaluation scored; given the rows after the
    data's end, what the run forecast."""
    from flows.core.evaluation import evaluate, forecast_next
    from flows.core.model_io import forecast_frame, load_forecaster, save_forecaster
    from flows.core.training import train
    from flows.tasks import last_test_history

    cfg = demand_config(demand_panel(tmp_path, ahead=12), model=kind)
    p, w = windows_of(cfg)
    assert w.train.X.shape[2] == 1 + 1 + 1 + 2 and w.train.future.shape[1] == 12 * 3   # y, load, temp, hour×2
    result = train(w, cfg.model, cfg.training)
    ev = evaluate(result.model, w)
    f = forecast_next(result.model, w)
    assert [str(d) for d in f.ds[:2]] == ["2014-01-31T00:00:00", "2014-01-31T00:30:00"]
    loaded = load_forecaster(save_forecaster(result.model, w, tmp_path / "model"))
    served = forecast_frame(loaded, last_test_history(w, series=2))
    for s in range(2):
        last = np.flatnonzero(w.test.series == s)[-1]
        np.testing.assert_allclose(served["yhat"][12 * s:12 * s + 12], ev.predictions["model"][last], rtol=1e-6)
    frame = pd.read_csv(p.path).rename(columns={"region": "unique_id", "ts": "ds", "demand": "y"})
    np.testing.assert_allclose(forecast_frame(loaded, frame)["yhat"], f.yhat, rtol=1e-6)
    with pytest.raises(ValueError, match=r"series 'north': the next 12 periods need the known-in-advance covariates "
                                         r"temperature: give 12 rows after its last value"):
        forecast_frame(loaded, frame[frame["y"].notna()])
    with pytest.raises(ValueError, match=r"this model reads covariates \(load_index, temperature\)"):
        loaded.predict(np.zeros((1, 48)))


def test_without_the_rows_ahead_the_run_has_no_next_forecast_and_says_why(tmp_path):
    from flows.core.covariates import MissingFuture
    from flows.core.evaluation import forecast_next
    from flows.core.training import train

    cfg = demand_config(demand_panel(tmp_path), epochs=1)
    _, w = windows_of(cfg)
    with pytest.raises(MissingFuture, match=r"series 'north': the next 12 values need the known-in-advance "
                                            r"covariates temperature of 2014-01-31T00:00:00 … 2014-01-31T05:30:00, "
                                            r"and the data has 0 row\(s\) after the series' last value"):
        forecast_next(train(w, cfg.model, cfg.training).model, w)
    calendar_only = demand_config(demand_panel(tmp_path), epochs=1, future_covariates=None)
    _, w = windows_of(calendar_only)   # calendar features exist for any date: a forecast without rows ahead
    assert len(forecast_next(train(w, calendar_only.model, calendar_only.training).model, w).yhat) == 24


def test_known_covariates_help_and_an_observed_one_cannot_reveal_the_target(tmp_path):
    """The linear model on the same data: the temperature known in advance makes it far better than without
    covariates. A copy of the target as an observed covariate adds nothing (it is only read up to the origin);
    the same copy one step ahead, which would be a leak, gives the next value away — so the test can tell."""
    from flows.core.evaluation import evaluate
    from flows.core.training import train

    path = demand_panel(tmp_path, n_days=40)
    frame = pd.read_csv(path)
    frame["copy"] = frame["demand"]
    frame["leak"] = frame.groupby("region")["demand"].shift(-1).fillna(frame["demand"])
    frame.to_csv(path, index=False)

    def mae(**over):
        cfg = demand_config(path, model="linear", epochs=150, lr=0.01, horizon=1, test_size=200, test_stride=1,
                            batch_size=64)
        cfg = RunConfig.resolve(None, {**{k: v for k, v in cfg.flat().items() if k != "preset"},
                                       "past_covariates": None, "future_covariates": None, "calendar": None, **over})
        _, w = windows_of(cfg)
        return evaluate(train(w, cfg.model, cfg.training).model, w).model.mae

    plain, known = mae(), mae(future_covariates="temperature", calendar="hour")
    copy, leak = mae(past_covariates="copy"), mae(past_covariates="leak")
    assert known < 0.6 * plain
    assert copy > 0.9 * plain           # the target's own past again: nothing new
    assert leak < 0.4 * plain           # a value from after the origin would show at once


@pytest.mark.flow
def test_the_nightly_flow_with_covariates_registers_a_model_that_asks_for_them(harness, tmp_path):
    import mlflow
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.nightly import nightly
    from flows.runtime import tracking

    path = demand_panel(tmp_path, ahead=12)
    over = {k: v for k, v in demand_config(path).flat().items() if k != "preset"}
    over.update(experiment="covariates", model_name="demand", stat_baselines="none", checkpoint_every=0)
    state = nightly(overrides=over, return_state=True)
    assert state.is_completed(), state
    summary = state.result()
    assert len(summary.forecast.yhat) == 24 and not summary.forecast.note
    run = tracking.client().get_run(summary.run_id)
    assert run.data.params["future_covariates"] == "temperature" and run.data.params["calendar"] == "hour"
    model = mlflow.pyfunc.load_model(f"models:/demand/{summary.version}")
    inputs = [c.name for c in model.metadata.get_input_schema().inputs]
    assert inputs == ["unique_id", "ds", "y", "load_index", "temperature"]
    frame = pd.read_csv(path).rename(columns={"region": "unique_id", "ts": "ds", "demand": "y"})
    np.testing.assert_allclose(model.predict(frame)["yhat"], summary.forecast.yhat, rtol=1e-6)
    with pytest.raises(Exception, match=r"the next 12 periods need the known-in-advance covariates temperature"):
        model.predict(frame[frame["y"].notna()])

    # the same data without the rows ahead: evaluated and registered, no next forecast, and the report says why
    (tmp_path / "no-ahead").mkdir()
    state = nightly(overrides={**over, "source": str(demand_panel(tmp_path / "no-ahead", ahead=0))},
                    return_state=True)
    assert state.is_completed(), state
    assert state.result().forecast.note.startswith("series 'north': the next 12 values need the known-in-advance")
    with get_client(sync_client=True) as client:
        only = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        report = {a.key: a for a in client.read_artifacts(flow_run_filter=only)}["nightly-report"].data
    assert "No forecast: series 'north': the next 12 values need" in report
