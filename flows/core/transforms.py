"""Target transforms: what the network sees instead of raw prices, fitted on the training part only.

``TRANSFORMS`` maps each ``--target`` to its class; every class fits its constants with
``fit(values)`` on the values the training windows touch, encodes inputs and targets, decodes
predictions back to original units, and round-trips through ``to_dict``/``from_dict`` (the saved
model carries it, so serving uses exactly the training transform).

* ``level`` — min-max scaled values in, min-max scaled values out (the source notebooks'
  choice). The notebooks fit the scaler on the whole series, a look-ahead leak we do not
  reproduce: test prices above the training maximum then scale above 1, as they would in
  production.
* ``delta`` — each window relative to its own last value, (y_j − y_t) / s, and the change
  (y_{t+k} − y_t) / s out, s = standard deviation of the one-step changes in the training part.
  The network learns a correction to the naive forecast and never sees the price level.
* ``return`` — the same with log prices, log(y_j / y_t) / s and log(y_{t+k} / y_t) / s, s the
  standard deviation of one-step log returns in training; needs positive values.

Shapes: raw windows (n, W) and targets (n, h) in original units, ``last`` (n,) each window's last value.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import numpy as np


class WindowingError(ValueError):
    """The series cannot be windowed, split or transformed as requested."""


@dataclass(frozen=True)
class LevelScaler:
    """Min-max scaling of the values themselves."""

    lo: float
    hi: float
    kind: ClassVar[str] = "level"
    positive_only: ClassVar[bool] = False

    @classmethod
    def fit(cls, values: np.ndarray) -> "LevelScaler":
        lo, hi = float(np.min(values)), float(np.max(values))
        if not hi > lo:
            raise WindowingError(f"the training part is constant ({lo}); min-max scaling is undefined")
        return cls(lo, hi)

    def encode_inputs(self, raw: np.ndarray) -> np.ndarray:
        return (np.asarray(raw, np.float64) - self.lo) / (self.hi - self.lo)

    def encode_targets(self, targets: np.ndarray, last: np.ndarray) -> np.ndarray:
        return self.encode_inputs(targets)

    def decode(self, pred: np.ndarray, last: np.ndarray) -> np.ndarray:
        return np.asarray(pred, np.float64) * (self.hi - self.lo) + self.lo

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class DeltaScaler:
    """Changes from each window's last value, divided by the spread of the training one-step changes."""

    scale: float
    kind: ClassVar[str] = "delta"
    positive_only: ClassVar[bool] = False

    @staticmethod
    def _steps(values: np.ndarray) -> np.ndarray:
        return np.diff(values)

    @classmethod
    def fit(cls, values: np.ndarray) -> "DeltaScaler":
        scale = float(np.std(cls._steps(np.asarray(values, np.float64))))
        if not scale > 0:
            raise WindowingError("the training part is constant; its changes have zero spread")
        return cls(scale)

    def _relative(self, a: np.ndarray, last: np.ndarray) -> np.ndarray:
        return a - last

    def _absolute(self, rel: np.ndarray, last: np.ndarray) -> np.ndarray:
        return last + rel

    def encode_inputs(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, np.float64)
        return self._relative(raw, raw[:, -1:]) / self.scale

    def encode_targets(self, targets: np.ndarray, last: np.ndarray) -> np.ndarray:
        return self._relative(np.asarray(targets, np.float64), np.asarray(last, np.float64)[:, None]) / self.scale

    def decode(self, pred: np.ndarray, last: np.ndarray) -> np.ndarray:
        return self._absolute(np.asarray(pred, np.float64) * self.scale, np.asarray(last, np.float64)[:, None])

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class ReturnScaler(DeltaScaler):
    """Log returns from each window's last value, divided by the spread of the training one-step log returns."""

    kind: ClassVar[str] = "return"
    positive_only: ClassVar[bool] = True

    @staticmethod
    def _steps(values: np.ndarray) -> np.ndarray:
        bad = np.flatnonzero(values <= 0)
        if bad.size:
            raise WindowingError(f"target 'return' needs positive values; value {values[bad[0]]} at position "
                                 f"{bad[0]} of the training part")
        return np.diff(np.log(values))

    def _relative(self, a: np.ndarray, last: np.ndarray) -> np.ndarray:
        if np.any(a <= 0):
            raise WindowingError(f"target 'return' needs positive values; got {a[a <= 0].ravel()[0]}")
        return np.log(a / last)

    def _absolute(self, rel: np.ndarray, last: np.ndarray) -> np.ndarray:
        return last * np.exp(rel)


#: ``--target`` name -> transform class
TRANSFORMS = {cls.kind: cls for cls in (LevelScaler, DeltaScaler, ReturnScaler)}


def fit_transform(kind: str, values: np.ndarray):
    """The ``kind`` transform fitted on ``values`` (the training part)."""
    if kind not in TRANSFORMS:
        raise WindowingError(f"unknown target {kind!r}; valid: {', '.join(TRANSFORMS)}")
    return TRANSFORMS[kind].fit(np.asarray(values, dtype=np.float64))


def transform_from_dict(d: dict):
    """Inverse of ``to_dict`` (also reads format-1 files, which stored lo, hi and scale for every kind)."""
    cls = TRANSFORMS[d["kind"]]
    return cls(**{f.name: d[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class PanelTransform:
    """One fitted transform per series of a panel: each parameter as an array over the series.

    ``at(series)`` is the transform for a batch of windows (``series[i]``: the series of window i), its
    parameters broadcast as (n, 1) columns, so the scalar classes' formulas run unchanged, value for value.
    """

    kind: str
    params: dict   # parameter name -> (S,) float64

    @classmethod
    def fit(cls, kind: str, parts: list[np.ndarray]) -> "PanelTransform":
        """Fit ``kind`` on each series' training part (one array per series)."""
        fitted = [fit_transform(kind, p) for p in parts]
        names = [f.name for f in fields(TRANSFORMS[kind])]
        return cls(kind, {n: np.array([getattr(t, n) for t in fitted], dtype=np.float64) for n in names})

    @classmethod
    def fit_one(cls, transform) -> "PanelTransform":
        """The panel form of one series' fitted transform."""
        return cls(transform.kind, {f.name: np.array([getattr(transform, f.name)], dtype=np.float64)
                                    for f in fields(transform)})

    def at(self, series: np.ndarray):
        return TRANSFORMS[self.kind](**{n: p[series][:, None] for n, p in self.params.items()})

    def single(self):
        """The transform of a panel of one series (the scalar class)."""
        if len(next(iter(self.params.values()))) != 1:
            raise ValueError(f"{len(next(iter(self.params.values())))} series have a transform each; pick one")
        return TRANSFORMS[self.kind](**{n: float(p[0]) for n, p in self.params.items()})

    def to_dict(self) -> dict:
        return {"kind": self.kind, **{n: p.tolist() for n, p in self.params.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "PanelTransform":
        names = [f.name for f in fields(TRANSFORMS[d["kind"]])]
        return cls(d["kind"], {n: np.atleast_1d(np.asarray(d[n], dtype=np.float64)) for n in names})
