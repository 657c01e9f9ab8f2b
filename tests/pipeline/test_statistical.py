"""Statistical baselines (statsforecast) on the model's test points: the same forecasts as statsforecast's own
cross-validation, logged and reported beside the naive ones, failures named."""
import numpy as np
import pandas as pd
import pytest

from flows.core import statistical
from flows.core.config import ConfigError, DataSpec, WindowSpec
from flows.core.evaluation import Evaluation, evaluate
from flows.core.panel import Panel
from flows.core.windowing import window_panel

statsforecast = pytest.importorskip("statsforecast")   # the test extra installs it: CI runs every test here


def seasonal(n, seed, level=10.0):
    rng = np.random.default_rng(seed)
    return level + 3 * np.sin(np.arange(n) * 2 * np.pi / 12) + np.cumsum(rng.normal(0, 0.3, n))


@pytest.mark.parametrize("name,cls", [("ets", "AutoETS"), ("arima", "AutoARIMA")])
def test_forecasts_are_statsforecasts_cross_validation_without_refit(name, cls):
    """Fit once on the history before the first test target, then run forward: exactly what statsforecast's
    ``cross_validation(refit=False)`` computes, window for window."""
    from statsforecast import StatsForecast
    import statsforecast.models as sf

    n, h, nw = 120, 3, 10
    y = seasonal(n, 1)
    df = pd.DataFrame({"unique_id": "a", "ds": pd.date_range("2000-01-01", periods=n, freq="MS"), "y": y})
    cv = StatsForecast(models=[getattr(sf, cls)(season_length=12)], freq="MS").cross_validation(
        df=df, h=h, n_windows=nw, step_size=1, refit=False)
    first_targets = np.arange(n - h - nw + 1, n - h + 1)
    out = statistical.forecast_test((name,), y, np.array([0]), first_targets, np.zeros(nw, dtype=int),
                                    y[first_targets - 1], h, 12, np.array(["a"]))
    np.testing.assert_allclose(out.predictions[name], cv[cls].to_numpy().reshape(nw, h), rtol=1e-9)
    assert out.failed[name] == []


class Naive:
    """A stand-in model that forecasts the last value (zero change), to isolate the baselines."""
    stateful, dtype = False, np.float64

    def __init__(self, h):
        self.h = h

    def forward(self, X, state=None):
        return np.zeros((len(X), self.h)), state


def panel(series: dict[str, np.ndarray]) -> Panel:
    values = np.concatenate(list(series.values()))
    lengths = [len(v) for v in series.values()]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    times = np.concatenate([pd.date_range("1990-01-01", periods=k, freq="MS").to_numpy().astype("datetime64[D]")
                            for k in lengths])
    return Panel(np.array(list(series), dtype=object), offsets, times, values, "MS", "test", None, "0" * 64, 0)


def windows_of(p: Panel, h=3, test=4):
    spec = WindowSpec(window=12, horizon=h, test_size=test, target="delta")
    return window_panel(p.values, p.offsets, spec, np.float64, p.times, p.freq, 12, p.ids)


def test_ets_is_scored_logged_and_can_be_the_strongest_baseline():
    w = windows_of(panel({"a": seasonal(150, 1), "b": seasonal(150, 2, 50.0), "c": seasonal(150, 3, 5.0)}))
    ev = evaluate(Naive(3), w, ("ets",))
    assert set(ev.statistical) == {"ets"} and ev.stat_failed == {"ets": []}
    metrics = ev.metrics()
    assert metrics["ets_test_mae"] == ev.statistical["ets"].mae
    assert {"ets_test_mase", "ets_test_mase_insample", "naive_test_mae"} <= set(metrics)
    agg = ev.panel()
    assert {"ets_mase_mean", "ets_mase_median", "share_beating_ets"} <= set(agg)
    assert agg["share_beating_ets"] == np.mean(ev.per_series["model_mae"] < ev.per_series["ets_mae"])
    # a smooth seasonal series: AutoETS is far better than the naive forecast (the "model" here), and is the bar
    assert ev.statistical["ets"].mae < 0.5 * ev.naive.mae
    assert ev.strongest_baseline()[0] == "ets"
    assert Evaluation.label("ets") == "AutoETS (statsforecast)"


@pytest.mark.fault(fault="a series statsforecast's AutoETS cannot be fitted on (a hole in its history)",
                   did="that series gets the naive forecast in AutoETS's place; the report names it and the error",
                   kept="every other series' AutoETS forecasts; the run")
def test_a_series_the_model_cannot_fit_gets_the_naive_forecast_and_is_named():
    w = windows_of(panel({"good": seasonal(150, 2), "bad": seasonal(150, 3)}))
    values = w.values.copy()
    s = list(w.ids).index("bad")
    values[w.starts[s] + 5] = np.nan   # a hole in the bad series' history: AutoETS cannot be fitted there
    out = statistical.forecast_test(("ets",), values, w.starts, w.test.index, w.test.series, w.test.last, 3, 12,
                                    w.ids)
    rows = w.test.series == s
    assert len(out.failed["ets"]) == 1 and out.failed["ets"][0].startswith("bad: ")
    np.testing.assert_array_equal(out.predictions["ets"][rows], np.repeat(w.test.last[rows, None], 3, axis=1))
    assert np.all(np.isfinite(out.predictions["ets"]))
    assert not np.allclose(out.predictions["ets"][~rows], np.repeat(w.test.last[~rows, None], 3, axis=1))


def test_the_parameter_is_checked_and_auto_follows_the_installation(monkeypatch):
    assert DataSpec(stat_baselines="ets,arima").stat_baselines == "ets,arima"
    assert statistical.parse("auto") == ("ets",) and statistical.parse("none") == ()
    with pytest.raises(ConfigError, match=r"parameter stat_baselines='prophet': unknown baseline prophet; valid: "
                                          r"auto, none, or a comma list of ets, arima, theta"):
        DataSpec(stat_baselines="prophet")
    monkeypatch.setattr(statistical, "installed", lambda: False)   # a machine without the extra
    assert statistical.parse("auto") == ()
    with pytest.raises(ConfigError, match=r"stat_baselines='ets': statsforecast is not installed: pip install "
                                          r"'nnforecast\[stats\]'"):
        DataSpec(stat_baselines="ets")
