"""The backfill: replay past nights as they were, filling the forecast ledger and the registry.

Run once: ``python -m flows.backfill --source sp500 --start 2008-01-14 --end 2008-04-10 [--init champion
--warm-epochs 20] …`` (any flag of ``python -m flows.nightly``). Deployed (run on demand) by ``prefect.yaml``.

Each night of the source between ``start`` and ``end`` (its timestamps; a panel: any series') is one run of
the nightly flow with ``--as-of`` that night: it reads the source anew and keeps only the values at or before
the night (point in time: nothing later leaks in), scores the earlier nights' matured forecasts, trains,
evaluates, registers and records its forecasts in the ledger, exactly as the nightly did or would have.

* **Resumable**: nights already in the ledger (for this ``--model-name``) are skipped, so a backfill that was
  stopped continues where it stopped, and a second run of the same range does nothing.
* **Parallel or sequential**: cold starts (``--init none``, the default) do not depend on each other and run
  concurrently, each a nightly subflow run inside a task: in threads of this process (one per core), or with
  ``--dask [ADDRESS]`` (or ``$DASK_SCHEDULER_ADDRESS``, which the deployment's runs get from ``ops/services.py``)
  on the Dask workers of that cluster, a night per worker; warm starts (``--init champion``)
  start from the previous night's champion, so they run one after another, oldest first. Either way, a
  last scoring pass joins every matured forecast with the actual values up to ``end`` and the backfill's
  report shows the realized error of each night against the naive and seasonal naive forecasts.
* **Test-block baselines**: each replayed night evaluates on its test block like the nightly; the statistical
  ones (AutoETS: 5.8 s a night on sp500) are off unless ``--stat-baselines`` says otherwise, since the
  backfill's verdict is the realized one; so are each night's figures (``--figures`` to draw them).
"""
from __future__ import annotations

import sys

from flows.runtime import env  # noqa: F401  (environment defaults before prefect/mlflow import)
from flows.runtime import server

if __name__ == "__main__":
    server.start_early(sys.argv[1:])

import argparse
import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from flows import cli
from flows.core import ingest, realized, report
from flows.core.config import ConfigError, RunConfig, is_timestamp
from flows.core.sources import DataError
from flows.nightly import TASK_THREADS, nightly
from flows.runtime import ledger, tracking
from flows.runtime.cluster import dask_runner
from flows.runtime.progress import Progress
from flows.tasks import RunSummary, say, score_ledger

#: what the backfill changes in each night's parameters unless given
DEFAULTS = {"stat_baselines": "none", "figures": False}


def nights_between(cfg: RunConfig, start: str, end: str) -> list[pd.Timestamp]:
    """The source's timestamps between ``start`` and ``end`` (inclusive), read as of ``end``."""
    for name, value in (("start", start), ("end", end)):
        if is_timestamp(value):
            raise ConfigError(f"parameter {name}={value!r}: {is_timestamp(value)}")
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    if lo > hi:
        raise ConfigError(f"parameter start={start!r}: after end={end!r}")
    panel = ingest.load_series(dataclasses.replace(cfg.data, as_of=str(hi)), cfg.windows.positive_only)
    times = pd.DatetimeIndex(np.unique(panel.times))
    return list(times[(times >= lo) & (times <= hi)])


@dataclass(frozen=True)
class BackfillSummary:
    replayed: list[str]          # the nights run now
    skipped: list[str]           # the nights already in the ledger
    realized: pd.DataFrame       # per night: the realized errors (realized.Realized.nights)
    overall: dict                # pooled over every scored night (realized.Realized.all)
    seconds: float


@task(cache_policy=NO_CACHE, task_run_name="replay-{night}")
def replay_night(night: str, preset: str | None, overrides: dict[str, Any]) -> RunSummary:
    """One cold-start night, as a nightly subflow run (concurrent nights: one task each)."""
    return nightly(preset=preset, overrides={**overrides, "as_of": night})


@task(cache_policy=NO_CACHE)
def score_backfill(cfg: RunConfig, end: str) -> realized.Realized:
    """Join every matured forecast with the actual values up to ``end``; the realized errors per night."""
    panel = ingest.load_series(dataclasses.replace(cfg.data, as_of=end), cfg.windows.positive_only)
    return score_ledger(panel, cfg.tracking.ledger_url, cfg.tracking.model_name, cfg.tracking.score_nights)[1]


def backfill_markdown(cfg: RunConfig, start: str, end: str, real: realized.Realized, replayed: int, skipped: int,
                      seconds: float, png: bytes | None) -> str:
    lines = [f"# Backfill {start} … {end}: {cfg.tracking.model_name}", "",
             f"{replayed} night(s) replayed, {skipped} already in the ledger, in {seconds:.0f} s "
             f"({'warm starts from the champion, one after another' if cfg.training.init == 'champion' else 'cold starts, concurrently'}).",
             "", real.sentence(), ""]
    if real.n_nights:
        lines += ["| night | forecasts | MAE | naive MAE | seasonal naive MAE | MASE | naive MASE |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {pd.Timestamp(r.origin)} | {int(r.n)} | {r.model_mae:.4g} | {r.naive_mae:.4g} | "
                  f"{r.snaive_mae:.4g} | {r.model_mase:.3f} | {r.naive_mase:.3f} |" for r in real.nights.itertuples()]
    if png:
        lines += ["", f"![realized error]({report.inline_png(png)})"]
    return "\n".join(lines)


def task_runner(address: str | None = None, dask: bool = False):
    """The cold nights' runner: the Dask scheduler at ``address`` (or ``$DASK_SCHEDULER_ADDRESS``; with ``dask`` and
    neither, a LocalCluster), else threads of this process."""
    if dask or address or os.environ.get("DASK_SCHEDULER_ADDRESS"):
        return dask_runner(address)
    return ThreadPoolTaskRunner(max_workers=TASK_THREADS)


@flow(name="backfill", log_prints=False, task_runner=task_runner())
def backfill(start: str, end: str, preset: str | None = None, overrides: dict[str, Any] | None = None) \
        -> BackfillSummary:
    """Replay the nights from ``start`` to ``end`` with the nightly's parameters (``preset``, ``overrides``: any
    flag of ``python -m flows.nightly``), as of each night; skip the nights already in the ledger."""
    t0 = time.perf_counter()
    overrides = {**DEFAULTS, **(overrides or {})}
    if overrides.get("as_of"):
        raise ConfigError(f"parameter as_of={overrides['as_of']!r}: the backfill sets it to each night; give start "
                          "and end")
    cfg = RunConfig.resolve(preset, overrides)   # every parameter checked before any work
    nights = nights_between(cfg, start, end)
    engine = ledger.open_ledger(cfg.tracking.ledger_url)
    try:
        recorded = set(ledger.origins(engine, cfg.tracking.model_name)["origin"])
    finally:
        engine.dispose()
    todo = [n for n in nights if n not in recorded]
    skipped = [str(n) for n in nights if n in recorded]
    say(f"backfill {start} … {end}: {len(nights)} night(s), {len(skipped)} already in the ledger, {len(todo)} to "
        f"replay ({'sequentially, warm starts' if cfg.training.init == 'champion' else 'concurrently, cold starts'})")
    progress = Progress("backfill-progress", len(todo), "nights replayed")
    if cfg.training.init == "champion":   # each night starts from the champion the previous one left
        for done, night in enumerate(todo, 1):
            nightly(preset=preset, overrides={**overrides, "as_of": str(night)})
            progress.update(done, f"; last {night.date()}")
    else:
        if isinstance(FlowRunContext.get().task_runner, DaskTaskRunner):
            # a worker (perhaps on another machine) writes to this ledger, not to its own default one; the URL as
            # given (no password in it: PGPASSWORD or ${VAR} in the workers' environment)
            overrides = {**overrides, "ledger_url": cfg.tracking.ledger_url or ledger.default_url()}
        futures = [replay_night.submit(str(n), preset, overrides) for n in todo]
        for done, _ in enumerate(as_completed(futures), 1):
            progress.update(done)
        for f in futures:
            f.result()   # a failed night fails the backfill (the nights done stay done: rerun to resume)
    real = score_backfill(cfg, end)
    png = report.render_png({"realized_error.png": report.figure_realized(real)})["realized_error.png"] \
        if real.n_nights else None
    seconds = time.perf_counter() - t0
    create_markdown_artifact(key="backfill-report", description=f"{len(todo)} nights replayed",
                             markdown=backfill_markdown(cfg, start, end, real, len(todo), len(skipped), seconds, png))
    say(f"backfill done in {seconds:.1f} s: {len(todo)} night(s) replayed. {real.sentence()}")
    return BackfillSummary([str(n) for n in todo], skipped, real.nights, real.all, seconds)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.backfill", description=__doc__.split("\n\n")[0],
                                epilog="Every other flag is the nightly's (python -m flows.nightly --help).")
    p.add_argument("--start", required=True, help="first night to replay (a date or date-time of the source)")
    p.add_argument("--end", required=True, help="last night to replay (inclusive)")
    p.add_argument("--dask", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="replay the cold-start nights on Dask: the scheduler at ADDRESS (or $DASK_SCHEDULER_ADDRESS, "
                        "which also selects it without this flag), else a local cluster of one worker process per "
                        "core (default: threads of this process)")
    cli.add_config_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cli.console_logging()
    overrides = cli.overrides_from(args)
    try:
        if overrides.get("as_of"):
            raise ConfigError("parameter as_of: the backfill sets it to each night; give --start and --end")
        cfg = RunConfig.resolve(args.preset, {**DEFAULTS, **overrides})
        nights_between(cfg, args.start, args.end)   # bad data or dates are reported now, not after the server boots
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    try:
        tracking.client()
        server.wait_ready()
        flow_fn = backfill if args.dask is None else backfill.with_options(
            task_runner=task_runner(args.dask or None, dask=True))
        summary = cli.run_flow(flow_fn, {"start": args.start, "end": args.end, "preset": args.preset,
                                         "overrides": overrides})
    except Exception as e:  # noqa: BLE001 - the flow run already recorded the traceback
        print(f"error: the backfill failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"done: {len(summary.replayed)} night(s) replayed, {len(summary.skipped)} already done, in "
          f"{summary.seconds:.1f} s")
    if len(summary.realized):
        a = summary.overall
        print(f"realized MAE over {len(summary.realized)} scored nights: model {a['model_mae']:.4g}, naive "
              f"{a['naive_mae']:.4g}, seasonal naive {a['snaive_mae']:.4g} (MASE {a['model_mase']:.3f} vs naive "
              f"{a['naive_mase']:.3f})")
    return 0


if __name__ == "__main__":
    cli.exit_fast(main())
