"""Evaluation in original units against the naive, seasonal naive and drift baselines, in both of the source's modes.

Modes: ``stateless`` starts every test window from a zero state (h0 = 0); ``carried`` runs the
validation windows and then the test windows in order, one at a time, passing each window's
last state into the next (the source notebooks' protocol). A model that is not ``stateful``
(the MLP) gives the same forecasts in both modes.

Metrics (original units, over every test window and horizon step):
MSE, RMSE, MAE, MAPE (%), sMAPE (%), directional accuracy (share of steps where the forecast
moves from the window's last value in the same direction as the actual value; a zero forecast
change counts as wrong unless the actual change is zero too), and MASE = MAE / MAE of the naive
forecast on the same points (< 1 ⇔ better than tomorrow = today), ``mase_snaive`` = MAE / MAE of
the seasonal naive forecast on the same points. Hyndman's in-sample MASE (scaled by the naive
one-step MAE of the series' history before its test period) is reported as ``mase_insample``,
and per series for a panel (:func:`per_series`, :meth:`Evaluation.panel`).

Baselines on the same points: naive, ŷ_{t+k} = y_t; seasonal naive with season m,
ŷ_{t+k} = y_{t+k−m·⌈k/m⌉} (the same period one season earlier; m = 1 is the naive forecast);
random walk with drift, ŷ_{t+k} = y_t + k · (y_t − y_0) / t, the drift estimated on all history up
to t; and the statistical models of ``--stat-baselines`` (statsforecast's AutoETS, AutoARIMA, AutoTheta:
:mod:`flows.core.statistical`), fitted on each series' history before its test period. The verdict compares the stateless model (the one that forecasts and is served) with the
strongest baseline; the carried-state mode is shown beside it, never picked on the test set.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pandas as pd

from . import statistical
from .calendar import next_dates
from .composite import LocalModels
from .statistical import STAT_BASELINES
from .windowing import Split, Windows


@dataclass(frozen=True)
class Scores:
    """The metrics of one forecast on the test points (see the module docstring)."""

    mse: float
    rmse: float
    mae: float
    mape: float
    smape: float
    mase: float
    mase_snaive: float
    mase_insample: float
    directional_accuracy: float

    def as_metrics(self, prefix: str) -> dict[str, float]:
        return {prefix + k: v for k, v in asdict(self).items()}


METRICS = tuple(f.name for f in fields(Scores))


@dataclass(frozen=True)
class Evaluation:
    """Scores and test forecasts (n, h, original units) of the model in both modes and of the baselines."""

    model: Scores
    carried: Scores
    naive: Scores
    snaive: Scores
    drift: Scores
    predictions: dict[str, np.ndarray]   # "model", "carried", "naive", "snaive", "drift", "ets", … -> (n, h)
    season: int = 1
    per_series: dict = field(default_factory=dict)   # column -> (S,): see per_series()
    statistical: dict[str, Scores] = field(default_factory=dict)   # "ets", "arima", …: see statistical.py
    stat_failed: dict[str, list[str]] = field(default_factory=dict)   # name -> series it fell back to naive on

    #: forecast name -> prefix of its MLflow metrics
    PREFIXES = {"model": "test_", "carried": "carried_test_", "naive": "naive_test_", "snaive": "snaive_test_",
                "drift": "drift_test_"}
    #: baseline name -> how reports call it
    BASELINES = {"naive": "naive (last value)", "snaive": "seasonal naive", "drift": "random walk with drift"}

    def panel(self) -> dict[str, float]:
        """Across series: the mean and median MASE (each series scaled by its own in-sample naive MAE) of the model
        and the baselines, and the share of series where the model's test MAE beats each baseline's."""
        t = self.per_series
        out = {}
        for name in ("model", *self.baselines()):
            out[f"{name}_mase_mean"] = float(np.mean(t[f"{name}_mase"]))
            out[f"{name}_mase_median"] = float(np.median(t[f"{name}_mase"]))
        for name in self.baselines():
            out[f"share_beating_{name}"] = float(np.mean(t["model_mae"] < t[f"{name}_mae"]))
        out["series"] = float(len(t["unique_id"]))
        return out

    def baselines(self) -> dict[str, Scores]:
        """Every baseline's scores: naive, seasonal naive, drift, then the statistical models that were fitted."""
        return {**{name: getattr(self, name) for name in self.BASELINES}, **self.statistical}

    @classmethod
    def label(cls, name: str) -> str:
        return cls.BASELINES[name] if name in cls.BASELINES else STAT_BASELINES[name][1]

    def strongest_baseline(self) -> tuple[str, Scores]:
        """The baseline with the lowest test MAE: the bar the model has to clear."""
        baselines = self.baselines()
        name = min(baselines, key=lambda b: baselines[b].mae)
        return name, baselines[name]

    def metrics(self) -> dict[str, float]:
        """Every score under its metric name: ``test_mae``, ``carried_test_mae``, ``naive_test_mae``,
        ``ets_test_mae``, …"""
        named = {**{name: getattr(self, name) for name in self.PREFIXES}, **self.statistical}
        return {k: v for name, sc in named.items()
                for k, v in sc.as_metrics(self.PREFIXES.get(name, f"{name}_test_")).items()}


@dataclass(frozen=True)
class Forecast:
    """The next ``horizon`` values of every series, one row per series and step (``unique_id, ds, step, yhat``)."""

    unique_id: np.ndarray   # (S·h,)
    ds: np.ndarray          # (S·h,) datetime64 (or positions)
    step: np.ndarray        # (S·h,) 1 … h
    yhat: np.ndarray        # (S·h,) original units
    note: str = ""          # why there is no forecast (an empty table), e.g. known covariates missing

    @classmethod
    def none(cls, note: str) -> "Forecast":
        """No next values, and why."""
        empty = np.array([], dtype=object)
        return cls(empty, np.array([], dtype="datetime64[s]"), np.array([], dtype=np.int64), np.array([]), note)

    @classmethod
    def of_one(cls, dates: np.ndarray, values: np.ndarray, unique_id: str = "y") -> "Forecast":
        n = len(values)
        return cls(np.full(n, unique_id, dtype=object), np.asarray(dates), np.arange(1, n + 1), np.asarray(values))

    @property
    def dates(self) -> np.ndarray:
        return self.ds

    @property
    def values(self) -> np.ndarray:
        return self.yhat

    def rows(self) -> list[tuple[str, float]]:
        """(date, value) of each row (a panel of one: the forecast in date order)."""
        return [(str(d), float(v)) for d, v in zip(self.ds, self.yhat)]

    def frame(self) -> pd.DataFrame:
        """The table as Nixtla's libraries write it: ``unique_id, ds, step, yhat``."""
        return pd.DataFrame({"unique_id": self.unique_id, "ds": self.ds, "step": self.step, "yhat": self.yhat})


def scores(actual: np.ndarray, pred: np.ndarray, last: np.ndarray, naive_mae: float, insample_scale: np.ndarray,
           snaive_mae: float = float("nan")) -> Scores:
    """``insample_scale``: each window's series' in-sample naive MAE, (n,) or one for all (errors are divided by it)."""
    actual, pred = np.asarray(actual, np.float64), np.asarray(pred, np.float64)
    err = pred - actual
    mae = float(np.mean(np.abs(err)))
    mse = float(np.mean(err ** 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        mape = float(np.mean(np.abs(err) / np.abs(actual))) * 100
        denom = np.abs(actual) + np.abs(pred)
        smape = float(np.mean(np.where(denom > 0, 2 * np.abs(err) / denom, 0.0))) * 100
        scale = np.broadcast_to(np.asarray(insample_scale, dtype=np.float64), err.shape[:1])
        mase_insample = float(np.mean(np.abs(err) / scale[:, None])) if np.all(scale > 0) else float("nan")
    moved = np.sign(pred - last[:, None])
    truth = np.sign(actual - last[:, None])
    return Scores(
        mse=mse,
        rmse=float(np.sqrt(mse)),
        mae=mae,
        mape=mape,
        smape=smape,
        mase=mae / naive_mae if naive_mae > 0 else float("nan"),
        mase_snaive=mae / snaive_mae if snaive_mae > 0 else float("nan"),
        mase_insample=mase_insample,
        directional_accuracy=float(np.mean(moved == truth)),
    )


def naive_forecast(split: Split, horizon: int) -> np.ndarray:
    return np.repeat(split.last[:, None], horizon, axis=1)


def seasonal_naive_forecast(split: Split, values: np.ndarray, horizon: int, season: int,
                            starts: np.ndarray | None = None) -> np.ndarray:
    """ŷ_{t+k} = y_{t+k−m·⌈k/m⌉}: each target's value one season (or more, for k > m) before it; where that lies
    before the series' first value (``starts``: per window), the naive forecast."""
    k = np.arange(1, horizon + 1)
    back = season * np.ceil(k / season).astype(np.int64)
    pos = split.index[:, None] + (k - 1) - back
    first = np.zeros(len(split.index), dtype=np.int64) if starts is None else starts
    return np.where(pos >= first[:, None], values[np.maximum(pos, 0)], split.last[:, None])


def drift_forecast(split: Split, values: np.ndarray, horizon: int, starts: np.ndarray | None = None) -> np.ndarray:
    """The last value plus k times the average step since the series' first value (``starts``: per window)."""
    first = np.zeros(len(split.index), dtype=np.int64) if starts is None else starts
    t = split.index - 1                                   # index of each window's last value
    slope = (values[t] - values[first]) / np.maximum(t - first, 1)
    steps = np.arange(1, horizon + 1)
    return split.last[:, None] + slope[:, None] * steps


def predict(model, X: np.ndarray, batch: int = 8192, series: np.ndarray | None = None,
            future: np.ndarray | None = None) -> np.ndarray:
    """Stateless predictions (h0 = 0 for every window), scaled target units (``series``: each window's series,
    which per-series models need; ``future``: the windows' known-in-advance inputs)."""
    if isinstance(model, LocalModels):
        return model.predict(X, series, batch, future)
    return np.concatenate([forward(model, X[lo:lo + batch], None, None if future is None else future[lo:lo + batch])[0]
                           for lo in range(0, len(X), batch)])


def forward(model, X: np.ndarray, state=None, future: np.ndarray | None = None):
    """``model.predict`` (the forward for inference; ``forward`` for a model without one), with the
    known-in-advance inputs when there are any."""
    run = getattr(model, "predict", model.forward)
    return run(X, state) if future is None else run(X, state, future=future)


def predict_carried(model, X: np.ndarray, warmup: np.ndarray | None = None, future: np.ndarray | None = None,
                    warmup_future: np.ndarray | None = None) -> np.ndarray:
    """Predict window by window, each starting from the previous window's last state (one series)."""
    def at(f, i):
        return None if f is None else f[i:i + 1]

    state = None
    if warmup is not None:
        for i in range(len(warmup)):
            _, state = forward(model, warmup[i:i + 1], state, at(warmup_future, i))
    out = []
    for i in range(len(X)):
        pred, state = forward(model, X[i:i + 1], state, at(future, i))
        out.append(pred)
    return np.concatenate(out)


def predict_carried_panel(model, test: Split, val: Split) -> np.ndarray:
    """:func:`predict_carried` series by series: each series warms up on its own validation windows, then carries
    its state through its own test windows; a state never passes from one series to another."""
    out = np.empty((len(test), test.y.shape[1]))
    for s in np.unique(test.series):
        rows = test.series == s
        one = model.of(s) if isinstance(model, LocalModels) else model
        vrows = val.series == s
        out[rows] = predict_carried(one, test.X[rows], val.X[vrows], None if test.future is None else test.future[rows],
                                    None if val.future is None else val.future[vrows])
    return out


def evaluate(model, windows: Windows, stat_baselines: tuple[str, ...] = ()) -> Evaluation:
    """Scores of the model (both modes) and the baselines on the test windows, pooled and per series
    (``stat_baselines``: the statsforecast models to fit as well, :mod:`flows.core.statistical`)."""
    test, h = windows.test, windows.horizon
    # Hyndman's scale: each series' mean absolute one-step change over all its history before the test period
    origin = np.full(windows.n_series, np.iinfo(np.int64).max)
    np.minimum.at(origin, test.series, test.index)             # each series' first test target
    scale = np.array([np.mean(np.abs(np.diff(windows.values[a:b]))) for a, b in zip(windows.starts, origin)])
    starts = windows.starts[test.series]
    stateless = windows.to_levels(predict(model, test.X, series=test.series, future=test.future), test.last,
                                  test.series)
    carried = (windows.to_levels(predict_carried_panel(model, test, windows.val), test.last, test.series)
               if model.stateful else stateless)
    forecasts = {"model": stateless, "carried": carried, "naive": naive_forecast(test, h),
                 "snaive": seasonal_naive_forecast(test, windows.values, h, windows.season, starts),
                 "drift": drift_forecast(test, windows.values, h, starts)}
    stat = statistical.forecast_test(stat_baselines, windows.values, windows.starts, test.index, test.series,
                                     test.last, h, windows.season, windows.ids)
    forecasts.update(stat.predictions)
    naive_mae, snaive_mae = (float(np.mean(np.abs(forecasts[b] - test.actual))) for b in ("naive", "snaive"))
    scored = {name: scores(test.actual, f, test.last, naive_mae, scale[test.series], snaive_mae)
              for name, f in forecasts.items()}
    return Evaluation(**{name: scored[name] for name in Evaluation.PREFIXES}, predictions=forecasts,
                      season=windows.season, per_series=per_series(test, forecasts, scale, windows.ids),
                      statistical={name: scored[name] for name in stat.predictions}, stat_failed=stat.failed)


def per_series(test: Split, forecasts: dict[str, np.ndarray], scale: np.ndarray, ids: np.ndarray) -> dict:
    """Each series' test MAE for every forecast and its MASE (scaled by its own in-sample naive MAE), as columns."""
    counts = np.bincount(test.series, minlength=len(ids))
    table = {"unique_id": np.asarray(ids, dtype=object), "test_windows": counts}
    for name, f in forecasts.items():
        mae = np.bincount(test.series, weights=np.abs(f - test.actual).mean(axis=1), minlength=len(ids)) / counts
        table[f"{name}_mae"] = mae
        table[f"{name}_mase"] = mae / scale
    return table


def next_baselines(windows: Windows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the ``horizon`` values after every series' end: each series' origin (its last timestamp), the naive
    forecast (S, h) and the seasonal naive one (S, h; NaN where the season reaches before the series' start)."""
    h, m = windows.horizon, windows.season
    k = np.arange(1, h + 1)
    pos = windows.ends[:, None] + (k - 1) - m * np.ceil(k / m).astype(np.int64)   # one season (or more) before
    naive = np.repeat(windows.values[windows.ends - 1][:, None], h, axis=1)
    snaive = np.where(pos >= windows.starts[:, None], windows.values[np.maximum(pos, 0)], np.nan)
    return windows.dates[windows.ends - 1], naive, snaive


def forecast_next(model, windows: Windows) -> Forecast:
    """Forecast the ``horizon`` values after the end of every series from its last window (stateless); with
    covariates, from theirs too, and the known-in-advance ones of the next periods (:class:`MissingFuture` when
    the data does not have them)."""
    S, W, h = windows.n_series, windows.window, windows.horizon
    series = np.arange(S)
    steps = windows.ends[:, None] - W + np.arange(W)                               # (S, W) the last windows
    raw = windows.values[steps]
    dates = [next_dates(windows.dates[e - 1], h, windows.freq) for e in windows.ends]
    X, future, cov = windows.encode(raw, model.dtype, series), None, windows.covariates
    if cov is not None:
        X = np.concatenate([X, windows.cov_scaler.scale(cov.all()[steps], series).astype(model.dtype)], axis=2)
        if cov.n_future:
            C, F = cov.channels, cov.n_future
            block = np.stack([cov.next_future(s, dates[s], windows.ids[s]) for s in series])   # (S, h, F)
            future = windows.cov_scaler.scale(block, series, slice(C - F, C)).reshape(S, h * F).astype(model.dtype)
    pred = predict(model, X, series=series, future=future)
    yhat = windows.to_levels(pred, raw[:, -1], series)                              # (S, h)
    return Forecast(np.repeat(windows.ids, h), np.concatenate(dates), np.tile(np.arange(1, h + 1), S), yhat.ravel())
