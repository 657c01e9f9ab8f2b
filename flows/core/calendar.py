"""The dates of the values a forecast is for.

One place computes them: the report, ``forecast.csv`` and the command line all read
:func:`next_dates`. Series are daily business-day series for now (weekends skipped, no holiday
calendar); other frequencies come with the panels work.
"""
from __future__ import annotations

import numpy as np


def next_dates(last, horizon: int) -> np.ndarray:
    """The ``horizon`` business days after the date ``last`` (datetime64[D]); for a series labelled by
    integer positions instead of dates, the next ``horizon`` positions."""
    steps = np.arange(1, horizon + 1)
    if np.issubdtype(np.asarray(last).dtype, np.integer):
        return last + steps
    return np.busday_offset(np.datetime64(last, "D"), steps, roll="forward")
