"""Windowing: counts, alignment, train-only scaling (no look-ahead), target transforms, horizons."""
import numpy as np
import pytest

from flows.core.config import PRESETS
from flows.core.windowing import WindowingError

from .helpers import cut


def test_notebook_preset_split_sizes(sp500):
    p = PRESETS["notebook"]
    values = sp500.tail(p["n_values"]).values
    w = cut(values, window=p["window"], horizon=1, test_size=p["test_size"], train_size=p["train_size"])
    assert (len(w.train), len(w.val), len(w.test)) == (4900, 1560, 300)
    assert w.train.X.shape == (4900, 240, 1) and w.test.y.shape == (300, 1)
    assert w.train.X.dtype == np.float32
    # the last test target is the last value of the series
    assert w.test.actual[-1, 0] == values[-1]


def test_windows_and_targets_are_aligned():
    values = np.arange(100, dtype=float) * 2 + 5
    w = cut(values, window=10, horizon=3, test_size=5, train_size=60, target="level")
    for split in (w.train, w.val, w.test):
        raw_inputs = w.scaler.decode(split.X[:, :, 0], split.last)
        i = split.index
        np.testing.assert_allclose(raw_inputs[:, -1], values[i - 1], rtol=1e-5)
        np.testing.assert_allclose(split.actual, np.stack([values[i], values[i + 1], values[i + 2]], axis=1))
        np.testing.assert_array_equal(split.last, values[i - 1])
    # chronological: train, then validation, then the h − 1 = 2 purged windows, then test; no
    # validation target (index .. index + 2) reaches the first test target
    assert w.train.index[-1] + 1 == w.val.index[0] and w.val.index[-1] + 1 + 2 == w.test.index[0]
    assert w.val.index[-1] + 2 < w.test.index[0]
    assert len(w.train) == 60 and len(w.val) == 100 - 10 - 3 + 1 - 5 - 2 - 60
    assert w.test.index[-1] + 3 == len(values)


@pytest.mark.parametrize("target", ["level", "delta", "return"])
def test_transform_is_fitted_on_the_training_part_only(target):
    """A spike after the training part must not change the transform (the notebooks' leak)."""
    rng = np.random.default_rng(0)
    values = 100 + np.cumsum(rng.normal(size=400))
    spiked = values.copy()
    w = cut(values, window=20, test_size=50, train_size=250, target=target)
    spiked[w.train_end:] *= 3  # anything after the last training target
    w2 = cut(spiked, window=20, test_size=50, train_size=250, target=target)
    assert w2.scaler == w.scaler
    np.testing.assert_array_equal(w2.train.X, w.train.X)
    np.testing.assert_array_equal(w2.train.y, w.train.y)


def test_min_max_covers_exactly_the_training_values():
    rng = np.random.default_rng(0)
    values = 100 + np.cumsum(rng.normal(size=400))
    w = cut(values, window=20, test_size=50, train_size=250)
    assert w.scaler.lo == values[: w.train_end].min() and w.scaler.hi == values[: w.train_end].max()
    assert w.train.X.max() <= 1 and w.train.X.min() >= 0


@pytest.mark.parametrize("target", ["level", "delta", "return"])
@pytest.mark.parametrize("horizon", [1, 4])
def test_to_levels_inverts_the_targets(target, horizon):
    values = 50 + np.cumsum(np.random.default_rng(1).normal(size=300))
    w = cut(values, window=12, horizon=horizon, test_size=30, target=target, dtype=np.float64)
    for split in (w.train, w.val, w.test):
        np.testing.assert_allclose(w.to_levels(split.y, split.last), split.actual, rtol=1e-12)


def test_delta_and_return_see_each_window_relative_to_its_last_value():
    values = np.array([10.0, 12, 11, 15, 14, 18, 20, 19, 25, 24, 30, 28])
    w = cut(values, window=3, test_size=2, train_size=5, target="delta", dtype=np.float64)
    train_part = values[: w.train_end]
    assert w.scaler.scale == pytest.approx(np.std(np.diff(train_part)))
    np.testing.assert_allclose(w.train.y[:, 0], (w.train.actual[:, 0] - w.train.last) / w.scaler.scale)
    np.testing.assert_allclose(w.train.X[0, :, 0], (values[:3] - values[2]) / w.scaler.scale)
    assert np.all(w.train.X[:, -1, 0] == 0)

    r = cut(values, window=3, test_size=2, train_size=5, target="return", dtype=np.float64)
    assert r.scaler.scale == pytest.approx(np.std(np.diff(np.log(train_part))))
    np.testing.assert_allclose(r.test.y[:, 0], np.log(r.test.actual[:, 0] / r.test.last) / r.scaler.scale)


def test_level_shift_does_not_change_delta_inputs():
    """delta windows do not depend on the price level: the same shape 1000 points higher looks the same."""
    rng = np.random.default_rng(5)
    values = 100 + np.cumsum(rng.normal(size=300))
    a = cut(values, window=10, test_size=20, target="delta")
    b = cut(values + 1000, window=10, test_size=20, target="delta")
    np.testing.assert_allclose(a.train.X, b.train.X, atol=1e-5)
    np.testing.assert_allclose(a.test.y, b.test.y, atol=1e-5)


def test_return_target_needs_positive_values():
    values = np.linspace(-5, 5, 200)
    with pytest.raises(WindowingError, match="target 'return' needs positive values; value -5.0 at position 0"):
        cut(values, window=10, test_size=20, target="return")


def test_too_short_series_names_the_requirement():
    # 40 test windows + 3 more (round(0.2 * 3) = 1 validation, 2 training): 53 values
    with pytest.raises(WindowingError, match=r"series too short: 50 values give 40 windows of 10 → 1.*need at least 53 values"):
        cut(np.arange(50.0), window=10, test_size=40)
    with pytest.raises(WindowingError, match="need at least 53 values"):
        cut(np.arange(52.0), window=10, test_size=40)
    cut(np.arange(53.0), window=10, test_size=40)
    with pytest.raises(WindowingError, match="series too short"):
        cut(np.arange(400.0), window=10, test_size=40, train_size=350)


def test_constant_training_part_is_rejected():
    with pytest.raises(WindowingError, match="constant"):
        cut(np.ones(100), window=5, test_size=10)
