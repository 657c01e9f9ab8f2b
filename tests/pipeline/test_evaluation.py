"""Evaluation: metric definitions, baselines, both evaluation modes, the next forecast, model files."""
import numpy as np
import pytest

from flows.core import evaluation as ev
from flows.core.config import RunConfig
from flows.core.model_io import load_forecaster, save_forecaster
from flows.core.training import train
from nncore import RecurrentForecaster

from .helpers import cut


def fit(cfg, windows):
    return train(windows, cfg.model, cfg.training)


def test_metrics_on_a_worked_example():
    actual = np.array([[10.0], [12.0], [11.0], [13.0]])
    last = np.array([9.0, 10.0, 12.0, 11.0])
    pred = np.array([[11.0], [11.0], [11.5], [13.0]])
    m = ev.scores(actual, pred, last, naive_mae=1.5, insample_scale=2.0)
    err = np.array([1.0, -1.0, 0.5, 0.0])
    assert m.mae == pytest.approx(0.625)
    assert m.mse == pytest.approx(np.mean(err ** 2)) and m.rmse == pytest.approx(np.sqrt(np.mean(err ** 2)))
    assert m.mape == pytest.approx(100 * np.mean(np.abs(err) / actual[:, 0]))
    assert m.smape == pytest.approx(100 * np.mean(2 * np.abs(err) / (np.abs(actual[:, 0]) + np.abs(pred[:, 0]))))
    assert m.mase == pytest.approx(0.625 / 1.5) and m.mase_insample == pytest.approx(0.625 / 2.0)
    # directions: up/up, up/up, down/down, up/up -> all right
    assert m.directional_accuracy == 1.0
    m2 = ev.scores(actual, np.array([[8.0], [11.0], [13.0], [11.0]]), last, 1.5, 2.0)
    # down/up wrong, up/up right, up/down wrong, flat/up wrong
    assert m2.directional_accuracy == 0.25


def test_baselines():
    values = np.array([100.0, 101, 103, 102, 106, 108, 107, 111, 115, 114, 118, 120])
    w = cut(values, np.float64, window=3, horizon=2, test_size=3, train_size=3)
    naive = ev.naive_forecast(w.test, 2)
    np.testing.assert_array_equal(naive, np.repeat(w.test.last[:, None], 2, axis=1))
    drift = ev.drift_forecast(w.test, values, 2)
    t = w.test.index[0] - 1
    slope = (values[t] - values[0]) / t
    np.testing.assert_allclose(drift[0], [values[t] + slope, values[t] + 2 * slope])


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(2)
    values = 50 + np.cumsum(rng.normal(size=600))
    cfg = RunConfig.resolve(None, dict(window=16, test_size=40, hidden_size=6, epochs=5, lr=0.01, seed=1,
                                       target="delta", model="gru"))
    w = cut(values, target="delta", window=16, test_size=40)
    return cfg, w, fit(cfg, w)


def test_evaluate_reports_every_metric_for_model_modes_and_baselines(trained):
    cfg, w, result = trained
    out = ev.evaluate(result.model, w)
    for name in ("model", "carried", "naive", "snaive", "drift"):
        assert set(getattr(out, name).as_metrics("")) == set(ev.METRICS)
        assert out.predictions[name].shape == (40, 1)
    assert out.naive.mase == pytest.approx(1.0) and out.snaive.mase_snaive == pytest.approx(1.0)
    assert out.season == 1 and np.array_equal(out.predictions["snaive"], out.predictions["naive"])  # no calendar
    assert set(out.metrics()) == {p + m for p in ("test_", "carried_test_", "naive_test_", "snaive_test_", "drift_test_")
                                  for m in ev.METRICS}
    expected = w.to_levels(result.model.predict(w.test.X)[0], w.test.last)
    np.testing.assert_allclose(out.predictions["model"], expected)


def test_carried_mode_equals_one_window_at_a_time_with_the_state_passed_on(trained):
    _, w, result = trained
    model = result.model
    state = None
    for i in range(len(w.val)):
        _, state = model.predict(w.val.X[i:i + 1], state)
    expected = []
    for i in range(len(w.test)):
        pred, state = model.predict(w.test.X[i:i + 1], state)
        expected.append(pred[0])
    np.testing.assert_array_equal(ev.predict_carried(model, w.test.X, w.val.X), np.array(expected))
    stateless = ev.predict(model, w.test.X)
    assert not np.array_equal(stateless, np.array(expected))


def carried_gap(target: str, window: int) -> tuple[float, float, float]:
    """A GRU trained (from zero states, as always) on a noisy seasonal series: its stateless and carried test MAE,
    and the mean |carried − stateless| forecast, which is the effect of the carried initial state alone."""
    from flows.core.windowing import window_panel

    rng = np.random.default_rng(0)
    n = 1500
    y = 100 + 10 * np.sin(np.arange(n) * 2 * np.pi / 25) + np.cumsum(rng.normal(0, 0.3, n))
    cfg = RunConfig.resolve(None, dict(window=window, test_size=200, model="gru", hidden_size=8, epochs=30,
                                       target=target, batch_size=64, checkpoint_every=0))
    w = window_panel(y, np.array([0, n]), cfg.windows, np.float32, np.arange(n).astype("datetime64[D]"), "D", None,
                     np.array(["y"], dtype=object))
    out = ev.evaluate(fit(cfg, w).model, w)
    return out.model.mae, out.carried.mae, float(np.mean(np.abs(out.predictions["carried"] -
                                                               out.predictions["model"])))


def test_why_the_carried_state_hurts_on_short_windows():
    """Carried and stateless forecasts see the same inputs; they differ only by the initial state, which training
    always sets to zero. (1) The network forgets its initial state over the window: the gap shrinks by orders of
    magnitude from 14 to 96 steps. (2) With the delta and return targets each window is expressed relative to its
    own last value, so the state carried from the previous window was built in another frame; with min-max levels
    (one frame for all windows) the carried state is nearly harmless even at 14 steps."""
    short_mae, short_carried, short_gap = carried_gap("return", 14)
    _, _, long_gap = carried_gap("return", 96)
    _, _, level_gap = carried_gap("level", 14)
    assert short_carried > 1.3 * short_mae          # the observation: carried far worse on short windows
    assert long_gap < short_gap / 20                # (1) forgotten over a long window
    assert level_gap < short_gap / 10               # (2) the per-window frame is what the carried state contradicts


def test_saved_model_reproduces_predictions_and_loads_without_pickle(trained, tmp_path):
    cfg, w, result = trained
    save_forecaster(result.model, w, tmp_path)
    with np.load(tmp_path / "weights.npz", allow_pickle=False) as f:
        assert sorted(f.files) == sorted(result.model.params)
    loaded = load_forecaster(tmp_path)
    raw = w.values[-w.window:]
    np.testing.assert_array_equal(loaded.predict(raw), ev.forecast_next(result.model, w).values[None])
    with pytest.raises(ValueError, match=r"expected windows of shape \(n, 16\)"):
        loaded.predict(np.zeros((2, 15)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        loaded.predict(np.full(16, np.nan))


def test_mlp_modes_coincide():
    rng = np.random.default_rng(3)
    values = 10 + np.cumsum(rng.normal(size=300))
    cfg = RunConfig.resolve(None, dict(model="mlp", window=8, test_size=20, epochs=2, hidden_size=4))
    w = cut(values, target=cfg.windows.target, window=8, test_size=20)
    out = ev.evaluate(fit(cfg, w).model, w)
    assert out.model == out.carried


def test_a_random_model_on_levels_does_not_look_like_naive():
    """Guards the MASE definition: an untrained model's MASE is far from 1."""
    rng = np.random.default_rng(4)
    values = 100 + np.cumsum(rng.normal(size=400))
    w = cut(values, window=10, test_size=30)
    out = ev.evaluate(RecurrentForecaster("rnn", 4, dtype=np.float32, rng=0), w)
    assert out.model.mase > 2


class _Payload:
    """Unpickling this object would create a file: the proof that a pickle ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.fault(fault="a model directory whose weights.npz holds a pickled object",
                   did="refused to load it: 'Object arrays cannot be loaded when allow_pickle=False'",
                   kept="no code from the file ran (no pickle is ever loaded: weights .npz + JSON config)")
def test_a_model_file_with_a_pickle_is_refused_and_runs_nothing(trained, tmp_path):
    cfg, w, result = trained
    model_dir = save_forecaster(result.model, w, tmp_path / "model")
    marker = tmp_path / "pickle-ran"
    weights = dict(np.load(model_dir / "weights.npz"))
    weights["evil"] = np.array([_Payload(str(marker))], dtype=object)
    np.savez(model_dir / "weights.npz", **weights)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        load_forecaster(model_dir)
    assert not marker.exists()


def test_seasonal_naive_repeats_the_last_season_for_every_step():
    """Season 4 (quarters), horizon 6: steps 1-4 take the values one year back, steps 5-6 two years back."""
    values = np.arange(40.0) ** 1.5 + 100
    w = cut(values, np.float64, window=8, horizon=6, test_size=6, train_size=10)
    s = ev.seasonal_naive_forecast(w.test, values, 6, 4)
    t = w.test.index[0]                       # first target of the first test window
    np.testing.assert_array_equal(s[0], [values[t - 4], values[t - 3], values[t - 2], values[t - 1],
                                         values[t - 4], values[t - 3]])
    # a weekly-seasonal series: seasonal naive is exact, naive is not, and the verdict names the stronger one
    days = np.tile([10.0, 12, 15, 11, 9, 30, 31], 40)
    w = cut(days, np.float64, window=14, test_size=20, season=7)
    out = ev.evaluate(RecurrentForecaster("rnn", 3, dtype=np.float64, rng=0), w)
    assert out.snaive.mae == 0 and out.naive.mae > 0 and out.strongest_baseline()[0] == "snaive"
