"""Evaluation in original units against the naive and drift baselines, in both of the source's modes.

Modes: ``stateless`` starts every test window from a zero state (h0 = 0); ``carried`` runs the
validation windows and then the test windows in order, one at a time, passing each window's
last state into the next (the source notebooks' protocol). The MLP has no state, so both modes
coincide for it.

Metrics (original units, over every test window and horizon step):
MSE, RMSE, MAE, MAPE (%), sMAPE (%), directional accuracy (share of steps where the forecast
moves from the window's last value in the same direction as the actual value; a zero forecast
change counts as wrong unless the actual change is zero too), and MASE = MAE / MAE of the naive
forecast on the same points (< 1 ⇔ better than tomorrow = today). Hyndman's in-sample MASE
(scaled by the naive one-step MAE on the training part) is reported as ``mase_insample``.

Baselines on the same points: naive, ŷ_{t+k} = y_t; random walk with drift,
ŷ_{t+k} = y_t + k · (y_t − y_0) / t, the drift estimated on all history up to t.
"""
from __future__ import annotations

import numpy as np

from .windowing import Split, Windows

METRICS = ("mse", "rmse", "mae", "mape", "smape", "mase", "mase_insample", "directional_accuracy")


def metrics(actual: np.ndarray, pred: np.ndarray, last: np.ndarray, naive_mae: float, insample_scale: float) -> dict:
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
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": mae,
        "mape": mape,
        "smape": smape,
        "mase": mae / naive_mae if naive_mae > 0 else float("nan"),
        "mase_insample": mae / insample_scale if insample_scale > 0 else float("nan"),
        "directional_accuracy": float(np.mean(moved == truth)),
    }


def naive_forecast(split: Split, horizon: int) -> np.ndarray:
    return np.repeat(split.last[:, None], horizon, axis=1)


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


def evaluate(model, windows: Windows) -> dict:
    """Metrics of the model (both modes) and the baselines on the test windows.

    Returns ``{"model": {...}, "carried": {...}, "naive": {...}, "drift": {...},
    "predictions": {name: (n, h) array in original units}}``.
    """
    test, h = windows.test, windows.horizon
    train_values = windows.values[: windows.train_end]
    insample = float(np.mean(np.abs(np.diff(train_values))))
    forecasts = {
        "naive": naive_forecast(test, h),
        "drift": drift_forecast(test, windows.values, h),
        "model": windows.to_levels(predict(model, test.X), test.last),
    }
    if getattr(model, "kind", "mlp") == "mlp":
        forecasts["carried"] = forecasts["model"]
    else:
        forecasts["carried"] = windows.to_levels(predict_carried(model, test.X, windows.val.X), test.last)
    naive_mae = float(np.mean(np.abs(forecasts["naive"] - test.actual)))
    result = {name: metrics(test.actual, f, test.last, naive_mae, insample) for name, f in forecasts.items()}
    result["predictions"] = forecasts
    return result


def forecast_next(model, windows: Windows, values: np.ndarray, dtype) -> np.ndarray:
    """Forecast the ``horizon`` values after the end of ``values`` from its last window (stateless)."""
    raw = np.asarray(values[-windows.window:], dtype=np.float64)[None, :]
    pred, _ = model.forward(windows.encode(raw, dtype))
    return windows.to_levels(pred, raw[:, -1])[0]
