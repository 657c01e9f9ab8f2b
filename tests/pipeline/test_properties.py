"""Property tests of windowing and scaling: alignment, purging, round trips, no look-ahead, scaler ranges.

Series are positive random walks in log space, ``start · exp(cumsum(steps))``; the first two
steps are fixed (+0.02, −0.01) so that no training part is constant (a constant training part is a
separate, documented error of the transforms in :mod:`flows.core.transforms`). Windows, horizons, split sizes,
targets and dtypes are drawn together so that every drawn problem is just long enough or longer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.core.transforms import TRANSFORMS
from flows.core.windowing import WindowingError

from .helpers import cut

TARGETS = tuple(TRANSFORMS)

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)  # deterministic and quick
RTOL = {np.float32: 1e-5, np.float64: 1e-12}

log_steps = st.floats(min_value=-0.05, max_value=0.05, allow_nan=False, allow_infinity=False)


@dataclass(frozen=True)
class Problem:
    """One drawn windowing problem: the series and every argument of ``make_windows``."""

    values: np.ndarray
    window: int
    horizon: int
    test_size: int
    train_size: int | None
    target: str
    dtype: type

    def windows(self, values: np.ndarray | None = None):
        return cut(self.values if values is None else values, self.dtype, self.target, window=self.window,
                   horizon=self.horizon, test_size=self.test_size, train_size=self.train_size)


def minimum_length(window: int, horizon: int, test_size: int, train_size: int, n_val: int = 1) -> int:
    """Values needed for ``train_size`` training, ``n_val`` validation and ``test_size`` test windows.

    Windows: N − W − h + 1; of those h − 1 are purged before the test part.
    """
    return window + 2 * horizon - 2 + test_size + train_size + n_val


def walk(draw, n: int) -> np.ndarray:
    """A positive series of ``n`` values, a random walk in log space."""
    start = draw(st.floats(min_value=0.5, max_value=5000.0))
    steps = [0.02, -0.01] + draw(st.lists(log_steps, min_size=n - 3, max_size=n - 3))
    return start * np.exp(np.concatenate([[0.0], np.cumsum(steps)]))


@st.composite
def problems(draw, targets=TARGETS) -> Problem:
    window = draw(st.integers(1, 15))
    horizon = draw(st.integers(1, 4))
    test_size = draw(st.integers(1, 20))
    if draw(st.booleans()):  # explicit training size; the rest before the test part validates
        train_size = draw(st.integers(2, 30))
        n = minimum_length(window, horizon, test_size, train_size, n_val=draw(st.integers(1, 10)))
    else:  # val_fraction 0.2 of the m windows before the (purged) test part; m ≥ 3 keeps one of each
        train_size = None
        n = minimum_length(window, horizon, test_size, train_size=0, n_val=0) + draw(st.integers(3, 40))
    return Problem(walk(draw, n), window, horizon, test_size, train_size, draw(st.sampled_from(targets)),
                   draw(st.sampled_from([np.float32, np.float64])))


# ----------------------------------------------------------------------------------------------
# Shapes, alignment, chronological order, purge
# ----------------------------------------------------------------------------------------------
@SETTINGS
@given(problems())
def test_every_split_is_aligned_with_the_series(p):
    """``actual[i, k] = values[index[i] + k]``, ``last[i] = values[index[i] − 1]``; shapes and dtypes as documented."""
    w = p.windows()
    for split in (w.train, w.val, w.test):
        n = len(split)
        assert n >= 1
        assert split.X.shape == (n, p.window, 1) and split.X.dtype == p.dtype
        assert split.y.shape == (n, p.horizon) and split.y.dtype == p.dtype
        assert split.actual.shape == (n, p.horizon) and split.last.shape == (n,) and split.index.shape == (n,)
        np.testing.assert_array_equal(np.diff(split.index), 1)  # consecutive windows
        positions = split.index[:, None] + np.arange(p.horizon)
        np.testing.assert_array_equal(split.actual, p.values[positions])
        np.testing.assert_array_equal(split.last, p.values[split.index - 1])
        assert split.index[0] >= p.window  # a full window precedes every first target


@SETTINGS
@given(problems())
def test_splits_are_chronological_purged_and_the_test_part_ends_the_series(p):
    """train < val < test in time; no train/val target reaches the first test target; test = the last windows."""
    w = p.windows()
    h = p.horizon
    assert w.train.index[0] == p.window  # the first window starts at the first value
    assert w.train.index[-1] + 1 == w.val.index[0]
    assert w.val.index[-1] + h == w.test.index[0]  # exactly h − 1 windows purged
    last_target_before_test = w.val.index[-1] + h - 1
    assert last_target_before_test < w.test.index[0]
    assert len(w.test) == p.test_size
    assert w.test.index[-1] + h - 1 == len(p.values) - 1 and w.test.actual[-1, -1] == p.values[-1]
    if p.train_size is not None:
        assert len(w.train) == p.train_size
    # no window is lost: train + val + purge + test = all windows
    assert len(w.train) + len(w.val) + (h - 1) + len(w.test) == len(p.values) - p.window - h + 1


# ----------------------------------------------------------------------------------------------
# Encoding and decoding
# ----------------------------------------------------------------------------------------------
@SETTINGS
@given(problems())
def test_decoding_the_encoded_targets_gives_the_actual_values(p):
    """``to_levels(y, last)`` recovers ``actual`` in every split (to the model dtype's precision)."""
    w = p.windows()
    for split in (w.train, w.val, w.test):
        np.testing.assert_allclose(w.to_levels(split.y, split.last), split.actual, rtol=RTOL[p.dtype], atol=0)


@SETTINGS
@given(problems())
def test_encoding_raw_windows_reproduces_the_split_inputs(p):
    """``Windows.encode`` (the serving path) gives exactly the inputs the model was trained and tested on."""
    w = p.windows()
    for split in (w.train, w.val, w.test):
        raw = p.values[split.index[:, None] - p.window + np.arange(p.window)]
        np.testing.assert_array_equal(w.encode(raw, p.dtype), split.X)


# ----------------------------------------------------------------------------------------------
# No look-ahead
# ----------------------------------------------------------------------------------------------
@SETTINGS
@given(problems(), st.data())
def test_values_after_the_training_part_do_not_change_the_scaler_or_the_training_data(p, data):
    """Rewriting every value from ``train_end`` on leaves the scaler and the training X, y as they were."""
    w = p.windows()
    end = w.train_end
    assert end == w.train.index[-1] + p.horizon  # one past the last training target: nothing later is read
    factors = np.array(data.draw(st.lists(st.floats(0.1, 10.0), min_size=len(p.values) - end,
                                          max_size=len(p.values) - end)))
    changed = p.values.copy()
    changed[end:] *= factors
    w2 = p.windows(changed)
    assert w2.scaler == w.scaler
    np.testing.assert_array_equal(w2.train.X, w.train.X)
    np.testing.assert_array_equal(w2.train.y, w.train.y)


@SETTINGS
@given(problems())
def test_the_last_training_value_is_read(p):
    """The other side of ``train_end``: changing the value just before it changes the scaler or the targets."""
    w = p.windows()
    changed = p.values.copy()
    changed[w.train_end - 1] *= 1.5
    w2 = p.windows(changed)
    assert w2.scaler != w.scaler or not np.array_equal(w2.train.y, w.train.y)


# ----------------------------------------------------------------------------------------------
# Scaler ranges
# ----------------------------------------------------------------------------------------------
@SETTINGS
@given(problems(targets=("level",)))
def test_level_scaler_maps_the_training_values_onto_exactly_zero_to_one(p):
    """lo/hi are the training part's min/max; the training inputs and targets span [0, 1] with both ends hit."""
    w = p.windows()
    touched = p.values[: w.train_end]
    assert w.scaler.lo == touched.min() and w.scaler.hi == touched.max()
    seen = np.concatenate([w.train.X.ravel(), w.train.y.ravel()])
    assert seen.min() == 0.0 and seen.max() == 1.0


@SETTINGS
@given(problems(targets=("delta", "return")))
def test_relative_inputs_end_at_zero_and_the_scale_is_the_training_spread(p):
    """delta/return: each window's last value maps to 0; the scale is the std of training one-step changes."""
    w = p.windows()
    for split in (w.train, w.val, w.test):
        np.testing.assert_array_equal(split.X[:, -1, 0], 0.0)
    touched = p.values[: w.train_end]
    steps = np.diff(np.log(touched)) if p.target == "return" else np.diff(touched)
    assert w.scaler.scale == pytest.approx(np.std(steps), rel=1e-12)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------
@SETTINGS
@given(st.integers(1, 15), st.integers(1, 4), st.integers(1, 20), st.integers(1, 30), st.data())
def test_a_series_too_short_for_the_splits_is_an_error_and_one_more_value_is_enough(window, horizon, test_size,
                                                                                    train_size, data):
    """Below ``window + 2h − 2 + test + train + 1`` values: ``series too short``; at that length it works."""
    need = minimum_length(window, horizon, test_size, train_size)
    values = walk(data.draw, need)
    short = data.draw(st.integers(0, need - 1))
    with pytest.raises(WindowingError, match=r"^series too short: .* need at least \d+ values"):
        cut(values[:short], window=window, horizon=horizon, test_size=test_size, train_size=train_size)
    w = cut(values, window=window, horizon=horizon, test_size=test_size, train_size=train_size)
    assert (len(w.train), len(w.val), len(w.test)) == (train_size, 1, test_size)


@pytest.mark.parametrize("window,horizon,test_size", [(20, 1, 60), (5, 3, 10)])
def test_the_length_the_too_short_error_asks_for_is_enough(window, horizon, test_size):
    """The message's 'need at least N values' (val_fraction split) is exactly the shortest length that works."""
    values = 100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, size=window + horizon + test_size + 10)))
    with pytest.raises(WindowingError) as exc:
        cut(values[: window + horizon], window=window, horizon=horizon, test_size=test_size)
    need = int(str(exc.value).rsplit("need at least ", 1)[1].split()[0])
    assert need <= len(values)
    cut(values[:need], window=window, horizon=horizon, test_size=test_size)
    with pytest.raises(WindowingError, match="series too short"):
        cut(values[:need - 1], window=window, horizon=horizon, test_size=test_size)
