"""Frequencies: which one a panel has, whether its timestamps keep to it, its season, the next dates.

A frequency is a pandas offset alias: ``B`` (business days), ``D``, ``W-SUN`` (weekly, anchored
on a weekday), ``MS``/``ME`` (month starts/ends), ``QS-JAN``/``QE-DEC`` (quarters), ``YS-JAN``/
``YE-DEC`` (years), and intraday ``h``, ``30min``, ``15min``, ``5min`` (any ``Nmin``/``Nh``/``Ns``).
:func:`infer_freq` reads it off the timestamps (the most common step, then the anchor every
timestamp shares); :func:`grid_positions` places each timestamp on that grid, so a missing month
is a gap of one period and a weekend is not a gap of a business-day series (a holiday is: market
holidays are what ``max_gap`` allows). :func:`next_dates` steps the offset forward from the last
timestamp — a quarterly series ending 2009-09-30 continues on 2009-12-31, a daily one ending on a
Sunday on Monday. Series labelled by integer positions (no dates) continue with the next positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DAY = np.timedelta64(1, "D")
#: season length by frequency kind (intraday: periods per day); ``season_length`` scales intraday steps
SEASONS = {"B": 5, "D": 7, "W": 52, "M": 12, "Q": 4, "Y": 1}
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_WEEKDAYS = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]


class FrequencyError(ValueError):
    """Timestamps that do not keep to a regular frequency; the message names where and what to do."""


@dataclass(frozen=True)
class Grid:
    """A frequency in the terms the checks need: ``kind`` B, D, W, M, Q, Y or T (a fixed intraday step)."""

    alias: str
    kind: str
    step: np.timedelta64 | None = None   # D, W, T: the fixed step
    months: int = 0                      # M, Q, Y: months per period
    month_end: bool = False              # M, Q, Y: anchored on month ends (else month starts)

    @property
    def name(self) -> str:
        return {"B": "business day", "D": "day", "W": "week", "M": "month", "Q": "quarter", "Y": "year"}.get(
            self.kind, self.alias)


def parse_freq(alias: str) -> Grid:
    """A :class:`Grid` from a pandas offset alias; a clear error for one this project does not handle."""
    try:
        offset = pd.tseries.frequencies.to_offset(alias)
    except ValueError:
        raise FrequencyError(f"--freq {alias!r} is not a pandas frequency "
                             "(e.g. B, D, W-SUN, MS, QE-DEC, YS, h, 30min)") from None
    name = type(offset).__name__
    n = getattr(offset, "n", 1)
    if name == "BusinessDay" and n == 1:
        return Grid("B", "B")
    if name == "Day":
        return Grid(alias, "D", np.timedelta64(n, "D"))
    if name == "Week" and offset.weekday is not None:
        return Grid(alias, "W", np.timedelta64(7 * n, "D"))
    if name in ("Hour", "Minute", "Second"):
        return Grid(alias, "T", pd.Timedelta(offset).to_timedelta64().astype("timedelta64[s]"))
    months = {"MonthBegin": 1, "MonthEnd": 1, "QuarterBegin": 3, "QuarterEnd": 3, "YearBegin": 12,
              "YearEnd": 12}.get(name)
    if months:
        kind = {1: "M", 3: "Q", 12: "Y"}[months]
        return Grid(alias, kind, months=months * n, month_end=name.endswith("End"))
    raise FrequencyError(f"--freq {alias!r}: frequency {name} is not supported (use B, D, W-<DAY>, MS/ME, QS/QE, "
                         "YS/YE or a fixed intraday step such as h or 30min)")


def season_length(grid: Grid) -> int:
    """Periods per season: 5 business days, 7 days, 52 weeks, 12 months, 4 quarters, 1 year (none);
    intraday, the periods in a day (24 hourly, 48 half-hourly)."""
    if grid.kind == "T":
        return max(1, int(DAY // grid.step))
    return SEASONS[grid.kind]


# ----------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------
def infer_freq(times: np.ndarray, same_series: np.ndarray) -> str:
    """The frequency of a panel's timestamps: the most common step between consecutive timestamps of a
    series, and the anchor they all share. ``same_series[i]``: whether ``times[i + 1]`` follows
    ``times[i]`` in the same series. Raises :class:`FrequencyError` when no step repeats."""
    t = times.astype("datetime64[s]")
    steps = np.diff(t)[same_series]
    if steps.size == 0:
        raise FrequencyError("cannot infer the frequency from a single timestamp per series; give --freq")
    values, counts = np.unique(steps, return_counts=True)
    step = values[np.argmax(counts)]
    days = step / DAY
    if step < DAY:
        seconds = int(step / np.timedelta64(1, "s"))
        if seconds % 3600 == 0:
            return "h" if seconds == 3600 else f"{seconds // 3600}h"
        if seconds % 60 == 0:
            return f"{seconds // 60}min"
        return f"{seconds}s"
    d = t.astype("datetime64[D]")  # a stray time of day is the grid check's to report, with its line
    weekday = (d.astype(np.int64) - 4) % 7            # 1970-01-01 was a Thursday: Monday = 0
    if days == 1:
        return "B" if not np.any(weekday >= 5) and np.any(steps == 3 * DAY) else "D"
    if days == 7:
        wd = np.unique(weekday)
        return f"W-{_WEEKDAYS[wd[0]]}" if wd.size == 1 else "7D"
    month = d.astype("datetime64[M]")
    starts = np.all(d == month.astype("datetime64[D]"))
    ends = np.all(d == (month + 1).astype("datetime64[D]") - DAY)
    if 28 <= days <= 31 and (starts or ends):
        return "MS" if starts else "ME"
    anchor = _MONTHS[int(month[0].astype(np.int64) % 12)]
    if 89 <= days <= 92 and (starts or ends):
        return f"QS-{anchor}" if starts else f"QE-{anchor}"
    if 365 <= days <= 366 and (starts or ends):
        return f"YS-{anchor}" if starts else f"YE-{anchor}"
    if days == int(days):
        return f"{int(days)}D"
    raise FrequencyError(f"no regular frequency: the most common step is {step}; give --freq")


# ----------------------------------------------------------------------------------------------
# Keeping to the grid
# ----------------------------------------------------------------------------------------------
def check_grid(times: np.ndarray, same_series: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """How far each timestamp keeps to ``grid``.

    Returns ``off_grid`` (N,): the timestamp is not a point of the grid (a weekend in a business-day
    series, a time of day in a daily one, the 15th in a month-start series, a step that is no
    multiple of the grid's), and ``missing`` (N − 1,): the periods missing between ``times[i]`` and
    ``times[i + 1]`` of the same series (0 elsewhere).
    """
    t = times.astype("datetime64[s]")
    d = t.astype("datetime64[D]")
    midnight = t == d.astype("datetime64[s]")
    if grid.kind == "T":
        step = int(grid.step / np.timedelta64(1, "s"))
        secs = t.astype(np.int64)
        off_grid = secs % step != 0
        missing = np.diff(secs) // step - 1
    elif grid.kind == "B":
        weekday = (d.astype(np.int64) - 4) % 7            # 1970-01-01 was a Thursday: Monday = 0
        off_grid = ~midnight | (weekday >= 5)
        missing = np.busday_count(d[:-1], d[1:]) - 1
    elif grid.kind in ("D", "W"):
        per = int(grid.step / DAY)
        days = d.astype(np.int64)
        off_grid = ~midnight
        if grid.kind == "W":
            anchor = _WEEKDAYS.index(grid.alias.split("-")[1]) if "-" in grid.alias else None
            if anchor is not None:
                off_grid |= (days - 4) % 7 != anchor
        delta = np.diff(days)
        off_grid[1:] |= same_series & (delta % per != 0)
        missing = delta // per - 1
    else:
        month = d.astype("datetime64[M]")
        anchor = (month + 1).astype("datetime64[D]") - DAY if grid.month_end else month.astype("datetime64[D]")
        off_grid = ~midnight | (d != anchor)
        delta = np.diff(month.astype(np.int64))
        off_grid[1:] |= same_series & (delta % grid.months != 0)
        missing = delta // grid.months - 1
    return off_grid, np.where(same_series, missing, 0)


def compact_times(times: np.ndarray) -> np.ndarray:
    """Day precision when every timestamp is a midnight (dates print as 2008-04-14), else seconds."""
    days = times.astype("datetime64[D]")
    return days if np.all(times == days) else times


def next_dates(last, horizon: int, freq: str | None = None) -> np.ndarray:
    """The ``horizon`` timestamps after ``last`` at frequency ``freq`` (business days when not given);
    for a series labelled by integer positions, the next ``horizon`` positions."""
    steps = np.arange(1, horizon + 1)
    if np.issubdtype(np.asarray(last).dtype, np.integer):
        return last + steps
    offset = pd.tseries.frequencies.to_offset(freq or "B")
    start = pd.Timestamp(last)
    out = np.array([(start + k * offset).to_datetime64() for k in steps])
    unit = np.datetime_data(np.asarray(last).dtype)[0] if isinstance(last, np.datetime64) else "s"
    return out.astype(f"datetime64[{unit}]")
