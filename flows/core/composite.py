"""Models made of several networks, behind one network's interface (``forward``, ``state_dict``, ``config``).

* :class:`Ensemble` (``--ensemble N``): N networks of one architecture trained from seeds ``seed … seed+N−1``;
  the forecast is their mean. Averaging a few independently initialised networks removes most of the
  seed-to-seed spread a single network's accuracy shows.
* :class:`LocalModels` (``--per-series``): one network (or ensemble) per series, each trained on that series'
  windows alone; every window is forecast by its own series' network.

Evaluation, the next forecast, saving and serving take them like any network: only what differs (the series of
each window, the prefixed parameter names) is here.
"""
from __future__ import annotations

import numpy as np


def _strip(weights: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


class _Networks:
    """Several networks of one architecture behind one network's interface; parameters keyed
    ``<KEY><index>/<name>``."""

    KEY = ""
    EMPTY = "no networks"

    def __init__(self, models: list):
        if not models:
            raise ValueError(self.EMPTY)
        self.models = list(models)
        first = models[0]
        self.dtype, self.stateful, self.config = first.dtype, first.stateful, first.config

    def __len__(self) -> int:
        return len(self.models)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every network's parameters, keyed ``<KEY><index>/<name>``."""
        return {f"{self.KEY}{k}/{name}": v for k, m in enumerate(self.models) for name, v in m.state_dict().items()}

    @classmethod
    def from_state_dict(cls, load_one, n: int, weights: dict):
        """``load_one(weights)``: one network from its (prefix-stripped) parameters."""
        return cls([load_one(_strip(weights, f"{cls.KEY}{k}/")) for k in range(n)])


class Ensemble(_Networks):
    """N networks of one architecture; ``forward`` is their mean (the state: one per member)."""

    KEY = "m"
    EMPTY = "an ensemble needs at least one network"

    def _mean_of(self, method: str, X: np.ndarray, state, future):
        states = state if state is not None else (None,) * len(self.models)
        outs, new = [], []
        for m, s in zip(self.models, states):
            out, s = getattr(m, method)(X, s, future=future)
            outs.append(np.asarray(out, np.float64))
            new.append(s)
        return np.mean(outs, axis=0), tuple(new)

    def forward(self, X: np.ndarray, state=None, future: np.ndarray | None = None):
        return self._mean_of("forward", X, state, future)

    def predict(self, X: np.ndarray, state=None, future: np.ndarray | None = None):
        """:meth:`forward` for inference: each member's ``predict`` (the inference kernels), then their mean."""
        return self._mean_of("predict", X, state, future)


class LocalModels(_Networks):
    """One trained network per series (index = the series' position in ``Windows.ids``)."""

    EMPTY = "no per-series models"

    def of(self, series: int):
        return self.models[series]

    def predict(self, X: np.ndarray, series: np.ndarray, batch: int = 8192,
                future: np.ndarray | None = None) -> np.ndarray:
        """Stateless forecasts (scaled units) of windows ``X`` (and their ``future`` inputs), each by its own
        series' network."""
        if series is None:
            raise ValueError("per-series networks: say which series each window is of")
        series = np.asarray(series)
        out = np.empty((len(X), self.config["output_size"]))
        for s in np.unique(series):
            rows = np.flatnonzero(series == s)
            out[rows] = np.concatenate([
                self.models[s].predict(X[rows[lo:lo + batch]],
                                       future=None if future is None else future[rows[lo:lo + batch]])[0]
                for lo in range(0, len(rows), batch)])
        return out
