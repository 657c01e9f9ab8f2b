"""Statistical baselines from Nixtla's ``statsforecast`` on the model's test points (an optional dependency).

The bar forecasters actually hold a neural network to is a tuned statistical model, not only the naive
forecast. For every series, each model named in ``--stat-baselines`` is fitted once (parameters and, for the
``Auto`` models, the model form chosen by AICc) on the series' history before its first test target; each test
window's forecast then comes from that fitted model run forward (``forward``: the same parameters, the state
filtered through the history up to the window's last value), so every test window is forecast from exactly the
values the network saw before it, and nothing of the test period is used to fit. Season length: the run's season
(``--season`` or the frequency's).

``statsforecast`` is imported only when a baseline is asked for: ``pip install nnforecast[stats]`` (the test
extra includes it). ``auto``, the default, fits AutoETS when it is installed and says so in the report when
not. A series where a model cannot be fitted (too short, constant, a numerical failure) gets the naive
forecast in its place and is named in the report, never silently dropped.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

import numpy as np

#: ``--stat-baselines`` name -> (statsforecast class, how reports call it)
STAT_BASELINES = {"ets": ("AutoETS", "AutoETS (statsforecast)"),
                  "arima": ("AutoARIMA", "AutoARIMA (statsforecast)"),
                  "theta": ("AutoTheta", "AutoTheta (statsforecast)")}
INSTALL_HINT = "pip install 'nnforecast[stats]' (statsforecast)"


def installed() -> bool:
    return importlib.util.find_spec("statsforecast") is not None


def parse(spec: str) -> tuple[str, ...]:
    """``auto`` | ``none`` | a comma list of :data:`STAT_BASELINES` names -> the names to fit (``auto``: AutoETS
    when statsforecast is installed, else none)."""
    if spec == "auto":
        return ("ets",) if installed() else ()
    if spec == "none":
        return ()
    return tuple(dict.fromkeys(s.strip() for s in spec.split(",")))


def check(spec: str) -> str | None:
    """The problem with a ``--stat-baselines`` value, or None."""
    if spec in ("auto", "none"):
        return None
    unknown = [n for n in parse(spec) if n not in STAT_BASELINES]
    if unknown:
        return f"unknown baseline {', '.join(unknown)}; valid: auto, none, or a comma list of {', '.join(STAT_BASELINES)}"
    if not installed():
        return f"statsforecast is not installed: {INSTALL_HINT}, or --stat-baselines none"
    return None


@dataclass
class StatForecasts:
    """Test forecasts (n, h, original units) of each statistical model, and the series each one failed on."""

    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    failed: dict[str, list[str]] = field(default_factory=dict)   # name -> ["series: reason", ...]


def forecast_test(names: tuple[str, ...], values: np.ndarray, starts: np.ndarray, test_index: np.ndarray,
                  test_series: np.ndarray, last: np.ndarray, horizon: int, season: int,
                  ids: np.ndarray) -> StatForecasts:
    """Each model's forecasts of the test windows (``test_index``: each window's first target in ``values``,
    ``test_series``: its series; ``starts``: each series' first value)."""
    out = StatForecasts()
    if not names:
        return out
    import statsforecast.models as sf

    for name in names:
        cls = getattr(sf, STAT_BASELINES[name][0])
        pred = np.repeat(np.asarray(last, np.float64)[:, None], horizon, axis=1)   # the naive forecast until fitted
        failed = []
        for s in np.unique(test_series):
            rows = np.flatnonzero(test_series == s)
            rows = rows[np.argsort(test_index[rows])]
            start = starts[s]
            history = np.asarray(values[start:test_index[rows[0]]], np.float64)
            try:
                model = cls(season_length=season).fit(history)
                pred[rows[0]] = model.predict(horizon)["mean"]
                for r in rows[1:]:
                    pred[r] = model.forward(np.asarray(values[start:test_index[r]], np.float64), horizon)["mean"]
            except Exception as e:   # noqa: BLE001 — any failure of the third-party fit: naive there, and reported
                failed.append(f"{ids[s]}: {type(e).__name__}: {e}")
                pred[rows] = np.repeat(np.asarray(last, np.float64)[rows, None], horizon, axis=1)
        if not np.all(np.isfinite(pred)):
            bad = np.unique(test_series[~np.isfinite(pred).all(axis=1)])
            failed += [f"{ids[s]}: non-finite forecast" for s in bad]
            rows = np.isin(test_series, bad)
            pred[rows] = np.repeat(np.asarray(last, np.float64)[rows, None], horizon, axis=1)
        out.predictions[name] = pred
        out.failed[name] = failed
    return out
