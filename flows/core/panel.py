"""A panel: one or many series at one frequency, stored end to end.

Series ``s`` is ``times[offsets[s]:offsets[s + 1]]``, ``values[...]`` of the same slice, with strictly
increasing timestamps; ``ids[s]`` names it (Nixtla's ``unique_id``). One array per column, no Python
object per series, so a panel of 10,000 series is three arrays and an index. A single ``ds, y`` file
is a panel of one.
"""
from __future__ import annotations

import hashlib
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

    def as_of(self, when: np.datetime64, known: tuple = ()) -> "Panel":
        """The panel as it was at ``when``: every series' values at or before it (a series with none is left out).
        The rows after it keep their ``known`` covariate columns (known in advance) as :class:`FutureRows`, ahead of
        any the file had. The checksum names the point in time, so each night's data has its own."""
        keep = self.times <= when
        series_of = np.repeat(np.arange(self.n_series), self.lengths)
        lengths = np.bincount(series_of[keep], minlength=self.n_series)
        if lengths.sum() == len(self):
            return replace(self, sha256=_sha_as_of(self.sha256, when))
        present = lengths > 0
        future = self.future
        if known and self.covariates is not None:
            cols = [self.covariate_names.index(c) for c in known]
            rows = [np.flatnonzero(~keep & (series_of == s)) for s in np.flatnonzero(present)]
            old = [np.empty((0, len(cols)))] * len(rows) if future is None else \
                [future.of(s) for s in np.flatnonzero(present)]
            old_t = [np.empty(0, self.times.dtype)] * len(rows) if future is None else \
                [future.times[future.offsets[s]:future.offsets[s + 1]] for s in np.flatnonzero(present)]
            blocks = [np.concatenate([self.covariates[r][:, cols], o]) for r, o in zip(rows, old)]
            future = FutureRows(np.concatenate([[0], np.cumsum([len(b) for b in blocks])]),
                                np.concatenate([np.concatenate([self.times[r], t]) for r, t in zip(rows, old_t)]),
                                np.concatenate(blocks) if blocks else np.empty((0, len(cols))))
        elif future is not None:
            future = None   # no known covariates asked for: the rows ahead are not needed
        return replace(self, ids=self.ids[present], offsets=np.concatenate([[0], np.cumsum(lengths[present])]),
                       times=self.times[keep], values=self.values[keep],
                       covariates=None if self.covariates is None else self.covariates[keep],
                       sha256=_sha_as_of(self.sha256, when), future=future)

    def column(self, name: str) -> np.ndarray:
        """A covariate column (N,) by name."""
        return self.covariates[:, self.covariate_names.index(name)]


def _sha_as_of(sha256: str, when: np.datetime64) -> str:
    return hashlib.sha256(f"{sha256}:as-of:{when}".encode()).hexdigest()


# ----------------------------------------------------------------------------------------------
# Filling missing periods (--fill)
# ----------------------------------------------------------------------------------------------
def _ffill(before: float, after: float, k: int) -> np.ndarray:
    return np.full(k, before)


def _interpolate(before: float, after: float, k: int) -> np.ndarray:
    return before + (after - before) * np.arange(1, k + 1) / (k + 1)


#: ``--fill`` name -> how the k missing values between ``before`` and ``after`` are filled (None: they are not)
FILLS = {"none": None, "ffill": _ffill, "interpolate": _interpolate}
