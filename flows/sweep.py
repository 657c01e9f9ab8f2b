"""The sweep: every configuration of a grid, backtested walk-forward, in parallel on Dask.

Run once: ``python -m flows.sweep --grid model=rnn,gru,lstm,mlp --grid hidden_size=16,32``
(``--help`` lists every option). Deployed weekly by ``prefect.yaml``.

Each configuration (a :class:`~flows.config.PipelineConfig`: the base preset and ``--set``
values, then one combination of the grid) is one mapped Prefect task, ``backtest_config``, that
trains and evaluates it on ``k`` walk-forward folds (:mod:`flows.backtest`: consecutive test
blocks of ``test_size`` values ending at the last date, the scaler refit on each fold's training
part) and returns small summaries, never arrays of the series. The tasks run through
prefect-dask's ``DaskTaskRunner``: a ``LocalCluster`` on 127.0.0.1 with one single-threaded
worker process per core by default, or the Dask scheduler at ``--address`` (or
``$DASK_SCHEDULER_ADDRESS``); ``--sequential`` runs them one after another in this process.

MLflow: one parent run with the sweep's settings, a comparison table (CSV and markdown) and
figure; one nested child run per configuration (tag ``mlflow.parentRunId``, created explicitly:
inside a Dask worker there is no active run) with its parameters, per-fold metrics (``step`` =
fold) and summaries: mean and spread over folds, the Diebold–Mariano p-value against the naive
forecast, the lag-copy check and the conformal interval's coverage and width. A Prefect markdown
artifact names the best configuration.
"""
from __future__ import annotations

import sys

from flows import _env  # noqa: F401  (environment defaults before prefect/mlflow import)
from flows import _server

if __name__ == "__main__":  # see flows/_server.py: the Dask workers inherit the server's URL too
    _server.start_early(sys.argv[1:])

import argparse
import gc
import itertools
import json
import os
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
from prefect import flow, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run as current_flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from flows import backtest as bt
from flows import reporting, tracking
from flows.config import PipelineConfig, resolve_config
from flows.evaluation import evaluate, predict
from flows.ingest import Series
from flows.nightly import _console_logging, _run_flow, _say, load_series
from flows.training import train

#: Grid parameters that name a configuration in tables (in this order when present).
DEFAULT_GRID = {"model": ["rnn", "gru", "lstm", "mlp"], "hidden_size": [16, 32]}
SUMMARY_METRICS = ("test_mae", "test_rmse", "test_mase", "carried_test_mae", "coverage", "interval_width")


def expand_grid(grid: dict[str, list], preset: str | None = None, overrides: dict | None = None) -> list[PipelineConfig]:
    """One validated configuration per grid combination (the preset, then ``overrides``, then the combination)."""
    if not grid:
        raise ValueError("parameter grid: empty; give at least one parameter with a list of values")
    names = {f.name for f in fields(PipelineConfig)}
    for k, values in grid.items():
        if k not in names:
            raise ValueError(f"parameter grid: unknown parameter {k!r}")
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"parameter grid: {k} needs a non-empty list of values, got {values!r}")
    combos = [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())]
    configs = [resolve_config(preset, **{**(overrides or {}), **combo}) for combo in combos]
    if len(set(configs)) != len(configs):
        raise ValueError("parameter grid: repeated values give the same configuration twice")
    return configs


def cost(cfg: PipelineConfig) -> float:
    """Relative training cost, to start the longest backtests first (fewer idle workers at the end)."""
    gates = {"rnn": 1, "gru": 3, "lstm": 4, "mlp": 1}[cfg.model]
    steps = 1 if cfg.model == "mlp" else cfg.window
    return gates * (cfg.hidden_size ** 2 + cfg.hidden_size * cfg.window) * steps * cfg.epochs * (cfg.n_values or 1)


def label(cfg: PipelineConfig, grid: dict) -> str:
    return " ".join(f"{k}={getattr(cfg, k)}" for k in grid)


def dask_runner(address: str | None = None, n_workers: int | None = None) -> DaskTaskRunner:
    """The scheduler at ``address`` (or ``$DASK_SCHEDULER_ADDRESS``), else a LocalCluster sized to the machine."""
    address = address or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs={
        "n_workers": n_workers or os.cpu_count() or 1, "threads_per_worker": 1, "processes": True,
        "host": "127.0.0.1", "dashboard_address": None, "preload": ["flows._dask_worker"]})


# ----------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------
@task(task_run_name="backtest {name}")
def backtest_config(cfg: PipelineConfig, name: str, series: Series, folds: list, level: float,
                    parent_run_id: str, experiment_id: str) -> dict:
    """Train and evaluate one configuration on every fold; a nested MLflow run holds its record."""
    c = tracking.client()
    run = c.create_run(experiment_id, run_name=name, tags={
        "mlflow.parentRunId": parent_run_id, "code_version": tracking.code_version(), "sweep_config": name,
        "data_sha256": series.sha256})
    run_id = run.info.run_id
    try:
        tracking.log_params(run_id, {**cfg.to_dict(), "folds": len(folds), "conformal_level": level})
        values = series.tail(cfg.n_values).values
        per_fold, err_model, err_naive, pred_all, actual_all = [], [], [], [], []
        t0 = time.perf_counter()
        for fold in folds:
            windows = bt.fold_windows(values, fold, cfg.window, cfg.horizon, cfg.test_size, cfg.val_fraction,
                                      cfg.target, np.dtype(cfg.dtype))
            result = train(cfg, windows)
            ev = evaluate(result.model, windows)
            val_pred = windows.to_levels(predict(result.model, windows.val.X), windows.val.last)
            pred, actual = ev["predictions"]["model"], windows.test.actual
            q = [bt.conformal_quantile(val_pred[:, j] - windows.val.actual[:, j], level) for j in range(cfg.horizon)]
            cov = [bt.interval_coverage(actual[:, j], pred[:, j], q[j]) for j in range(cfg.horizon)]
            row = {"fold": fold.index, "test_mae": ev["model"]["mae"], "test_rmse": ev["model"]["rmse"],
                   "test_mase": ev["model"]["mase"], "carried_test_mae": ev["carried"]["mae"],
                   "naive_test_mae": ev["naive"]["mae"], "drift_test_mae": ev["drift"]["mae"],
                   "coverage": float(np.mean([x["coverage"] for x in cov])),
                   "interval_width": float(np.mean([x["width"] for x in cov])),
                   "best_epoch": result.best_epoch, "train_seconds": result.seconds}
            tracking.log_metrics(run_id, {k: v for k, v in row.items() if k != "fold"}, step=fold.index)
            per_fold.append(row)
            err_model.append(pred[:, -1] - actual[:, -1])
            err_naive.append(ev["predictions"]["naive"][:, -1] - actual[:, -1])
            pred_all.append(pred[:, 0])
            actual_all.append(actual[:, 0])
        dm = bt.diebold_mariano(np.concatenate(err_model), np.concatenate(err_naive), h=cfg.horizon)
        lag = bt.lag_copy(np.concatenate(pred_all), np.concatenate(actual_all))
        summary = {"config": name, "run_id": run_id, "seconds": time.perf_counter() - t0,
                   "dm_statistic": dm["statistic"], "dm_p_value": dm["p_value"],
                   "lag_copy_peak_lag": lag["peak_lag"], "lag_copy_r1": lag["r1"],
                   "copies_last_value": bool(lag["copies_last_value"]), "per_fold": per_fold}
        for key in (*SUMMARY_METRICS, "naive_test_mae", "drift_test_mae"):
            s = bt.summarize([r[key] for r in per_fold])
            summary[f"mean_{key}"], summary[f"std_{key}"] = s["mean"], s["std"]
        tracking.log_metrics(run_id, {k: v for k, v in summary.items() if isinstance(v, (int, float))})
        tracking.set_tags(run_id, {"copies_last_value": summary["copies_last_value"]})
    except BaseException:
        tracking.end_run(run_id, "FAILED")
        raise
    tracking.end_run(run_id, "FINISHED")
    return summary


@task
def write_sweep_report(results: list[dict], grid: dict, level: float, parent_run_id: str) -> dict:
    """Comparison table and figure on the parent run; a Prefect artifact names the best configuration."""
    results = sorted(results, key=lambda r: r["mean_test_mae"])
    best = results[0]
    naive, drift = results[0]["mean_naive_test_mae"], results[0]["mean_drift_test_mae"]
    header = ("| configuration | test MAE (mean ± sd over folds) | MASE | carried MAE | DM p vs naive | "
              f"lag-copy peak (r₁) | {level:.0%} interval coverage | width | seconds |")
    lines = [header, "|" + "---|" * 9]
    for r in results:
        lines.append(
            f"| {r['config']} | {r['mean_test_mae']:.3f} ± {r['std_test_mae']:.3f} | {r['mean_test_mase']:.3f} | "
            f"{r['mean_carried_test_mae']:.3f} | {r['dm_p_value']:.3g} | {r['lag_copy_peak_lag']:+d} "
            f"({r['lag_copy_r1']:.2f}) | {r['mean_coverage']:.3f} | {r['mean_interval_width']:.1f} | {r['seconds']:.0f} |")
    lines.append(f"| naive (tomorrow = today) | {naive:.3f} ± {results[0]['std_naive_test_mae']:.3f} | 1.000 | | | | | | |")
    lines.append(f"| random walk with drift | {drift:.3f} ± {results[0]['std_drift_test_mae']:.3f} | "
                 f"{drift / naive:.3f} | | | | | | |")
    table = "\n".join(lines)
    csv = "config,run_id,mean_test_mae,std_test_mae,mean_test_mase,mean_carried_test_mae,dm_statistic,dm_p_value," \
          "lag_copy_peak_lag,lag_copy_r1,mean_coverage,mean_interval_width,seconds\n" + "".join(
              f"{r['config']},{r['run_id']},{r['mean_test_mae']},{r['std_test_mae']},{r['mean_test_mase']},"
              f"{r['mean_carried_test_mae']},{r['dm_statistic']},{r['dm_p_value']},{r['lag_copy_peak_lag']},"
              f"{r['lag_copy_r1']},{r['mean_coverage']},{r['mean_interval_width']},{r['seconds']}\n" for r in results)
    c = tracking.client()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "comparison.md").write_text(table + "\n")
        (Path(tmp) / "comparison.csv").write_text(csv)
        figures = {"comparison.png": _comparison_figure(results, naive, drift)}
        try:
            png = reporting.render_png(figures)["comparison.png"]
        finally:
            reporting.close_figures(figures)
        (Path(tmp) / "comparison.png").write_bytes(png)
        c.log_artifacts(parent_run_id, tmp)
    tracking.log_metrics(parent_run_id, {"best_mean_test_mae": best["mean_test_mae"], "naive_mean_test_mae": naive,
                                         "best_mean_test_mase": best["mean_test_mase"]})
    tracking.set_tags(parent_run_id, {"best_config": best["config"], "best_run_id": best["run_id"]})
    verdict = ("beats" if best["mean_test_mase"] < 1 else "does not beat")
    significant = "significant" if best["dm_p_value"] < 0.05 else "not significant"
    url = tracking.run_url(parent_run_id)
    md = "\n".join([
        f"# Sweep: {len(results)} configurations, {len(results[0]['per_fold'])} walk-forward folds",
        "", f"**Best configuration: `{best['config']}`** — mean test MAE {best['mean_test_mae']:.3f}; it {verdict} the "
        f"naive forecast (MASE {best['mean_test_mase']:.3f}; Diebold–Mariano p = {best['dm_p_value']:.3g}, "
        f"{significant} at 5%).", "", table, "",
        "DM: two-sided test of equal squared error against the naive forecast on every fold's test points "
        "(Harvey–Leybourne–Newbold correction). Lag-copy: the lag k maximising corr(Δforecast_t, Δactual_{t−k}); "
        "+1 with r₁ near 1 means the model mostly repeats the last value.",
        *([f"", f"[Open the parent run in MLflow]({url})"] if url else []),
        "", f"![comparison]({reporting.inline_png(png, width=600)})"])
    create_markdown_artifact(key="sweep-report", markdown=md, description=f"best: {best['config']}")
    _say(f"best configuration: {best['config']} (mean test MAE {best['mean_test_mae']:.3f}, naive {naive:.3f})")
    return {"best": best["config"], "best_run_id": best["run_id"], "table": table}


def _comparison_figure(results: list[dict], naive: float, drift: float):
    plt = reporting.plt
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(results) + 1.6))
    y = np.arange(len(results))[::-1]
    means = [r["mean_test_mae"] for r in results]
    lo = [r["mean_test_mae"] - min(f["test_mae"] for f in r["per_fold"]) for r in results]
    hi = [max(f["test_mae"] for f in r["per_fold"]) - r["mean_test_mae"] for r in results]
    ax.errorbar(means, y, xerr=[lo, hi], fmt="o", color="tab:red", capsize=3, label="model: mean, fold range")
    ax.axvline(naive, color="0.3", ls="--", label=f"naive {naive:.2f}")
    ax.axvline(drift, color="0.6", ls=":", label=f"drift {drift:.2f}")
    ax.set_yticks(y, [r["config"] for r in results], fontsize=8)
    ax.set_xlabel("test MAE (original units), mean over walk-forward folds")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# The flow
# ----------------------------------------------------------------------------------------------
@flow(name="sweep", task_runner=dask_runner(), log_prints=False)
def sweep(grid: dict[str, list] | None = None, preset: str | None = None, overrides: dict | None = None,
          folds: int = 4, mode: str = "expanding", train_span: int | None = None, level: float = 0.9,
          experiment: str = "sweep") -> dict:
    """Backtest every configuration of ``grid`` on ``folds`` walk-forward folds and compare them.

    ``grid`` maps parameter names to lists of values (default: the four model kinds × hidden 16, 32);
    ``preset`` and ``overrides`` set the other parameters of every configuration.
    """
    grid = grid or DEFAULT_GRID
    configs = expand_grid(grid, preset, overrides)  # every configuration validated before any work
    configs.sort(key=cost, reverse=True)  # longest first: the workers finish together
    if not 0 < level < 1:
        raise ValueError(f"parameter level={level}: the interval level must be in (0, 1)")
    base = configs[0]
    c = tracking.client()
    exp_id = tracking.ensure_experiment(c, experiment)
    parent = c.create_run(exp_id, run_name=current_flow_run.name or "sweep", tags={
        "code_version": tracking.code_version(), "prefect_flow_run": current_flow_run.name or "",
        "prefect_flow_run_id": current_flow_run.id or "", "sweep": "parent"})
    parent_id = parent.info.run_id
    try:
        tracking.log_params(parent_id, {"grid": json.dumps(grid), "preset": preset, "overrides": json.dumps(overrides or {}),
                                        "folds": folds, "mode": mode, "train_span": train_span, "level": level,
                                        "configurations": len(configs), "source": base.source})
        series = load_series(base, parent_id)
        n = len(series.tail(base.n_values))
        fold_list = bt.walk_forward(n, folds, base.test_size, max(c.window for c in configs), base.horizon,
                                    mode=mode, train_span=train_span)
        _say(f"{len(configs)} configurations × {folds} folds of {base.test_size} test values")
        futures = backtest_config.map(configs, [label(cfg, grid) for cfg in configs], unmapped(series),
                                      unmapped(fold_list), unmapped(level), unmapped(parent_id), unmapped(exp_id))
        results = [f.result() for f in futures]
        report = write_sweep_report(results, grid, level, parent_id)
    except BaseException:
        tracking.end_run(parent_id, "FAILED")
        raise
    tracking.end_run(parent_id, "FINISHED")
    return {**report, "parent_run_id": parent_id, "results": results}


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _pairs(items: list[str], what: str, multi: bool) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{what} {item!r}: expected NAME=VALUE{',VALUE…' if multi else ''}")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        out[k] = [_value(x) for x in v.split(",")] if multi else _value(v)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", action="append", metavar="NAME=V1,V2,…",
                   help="a grid dimension (repeat for more); default: model=rnn,gru,lstm,mlp hidden_size=16,32")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", dest="overrides",
                   help="a parameter of every configuration (any flag of `python -m flows.nightly`)")
    p.add_argument("--preset", help="named preset applied before --set (e.g. notebook)")
    p.add_argument("--folds", type=int, default=4, help="walk-forward folds (default 4)")
    p.add_argument("--mode", choices=["expanding", "rolling"], default="expanding",
                   help="training window of each fold (default expanding)")
    p.add_argument("--train-span", type=int, help="values before each test block, rolling mode")
    p.add_argument("--level", type=float, default=0.9, help="conformal interval level (default 0.9)")
    p.add_argument("--experiment", default="sweep", help="MLflow experiment (default sweep)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--address", help="an existing Dask scheduler (default: $DASK_SCHEDULER_ADDRESS, else a "
                                         "LocalCluster with one worker per core)")
    where.add_argument("--workers", type=int, help="LocalCluster workers (default: one per core)")
    where.add_argument("--sequential", action="store_true", help="no Dask: one configuration after another")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _console_logging()
    try:
        grid = _pairs(args.grid, "--grid", multi=True) or None
        overrides = _pairs(args.overrides, "--set", multi=False)
        expand_grid(grid or DEFAULT_GRID, args.preset, overrides)  # reject bad parameters before starting anything
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    runner = ThreadPoolTaskRunner(max_workers=1) if args.sequential else dask_runner(args.address, args.workers)
    try:
        tracking.client()  # open the MLflow store while the Prefect server boots
        _server.wait_ready()
        out = _run_flow(sweep.with_options(task_runner=runner),
                        dict(grid=grid, preset=args.preset, overrides=overrides, folds=args.folds, mode=args.mode,
                             train_span=args.train_span, level=args.level, experiment=args.experiment))
    except Exception as e:  # noqa: BLE001 - the flow run already recorded the traceback
        print(f"error: the sweep failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(out["table"])
    print(f"best: {out['best']}; MLflow parent run {out['parent_run_id']}")
    return 0


if __name__ == "__main__":
    code = main()
    gc.freeze()  # see flows/nightly.py
    sys.exit(code)
