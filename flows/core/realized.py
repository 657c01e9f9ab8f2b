"""Realized accuracy: the published forecasts scored against what then happened.

The ledger (:mod:`flows.runtime.ledger`) holds every night's forecasts and, once their target has been
observed, the actual value. From its scored rows:

* per night (forecast origin): the realized MAE of the model, of the naive forecast (the last value) and of
  the seasonal naive forecast (the value one season before the target) over that night's matured targets,
  every series and step together, and the same as MASE — each error divided by its series' in-sample
  one-step naive MAE, so series of different scales pool fairly;
* over the last N scored nights (``--score-nights``) and over all of them: the same, pooled over the rows;
* per model version: the nights it published and its realized MAE and MASE next to the baselines' on the
  same targets;
* the champion's forecasts of the same targets (role ``champion`` in the ledger), on their own and paired with
  the night's new version's: :class:`Verdict`, what promotion by realized accuracy decides on.

Unless said otherwise, "the model" is the version trained each night (role ``candidate``): the nightly
retraining as a policy.

The seasonal naive columns are computed over the rows that have a seasonal naive forecast (a series shorter
than a season has none), and the model's and naive's over every scored row.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: the forecasts scored, their ledger column and metric prefix
FORECASTS = {"model": "yhat", "naive": "naive", "snaive": "snaive"}


def naive_scales(ids: np.ndarray, values_of) -> dict[str, float]:
    """Each series' in-sample one-step naive MAE (the MASE denominator); ``values_of(s)`` gives series s's values.
    A constant or one-value series gets NaN (its MASE is undefined)."""
    out = {}
    for s, uid in enumerate(ids):
        v = np.asarray(values_of(s), dtype=np.float64)
        scale = float(np.mean(np.abs(np.diff(v)))) if len(v) > 1 else np.nan
        out[str(uid)] = scale if scale > 0 else np.nan
    return out


def _errors(rows: pd.DataFrame, scales: dict[str, float]) -> pd.DataFrame:
    """Absolute and scaled errors of each forecast, one row per scored ledger row."""
    scale = rows["unique_id"].map(scales).to_numpy(dtype=np.float64)
    out = {"origin": rows["origin"].to_numpy(), "model_version": rows["model_version"].to_numpy()}
    actual = rows["actual"].to_numpy(dtype=np.float64)
    for name, col in FORECASTS.items():
        err = np.abs(rows[col].to_numpy(dtype=np.float64) - actual)
        out[f"{name}_ae"], out[f"{name}_se"] = err, err / scale
    return pd.DataFrame(out)


def _pooled(e: pd.DataFrame) -> dict[str, float]:
    """MAE and MASE of each forecast over the rows of ``e`` (NaN errors — no seasonal naive, no scale — left out)."""
    out = {"n": float(len(e))}
    for name in FORECASTS:
        for kind, col in (("mae", f"{name}_ae"), ("mase", f"{name}_se")):
            v = e[col].to_numpy()
            v = v[np.isfinite(v)]
            out[f"{name}_{kind}"] = float(v.mean()) if len(v) else np.nan
    return out


@dataclass(frozen=True)
class Verdict:
    """Retraining nightly vs holding the champion, on the same targets: over the last ``nights`` nights that have
    both the new version's and the champion's forecast scored."""

    nights: int
    forecasts: int
    candidate_mae: float      # the versions trained on those nights
    champion_mae: float       # the champions held on those nights, on the same targets
    champions: str            # which versions were champion then

    def better(self) -> bool:
        return self.candidate_mae < self.champion_mae

    def sentence(self) -> str:
        return (f"over the last {self.nights} nights with both forecasts scored ({self.forecasts} targets), the "
                f"versions trained each night had realized MAE {self.candidate_mae:.4g} and the champion held "
                f"(v{self.champions}) {self.champion_mae:.4g}")


def verdict(rows: pd.DataFrame, window: int) -> Verdict | None:
    """The realized comparison of the new versions with the champion on their common scored targets over the last
    ``window`` such nights; None before there are ``window`` of them."""
    scored = rows[rows["actual"].notna()]
    key = ["unique_id", "origin", "step"]
    cand = scored[scored["role"] == "candidate"][key + ["yhat", "actual"]]
    champ = scored[scored["role"] == "champion"][key + ["yhat", "model_version"]]
    both = cand.merge(champ, on=key, suffixes=("", "_champion"))
    nights = sorted(both["origin"].unique())
    if len(nights) < window:
        return None
    both = both[both["origin"].isin(nights[-window:])]
    return Verdict(window, len(both), float(np.mean(np.abs(both["yhat"] - both["actual"]))),
                   float(np.mean(np.abs(both["yhat_champion"] - both["actual"]))),
                   ",".join(sorted(set(both["model_version"]), key=lambda v: (len(v), v))))


@dataclass(frozen=True)
class Realized:
    """The realized errors of one model name's published forecasts."""

    nights: pd.DataFrame      # per scored origin: origin, n, {model,naive,snaive}_{mae,mase}, versions
    by_version: pd.DataFrame  # per model version: model_version, nights, n, {model,naive,snaive}_{mae,mase}
    last: dict[str, float]    # pooled over the last ``window`` scored nights
    all: dict[str, float]     # pooled over every scored night
    window: int
    champion: dict[str, float] | None = None   # the champion's forecasts over their last ``window`` scored nights
    verdict: Verdict | None = None             # new versions vs champion on the same targets (None: too few)

    @property
    def n_nights(self) -> int:
        return len(self.nights)

    def metrics(self) -> dict[str, float]:
        """``realized_<forecast>_<mae|mase>_<last|all>`` (forecast ``model`` is written without its name:
        ``realized_mae_last``) and ``realized_nights``, for MLflow."""
        out = {"realized_nights": float(self.n_nights)}
        if self.champion is not None:
            out.update({"realized_champion_mae_last": self.champion["model_mae"],
                        "realized_champion_mase_last": self.champion["model_mase"]})
        if self.verdict is not None:
            out.update({"realized_paired_candidate_mae": self.verdict.candidate_mae,
                        "realized_paired_champion_mae": self.verdict.champion_mae})
        for scope, values in (("last", self.last), ("all", self.all)):
            for name in FORECASTS:
                for kind in ("mae", "mase"):
                    key = f"realized_{kind}_{scope}" if name == "model" else f"realized_{name}_{kind}_{scope}"
                    out[key] = values.get(f"{name}_{kind}", np.nan)
        return out

    def sentence(self) -> str:
        """One line for the report and the log."""
        if not self.n_nights:
            return "Realized accuracy: no published forecast has matured yet."
        k = min(self.window, self.n_nights)
        last = self.last
        verdict = "below" if last["model_mae"] < last["naive_mae"] else "not below"
        return (f"Realized accuracy over the last {k} scored night(s) ({int(last['n'])} forecasts): MAE "
                f"{last['model_mae']:.4g} vs naive {last['naive_mae']:.4g}, seasonal naive {last['snaive_mae']:.4g}; "
                f"MASE {last['model_mase']:.3f} vs naive {last['naive_mase']:.3f}: the model is {verdict} naive; "
                f"{self.n_nights} night(s) scored in all.")


def realized(rows: pd.DataFrame, scales: dict[str, float], window: int) -> Realized:
    """The realized errors of the ledger's ``rows`` (one model name; unscored rows are ignored)."""
    everything = rows
    rows = rows[rows["actual"].notna()]
    champion = rows[rows["role"] == "champion"]
    rows = rows[rows["role"] == "candidate"]
    e = _errors(rows, scales)
    nights = pd.DataFrame([{"origin": o, **_pooled(g), "versions": ",".join(sorted(set(g["model_version"])))}
                           for o, g in e.groupby("origin", sort=True)])
    by_version = pd.DataFrame([{"model_version": v, "nights": g["origin"].nunique(), **_pooled(g)}
                               for v, g in e.groupby("model_version", sort=False)])
    if len(by_version):
        by_version = by_version.sort_values("model_version", key=lambda v: pd.to_numeric(v, errors="coerce"),
                                            ignore_index=True)
    recent = set(nights["origin"].iloc[-window:]) if len(nights) else set()
    held = None
    if len(champion):
        c = _errors(champion, scales)
        held = _pooled(c[c["origin"].isin(sorted(set(c["origin"]))[-window:])])
    return Realized(nights, by_version, _pooled(e[e["origin"].isin(recent)]), _pooled(e), window, held,
                    verdict(everything, window))
