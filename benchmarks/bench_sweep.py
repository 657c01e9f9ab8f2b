"""Sweep wall time: an 8-configuration sweep on a 2-worker Dask LocalCluster vs one after another.

Runs ``python -m flows.sweep`` (model kinds rnn, gru, lstm, mlp × hidden sizes 16, 32 by default,
on the last 4000 values of the S&P 500, window 60, 2 folds of 200 test values) --repeats times in each mode, alternating, and
prints the median wall time of each and the speed-up over one core. Modes: ``--sequential``
with OMP_NUM_THREADS=1 (one core), ``--sequential`` (one configuration at a time, the kernels'
OpenMP loops on every core), and ``--workers N`` (one single-threaded Dask worker process per
core: Dask's nanny sets OMP_NUM_THREADS=1). MLflow writes to a fresh sqlite store in a temporary directory.

    python benchmarks/bench_sweep.py [--repeats 3] [--workers 2] [--epochs 100]
    python benchmarks/bench_sweep.py --address tcp://127.0.0.1:8786 --no-sequential   # + a cluster of its own

``--address``: also on an existing Dask cluster (e.g. ``ops/services.py start --dask-workers 2``), whose workers
get the flow's tracking store through the runner's worker plugin; ``--no-sequential`` skips the one-process
modes (the speed-up column is then over the LocalCluster).
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

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--address", help="also sweep on the Dask scheduler at this address")
    p.add_argument("--no-sequential", action="store_true", help="only the Dask modes")
    p.add_argument("--grid", action="append", default=None,
                   help="grid dimensions as for flows.sweep (default model=rnn,gru,lstm,mlp hidden_size=16,32)")
    args = p.parse_args()
    grid = args.grid or ["model=rnn,gru,lstm,mlp", "hidden_size=16,32"]
    common = [a for g in grid for a in ("--grid", g)] + [
        "--set", "n_values=4000", "--set", "window=60", "--set", "test_size=200", "--set", f"epochs={args.epochs}",
        "--folds", "2", "--experiment", "bench-sweep"]
    local = f"dask, {args.workers} workers"
    sequential = {"sequential, 1 thread": ["--sequential"], "sequential": ["--sequential"]}
    modes = {**({} if args.no_sequential else sequential),
             local: ["--workers", str(args.workers)],
             **({"dask, cluster of its own": ["--address", args.address]} if args.address else {})}
    times: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db")
        env.pop("PREFECT_API_URL", None)
        for i in range(args.repeats):
            for mode, flags in modes.items():
                t0 = time.perf_counter()
                mode_env = dict(env, OMP_NUM_THREADS="1") if "1 thread" in mode else env
                out = subprocess.run([sys.executable, "-m", "flows.sweep", *common, *flags], cwd=ROOT, env=mode_env,
                                     capture_output=True, text=True)
                wall = time.perf_counter() - t0
                if out.returncode != 0:
                    sys.exit(f"{mode} run {i + 1} failed:\n{out.stdout}\n{out.stderr}")
                times[mode].append(wall)
                print(f"run {i + 1} {mode:20s} {wall:6.1f} s", flush=True)
    n_configs = 1
    for g in grid:
        n_configs *= len(g.split("=", 1)[1].split(","))
    seq = statistics.median(times[local if args.no_sequential else "sequential, 1 thread"])
    print()
    print("| mode | configurations × folds | runs | median wall s | speed-up |")
    print("|---|---|---|---|---|")
    for mode, ts in times.items():
        med = statistics.median(ts)
        print(f"| {mode} | {n_configs} × 2 | {len(ts)} | {med:.1f} | {seq / med:.2f}× |")
    print(f"(machine: {os.cpu_count()} cores; {args.epochs} epochs, 4000 values, window 60, 2 folds of 200; "
          "wall time includes the process start and Prefect's temporary server)")


if __name__ == "__main__":
    main()
