"""Windowing: sliding windows → next values, chronological splits, transforms fitted on training only.

For a series y_0 … y_{N-1}, window i has inputs y_i … y_{i+W-1} and targets
y_{i+W} … y_{i+W+h-1} (``horizon`` h; h > 1 is a *direct* multi-step forecast: one output per
step). Windows are split in time order: the first ``train_size`` train, the next ones
validate, the last ``test_size`` test. With h > 1 the h − 1 windows just before the test part are
left out (purged): their targets would run into the test targets, and validation picks the
best epoch, so no value of the test period reaches training or model selection.

A panel is cut series by series with the same rule — every series keeps its own last
``test_size`` windows for the test, its own validation windows before them — and the parts are
stacked, so one (global) model trains on the windows of every series. Each series is scaled on its
own training part (:class:`~flows.core.transforms.PanelTransform`). A series too short for one
training, one validation and the test windows is left out and listed in ``Windows.skipped``.

What the model sees is the ``target`` transform (:mod:`flows.core.transforms`), fitted on the
values the training windows touch (inputs and targets) and nothing later. Every split carries the
dates of its targets and the series of each window, so reports and forecasts never re-derive them.
All of it is index arithmetic over the panel's end-to-end arrays: no Python loop per window, and
per series only to fit each transform's constants.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .calendar import parse_freq, season_length
from .config import WindowSpec
from .covariates import Covariates, CovariateScaler
from .transforms import PanelTransform, WindowingError

__all__ = ["Split", "Windows", "WindowingError", "make_windows", "min_length", "window_panel"]

#: windows encoded per step of the windowing (bounds its float64 scratch to CHUNK × window values)
CHUNK = 1 << 16


@dataclass(frozen=True)
class Split:
    """One chronological part: model inputs and targets, and what metrics need (original units)."""

    X: np.ndarray        # (n, W, 1) model inputs, model dtype
    y: np.ndarray        # (n, h) model targets, model dtype
    last: np.ndarray     # (n,) last input value of each window, original units
    actual: np.ndarray   # (n, h) target values, original units
    index: np.ndarray    # (n,) position of each window's first target in the panel's values
    dates: np.ndarray    # (n, h) date of each target
    series: np.ndarray   # (n,) the series of each window (its index in Windows.ids)
    future: np.ndarray | None = None   # (n, h·F) known-in-advance covariates of the target steps (scaled)

    def __len__(self) -> int:
        return len(self.X)

    def of_series(self, s: int) -> "Split":
        """The windows of series ``s`` alone."""
        rows = self.series == s
        return Split(*(None if getattr(self, f.name) is None else getattr(self, f.name)[rows] for f in fields(self)))


@dataclass(frozen=True)
class Windows:
    train: Split
    val: Split
    test: Split
    scalers: PanelTransform   # one fitted transform per series
    window: int
    horizon: int
    values: np.ndarray   # (N,) the panel's values end to end, original units
    dates: np.ndarray    # (N,) their dates
    freq: str | None = None   # their frequency (calendar.py); None: integer positions
    season: int = 1           # periods per season (the seasonal naive baseline's lag)
    starts: np.ndarray | None = None      # (S,) series s is values[starts[s]:ends[s]]
    ends: np.ndarray | None = None
    ids: np.ndarray | None = None         # (S,) series names
    train_ends: np.ndarray | None = None  # (S,) one past the last value each series' training windows touch
    skipped: tuple = ()                   # names of the series too short to window
    covariates: Covariates | None = None  # the panel's covariates (flows.core.covariates), aligned with values
    cov_scaler: CovariateScaler | None = None   # their per-series standardisation (training parts)

    @property
    def target(self) -> str:
        return self.scalers.kind

    @property
    def scaler(self):
        """The transform of a panel of one series."""
        return self.scalers.single()

    @property
    def n_series(self) -> int:
        return len(self.ids)

    def to_levels(self, pred: np.ndarray, last: np.ndarray, series: np.ndarray | None = None) -> np.ndarray:
        """Model outputs (n, h) of windows of ``series`` (default: the first) → forecasts in original units."""
        return self.scalers.at(self._series(series, len(pred))).decode(pred, last)

    def encode(self, raw_windows: np.ndarray, dtype, series: np.ndarray | None = None) -> np.ndarray:
        """Raw windows (n, W) in original units of ``series`` → model input (n, W, 1)."""
        transform = self.scalers.at(self._series(series, len(raw_windows)))
        return transform.encode_inputs(raw_windows)[..., None].astype(dtype)

    @staticmethod
    def _series(series, n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.int64) if series is None else np.asarray(series)

    def only(self, s: int) -> "Windows":
        """Series ``s`` as a panel of one: its windows in the same splits, its values, dates and transform (what its
        own network trains on with ``--per-series``; small enough to send to a Dask worker)."""
        a, b = int(self.starts[s]), int(self.ends[s])

        def part(split: Split) -> Split:
            p = split.of_series(s)
            return replace(p, index=p.index - a, series=np.zeros(len(p), dtype=p.series.dtype))

        cov = self.covariates
        return replace(self, train=part(self.train), val=part(self.val), test=part(self.test),
                       scalers=PanelTransform(self.scalers.kind, {n: v[s:s + 1] for n, v in self.scalers.params.items()}),
                       values=self.values[a:b], dates=self.dates[a:b], starts=np.array([0]), ends=np.array([b - a]),
                       ids=self.ids[s:s + 1], skipped=(),
                       train_ends=None if self.train_ends is None else self.train_ends[s:s + 1] - a,
                       covariates=None if cov is None else replace(cov, past=cov.past[a:b], future=cov.future[a:b],
                                                                   ahead=cov.ahead[s:s + 1]),
                       cov_scaler=None if self.cov_scaler is None else
                       CovariateScaler(self.cov_scaler.mean[s:s + 1], self.cov_scaler.std[s:s + 1]))

    @property
    def train_end(self) -> int:
        """One past the last value the training windows touch (a panel of one series)."""
        if self.n_series != 1:
            raise ValueError(f"train_end of a panel of {self.n_series} series: see train_ends")
        return int(self.train_ends[0])



def min_length(spec: WindowSpec) -> int:
    """The fewest values :func:`make_windows` accepts with ``spec``."""
    if spec.train_size is not None:
        fit = spec.train_size + 1                 # the training windows and one validation window
    else:
        fit = 2
        while not (1 <= int(round(fit * spec.val_fraction)) <= fit - 1):
            fit += 1
    return fit + (spec.horizon - 1) + test_span(spec) + spec.window + spec.horizon - 1


def test_span(spec: WindowSpec) -> int:
    """Windows from the first test window to the last: ``test_size`` of them, ``test_stride`` apart."""
    return (spec.test_size - 1) * spec.test_stride + 1


def _ranges(starts: np.ndarray, counts: np.ndarray, step: int = 1) -> np.ndarray:
    """``concatenate([arange(s, s + c·step, step) for s, c in zip(starts, counts)])`` without the loop."""
    ends = np.cumsum(counts)
    return np.repeat(starts - step * (ends - counts), counts) + step * np.arange(ends[-1] if len(ends) else 0)


def _split_counts(n_windows: np.ndarray, spec: WindowSpec) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation windows of each series (the test part: the last ``test_size``, ``test_stride``
    apart; the windows between them are neither trained nor validated on)."""
    purge = spec.horizon - 1
    n_rest = n_windows - test_span(spec)
    if spec.train_size is None:
        n_val = np.rint((n_rest - purge) * spec.val_fraction).astype(np.int64)   # round half to even, as round()
        n_train = n_rest - purge - n_val
    else:
        n_train = np.full_like(n_windows, spec.train_size)
        n_val = n_rest - purge - spec.train_size
    return n_train, n_val


def window_panel(values: np.ndarray, offsets: np.ndarray, spec: WindowSpec, dtype=np.float32,
                 dates: np.ndarray | None = None, freq: str | None = None, season: int | None = None,
                 ids: np.ndarray | None = None, covariates: Covariates | None = None) -> Windows:
    """Cut every series of a panel (``values[offsets[s]:offsets[s + 1]]``) into windows and splits; with
    ``covariates``, each window's inputs carry them as channels 1…, and each split its ``future`` part."""
    values = np.asarray(values, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.int64)
    if values.ndim != 1:
        raise WindowingError(f"expected a 1-d series, got shape {values.shape}")
    dates = np.arange(len(values)) if dates is None else np.asarray(dates)
    if dates.shape != values.shape:
        raise WindowingError(f"{len(dates)} dates for {len(values)} values")
    ids = np.array([f"series {s}" for s in range(len(offsets) - 1)], dtype=object) if ids is None else np.asarray(ids)
    W, h, purge = spec.window, spec.horizon, spec.horizon - 1
    lengths = np.diff(offsets)
    n_windows = np.maximum(lengths - W - h + 1, 0)
    n_train, n_val = _split_counts(n_windows, spec)
    ok = (n_train >= 1) & (n_val >= 1)
    if not ok.any():
        s = int(np.argmax(lengths))
        strided = f" ({spec.test_size} every {spec.test_stride})" if spec.test_stride > 1 else ""
        raise WindowingError(
            f"series too short: {lengths[s]} values give {n_windows[s]} windows of {W} → {h}, "
            f"but test {test_span(spec)}{strided} + training {n_train[s] if n_train[s] > 0 else '≥1'} + "
            f"validation ≥1 windows"
            f"{f' (+ {purge} left out before the test part)' if purge else ''} need at least {min_length(spec)} "
            f"values{' (the longest series)' if len(lengths) > 1 else ''}; shorten --window or --test-size "
            f"(or --train-size), or give more data")
    kept = np.flatnonzero(ok)
    starts = offsets[kept]                                       # first window of each kept series starts here
    train_ends = starts + n_train[kept] - 1 + W + h
    scalers = PanelTransform.fit(spec.target, [values[a:b] for a, b in zip(starts, train_ends)])
    C = 0 if covariates is None else covariates.channels
    if C:
        channels = covariates.all()                              # (N, C): past, then known-in-advance
        cov_scaler = CovariateScaler.fit(channels, starts, train_ends)
        F = covariates.n_future
        ahead = slice(C - F, C)                                  # the known-in-advance columns
    else:
        cov_scaler = None
    inputs = sliding_window_view(values, W)
    targets = sliding_window_view(values, h)
    tdates = sliding_window_view(dates, h)
    local = np.arange(len(kept))                                 # series numbering of the kept ones

    def part(first: np.ndarray, count: np.ndarray, step: int = 1) -> Split:
        begin = _ranges(starts + first, count, step)             # position of each window's first input
        series = np.repeat(local, count)
        n = len(begin)
        X, y = np.empty((n, W, 1 + C), dtype=dtype), np.empty((n, h), dtype=dtype)
        future = np.empty((n, h * F), dtype=dtype) if C and F else None
        for lo in range(0, n, CHUNK):   # encoded in float64 a chunk at a time: no float64 copy of every window
            rows = slice(lo, lo + CHUNK)
            transform, at = scalers.at(series[rows]), begin[rows]
            X[rows, :, 0] = transform.encode_inputs(inputs[at])
            y[rows] = transform.encode_targets(targets[at + W], values[at + W - 1])
            if C:   # covariates at the window's own steps only; the known-in-advance ones at the targets' too
                X[rows, :, 1:] = cov_scaler.scale(channels[at[:, None] + np.arange(W)], series[rows])
                if future is not None:
                    ahead_block = channels[at[:, None] + W + np.arange(h), ahead]
                    future[rows] = cov_scaler.scale(ahead_block, series[rows], ahead).reshape(len(at), h * F)
        return Split(X=X, y=y, last=values[begin + W - 1], actual=targets[begin + W].copy(), index=begin + W,
                     dates=tdates[begin + W].copy(), series=series, future=future)

    nt, nv, nw = n_train[kept], n_val[kept], n_windows[kept]
    if season is None:
        season = season_length(parse_freq(freq)) if freq else 1
    test = part(nw - test_span(spec), np.full_like(nt, spec.test_size), spec.test_stride)
    if covariates is not None and covariates.ahead:
        covariates = replace(covariates, ahead=tuple(covariates.ahead[k] for k in kept))
    return Windows(part(np.zeros_like(nt), nt), part(nt, nv), test, scalers, W, h, values, dates, freq, season,
                   starts, offsets[kept + 1], ids[kept], train_ends, tuple(ids[~ok]), covariates, cov_scaler)


def make_windows(values: np.ndarray, spec: WindowSpec, dtype=np.float32, dates: np.ndarray | None = None,
                 freq: str | None = None, season: int | None = None) -> Windows:
    """Cut one series into windows and splits; see the module docstring.

    ``dates`` (N,) labels the values at frequency ``freq`` (positions 0 … N − 1 when not given);
    ``season`` defaults to the frequency's (:func:`flows.core.calendar.season_length`), 1 without one.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise WindowingError(f"expected a 1-d series, got shape {values.shape}")
    return window_panel(values, np.array([0, len(values)]), spec, dtype, dates, freq, season)
