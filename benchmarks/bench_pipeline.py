"""Pipeline overhead: wall time of `python -m flows.nightly` minus the training time it reports.

Runs the CLI several times on the `notebook` preset with few epochs (the overhead does not
depend on the number of epochs: ingestion, windowing, both evaluation modes, figures, MLflow
logging, model registration, the Prefect report and the process start itself) and prints the
median. Each run has its own seed (a rerun of identical parameters on unchanged data would train
nothing: see README, Reliability). By default the flow runs against Prefect's temporary local server, started by the
process as it would be for `python -m flows.nightly`; with PREFECT_API_URL set, against that
server. MLflow uses a fresh sqlite store in a temporary directory.

    python benchmarks/bench_pipeline.py [--repeats 5] [--epochs 1] [--model rnn]
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
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--model", default="rnn")
    p.add_argument("--preset", default="notebook")
    args = p.parse_args()

    import mlflow

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db")
        for i in range(args.repeats):
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "flows.nightly", "--preset", args.preset, "--model", args.model,
                                  "--epochs", str(args.epochs), "--experiment", "bench", "--seed", str(i)],
                                 cwd=ROOT, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if out.returncode != 0:
                sys.exit(f"run {i + 1} failed:\n{out.stdout}\n{out.stderr}")
            client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
            exp = client.get_experiment_by_name("bench")
            run = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
            train = run.data.metrics["train_seconds"]
            flow_wall = (run.info.end_time - run.info.start_time) / 1000
            rows.append((wall, train, wall - train, flow_wall - train))
            print(f"run {i + 1}: wall {wall:6.1f} s  training {train:6.1f} s  overhead {wall - train:5.1f} s "
                  f"(inside the flow: {flow_wall - train:5.1f} s)", flush=True)
    print()
    print("| preset | model | epochs | runs | median wall s | median training s | median overhead s | "
          "overhead inside the flow s |")
    print("|---|---|---|---|---|---|---|---|")
    med = [statistics.median(c) for c in zip(*rows)]
    print(f"| {args.preset} | {args.model} | {args.epochs} | {len(rows)} | {med[0]:.1f} | {med[1]:.1f} | "
          f"{med[2]:.1f} | {med[3]:.1f} |")
    print("(overhead = wall − training; 'inside the flow' excludes interpreter start, imports and the "
          "temporary Prefect server)")


if __name__ == "__main__":
    main()
