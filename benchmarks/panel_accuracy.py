"""Accuracy on a panel: global networks over several seeds beside the naive, seasonal naive, drift and
statsforecast baselines, on the same test points, as the nightly pipeline computes them.

    python benchmarks/panel_accuracy.py [--seeds 0,1,2] [--models mlp:64:100,mlp:64:100:5,gru:32:60]
        [--stat ets,theta] [name=value ...]

Each configuration ``kind:hidden:epochs[:N]`` (``N``: an ensemble of N networks, ``--ensemble N``; its runs
use seeds ``seed·N … seed·N+N−1``, so no two runs share a network) is trained once per seed with the pipeline's own code (the
``flows.core`` layer the nightly flow runs: load and validate, window every series, train one global model,
evaluate), without Prefect or MLflow, so only the computation is measured. The defaults are the README's
``us_employment`` protocol: horizon 12, the last 12 months of every series as test, window 36, Adam lr 0.003 on
shuffled mini-batches of 256. MASE per series: its test MAE over its own in-sample one-step naive MAE.
Prints one row per forecast: mean and median MASE across series (mean ± sd over seeds for the networks), and
the share of series where the network's test MAE is lower than each baseline's.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULTS = dict(source="us_employment", horizon=12, test_size=1, window=36, batch_size=256, lr=0.003,
                checkpoint_every=0, log_every=1000)


def main(argv=None) -> None:
    import numpy as np

    from flows.core import statistical
    from flows.core.config import RunConfig, parse_value, PARAMETERS
    from flows.core.evaluation import Evaluation, evaluate
    from flows.core.ingest import load_series
    from flows.core.composite import LocalModels
    from flows.core.training import combine, train
    from flows.core.windowing import window_panel

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--models", default="mlp:64:100,gru:32:60,lstm:32:60",
                   help="kind:hidden:epochs[:ensemble], comma list")
    p.add_argument("--stat", default="ets,theta", help="statsforecast baselines (comma list of ets, arima, theta)")
    p.add_argument("overrides", nargs="*", help="nightly parameters as name=value (e.g. source=us_employment, "
                                                "per_series=true)")
    args = p.parse_args(argv)
    overrides = dict(DEFAULTS)
    for item in args.overrides:
        name, _, value = item.partition("=")
        overrides[name] = parse_value(name, value) if name in PARAMETERS else value
    seeds = [int(s) for s in args.seeds.split(",")]
    cfg = RunConfig.resolve(None, overrides)
    panel = load_series(cfg.data, cfg.windows.positive_only)
    windows = window_panel(panel.values, panel.offsets, cfg.windows, np.float32, panel.times, panel.freq,
                           cfg.data.season, panel.ids)
    print(f"{cfg.data.source}: {windows.n_series} series ({len(windows.skipped)} too short), "
          f"{len(windows.train)} train / {len(windows.val)} validation / {len(windows.test)} test windows")

    rows, baselines, bar = [], None, statistical.parse(args.stat)
    for spec in args.models.split(","):
        kind, hidden, epochs, *n = spec.split(":")
        n = int(n[0]) if n else 1
        runs = []
        for seed in seeds:
            c = RunConfig.resolve(None, {**overrides, "model": kind, "hidden_size": int(hidden),
                                         "epochs": int(epochs), "seed": seed * n, "ensemble": n})
            w = window_panel(panel.values, panel.offsets, c.windows, np.dtype(c.model.dtype), panel.times,
                             panel.freq, c.data.season, panel.ids)
            if c.model.per_series:   # one network per series, as the flow's mapped tasks train them
                parts = [train(w.only(s), c.model, c.training) for s in range(w.n_series)]
                result = combine(parts, LocalModels([r.model for r in parts]))
            else:
                result = train(w, c.model, c.training)
            t0 = time.perf_counter()
            ev = evaluate(result.model, w, bar if baselines is None else ())
            if baselines is None:
                baselines = ev
                print(f"baselines evaluated in {time.perf_counter() - t0:.1f} s (statsforecast: {', '.join(bar)})")
            t = ev.per_series
            for name in baselines.baselines():
                t[f"{name}_mae"] = baselines.per_series[f"{name}_mae"]
            model_mase = t["model_mase"]
            runs.append({"mean": float(np.mean(model_mase)), "median": float(np.median(model_mase)),
                         "best": result.best_epoch, "seconds": result.seconds,
                         **{f"beats_{b}": float(np.mean(t["model_mae"] < t[f"{b}_mae"]))
                            for b in baselines.baselines()}})
            print(f"  {spec} seed {seed}: mean/median MASE {runs[-1]['mean']:.3f}/{runs[-1]['median']:.3f}, "
                  f"best epoch {result.best_epoch}, {result.seconds:.0f} s")
        rows.append((spec, runs))

    def pm(values):
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 \
            else f"{values[0]:.3f}"

    names = list(baselines.baselines())
    print()
    print(f"| forecast | mean MASE | median MASE | share of series beaten: {' / '.join(Evaluation.label(n) for n in names)}"
          f" | best epoch | training s |")
    print("|---|---|---|---|---|---|")
    for spec, runs in rows:
        shares = " / ".join(f"{100 * statistics.mean(r[f'beats_{n}'] for r in runs):.1f} %" for n in names)
        scope = "per-series" if overrides.get("per_series") else "global"
        print(f"| {scope} {spec} ({len(runs)} runs) | {pm([r['mean'] for r in runs])} | "
              f"{pm([r['median'] for r in runs])} | {shares} | {', '.join(str(r['best']) for r in runs)} | "
              f"{statistics.median(r['seconds'] for r in runs):.0f} |")
    for n in names:
        m = baselines.per_series[f"{n}_mase"]
        print(f"| {Evaluation.label(n)} | {np.mean(m):.3f} | {np.median(m):.3f} | | | |")


if __name__ == "__main__":
    main()
