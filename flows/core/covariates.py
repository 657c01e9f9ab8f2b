"""Covariates: what moves with the target, in the two kinds darts and neuralforecast distinguish.

* **observed** (past) covariates (``--past-covariates Volume,High``): known only up to the forecast origin.
  They are extra input channels of the window, at the window's steps and never later, so a covariate can
  not carry a target value into the inputs (``test_covariates.py`` shows it with a covariate equal to the
  target: as a past covariate it adds nothing; given one step ahead, it would give the answer away).
* **known-in-advance** (future) covariates (``--future-covariates workday,temperature_c``, and the calendar
  features of ``--calendar``): known over the horizon too. They are input channels at the window's steps
  *and* the model's second input, ``future`` (n, h × F): their values at the h target steps, which the
  networks' dense head (and the MLP and linear models' input) reads beside the window.

Calendar features are computed from the timestamps (so they exist for any future date) as sine/cosine
pairs, continuous across midnight, Sunday→Monday and December→January: ``hour`` (the time of day, minutes
included), ``dayofweek``, ``month``, ``dayofyear``; ``weekend`` is a 0/1 flag.

Every column is standardised per series with the mean and standard deviation of that series' training part
(a constant column: divided by 1), like the target's transform: nothing after the training part is used.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: ``--calendar`` name -> the columns it gives (sine/cosine pairs, or one flag)
CALENDAR = {"hour": ("hour_sin", "hour_cos"), "dayofweek": ("dayofweek_sin", "dayofweek_cos"),
            "month": ("month_sin", "month_cos"), "dayofyear": ("dayofyear_sin", "dayofyear_cos"),
            "weekend": ("weekend",)}


class MissingFuture(ValueError):
    """The known-in-advance covariates of the periods to forecast are not in the data."""


def names(spec: str | None) -> tuple[str, ...]:
    """A comma list (``--past-covariates a,b``) as names; None or empty: none."""
    return tuple(dict.fromkeys(s.strip() for s in spec.split(",") if s.strip())) if spec else ()


def check_calendar(spec: str | None) -> str | None:
    unknown = [n for n in names(spec) if n not in CALENDAR]
    return f"unknown calendar feature {', '.join(unknown)}; valid: {', '.join(CALENDAR)}" if unknown else None


def calendar_columns(spec: str | None) -> tuple[str, ...]:
    return tuple(c for n in names(spec) for c in CALENDAR[n])


def calendar_features(times: np.ndarray, spec: str | None) -> np.ndarray:
    """(N, C) calendar features of ``times`` (datetime64), columns as :func:`calendar_columns`."""
    t = pd.DatetimeIndex(np.asarray(times).astype("datetime64[s]"))
    cols = []
    for n in names(spec):
        if n == "weekend":
            cols.append((t.dayofweek >= 5).astype(np.float64))
            continue
        if n == "hour":
            phase = (t.hour + t.minute / 60 + t.second / 3600) / 24
        elif n == "dayofweek":
            phase = t.dayofweek / 7
        elif n == "month":
            phase = (t.month - 1) / 12
        else:   # dayofyear
            phase = (t.dayofyear - 1) / np.where(t.is_leap_year, 366, 365)
        angle = 2 * np.pi * np.asarray(phase, dtype=np.float64)
        cols += [np.sin(angle), np.cos(angle)]
    return np.stack(cols, axis=1) if cols else np.empty((len(t), 0))


@dataclass(frozen=True)
class Covariates:
    """The covariates of a panel, aligned with its values (row i: the covariates at ``times[i]``)."""

    past: np.ndarray                 # (N, P) observed covariates, original units
    future: np.ndarray               # (N, F) known-in-advance covariates, then the calendar features
    past_names: tuple[str, ...] = ()
    future_names: tuple[str, ...] = ()   # the known-in-advance columns, then the calendar features' columns
    calendar: str | None = None          # the --calendar features (computed for any date)
    ahead: tuple = ()                    # per series: (k, F_known) the known columns of the k periods after it

    @property
    def known_names(self) -> tuple[str, ...]:
        """The known-in-advance columns read from the data (not computed from the dates)."""
        return self.future_names[:len(self.future_names) - len(calendar_columns(self.calendar))]

    def next_future(self, s: int, dates: np.ndarray, series_id) -> np.ndarray:
        """(h, F) the known-in-advance covariates of series ``s`` at the next ``dates`` (original units)."""
        known = self.known_names
        if known:
            rows = self.ahead[s] if s < len(self.ahead) else np.empty((0, len(known)))
            if len(rows) < len(dates):
                raise MissingFuture(
                    f"series {series_id!r}: the next {len(dates)} values need the known-in-advance covariates "
                    f"{', '.join(known)} of {dates[0]} … {dates[-1]}, and the data has {len(rows)} row(s) after the "
                    "series' last value; add one row per period with an empty value and those columns filled")
            values = rows[:len(dates)]
        else:
            values = np.empty((len(dates), 0))
        return np.concatenate([values, calendar_features(dates, self.calendar)], axis=1)

    @property
    def channels(self) -> int:
        """Input channels besides the target: every covariate at the window's steps."""
        return self.past.shape[1] + self.future.shape[1]

    @property
    def n_future(self) -> int:
        return self.future.shape[1]

    def all(self) -> np.ndarray:
        """(N, P + F): the input channels besides the target, in order."""
        return np.concatenate([self.past, self.future], axis=1)


@dataclass(frozen=True)
class CovariateScaler:
    """Each series' mean and standard deviation of each column on its training part (S, P + F)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, columns: np.ndarray, starts: np.ndarray, train_ends: np.ndarray) -> "CovariateScaler":
        mean = np.stack([columns[a:b].mean(axis=0) for a, b in zip(starts, train_ends)])
        std = np.stack([columns[a:b].std(axis=0) for a, b in zip(starts, train_ends)])
        return cls(mean, np.where(std > 0, std, 1.0))

    def scale(self, block: np.ndarray, series: np.ndarray, cols: slice = slice(None)) -> np.ndarray:
        """``block`` (n, …, C) of windows of ``series`` (n,), columns ``cols`` of the fitted ones, standardised."""
        shape = (len(series),) + (1,) * (block.ndim - 2) + (-1,)
        return (block - self.mean[series][:, cols].reshape(shape)) / self.std[series][:, cols].reshape(shape)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "CovariateScaler":
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64))


def of_panel(panel, past: str | None, future: str | None, calendar: str | None) -> Covariates | None:
    """The covariates a run asks for, from the panel's columns and its timestamps (None: none asked)."""
    past_names, future_names = names(past), names(future)
    cal = calendar_columns(calendar)
    if not (past_names or future_names or cal):
        return None
    empty = np.empty((len(panel.values), 0))
    pick = (lambda cols: np.stack([panel.column(c) for c in cols], axis=1) if cols else empty)
    known = np.concatenate([pick(future_names), calendar_features(panel.times, calendar)], axis=1)
    rows = panel.future
    ahead = tuple(rows.of(s) if rows is not None else np.empty((0, len(future_names)))
                  for s in range(panel.n_series)) if future_names else ()
    return Covariates(pick(past_names), known, past_names, future_names + cal, calendar, ahead)
