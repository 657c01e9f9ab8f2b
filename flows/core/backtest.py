"""Backtesting: walk-forward folds, the Diebold–Mariano test, a lag-copy check, split-conformal intervals.

Protocol
--------
* **Walk-forward.** ``walk_forward`` cuts a series of ``n`` values into ``k`` folds whose test
  blocks are consecutive and end at ``n``. Each fold is windowed by ``fold_windows`` with
  :func:`flows.windowing.make_windows` on ``values[fold.start:fold.end]`` alone, so the scaler
  (and whatever model the caller trains on it) is refit inside every fold and never sees the
  fold's test period. ``expanding`` folds start at 0; ``rolling`` folds keep the same number of
  values before their test block, hence the same number of training + validation windows.
  For ``horizon`` h > 1, ``make_windows`` leaves out the h − 1 windows before the test part,
  whose targets would run into the first test targets.
* **Diebold–Mariano** (Diebold & Mariano 1995) with the small-sample correction of Harvey,
  Leybourne & Newbold (1997), as R ``forecast::dm.test(varestimator="acf")``: loss differential
  d_t = |e_model,t|^p − |e_bench,t|^p, long-run variance from the autocovariances of d up to
  lag h − 1 (truncated rectangular kernel), Student t with n − 1 degrees of freedom (``scipy.stats.t``).
* **Lag copy.** A one-step forecast that mostly repeats the last observed value scores well on
  level metrics while adding nothing; the cross-correlation of first differences
  corr(Δpred_t, Δactual_{t−k}) then peaks at k = 1 instead of k = 0.
* **Split conformal** (Vovk, Gammerman & Shafer 2005; Lei, G'Sell, Rinaldo, Tibshirani &
  Wasserman 2018): with q the ⌈(n + 1)·level⌉-th smallest of n absolute calibration residuals,
  pred ± q covers a fresh exchangeable point with probability ≥ level (and < level + 1/(n + 1)
  for continuous residuals).

Pure functions of NumPy arrays; no I/O.

References: F. X. Diebold, R. S. Mariano (1995), Comparing predictive accuracy, J. Business &
Economic Statistics 13(3) 253–263. D. Harvey, S. Leybourne, P. Newbold (1997), Testing the
equality of prediction mean squared errors, Int. J. Forecasting 13(2) 281–291. J. Lei et al.
(2018), Distribution-free predictive inference for regression, JASA 113(523) 1094–1111.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
from scipy import stats

from .config import ModelSpec, TrainSpec, WindowSpec
from .evaluation import evaluate, predict
from .training import train
from .windowing import Windows, WindowingError, make_windows

MODES = ("expanding", "rolling")
ALTERNATIVES = ("two-sided", "less", "greater")


# ---------------------------------------------------------------------------------------- folds

@dataclass(frozen=True)
class Fold:
    """Fold ``index`` uses ``values[start:end]``; its test windows are the last ``test_size`` ones.

    With horizon h the test targets occupy positions ``test_start(test_size, h)`` … ``end − 1``
    (the last ``test_size`` values when h = 1).
    """

    index: int
    start: int
    end: int

    def test_start(self, test_size: int, horizon: int = 1) -> int:
        """Series position of the first test target value."""
        return self.end - test_size - horizon + 1


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def walk_forward(n: int, k: int, test_size: int, window: int, horizon: int = 1, mode: str = "expanding",
                 train_span: int | None = None, min_train: int = 2) -> list[Fold]:
    """``k`` walk-forward folds over a series of ``n`` values.

    Fold i ends at ``end_i = n − (k − 1 − i)·test_size``, so the test blocks follow one another and
    the last ends at ``n``. ``expanding``: ``start_i = 0``. ``rolling``: ``train_span`` values
    precede every test block, ``start_i = end_i − test_size − horizon + 1 − train_span``, which gives
    every fold ``train_span − window`` training + validation windows.

    ``min_train`` is the least number of training + validation windows a fold may have (2: one
    of each, the least ``make_windows`` accepts). Raises ``ValueError`` naming the first fold that
    is too short and the series length it would need.
    """
    for name, value, minimum in (("n", n, 1), ("k", k, 1), ("test_size", test_size, 1),
                                 ("window", window, 1), ("horizon", horizon, 1), ("min_train", min_train, 2)):
        _check_int(name, value, minimum)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "expanding":
        if train_span is not None:
            raise ValueError("train_span is used only with mode='rolling'; leave it None for 'expanding'")
        first_end = n - (k - 1) * test_size
        n_fit = first_end - window - horizon + 1 - test_size        # training + validation windows of fold 0
        if n_fit < min_train:
            need = k * test_size + window + horizon - 1 + min_train
            raise ValueError(
                f"fold 0 of {k} has {max(n_fit, 0)} training + validation windows, fewer than min_train={min_train}: "
                f"{k} test blocks of {test_size}, window {window} and horizon {horizon} need n >= {need}, got n={n}")
        return [Fold(i, 0, n - (k - 1 - i) * test_size) for i in range(k)]

    if train_span is None:
        raise ValueError("mode='rolling' needs train_span (values before each test block)")
    _check_int("train_span", train_span, 1)
    if train_span - window < min_train:
        raise ValueError(f"train_span={train_span} gives {max(train_span - window, 0)} training + validation windows "
                         f"of {window}; min_train={min_train} needs train_span >= {window + min_train}")
    folds = []
    for i in range(k):
        end = n - (k - 1 - i) * test_size
        start = end - test_size - horizon + 1 - train_span
        if start < 0:
            need = k * test_size + horizon - 1 + train_span
            raise ValueError(f"fold {i} of {k} would start at {start} < 0: {k} test blocks of {test_size}, horizon "
                             f"{horizon} and train_span {train_span} need n >= {need}, got n={n}")
        folds.append(Fold(i, start, end))
    return folds


def fold_windows(values: np.ndarray, fold: Fold, spec: WindowSpec, dtype=np.float32,
                 dates: np.ndarray | None = None) -> Windows:
    """``make_windows`` on ``values[fold.start:fold.end]``, with positions in the full series.

    The fold is split by ``spec.val_fraction`` (``spec.train_size`` is ignored: folds differ in
    length). Every ``Split.index`` is shifted by ``fold.start``; ``Windows.values`` is
    ``values[:fold.end]`` so ``windows.values[split.index]`` stays the first target and ``evaluate``
    works unchanged (its drift baseline and in-sample MASE scale then use all history before the
    fold's test block, never anything after). No training or validation target reaches the test
    block (for h > 1 ``make_windows`` leaves out the h − 1 windows in between).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be a 1-d series, got shape {values.shape}")
    dates = np.arange(len(values)) if dates is None else np.asarray(dates)
    if not 0 <= fold.start < fold.end <= len(values):
        raise ValueError(f"fold {fold.index} [{fold.start}, {fold.end}) is outside the series of {len(values)} values")
    try:
        w = make_windows(values[fold.start:fold.end], replace(spec, train_size=None), dtype,
                         dates[fold.start:fold.end])
    except WindowingError as err:
        raise WindowingError(f"fold {fold.index} [{fold.start}, {fold.end}): {err}") from err

    def shifted(split):
        return replace(split, index=split.index + fold.start)

    return replace(w, train=shifted(w.train), val=shifted(w.val), test=shifted(w.test), values=values[:fold.end],
                   dates=dates[:fold.end], starts=np.zeros_like(w.starts), ends=w.ends + fold.start,
                   train_ends=w.train_ends + fold.start)   # the series is all history up to the fold's end


# ------------------------------------------------------------------------------- Diebold–Mariano

def _as_1d(name: str, a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        bad = int(np.flatnonzero(~np.isfinite(a))[0])
        raise ValueError(f"{name} has a non-finite value {a[bad]} at position {bad}")
    return a


def _same_length(**arrays) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError("arrays of different lengths: " + ", ".join(f"{k}={v}" for k, v in lengths.items()))


def diebold_mariano(e_model, e_bench, h: int = 1, power: int = 2, alternative: str = "two-sided") -> dict:
    """Diebold–Mariano test with the Harvey–Leybourne–Newbold correction (R ``dm.test``, "acf").

    d_t = |e_model,t|^power − |e_bench,t|^power, d̄ its mean, γ_j = (1/n)·Σ_{t=j}^{n−1} (d_t − d̄)(d_{t−j} − d̄),
    V = (γ_0 + 2·Σ_{j=1}^{h−1} γ_j) / n, statistic = d̄/√V · √((n + 1 − 2h + h(h − 1)/n) / n), p-value
    from Student t with n − 1 degrees of freedom. ``alternative``: "less" — the model is more
    accurate (d̄ < 0, a negative statistic); "greater" — less accurate; "two-sided" — either.

    If V <= 0 (up to rounding: V <= 1e-12·γ_0/n) — d constant, e.g. identical errors, or negative
    autocovariances outweighing γ_0 for h > 1 — the test is undefined: ``statistic`` and
    ``p_value`` are nan. R stops (h = 1) or retries with h = 1 and a warning; we do neither.

    Returns ``{"statistic", "p_value", "mean_loss_diff", "n", "h"}``.
    """
    e_model, e_bench = _as_1d("e_model", e_model), _as_1d("e_bench", e_bench)
    _same_length(e_model=e_model, e_bench=e_bench)
    _check_int("h", h, 1)
    if not power > 0:
        raise ValueError(f"power must be > 0, got {power}")
    if alternative not in ALTERNATIVES:
        raise ValueError(f"unknown alternative {alternative!r}; valid: {', '.join(ALTERNATIVES)}")
    n = len(e_model)
    if n < 2:
        raise ValueError(f"diebold_mariano needs at least 2 paired errors, got {n}")
    if h >= n:
        raise ValueError(f"h must be smaller than the number of errors n={n}, got h={h}")

    d = np.abs(e_model) ** power - np.abs(e_bench) ** power
    mean = float(d.mean())
    dev = d - mean
    gammas = [float(dev[j:] @ dev[:n - j]) / n for j in range(h)]
    var = (gammas[0] + 2.0 * sum(gammas[1:])) / n
    result = {"statistic": math.nan, "p_value": math.nan, "mean_loss_diff": mean, "n": n, "h": h}
    if np.ptp(d) == 0 or var <= 1e-12 * gammas[0] / n:     # V <= 0 up to rounding
        return result
    hln = math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    stat = mean / math.sqrt(var) * hln
    t = stats.t(df=n - 1)
    if alternative == "two-sided":
        p = 2.0 * float(t.sf(abs(stat)))
    elif alternative == "less":
        p = float(t.cdf(stat))
    else:
        p = float(t.sf(stat))
    result.update(statistic=stat, p_value=min(p, 1.0))
    return result


# ------------------------------------------------------------------------------------- lag copy

def lag_copy(pred, actual, max_lag: int = 5) -> dict:
    """Cross-correlation of first differences of one-step forecasts and actual values.

    ``pred[t]`` forecasts ``actual[t]`` (levels, aligned, 1-d). r_k = corr(Δpred_t, Δactual_{t−k})
    over the overlapping t, k = −max_lag … max_lag. A forecast that copies the last observed value
    peaks at k = 1 with r_1 ≈ 1; a useful one peaks at k = 0. Rule:
    ``copies_last_value = peak_lag == 1 and r1 > 0.5``.

    Returns ``{"lags", "xcorr", "peak_lag", "r0", "r1", "copies_last_value"}``.
    """
    pred, actual = _as_1d("pred", pred), _as_1d("actual", actual)
    _same_length(pred=pred, actual=actual)
    _check_int("max_lag", max_lag, 1)
    dp, da = np.diff(pred), np.diff(actual)
    m = len(dp)
    if m - max_lag < 3:
        raise ValueError(f"lag_copy needs at least max_lag + 4 = {max_lag + 4} values for max_lag={max_lag}, "
                         f"got {len(pred)}")
    for name, diffs in (("pred", dp), ("actual", da)):
        if np.ptp(diffs) == 0:
            raise ValueError(f"{name} has constant first differences; its cross-correlation is undefined")

    lags = list(range(-max_lag, max_lag + 1))
    xcorr = []
    for k in lags:
        # pairs (Δpred_t, Δactual_{t−k}) for every t where both exist
        p, a = (dp[k:], da[:m - k]) if k >= 0 else (dp[:m + k], da[-k:])
        p, a = p - p.mean(), a - a.mean()
        denom = math.sqrt(float(p @ p) * float(a @ a))
        xcorr.append(float(p @ a) / denom if denom > 0 else math.nan)
    if all(math.isnan(r) for r in xcorr):
        raise ValueError("every cross-correlation is undefined (constant differences on every overlap)")
    peak_lag = lags[int(np.nanargmax(xcorr))]
    r0, r1 = xcorr[max_lag], xcorr[max_lag + 1]
    return {"lags": lags, "xcorr": xcorr, "peak_lag": peak_lag, "r0": r0, "r1": r1,
            "copies_last_value": bool(peak_lag == 1 and r1 > 0.5)}


# ----------------------------------------------------------------------------- split conformal

def conformal_quantile(residuals, level: float) -> float:
    """The ⌈(n + 1)·level⌉-th smallest of the n absolute calibration residuals.

    pred ± q then covers a fresh exchangeable point with probability >= level. When
    ⌈(n + 1)·level⌉ > n (too few residuals for the level) the only valid half-width is ``inf``.
    """
    residuals = _as_1d("residuals", residuals)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = len(residuals)
    if n < 1:
        raise ValueError("residuals is empty")
    # round first: (n + 1)·level in floating point may land just above an integer (e.g. 0.7·10)
    rank = math.ceil(round((n + 1) * level, 9))
    if rank > n:
        return math.inf
    return float(np.partition(np.abs(residuals), rank - 1)[rank - 1])


def interval_coverage(actual, pred, q: float) -> dict:
    """Share of ``|actual − pred| <= q`` and the interval width 2q (the same for every point)."""
    actual, pred = _as_1d("actual", actual), _as_1d("pred", pred)
    _same_length(actual=actual, pred=pred)
    if len(actual) == 0:
        raise ValueError("actual is empty")
    if not q >= 0:
        raise ValueError(f"q must be >= 0, got {q}")
    return {"coverage": float(np.mean(np.abs(actual - pred) <= q)), "width": 2.0 * float(q)}


# ------------------------------------------------------------------------------------ summaries

def summarize(values: list[float]) -> dict:
    """Mean, sample std (ddof = 1; 0 for a single value), min, max and count of per-fold metrics."""
    a = _as_1d("values", values)
    if len(a) == 0:
        raise ValueError("values is empty")
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max()), "n": len(a)}


# ------------------------------------------------------------------------------ one configuration

#: per-fold metrics summarised as mean and spread over the folds
SUMMARY_METRICS = ("test_mae", "test_rmse", "test_mase", "carried_test_mae", "coverage", "interval_width",
                   "naive_test_mae", "drift_test_mae")


@dataclass(frozen=True)
class BacktestResult:
    """One configuration on every fold: per-fold rows, their summary, DM against naive, lag copy."""

    per_fold: list[dict]        # fold, test_mae, test_rmse, test_mase, carried_test_mae, naive_test_mae,
    #                             drift_test_mae, coverage, interval_width, best_epoch, train_seconds
    summary: dict[str, float]   # mean_<metric>, std_<metric> for SUMMARY_METRICS
    dm: dict                    # diebold_mariano() of the last horizon step, all folds' test points
    lag: dict                   # lag_copy() of the one-step forecasts
    seconds: float

    def metrics(self) -> dict[str, float]:
        """The summary as MLflow metrics."""
        return {**self.summary, "seconds": self.seconds, "dm_statistic": self.dm["statistic"],
                "dm_p_value": self.dm["p_value"], "lag_copy_peak_lag": self.lag["peak_lag"],
                "lag_copy_r1": self.lag["r1"], "copies_last_value": float(self.lag["copies_last_value"])}


def backtest_config(values: np.ndarray, folds: list[Fold], windows: WindowSpec, model: ModelSpec,
                    training: TrainSpec, level: float,
                    on_fold: Callable[[int, dict], None] | None = None) -> BacktestResult:
    """Train and evaluate one configuration on every fold (the scaler refit inside each).

    Split-conformal intervals at ``level`` come from each fold's validation residuals;
    ``on_fold(index, row)`` receives each fold's metrics as they are computed.
    """
    rows, err_model, err_naive, pred_all, actual_all = [], [], [], [], []
    t0 = time.perf_counter()
    for fold in folds:
        w = fold_windows(values, fold, windows, np.dtype(model.dtype))
        result = train(w, model, training)
        ev = evaluate(result.model, w)
        val_pred = w.to_levels(predict(result.model, w.val.X), w.val.last)
        pred, actual = ev.predictions["model"], w.test.actual
        q = [conformal_quantile(val_pred[:, j] - w.val.actual[:, j], level) for j in range(w.horizon)]
        cov = [interval_coverage(actual[:, j], pred[:, j], q[j]) for j in range(w.horizon)]
        row = {"fold": fold.index, "test_mae": ev.model.mae, "test_rmse": ev.model.rmse, "test_mase": ev.model.mase,
               "carried_test_mae": ev.carried.mae, "naive_test_mae": ev.naive.mae, "drift_test_mae": ev.drift.mae,
               "coverage": float(np.mean([c["coverage"] for c in cov])),
               "interval_width": float(np.mean([c["width"] for c in cov])),
               "best_epoch": result.best_epoch, "train_seconds": result.seconds}
        if on_fold is not None:
            on_fold(fold.index, row)
        rows.append(row)
        err_model.append(pred[:, -1] - actual[:, -1])
        err_naive.append(ev.predictions["naive"][:, -1] - actual[:, -1])
        pred_all.append(pred[:, 0])
        actual_all.append(actual[:, 0])
    summary = {}
    for key in SUMMARY_METRICS:
        s = summarize([r[key] for r in rows])
        summary[f"mean_{key}"], summary[f"std_{key}"] = s["mean"], s["std"]
    return BacktestResult(rows, summary,
                          diebold_mariano(np.concatenate(err_model), np.concatenate(err_naive), h=windows.horizon),
                          lag_copy(np.concatenate(pred_all), np.concatenate(actual_all)), time.perf_counter() - t0)


@dataclass(frozen=True)
class SweepEntry:
    """One configuration of a sweep: its label, its MLflow run and its backtest."""

    label: str
    run_id: str
    result: BacktestResult

    def stat(self, name: str) -> float:
        """A mean or spread over the folds: ``stat("mean_test_mae")``."""
        return self.result.summary[name]
