"""A panel: one or many series at one frequency, stored end to end.

Series ``s`` is ``times[offsets[s]:offsets[s + 1]]``, ``values[...]`` of the same slice, with strictly
increasing timestamps; ``ids[s]`` names it (Nixtla's ``unique_id``). One array per column, no Python
object per series, so a panel of 10,000 series is three arrays and an index. A single ``ds, y`` file
is a panel of one.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class FutureRows:
    """The known-in-advance covariates of the periods after each series' last value (rows with an empty value):
    series ``s`` has ``values[offsets[s]:offsets[s + 1]]``, one row per period from the next one on."""

    offsets: np.ndarray   # (S + 1,)
    times: np.ndarray     # (M,)
    values: np.ndarray    # (M, F) the --future-covariates columns, in their order

    def of(self, s: int) -> np.ndarray:
        return self.values[self.offsets[s]:self.offsets[s + 1]]


@dataclass(frozen=True)
class Panel:
    ids: np.ndarray       # (S,) series names
    offsets: np.ndarray   # (S + 1,) int64, offsets[0] = 0, offsets[-1] = N
    times: np.ndarray     # (N,) datetime64 (days, or seconds when there are times of day)
    values: np.ndarray    # (N,) float64
    freq: str             # pandas offset alias (calendar.py)
    source: str           # what was read: a registered name, a path or a URL (secrets redacted)
    path: str             # the local file that was parsed
    sha256: str           # checksum of that file's bytes
    filled: int = 0       # values filled in for missing periods (--fill)
    covariates: np.ndarray | None = None   # (N, C) the covariate columns read with the values, or None
    covariate_names: tuple = ()            # their column names
    future: "FutureRows | None" = None      # rows after each series' last value (known-in-advance covariates)

    def __len__(self) -> int:
        """The number of values, all series together."""
        return len(self.values)

    @property
    def n_series(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def series(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """(times, values) of series ``s`` (views)."""
        lo, hi = self.offsets[s], self.offsets[s + 1]
        return self.times[lo:hi], self.values[lo:hi]

    @property
    def dates(self) -> np.ndarray:
        """The timestamps of a panel of one series."""
        if self.n_series != 1:
            raise ValueError(f"dates of a panel of {self.n_series} series: pick one with .series(s)")
        return self.times

    @property
    def last(self) -> np.ndarray:
        """The last timestamp of every series."""
        return self.times[self.offsets[1:] - 1]

    def tail(self, n: int | None) -> "Panel":
        """The last ``n`` values of every series (all when ``n`` is None)."""
        if n is None or np.all(self.lengths <= n):
            return self
        series_of = np.repeat(np.arange(self.n_series), self.lengths)
        keep = self.offsets[series_of + 1] - np.arange(len(self)) <= n   # within n of its series' end
        lengths = np.minimum(self.lengths, n)
        return replace(self, offsets=np.concatenate([[0], np.cumsum(lengths)]), times=self.times[keep],
                       values=self.values[keep],
                       covariates=None if self.covariates is None else self.covariates[keep])

    def column(self, name: str) -> np.ndarray:
        """A covariate column (N,) by name."""
        return self.covariates[:, self.covariate_names.index(name)]


# ----------------------------------------------------------------------------------------------
# Filling missing periods (--fill)
# ----------------------------------------------------------------------------------------------
def _ffill(before: float, after: float, k: int) -> np.ndarray:
    return np.full(k, before)


def _interpolate(before: float, after: float, k: int) -> np.ndarray:
    return before + (after - before) * np.arange(1, k + 1) / (k + 1)


#: ``--fill`` name -> how the k missing values between ``before`` and ``after`` are filled (None: they are not)
FILLS = {"none": None, "ffill": _ffill, "interpolate": _interpolate}
