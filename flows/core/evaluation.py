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
one-step MAE on the training part) is reported as ``mase_insample``.

Baselines on the same points: naive, ŷ_{t+k} = y_t; seasonal naive with season m,
ŷ_{t+k} = y_{t+k−m·⌈k/m⌉} (the same period one season earlier; m = 1 is the naive forecast);
random walk with drift, ŷ_{t+k} = y_t + k · (y_t − y_0) / t, the drift estimated on all history up
to t. The verdict compares the stateless model (the one that forecasts and is served) with the
strongest baseline; the carried-state mode is shown beside it, never picked on the test set.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from .calendar import next_dates
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
    predictions: dict[str, np.ndarray]   # "model", "carried", "naive", "snaive", "drift" -> (n, h)
    season: int = 1

    #: forecast name -> prefix of its MLflow metrics
    PREFIXES = {"model": "test_", "carried": "carried_test_", "naive": "naive_test_", "snaive": "snaive_test_",
                "drift": "drift_test_"}
    #: baseline name -> how reports call it
    BASELINES = {"naive": "naive (last value)", "snaive": "seasonal naive", "drift": "random walk with drift"}

    def strongest_baseline(self) -> tuple[str, Scores]:
        """The baseline with the lowest test MAE: the bar the model has to clear."""
        name = min(self.BASELINES, key=lambda b: getattr(self, b).mae)
        return name, getattr(self, name)

    def metrics(self) -> dict[str, float]:
        """Every score under its metric name: ``test_mae``, ``carried_test_mae``, ``naive_test_mae``, …"""
        return {k: v for name, prefix in self.PREFIXES.items()
                for k, v in getattr(self, name).as_metrics(prefix).items()}


@dataclass(frozen=True)
class Forecast:
    """The next ``horizon`` values after the last date of the series."""

    dates: np.ndarray    # (h,) datetime64
    values: np.ndarray   # (h,) original units

    def rows(self) -> list[tuple[str, float]]:
        return [(str(d), float(v)) for d, v in zip(self.dates, self.values)]


def scores(actual: np.ndarray, pred: np.ndarray, last: np.ndarray, naive_mae: float, insample_scale: float,
           snaive_mae: float = float("nan")) -> Scores:
    actual, pred = np.asarray(actual, np.float64), np.asarray(pred, np.float64)
    err = pred - actual
    mae = float(np.mean(np.abs(err)))
    mse = float(np.mean(err ** 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        mape = float(np.mean(np.abs(err) / np.abs(actual))) * 100
        denom = np.abs(actual) + np.abs(pred)
        smape = float(np.mean(np.where(denom > 0, 2 * np.abs(err) / denom, 0.0))) * 100
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
        mase_insample=mae / insample_scale if insample_scale > 0 else float("nan"),
        directional_accuracy=float(np.mean(moved == truth)),
    )


def naive_forecast(split: Split, horizon: int) -> np.ndarray:
    return np.repeat(split.last[:, None], horizon, axis=1)


def seasonal_naive_forecast(split: Split, values: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """ŷ_{t+k} = y_{t+k−m·⌈k/m⌉}: each target's value one season (or more, for k > m) before it."""
    k = np.arange(1, horizon + 1)
    back = season * np.ceil(k / season).astype(np.int64)
    return values[split.index[:, None] + (k - 1) - back]


def drift_forecast(split: Split, values: np.ndarray, horizon: int) -> np.ndarray:
    t = split.index - 1                                   # index of each window's last value
    slope = (values[t] - values[0]) / np.maximum(t, 1)
    steps = np.arange(1, horizon + 1)
    return split.last[:, None] + slope[:, None] * steps


def predict(model, X: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Stateless predictions (h0 = 0 for every window), scaled target units."""
    return np.concatenate([model.forward(X[lo:lo + batch])[0] for lo in range(0, len(X), batch)])


def predict_carried(model, X: np.ndarray, warmup: np.ndarray | None = None) -> np.ndarray:
    """Predict window by window, each starting from the previous window's last state."""
    state = None
    if warmup is not None:
        for i in range(len(warmup)):
            _, state = model.forward(warmup[i:i + 1], state)
    out = []
    for i in range(len(X)):
        pred, state = model.forward(X[i:i + 1], state)
        out.append(pred)
    return np.concatenate(out)


def evaluate(model, windows: Windows) -> Evaluation:
    """Scores of the model (both modes) and the baselines on the test windows."""
    test, h = windows.test, windows.horizon
    train_values = windows.values[: windows.train_end]
    insample = float(np.mean(np.abs(np.diff(train_values))))
    stateless = windows.to_levels(predict(model, test.X), test.last)
    carried = (windows.to_levels(predict_carried(model, test.X, windows.val.X), test.last) if model.stateful
               else stateless)
    forecasts = {"model": stateless, "carried": carried, "naive": naive_forecast(test, h),
                 "snaive": seasonal_naive_forecast(test, windows.values, h, windows.season),
                 "drift": drift_forecast(test, windows.values, h)}
    naive_mae, snaive_mae = (float(np.mean(np.abs(forecasts[b] - test.actual))) for b in ("naive", "snaive"))
    return Evaluation(**{name: scores(test.actual, f, test.last, naive_mae, insample, snaive_mae)
                         for name, f in forecasts.items()}, predictions=forecasts, season=windows.season)


def forecast_next(model, windows: Windows) -> Forecast:
    """Forecast the ``horizon`` values after the end of the series from its last window (stateless)."""
    raw = np.asarray(windows.values[-windows.window:], dtype=np.float64)[None, :]
    pred, _ = model.forward(windows.encode(raw, model.dtype))
    dates = next_dates(windows.dates[-1], windows.horizon, windows.freq)
    return Forecast(dates, windows.to_levels(pred, raw[:, -1])[0])
