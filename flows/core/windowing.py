"""Windowing: sliding windows → next values, chronological splits, transforms fitted on training only.

For a series y_0 … y_{N-1}, window i has inputs y_i … y_{i+W-1} and targets
y_{i+W} … y_{i+W+h-1} (``horizon`` h; h > 1 is a *direct* multi-step forecast: one output per
step). Windows are split in time order: the first ``train_size`` train, the next ones
validate, the last ``test_size`` test. With h > 1 the h − 1 windows just before the test part are
left out (purged): their targets would run into the test targets, and validation picks the
best epoch, so no value of the test period reaches training or model selection.

What the model sees is the ``target`` transform (:mod:`flows.core.transforms`), fitted on the
values the training windows touch (inputs and targets) and nothing later. Every split carries the
dates of its targets, so reports and forecasts never re-derive them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .calendar import parse_freq, season_length
from .config import WindowSpec
from .transforms import WindowingError, fit_transform

__all__ = ["Split", "Windows", "WindowingError", "make_windows", "min_length"]


@dataclass(frozen=True)
class Split:
    """One chronological part: model inputs and targets, and what metrics need (original units)."""

    X: np.ndarray        # (n, W, 1) model inputs, model dtype
    y: np.ndarray        # (n, h) model targets, model dtype
    last: np.ndarray     # (n,) last input value of each window, original units
    actual: np.ndarray   # (n, h) target values, original units
    index: np.ndarray    # (n,) series index of each window's first target
    dates: np.ndarray    # (n, h) date of each target

    def __len__(self) -> int:
        return len(self.X)


@dataclass(frozen=True)
class Windows:
    train: Split
    val: Split
    test: Split
    scaler: object       # the fitted transform (flows.core.transforms)
    window: int
    horizon: int
    values: np.ndarray   # (N,) the series used, original units
    dates: np.ndarray    # (N,) its dates
    freq: str | None = None   # their frequency (calendar.py); None: integer positions
    season: int = 1           # periods per season (the seasonal naive baseline's lag)

    @property
    def target(self) -> str:
        return self.scaler.kind

    def to_levels(self, pred: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Model outputs (n, h) → forecasts in original units."""
        return self.scaler.decode(pred, last)

    def encode(self, raw_windows: np.ndarray, dtype) -> np.ndarray:
        """Raw windows (n, W) in original units → model input (n, W, 1)."""
        return self.scaler.encode_inputs(raw_windows)[..., None].astype(dtype)

    @property
    def train_end(self) -> int:
        """Series index one past the last value the training windows touch."""
        return int(self.train.index[-1]) + self.horizon


def min_length(spec: WindowSpec) -> int:
    """The fewest values :func:`make_windows` accepts with ``spec``."""
    if spec.train_size is not None:
        fit = spec.train_size + 1                 # the training windows and one validation window
    else:
        fit = 2
        while not (1 <= int(round(fit * spec.val_fraction)) <= fit - 1):
            fit += 1
    return fit + (spec.horizon - 1) + spec.test_size + spec.window + spec.horizon - 1


def make_windows(values: np.ndarray, spec: WindowSpec, dtype=np.float32, dates: np.ndarray | None = None,
                 freq: str | None = None, season: int | None = None) -> Windows:
    """Cut ``values`` into windows and splits; see the module docstring.

    ``dates`` (N,) labels the values at frequency ``freq`` (positions 0 … N − 1 when not given);
    ``season`` defaults to the frequency's (:func:`flows.core.calendar.season_length`), 1 without one.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise WindowingError(f"expected a 1-d series, got shape {values.shape}")
    dates = np.arange(len(values)) if dates is None else np.asarray(dates)
    if dates.shape != values.shape:
        raise WindowingError(f"{len(dates)} dates for {len(values)} values")
    window, horizon, test_size = spec.window, spec.horizon, spec.test_size
    n_windows = len(values) - window - horizon + 1
    n_rest = n_windows - test_size
    purge = horizon - 1  # windows whose targets would reach the first test targets
    if spec.train_size is None:
        n_val = int(round((n_rest - purge) * spec.val_fraction))
        n_train = n_rest - purge - n_val
    else:
        n_train, n_val = spec.train_size, n_rest - purge - spec.train_size
    if n_train < 1 or n_val < 1:
        raise WindowingError(
            f"series too short: {len(values)} values give {max(n_windows, 0)} windows of {window} → {horizon}, "
            f"but test {test_size} + training {n_train if n_train > 0 else '≥1'} + validation ≥1 windows"
            f"{f' (+ {purge} left out before the test part)' if purge else ''} need at least {min_length(spec)} "
            f"values; "
            f"shorten --window or --test-size (or --train-size), or give more data"
        )
    inputs = sliding_window_view(values, window)[:n_windows]                  # (M, W)
    targets = sliding_window_view(values[window:], horizon)[:n_windows]       # (M, h)
    target_dates = sliding_window_view(dates[window:], horizon)[:n_windows]   # (M, h)
    first_target = np.arange(n_windows) + window
    train_end = n_train - 1 + window + horizon
    scaler = fit_transform(spec.target, values[:train_end])
    last = inputs[:, -1]

    def part(lo: int, hi: int) -> Split:
        return Split(
            X=np.ascontiguousarray(scaler.encode_inputs(inputs[lo:hi])[..., None], dtype=dtype),
            y=np.ascontiguousarray(scaler.encode_targets(targets[lo:hi], last[lo:hi]), dtype=dtype),
            last=last[lo:hi].copy(),
            actual=targets[lo:hi].copy(),
            index=first_target[lo:hi],
            dates=target_dates[lo:hi].copy(),
        )

    if season is None:
        season = season_length(parse_freq(freq)) if freq else 1
    return Windows(part(0, n_train), part(n_train, n_train + n_val), part(n_rest, n_windows), scaler,
                   window, horizon, values, dates, freq, season)
