"""The nightly loop on the S&P 500: a 60-night backfill with warm starts and with cold starts, and one night
warm vs cold.

1. ``python -m flows.backfill`` over the last ``--nights`` nights before the last value (default 60), the
   default configuration (tanh RNN, hidden 24, window 60, 200 epochs for a cold start), each mode in a fresh
   MLflow store, ledger and Prefect home:
   * warm: ``--init champion --warm-epochs 20`` (the first night cold, then one after another);
   * cold: ``--init none`` (every night 200 epochs from random weights, concurrently).
   Wall time of the command, and per night (from the MLflow runs): the run's duration and its training time.
2. The realized accuracy of each mode, recomputed here from the ledger and the full source (the last night's
   targets included): MAE of the new version's forecasts, of the naive forecast (the last value) and of the
   seasonal naive one, the share of nights below naive, and warm minus cold on the same targets; each night's
   errors as a figure, ``docs/backfill_sp500.png``.
3. One more night (``--as-of`` the last value) with ``python -m flows.nightly``, on the warm store: warm start
   vs cold start, ``--repeats`` runs each (new seeds, so no run is a rerun of another), median wall and
   training time.

    python benchmarks/bench_nightly_loop.py [--nights 60] [--repeats 3] [--skip-cold]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
WARM = ["--init", "champion", "--warm-epochs", "20"]


def run(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0


def store(tmp: Path, name: str) -> dict:
    (tmp / name).mkdir()
    return dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp / name / 'mlflow.db'}",
                PREFECT_HOME=str(tmp / name / "prefect"))


def night_runs(env: dict) -> pd.DataFrame:
    import mlflow

    c = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = c.get_experiment_by_name("nightly")
    runs = c.search_runs([exp.experiment_id], "tags.model_version != ''", max_results=1000)
    return pd.DataFrame([{"as_of": r.data.params.get("as_of"), "seconds": (r.info.end_time - r.info.start_time) / 1000,
                          "train": r.data.metrics["train_seconds"], "warm": r.data.tags.get("init_warm")}
                         for r in runs])


def last_run(env: dict):
    import mlflow

    c = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = c.get_experiment_by_name("nightly")
    return c.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]


def realized(env: dict, actual: pd.Series) -> pd.DataFrame:
    from flows.runtime import ledger

    db = Path(env["MLFLOW_TRACKING_URI"][len("sqlite:///"):]).parent / "ledger.db"
    engine = ledger.open_ledger(f"sqlite:///{db}")
    rows = ledger.read(engine, "nncore-forecaster")
    engine.dispose()
    rows = rows[rows["role"] == "candidate"].assign(ds=lambda f: pd.to_datetime(f["ds"]))
    rows["y"] = rows["ds"].map(actual)
    return rows.dropna(subset=["y"]).set_index("origin")


def paired_t(d: pd.Series) -> float:
    """t statistic of the mean of paired differences (|t| < 2: no evidence either way)."""
    return float(d.mean() / (d.std(ddof=1) / np.sqrt(len(d))))


def figure(per_night: dict[str, pd.DataFrame], path: Path) -> None:
    """Each night's absolute error of the new version (warm, cold) and of the naive forecast, and their running
    means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.4))
    first = next(iter(per_night.values()))
    series = {f"naive (MAE {(first['naive'] - first['y']).abs().mean():.2f})": (first["naive"] - first["y"]).abs()}
    for mode, r in per_night.items():
        e = (r["yhat"] - r["y"]).abs()
        series[f"{mode} start (MAE {e.mean():.2f})"] = e
    for (label, e), color in zip(series.items(), ("C1", "C0", "C2")):
        x = pd.to_datetime(e.index)
        ax.plot(x, e.to_numpy(), ".", color=color, alpha=0.4, markersize=5)
        ax.plot(x, e.expanding().mean().to_numpy(), color=color, lw=1.6, label=label)
    ax.set_title("S&P 500, replayed nights: |error| of the next close (dots), running MAE (lines)")
    ax.set_ylabel("|error|, index points")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"figure: {path.relative_to(ROOT)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nights", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-cold", action="store_true", help="only the warm backfill and the one-night comparison")
    args = p.parse_args()

    from flows.core import ingest
    from flows.core.config import RunConfig

    series = ingest.load_series(RunConfig.resolve().data)
    dates = pd.DatetimeIndex(series.dates)
    actual = pd.Series(series.values, index=dates)
    nights = dates[-args.nights - 1:-1]          # each night's next value is in the data
    start, end = str(nights[0].date()), str(nights[-1].date())
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"CPU: {cpu}, {os.cpu_count()} cores; nights {start} … {end}")
    modes = {"warm": WARM, **({} if args.skip_cold else {"cold": ["--init", "none"]})}
    results, per_night, envs = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, flags in modes.items():
            envs[mode] = store(Path(tmp), mode)
            wall = run(["flows.backfill", "--start", start, "--end", end, *flags], envs[mode])
            runs = night_runs(envs[mode])
            results[mode] = (wall, runs)
            per_night[mode] = realized(envs[mode], actual)
            print(f"backfill {mode}: {wall:.1f} s for {len(runs)} nights", flush=True)

        print("\n| backfill of sp500 | nights | wall s | median night s | median training s | first night s |")
        print("|---|---|---|---|---|---|")
        for mode, (wall, runs) in results.items():
            runs = runs.sort_values("as_of")
            print(f"| {mode} | {len(runs)} | {wall:.1f} | {runs['seconds'].median():.2f} | "
                  f"{runs['train'].median():.2f} | {runs['seconds'].iloc[0]:.2f} |")

        print("\n| realized, one step ahead | forecasts | MAE | naive MAE | seasonal naive MAE | MAE / naive | "
              "t of the difference with naive | nights below naive |")
        print("|---|---|---|---|---|---|---|---|")
        for mode, r in per_night.items():
            e, n, s = (r["yhat"] - r["y"]).abs(), (r["naive"] - r["y"]).abs(), (r["snaive"] - r["y"]).abs()
            print(f"| {mode} | {len(r)} | {e.mean():.3f} | {n.mean():.3f} | {s.mean():.3f} | {e.mean() / n.mean():.3f} "
                  f"| {paired_t(e - n):+.2f} | {(e < n).mean():.0%} |")
        figure(per_night, ROOT / "docs" / "backfill_sp500.png")
        if "cold" in per_night:
            w, c = per_night["warm"], per_night["cold"]
            both = w.join(c[["yhat"]], rsuffix="_cold", how="inner")
            d = (both["yhat"] - both["y"]).abs() - (both["yhat_cold"] - both["y"]).abs()
            print(f"\nwarm minus cold absolute error on the same {len(d)} targets: mean {d.mean():+.3f} "
                  f"(t = {paired_t(d):+.2f}); warm better on {(d < 0).mean():.0%} of them")

        print("\none more night (--as-of the last value), on the warm backfill's store:")
        last = str(dates[-1].date())
        table = []
        for mode, flags in (("warm", WARM), ("cold", ["--init", "none"])):
            for i in range(args.repeats):
                wall = run(["flows.nightly", "--as-of", last, "--seed", str(100 + i), *flags], envs["warm"])
                r = last_run(envs["warm"])
                table.append((mode, wall, r.data.metrics["train_seconds"], (r.info.end_time - r.info.start_time) / 1000))
                print(f"  {mode} run {i + 1}: wall {wall:.1f} s, training {table[-1][2]:.2f} s, flow run "
                      f"{table[-1][3]:.1f} s", flush=True)
        print("\n| one night | runs | median wall s | median training s | median MLflow run s |")
        print("|---|---|---|---|---|")
        for mode in ("warm", "cold"):
            rows = [t for t in table if t[0] == mode]
            print(f"| {mode} | {len(rows)} | {statistics.median(t[1] for t in rows):.1f} | "
                  f"{statistics.median(t[2] for t in rows):.2f} | {statistics.median(t[3] for t in rows):.1f} |")


if __name__ == "__main__":
    main()
