"""Day-ahead accuracy with covariates: networks and the linear model on the same inputs, against the naive and
seasonal naive forecasts, with the Diebold–Mariano test against seasonal naive.

    python benchmarks/covariates_accuracy.py [--seeds 0,1,2] [--models linear:0:60,mlp:64:60,gru:32:30]
        [--figure docs/covariates_day.png] [name=value ...]

The default protocol is the README's ``elecdemand`` one: at each midnight of the last 28 days, forecast the next
48 half-hours (``--horizon 48 --test-size 28 --test-stride 48``) from the last ``--window`` half-hours of demand,
with the working-day flag, the temperature (the recorded one standing in for a forecast) and the calendar
(time of day, day of week) known in advance. Each configuration ``kind:hidden:epochs[:N]`` (N: an ensemble) runs
with the pipeline's own code (``flows.core``: load, window, train, evaluate) once per seed; ``name=value``
arguments override any nightly parameter (``future_covariates=`` with nothing drops them, …).

Printed: test MAE (mean ± sd over seeds), MASE against seasonal naive (``--against naive``: naive), and the
one-sided Diebold–Mariano p-value against that baseline on the mean absolute error of each test window (one
forecast a day at stride 48, so the windows' targets never overlap: h = 1), for the run with the median MAE of
each configuration.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULTS = dict(source="elecdemand", horizon=48, test_size=28, test_stride=48, window=96, target="delta",
                future_covariates="workday,temperature_c", calendar="hour,dayofweek", batch_size=128, lr=0.003,
                checkpoint_every=0, log_every=1000, stat_baselines="none")


def main(argv=None) -> None:
    import numpy as np

    from flows.core import covariates
    from flows.core.backtest import diebold_mariano
    from flows.core.config import PARAMETERS, RunConfig, parse_value
    from flows.core.evaluation import evaluate
    from flows.core.ingest import load_series
    from flows.core.training import train
    from flows.core.windowing import window_panel

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--models", default="linear:0:60,mlp:64:60,gru:32:30,lstm:32:30",
                   help="kind:hidden:epochs[:ensemble], comma list")
    p.add_argument("--figure", default=None, help="write a figure of the last test day here (PNG)")
    p.add_argument("--against", default="snaive", choices=["snaive", "naive"],
                   help="the baseline of the MASE column and the Diebold–Mariano test")
    p.add_argument("overrides", nargs="*", help="nightly parameters as name=value")
    args = p.parse_args(argv)
    overrides = dict(DEFAULTS)
    for item in args.overrides:
        name, _, value = item.partition("=")
        overrides[name] = None if value == "" else parse_value(name, value) if name in PARAMETERS else value
    seeds = [int(s) for s in args.seeds.split(",")]
    base = RunConfig.resolve(None, overrides)
    panel = load_series(base.data, base.windows.positive_only)

    def windows_for(cfg):
        covs = covariates.of_panel(panel, cfg.data.past_covariates, cfg.data.future_covariates, cfg.data.calendar)
        return window_panel(panel.values, panel.offsets, cfg.windows, np.dtype(cfg.model.dtype), panel.times,
                            panel.freq, cfg.data.season, panel.ids, covs)

    w = windows_for(base)
    print(f"{base.data.source}: {len(panel)} values at {panel.freq}; {len(w.train)} train / {len(w.val)} validation / "
          f"{len(w.test)} test windows (origins {w.test.dates[0, 0]} … {w.test.dates[-1, 0]}); inputs: "
          f"{w.train.X.shape[2]} channels, {0 if w.train.future is None else w.train.future.shape[1]} known ahead")

    def daily(pred):
        return np.abs(pred - w.test.actual).mean(axis=1)            # one mean absolute error per forecast day

    rows, runs_by_spec, first = [], {}, None
    for spec in args.models.split(","):
        kind, hidden, epochs, *n = spec.split(":")
        n = int(n[0]) if n else 1
        runs = []
        for seed in seeds:
            cfg = RunConfig.resolve(None, {**overrides, "model": kind, "hidden_size": max(int(hidden), 1),
                                           "epochs": int(epochs), "seed": seed * n, "ensemble": n})
            result = train(w, cfg.model, cfg.training)
            ev = evaluate(result.model, w)
            first = first or ev
            runs.append((ev.model.mae, ev, result))
            print(f"  {spec} seed {seed}: MAE {ev.model.mae:.4f} (seasonal naive {ev.snaive.mae:.4f}), best epoch "
                  f"{result.best_epoch}, {result.seconds:.0f} s", flush=True)
        runs_by_spec[spec] = runs
        median = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
        ev = median[1]
        dm = diebold_mariano(daily(ev.predictions["model"]), daily(ev.predictions[args.against]), h=1, power=1,
                             alternative="less")
        maes = [r[0] for r in runs]
        rows.append((spec, maes, ev.model.mase_snaive if args.against == "snaive" else ev.model.mase, dm["p_value"],
                     median[2]))

    def pm(v):
        return f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"

    print()
    against = "seasonal naive" if args.against == "snaive" else "naive"
    print(f"| forecast | test MAE | MASE vs {against} | DM p vs {against} (one-sided) | best epoch | training s |")
    print("|---|---|---|---|---|---|")
    for spec, maes, mase, pval, result in rows:
        print(f"| {spec} ({len(maes)} runs) | {pm(maes)} | {mase:.3f} | {pval:.2g} | {result.best_epoch} | "
              f"{result.seconds:.0f} |")
    for name, label in (("snaive", f"seasonal naive (season {w.season})"), ("naive", "naive (last value)"),
                        ("drift", "random walk with drift")):
        sc = getattr(first, name)
        print(f"| {label} | {sc.mae:.4f} | {sc.mase_snaive if args.against == 'snaive' else sc.mase:.3f} | | | |")
    if args.figure:
        best = min(rows, key=lambda r: statistics.mean(r[1]))
        ev = sorted(runs_by_spec[best[0]], key=lambda r: r[0])[len(seeds) // 2][1]
        figure(w, ev, best[0], Path(args.figure))
        print(f"figure: {args.figure}")


def figure(w, ev, label: str, path: Path) -> None:
    import matplotlib
    import numpy as np
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    day = np.abs(ev.predictions["model"] - w.test.actual).mean(axis=1)
    r = int(np.argsort(day)[len(day) // 2])          # a typical test day: the model's median daily MAE
    start = w.test.index[r] - w.window
    fig, ax = plt.subplots(figsize=(9, 3.4))
    ax.plot(w.dates[start:w.test.index[r]], w.values[start:w.test.index[r]], color="0.4", lw=0.9, label="history")
    ax.plot(w.test.dates[r], w.test.actual[r], color="black", lw=1.3, label="actual")
    ax.plot(w.test.dates[r], ev.predictions["snaive"][r], color="0.55", ls="--", lw=1,
            label=f"seasonal naive (day MAE {abs(ev.predictions['snaive'][r] - w.test.actual[r]).mean():.3f})")
    ax.plot(w.test.dates[r], ev.predictions["model"][r], color="tab:red", lw=1.2,
            label=f"{label} (day MAE {abs(ev.predictions['model'][r] - w.test.actual[r]).mean():.3f})")
    ax.set_ylabel("demand (GW)")
    made = str(w.test.dates[r, 0].astype("datetime64[m]")).replace("T", " ")
    ax.set_title(f"day-ahead forecast made at {made} (the test day with the model's median daily MAE)")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
