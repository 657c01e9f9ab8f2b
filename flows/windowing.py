"""Windowing: sliding windows → next values, chronological splits, transforms fitted on training only.

For a series y_0 … y_{N-1}, window i has inputs y_i … y_{i+W-1} and targets
y_{i+W} … y_{i+W+h-1} (``horizon`` h; h > 1 is a *direct* multi-step forecast: one output per
step). Windows are split in time order: the first ``train_size`` train, the next ones
validate, the last ``test_size`` test. With h > 1 the h − 1 windows just before the test part are
left out (purged): their targets would run into the test targets, and validation picks the
best epoch, so no value of the test period reaches training or model selection.

What the model sees (``target``), every constant fitted on the values the training windows
touch (inputs and targets) and nothing later:

* ``level`` — min-max scaled values in, min-max scaled values out (the source notebooks'
  choice). The notebooks fit the scaler on the whole series, a look-ahead leak we do not
  reproduce: test prices above the training maximum then scale above 1, as they would in
  production, and a tanh network saturates there.
* ``delta`` — each window relative to its own last value, (y_j − y_t) / s, and the change
  (y_{t+k} − y_t) / s out, s = standard deviation of the one-step changes in the training part.
  The network learns a correction to the naive forecast and never sees the price level.
* ``return`` — the same with log prices, log(y_j / y_t) / s and log(y_{t+k} / y_t) / s, s the
  standard deviation of one-step log returns in training; needs positive values.

:class:`Scaler` encodes inputs and targets and decodes predictions back to original units; the
saved model carries it, so serving uses exactly the training transform.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

TARGETS = ("level", "delta", "return")


class WindowingError(ValueError):
    """The series cannot be windowed and split as requested."""


@dataclass(frozen=True)
class Scaler:
    """The fitted transform between prices and model units (see the module docstring)."""

    kind: str
    lo: float = 0.0     # level: training minimum
    hi: float = 1.0     # level: training maximum
    scale: float = 1.0  # delta/return: std of training one-step changes / log returns

    @classmethod
    def fit(cls, kind: str, values: np.ndarray) -> "Scaler":
        values = np.asarray(values, dtype=np.float64)
        if kind not in TARGETS:
            raise WindowingError(f"unknown target {kind!r}; valid: {', '.join(TARGETS)}")
        if kind == "level":
            lo, hi = float(values.min()), float(values.max())
            if not hi > lo:
                raise WindowingError(f"the training part is constant ({lo}); min-max scaling is undefined")
            return cls(kind, lo, hi)
        if kind == "return":
            bad = np.flatnonzero(values <= 0)
            if bad.size:
                raise WindowingError(f"target 'return' needs positive values; value {values[bad[0]]} at position "
                                     f"{bad[0]} of the training part")
            steps = np.diff(np.log(values))
        else:
            steps = np.diff(values)
        scale = float(np.std(steps))
        if not scale > 0:
            raise WindowingError("the training part is constant; its changes have zero spread")
        return cls(kind, scale=scale)

    def to_dict(self) -> dict:
        return asdict(self)

    def _check_positive(self, a: np.ndarray, what: str) -> None:
        if self.kind == "return" and np.any(a <= 0):
            raise WindowingError(f"target 'return' needs positive values; {what} contain {a[a <= 0].ravel()[0]}")

    def encode_inputs(self, raw: np.ndarray) -> np.ndarray:
        """Raw windows (n, W) in original units → model inputs (n, W), float64."""
        raw = np.asarray(raw, dtype=np.float64)
        if self.kind == "level":
            return (raw - self.lo) / (self.hi - self.lo)
        if self.kind == "delta":
            return (raw - raw[:, -1:]) / self.scale
        self._check_positive(raw, "input windows")
        return np.log(raw / raw[:, -1:]) / self.scale

    def encode_targets(self, targets: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Targets (n, h) in original units, each window's last value (n,) → model targets (n, h)."""
        targets = np.asarray(targets, dtype=np.float64)
        last = np.asarray(last, dtype=np.float64)[:, None]
        if self.kind == "level":
            return (targets - self.lo) / (self.hi - self.lo)
        if self.kind == "delta":
            return (targets - last) / self.scale
        self._check_positive(targets, "targets")
        return np.log(targets / last) / self.scale

    def decode(self, pred: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Model outputs (n, h) → forecasts (n, h) in original units."""
        pred = np.asarray(pred, dtype=np.float64)
        last = np.asarray(last, dtype=np.float64)[:, None]
        if self.kind == "level":
            return pred * (self.hi - self.lo) + self.lo
        if self.kind == "delta":
            return last + pred * self.scale
        return last * np.exp(pred * self.scale)


@dataclass(frozen=True)
class Split:
    """One chronological part: model inputs and targets, and what metrics need (original units)."""

    X: np.ndarray        # (n, W, 1) model inputs, model dtype
    y: np.ndarray        # (n, h) model targets, model dtype
    last: np.ndarray     # (n,) last input value of each window, original units
    actual: np.ndarray   # (n, h) target values, original units
    index: np.ndarray    # (n,) series index of each window's first target

    def __len__(self) -> int:
        return len(self.X)


@dataclass(frozen=True)
class Windows:
    train: Split
    val: Split
    test: Split
    scaler: Scaler
    window: int
    horizon: int
    values: np.ndarray   # the series used (original units)

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


def min_length(window: int, horizon: int, test_size: int, train_size: int | None = None,
               val_fraction: float = 0.2) -> int:
    """The fewest values :func:`make_windows` accepts with these parameters."""
    if train_size is not None:
        fit = train_size + 1                      # the training windows and one validation window
    else:
        fit = 2
        while not (1 <= int(round(fit * val_fraction)) <= fit - 1):
            fit += 1
    return fit + (horizon - 1) + test_size + window + horizon - 1


def make_windows(values: np.ndarray, window: int, horizon: int = 1, test_size: int = 300,
                 train_size: int | None = None, val_fraction: float = 0.2, target: str = "level",
                 dtype=np.float32) -> Windows:
    """Cut ``values`` into windows and splits; see the module docstring."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise WindowingError(f"expected a 1-d series, got shape {values.shape}")
    if target not in TARGETS:
        raise WindowingError(f"unknown target {target!r}; valid: {', '.join(TARGETS)}")
    n_windows = len(values) - window - horizon + 1
    n_rest = n_windows - test_size
    purge = horizon - 1  # windows whose targets would reach the first test targets
    if train_size is None:
        n_val = int(round((n_rest - purge) * val_fraction))
        n_train = n_rest - purge - n_val
    else:
        n_train, n_val = train_size, n_rest - purge - train_size
    if n_train < 1 or n_val < 1:
        need = min_length(window, horizon, test_size, train_size, val_fraction)
        raise WindowingError(
            f"series too short: {len(values)} values give {max(n_windows, 0)} windows of {window} → {horizon}, "
            f"but test {test_size} + training {n_train if n_train > 0 else '≥1'} + validation ≥1 windows"
            f"{f' (+ {purge} left out before the test part)' if purge else ''} need at least {need} values"
        )
    inputs = sliding_window_view(values, window)[:n_windows]                  # (M, W)
    targets = sliding_window_view(values[window:], horizon)[:n_windows]       # (M, h)
    first_target = np.arange(n_windows) + window
    train_end = n_train - 1 + window + horizon
    scaler = Scaler.fit(target, values[:train_end])
    last = inputs[:, -1]

    def part(lo: int, hi: int) -> Split:
        return Split(
            X=np.ascontiguousarray(scaler.encode_inputs(inputs[lo:hi])[..., None], dtype=dtype),
            y=np.ascontiguousarray(scaler.encode_targets(targets[lo:hi], last[lo:hi]), dtype=dtype),
            last=last[lo:hi].copy(),
            actual=targets[lo:hi].copy(),
            index=first_target[lo:hi],
        )

    return Windows(part(0, n_train), part(n_train, n_train + n_val), part(n_rest, n_windows), scaler,
                   window, horizon, values)
