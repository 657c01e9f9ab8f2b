"""Saving and loading a trained forecaster without pickle: ``weights.npz`` + ``config.json``.

The config holds everything needed to turn raw values into a forecast: the architecture
(``model``), the window, the horizon and the fitted transform — ``scaler`` for a model of one
series, ``scalers`` (one set of constants per series) and ``series`` (their ids) for a model of a
panel; ``per_series_models`` (their number; weights keyed ``<series index>/<name>``) when every series
has its own network (``--per-series``), ``ensemble`` (members keyed ``m<k>/<name>``) for ``--ensemble``.
:func:`warm_start_weights` decides whether a saved forecaster's weights can start tonight's training.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from nncore import build_model

from .calendar import compact_times, next_dates

from .composite import Ensemble, LocalModels
from .covariates import CovariateScaler, calendar_features
from .evaluation import Forecast, predict
from .transforms import PanelTransform, transform_from_dict
from .windowing import Windows

WEIGHTS = "weights.npz"
CONFIG = "config.json"
FORMAT_VERSION = 1


def save_forecaster(model, windows: Windows, directory: Path, extra: dict | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / WEIGHTS, **model.state_dict())
    one = model.of(0) if isinstance(model, LocalModels) else model   # what each series is forecast by
    config = {
        "format_version": FORMAT_VERSION,
        "model": model.config,
        **({"per_series_models": len(model)} if isinstance(model, LocalModels) else {}),
        **({"ensemble": len(one)} if isinstance(one, Ensemble) else {}),
        "window": windows.window,
        "horizon": windows.horizon,
        **({"scaler": windows.scaler.to_dict()} if windows.n_series == 1 else
           {"scalers": windows.scalers.to_dict(), "series": [str(i) for i in windows.ids]}),
        "freq": windows.freq,
        **({"covariates": {"past": list(cov.past_names), "known": list(cov.known_names), "calendar": cov.calendar,
                           **windows.cov_scaler.to_dict()}} if (cov := windows.covariates) is not None else {}),
        **(extra or {}),
    }
    (directory / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    return directory


class Forecaster:
    """A loaded model plus its preprocessing: raw windows (n, W) in → forecasts (n, h) out."""

    def __init__(self, model, config: dict):
        self.model, self.config = model, config
        if "scaler" in config:
            one = transform_from_dict(config["scaler"])
            self.scalers = PanelTransform.fit_one(one)
            self.series = None
        else:
            self.scalers = PanelTransform.from_dict(config["scalers"])
            self.series = {sid: i for i, sid in enumerate(config["series"])}
        self.window, self.horizon = config["window"], config["horizon"]
        self.covariates = config.get("covariates")
        self.cov_scaler = None if self.covariates is None else CovariateScaler.from_dict(self.covariates)

    @property
    def covariate_columns(self) -> list[str]:
        """The data columns the model reads besides ``y`` (observed, then known in advance)."""
        return [] if self.covariates is None else [*self.covariates["past"], *self.covariates["known"]]

    def predict(self, raw_windows, series=None) -> np.ndarray:
        """Raw windows (n, W) in original units → forecasts (n, h); ``series``: the id of each window's series
        (a model of a panel scales each series with its own constants; a model of one series needs none)."""
        raw = np.asarray(raw_windows, dtype=np.float64)
        if raw.ndim == 1:
            raw = raw[None, :]
        if raw.ndim != 2 or raw.shape[1] != self.window:
            raise ValueError(f"expected windows of shape (n, {self.window}) in original units, got {raw.shape}")
        if not np.all(np.isfinite(raw)):
            raise ValueError("input windows contain NaN or infinite values")
        if self.covariates is not None:
            reads = ", ".join(self.covariate_columns) or "calendar"
            raise ValueError(f"this model reads covariates ({reads}): give it recent history as a DataFrame "
                             "unique_id, ds, y and those columns (forecast_frame)")
        index = self._index(series, len(raw))
        transform = self.scalers.at(index)
        pred = predict(self.model, transform.encode_inputs(raw)[..., None].astype(self.model.dtype), series=index)
        return transform.decode(pred, raw[:, -1])

    def _index(self, series, n: int) -> np.ndarray:
        if self.series is None:
            return np.zeros(n, dtype=np.int64)
        if series is None:
            raise ValueError(f"this model forecasts {len(self.series)} series: say which series each window is of")
        ids = [series] * n if isinstance(series, str) else list(series)
        unknown = sorted({str(s) for s in ids} - set(self.series))
        if unknown:
            raise ValueError(f"series the model was not trained on: {unknown[:5]}")
        return np.array([self.series[str(s)] for s in ids], dtype=np.int64)


def read_forecaster(directory: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The config dict and the weights of a saved forecaster, as written (no model is built)."""
    directory = Path(directory)
    config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
    with np.load(directory / WEIGHTS, allow_pickle=False) as weights:
        return config, {k: weights[k] for k in weights.files}


def forecaster_from(config: dict, weights: dict) -> Forecaster:
    """A forecaster from a saved config and its weights (as :func:`read_forecaster` returns them)."""
    return Forecaster(_load_model(config, weights), config)


def load_forecaster(directory: Path) -> Forecaster:
    config, weights = read_forecaster(directory)
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{Path(directory) / CONFIG}: unsupported format_version {config.get('format_version')!r}")
    model = _load_model(config, weights)
    return Forecaster(model, config)


#: ``model.config`` keys that neither shape the parameters nor change what they compute (none is saved today)
NOT_ARCHITECTURE = ("backend",)
#: how a model kind reads in a sentence
_KIND_NAMES = {"rnn": "an rnn", "gru": "a gru", "lstm": "an lstm", "mlp": "an mlp", "linear": "a linear model"}


def warm_start_weights(saved_config: dict, weights: dict, model, series=None) -> tuple[dict | None, str]:
    """The saved forecaster's weights for ``model`` (built for tonight's windows), if they fit it.

    ``saved_config``, ``weights``: as :func:`save_forecaster` writes them (:func:`read_forecaster`);
    ``model``: a network, :class:`~flows.core.composite.Ensemble` or :class:`~flows.core.composite.LocalModels`;
    ``series``: tonight's series ids, needed for per-series models (each network belongs to one series).

    They fit when the architecture is the same (``model.config`` equal but for :data:`NOT_ARCHITECTURE`: kind,
    hidden size, input, output and future sizes, dtype, and the window for the kinds whose weights depend on it —
    a recurrent network reads any window length), the layout is the same (ensemble size, per-series networks, and
    for those the same series in the same order) and every parameter has its shape.

    Returns ``(state dict, "")`` when they fit, else ``(None, reason)``: one sentence naming what differs.
    """
    if saved_config.get("format_version") != FORMAT_VERSION:
        return None, f"the champion was saved in format {saved_config.get('format_version')!r}, not {FORMAT_VERSION}"
    champion = {k: v for k, v in saved_config["model"].items() if k not in NOT_ARCHITECTURE}
    tonight = {k: v for k, v in model.config.items() if k not in NOT_ARCHITECTURE}
    if champion != tonight:
        return None, f"the champion is {_describe(champion, tonight)}; tonight's model is {_describe(tonight, champion)}"
    one = model.of(0) if isinstance(model, LocalModels) else model
    layouts = (_layout(saved_config.get("per_series_models"), saved_config.get("ensemble")),
               _layout(len(model) if isinstance(model, LocalModels) else None,
                       len(one) if isinstance(one, Ensemble) else None))
    if layouts[0] != layouts[1]:
        return None, f"the champion is {layouts[0]}; tonight's model is {layouts[1]}"
    if isinstance(model, LocalModels):
        if series is None:
            raise ValueError("per-series models: pass tonight's series ids (series=windows.ids)")
        theirs, ours = list(saved_config.get("series", [])), [str(s) for s in series]
        if theirs != ours:
            new, gone = [s for s in ours if s not in theirs], [s for s in theirs if s not in ours]
            change = " and ".join([*([f"adds {new[:3]}"] if new else []), *([f"drops {gone[:3]}"] if gone else [])])
            what = f"tonight {change}" if change else "the same series in another order"
            return None, f"the champion's per-series networks are of other series than tonight's ({what})"
    shapes = {k: np.shape(v) for k, v in weights.items()}
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if shapes != expected:
        diff = sorted(k for k in shapes.keys() | expected.keys() if shapes.get(k) != expected.get(k))
        return None, (f"the champion's weights do not fit tonight's model: {diff[0]} is "
                      f"{shapes.get(diff[0], 'missing')} in the champion, {expected.get(diff[0], 'missing')} tonight")
    return dict(weights), ""


def _describe(config: dict, other: dict) -> str:
    """``config``'s kind and the settings in which it differs from ``other``: 'a gru with hidden size 32'."""
    kind = config["kind"]
    details = [f"{k.replace('_', ' ')} {v}" for k, v in sorted(config.items())
               if k != "kind" and v != other.get(k)]
    return _KIND_NAMES.get(kind, f"a {kind}") + (f" with {' and '.join(details)}" if details else "")


def _layout(per_series: int | None, ensemble: int | None) -> str:
    """How many networks and how they are arranged: 'one network', 'an ensemble of 3 networks per series (5 series)'."""
    each = f"an ensemble of {ensemble} networks" if ensemble else "one network"
    return f"{each} per series ({per_series} series)" if per_series else each


def _load_model(config: dict, weights: dict):
    """The network (or ensemble; or one per series) of a saved config from its parameters."""
    def network(w):
        m = build_model(**config["model"])
        m.load_state_dict(w)
        return m

    def one(w):   # --ensemble N: members keyed m<k>/<name>
        return Ensemble.from_state_dict(network, config["ensemble"], w) if "ensemble" in config else network(w)

    if "per_series_models" in config:   # --per-series: one per series, keyed <series>/…
        return LocalModels.from_state_dict(one, config["per_series_models"], weights)
    return one(weights)


def _forecast_with_covariates(forecaster: Forecaster, frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`forecast_frame` for a model with covariates: each series' rows with a value are its history (the
    last ``window`` are read with their covariates); the rows after its last value, with an empty ``y``, hold the
    known-in-advance covariates of the next ``horizon`` periods."""
    W, h, cov = forecaster.window, forecaster.horizon, forecaster.covariates
    freq = forecaster.config.get("freq") or "B"
    cols, known = forecaster.covariate_columns, cov["known"]
    ids, raws, blocks, aheads, dates = [], [], [], [], []
    for sid, rows in frame.groupby("unique_id", sort=False):
        has = rows["y"].notna().to_numpy()
        n_hist = int(has.sum())
        if not has[:n_hist].all():
            raise ValueError(f"series {sid!r}: an empty y before its last value (only the rows after it may be empty: "
                             "they hold the known-in-advance covariates of the periods to forecast)")
        if n_hist < W:
            raise ValueError(f"series {sid!r}: {n_hist} recent values, fewer than window={W}")
        hist, after = rows.iloc[n_hist - W:n_hist], rows.iloc[n_hist:]
        if hist[cols].isna().to_numpy().any():
            raise ValueError(f"series {sid!r}: empty covariate cells in its last {W} rows ({', '.join(cols)})")
        next_ds = next_dates(compact_times(hist["ds"].to_numpy().astype("datetime64[s]"))[-1], h, freq)
        if known:
            if len(after) < h or after[known].iloc[:h].isna().to_numpy().any():
                raise ValueError(f"series {sid!r}: the next {h} periods need the known-in-advance covariates "
                                 f"{', '.join(known)}: give {h} rows after its last value (y empty) with those "
                                 f"columns filled; got {len(after)}")
            got = after["ds"].iloc[:h].to_numpy().astype("datetime64[s]")
            if not np.array_equal(got, next_ds.astype("datetime64[s]")):
                raise ValueError(f"series {sid!r}: the rows after its last value are dated {got[0]} …, expected the "
                                 f"next periods {next_ds[0]} … at frequency {freq}")
        ids.append(str(sid))
        raws.append(hist["y"].to_numpy(dtype=np.float64))
        hist_dates = hist["ds"].to_numpy().astype("datetime64[s]")
        blocks.append(np.concatenate([hist[cols].to_numpy(dtype=np.float64),
                                      calendar_features(hist_dates, cov["calendar"])], axis=1))
        aheads.append(np.concatenate([after[known].iloc[:h].to_numpy(dtype=np.float64).reshape(h, len(known))
                                      if known else np.empty((h, 0)), calendar_features(next_ds, cov["calendar"])],
                                     axis=1))
        dates.append(next_ds)
    raw = np.stack(raws)
    index = forecaster._index(np.array(ids) if forecaster.series is not None else None, len(ids))
    transform = forecaster.scalers.at(index)
    scaler, dtype = forecaster.cov_scaler, forecaster.model.dtype
    X = np.concatenate([transform.encode_inputs(raw)[..., None], scaler.scale(np.stack(blocks), index)], axis=2)
    F = aheads[0].shape[1]
    C = X.shape[2] - 1
    future = scaler.scale(np.stack(aheads), index, slice(C - F, C)).reshape(len(ids), h * F) if F else None
    pred = predict(forecaster.model, X.astype(dtype), series=index,
                   future=None if future is None else future.astype(dtype))
    yhat = transform.decode(pred, raw[:, -1])
    return Forecast(np.repeat(np.array(ids, dtype=object), h), np.concatenate(dates),
                    np.tile(np.arange(1, h + 1), len(ids)), yhat.ravel()).frame()


def forecast_frame(forecaster: Forecaster, history: pd.DataFrame) -> pd.DataFrame:
    """Recent history in long format (``unique_id, ds, y``; at least ``window`` rows per series, any order) →
    the next ``horizon`` values of every series as ``unique_id, ds, step, yhat``, dated by the model's frequency."""
    missing = [c for c in ("unique_id", "ds", "y", *forecaster.covariate_columns) if c not in history.columns]
    if missing:
        raise ValueError(f"history needs the columns unique_id, ds, y{', ' if forecaster.covariates else ''}"
                         f"{', '.join(forecaster.covariate_columns)}; missing {missing}")
    frame = history.assign(ds=pd.to_datetime(history["ds"])).sort_values(["unique_id", "ds"], kind="stable")
    if forecaster.covariates is not None:
        return _forecast_with_covariates(forecaster, frame)
    W, h = forecaster.window, forecaster.horizon
    counts = frame.groupby("unique_id", sort=False).size()
    short = counts[counts < W]
    if len(short):
        raise ValueError(f"series with fewer than window={W} recent values: {list(short.index[:5])}")
    last = frame.groupby("unique_id", sort=False).tail(W)
    ids = np.asarray(counts.index.astype(str))
    raw = last["y"].to_numpy(dtype=np.float64).reshape(len(ids), W)
    yhat = forecaster.predict(raw, ids if forecaster.series is not None else None)
    ends = compact_times(last.groupby("unique_id", sort=False)["ds"].max().to_numpy().astype("datetime64[s]"))
    freq = forecaster.config.get("freq") or "B"
    ds = np.concatenate([next_dates(e, h, freq) for e in ends])
    return Forecast(np.repeat(ids, h), ds, np.tile(np.arange(1, h + 1), len(ids)), yhat.ravel()).frame()
