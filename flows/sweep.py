"""The sweep: every configuration of a grid, backtested walk-forward, in parallel on Dask.

Run once: ``python -m flows.sweep --grid model=rnn,gru,lstm,mlp --grid hidden_size=16,32``
(``--help`` lists every option). Deployed weekly by ``prefect.yaml``.

Each configuration (a :class:`~flows.core.config.RunConfig`: the base preset and ``--set``
values, then one combination of the grid) is one mapped Prefect task, ``backtest_config``, that
trains and evaluates it on ``k`` walk-forward folds (:mod:`flows.core.backtest`: consecutive test
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

from flows.runtime import env  # noqa: F401  (environment defaults before prefect/mlflow import)
from flows.runtime import server

if __name__ == "__main__":  # see flows/runtime/server.py: the Dask workers inherit the server's URL too
    server.start_early(sys.argv[1:])

import argparse
import itertools
import json
from typing import Any

from prefect import flow, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.runtime import flow_run as current_flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows import cli
from flows.core import backtest as bt
from flows.core import report
from flows.core.backtest import SweepEntry
from flows.core.config import PARAMETERS, ConfigError, RunConfig, parse_value
from flows.core.panel import Panel
from flows.runtime import tracking
from flows.runtime.cluster import dashboard_link, dask_runner
from flows.runtime.progress import Progress
from flows.tasks import load_series, say
from nncore import MODELS

#: the weekly sweep's grid: the four model kinds × two hidden sizes
DEFAULT_GRID = {"model": ["rnn", "gru", "lstm", "mlp"], "hidden_size": [16, 32]}


def expand_grid(grid: dict[str, list], preset: str | None = None, overrides: dict | None = None) -> list[RunConfig]:
    """One validated configuration per grid combination (the preset, then ``overrides``, then the combination)."""
    if not grid:
        raise ConfigError("parameter grid: empty; give at least one parameter with a list of values")
    for k, values in grid.items():
        if k not in PARAMETERS:
            raise ConfigError(f"parameter grid: unknown parameter {k!r}")
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"parameter grid: {k} needs a non-empty list of values, got {values!r}")
    combos = [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())]
    configs = [RunConfig.resolve(preset, {**(overrides or {}), **combo}) for combo in combos]
    if len(set(configs)) != len(configs):
        raise ConfigError("parameter grid: repeated values give the same configuration twice")
    return configs


def cost(cfg: RunConfig) -> float:
    """Relative training cost, to start the longest backtests first (fewer idle workers at the end)."""
    kind = MODELS[cfg.model.model]
    per_window = kind.multiply_adds(cfg.model.model, cfg.windows.window, cfg.model.hidden_size, 1, cfg.windows.horizon)
    return per_window * cfg.training.epochs * (cfg.data.n_values or 1)


def label(cfg: RunConfig, grid: dict) -> str:
    flat = cfg.flat()
    return " ".join(f"{k}={flat[k]}" for k in grid)


# ----------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------
@task(task_run_name="backtest {name}")
def backtest_config(cfg: RunConfig, name: str, series: Panel, folds: list, level: float, parent_run_id: str,
                    experiment: str) -> SweepEntry:
    """Train and evaluate one configuration on every fold; a nested MLflow run holds its record."""
    tags = {"sweep_config": name, "data_sha256": series.sha256}
    params = {**cfg.public(), "folds": len(folds), "conformal_level": level}
    with tracking.run(experiment, name, tags, params, parent=parent_run_id) as run:
        result = bt.backtest_config(series.tail(cfg.data.n_values).values, folds, cfg.windows, cfg.model, cfg.training,
                                    level, on_fold=lambda i, row: run.log_metrics(
                                        {k: v for k, v in row.items() if k != "fold"}, step=i))
        run.log_metrics(result.metrics())
        run.set_tags({"copies_last_value": result.lag["copies_last_value"]})
    return SweepEntry(name, run.id, result)


@task
def write_sweep_report(entries: list[SweepEntry], level: float, parent_run_id: str, dashboard: str | None = None) -> dict:
    """Comparison table and figure on the parent run; a Prefect artifact names the best configuration."""
    entries = sorted(entries, key=lambda e: e.stat("mean_test_mae"))
    best = entries[0]
    table = report.sweep_table(entries, level)
    png = report.render_png({"comparison.png": report.comparison_figure(entries)})["comparison.png"]
    parent = tracking.Run(parent_run_id)
    parent.log_files({"comparison.md": (table + "\n").encode(), "comparison.csv": report.sweep_csv(entries).encode(),
                      "comparison.png": png})
    parent.log_metrics({"best_mean_test_mae": best.stat("mean_test_mae"),
                        "naive_mean_test_mae": best.stat("mean_naive_test_mae"),
                        "best_mean_test_mase": best.stat("mean_test_mase")})
    parent.set_tags({"best_config": best.label, "best_run_id": best.run_id})
    create_markdown_artifact(key="sweep-report", markdown=report.sweep_markdown(entries, table, png, parent.url(),
                                                                               dashboard),
                             description=f"best: {best.label}")
    say(f"best configuration: {best.label} (mean test MAE {best.stat('mean_test_mae'):.3f}, "
        f"naive {best.stat('mean_naive_test_mae'):.3f})")
    return {"best": best.label, "best_run_id": best.run_id, "table": table}


# ----------------------------------------------------------------------------------------------
# The flow
# ----------------------------------------------------------------------------------------------
@flow(name="sweep", task_runner=dask_runner(), log_prints=False)
def sweep(grid: dict[str, list] | None = None, preset: str | None = None, overrides: dict[str, Any] | None = None,
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
        raise ConfigError(f"parameter level={level}: the interval level must be in (0, 1)")
    base = configs[0]
    tags = {"prefect_flow_run": current_flow_run.name or "", "prefect_flow_run_id": current_flow_run.id or "",
            "sweep": "parent"}
    params = {"grid": json.dumps(grid), "preset": preset, "overrides": json.dumps(overrides or {}), "folds": folds,
              "mode": mode, "train_span": train_span, "level": level, "configurations": len(configs),
              "source": base.public()["source"]}
    with tracking.run(experiment, current_flow_run.name or "sweep", tags, params) as parent:
        dashboard = dashboard_link(FlowRunContext.get().task_runner)
        if dashboard:   # where to watch the configurations run: in the report, and on the parent run
            parent.set_tags({"dask_dashboard": dashboard})
            say(f"Dask dashboard: {dashboard}")
        series = load_series(base.data, base.windows.positive_only, parent.id)
        n = len(series.tail(base.data.n_values))
        fold_list = bt.walk_forward(n, folds, base.windows.test_size, max(c.windows.window for c in configs),
                                    base.windows.horizon, mode=mode, train_span=train_span)
        say(f"{len(configs)} configurations × {folds} folds of {base.windows.test_size} test values")
        futures = backtest_config.map(configs, [label(cfg, grid) for cfg in configs], unmapped(series),
                                      unmapped(fold_list), unmapped(level), unmapped(parent.id), unmapped(experiment))
        progress = Progress("sweep-progress", len(configs), "configurations backtested")
        for done, _ in enumerate(as_completed(futures), 1):
            progress.update(done)
        entries = [f.result() for f in futures]
        summary = write_sweep_report(entries, level, parent.id, dashboard)
    return {**summary, "parent_run_id": parent.id, "entries": entries}


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def _pairs(items: list[str], what: str, multi: bool) -> dict:
    """``NAME=VALUE`` (``NAME=V1,V2`` with ``multi``) → {name: typed value(s)}, typed like the run parameter."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{what} {item!r}: expected NAME=VALUE{',VALUE…' if multi else ''}")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        out[k] = [parse_value(k, x) for x in v.split(",")] if multi else parse_value(k, v)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", action="append", metavar="NAME=V1,V2,…",
                   help="a grid dimension (repeat for more); default: model=rnn,gru,lstm,mlp hidden_size=16,32")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", dest="overrides",
                   help="a parameter of every configuration (any flag of `python -m flows.nightly`)")
    p.add_argument("--preset", help="named preset applied before --set (e.g. notebook)")
    p.add_argument("--folds", type=int, default=4, help="walk-forward folds (default 4)")
    p.add_argument("--mode", choices=bt.MODES, default="expanding",
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
    cli.console_logging()
    try:
        grid = _pairs(args.grid, "--grid", multi=True) or None
        overrides = _pairs(args.overrides, "--set", multi=False)
        expand_grid(grid or DEFAULT_GRID, args.preset, overrides)  # reject bad parameters before starting anything
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    runner = ThreadPoolTaskRunner(max_workers=1) if args.sequential else dask_runner(args.address, args.workers)
    try:
        tracking.client()  # open the MLflow store while the Prefect server boots
        server.wait_ready()
        out = cli.run_flow(sweep.with_options(task_runner=runner),
                           dict(grid=grid, preset=args.preset, overrides=overrides, folds=args.folds, mode=args.mode,
                                train_span=args.train_span, level=args.level, experiment=args.experiment))
    except Exception as e:  # noqa: BLE001 - the flow run already recorded the traceback
        print(f"error: the sweep failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(out["table"])
    print(f"best: {out['best']}; MLflow parent run {out['parent_run_id']}")
    return 0


if __name__ == "__main__":
    cli.exit_fast(main())
