"""Scale of a panel: a synthetic panel of S series × N daily steps through ingestion, validation,
windowing and one epoch of a global GRU; wall time per stage and the process's peak memory.

    python benchmarks/bench_panel.py [--series 10000] [--steps 1000] [--repeats 3]

The panel is written once as a long CSV (``unique_id, ds, y``; not timed), then each repeat runs in
a fresh process: ``load_series`` (read, parse, validate: columns, numbers, dates, order, the
frequency and its grid), ``window_panel`` (every series windowed and scaled on its own training
part) and one training epoch of a global GRU on all training windows (shuffled mini-batches,
then the validation loss). Prints the median of each stage and the largest peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_csv(path: Path, series: int, steps: int, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    ids = np.repeat(np.array([f"s{i:05d}" for i in range(series)]), steps)
    days = np.tile(np.arange(np.datetime64("2020-01-01"), np.datetime64("2020-01-01") + steps), series)
    level = 100 + 20 * rng.random(series)[:, None]
    season = 5 * np.sin(2 * np.pi * np.arange(steps) / 7)[None, :]
    values = level * np.exp(np.cumsum(rng.normal(0, 0.01, (series, steps)), axis=1)) + season
    table = pa.table({"unique_id": ids, "ds": days.astype(str), "y": np.round(values.ravel(), 4)})
    pacsv.write_csv(table, path)


def one_run(path: str, window: int, hidden: int, batch: int) -> dict:
    """Runs in its own process: the stages, timed, and the peak RSS after each."""
    import numpy as np

    from flows.core.config import DataSpec, RunConfig
    from flows.core.ingest import load_series
    from flows.core.training import train
    from flows.core.windowing import window_panel

    def peak_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    out = {}
    t0 = time.perf_counter()
    panel = load_series(DataSpec(source=path, id_column="unique_id"))
    out["ingestion + validation"] = time.perf_counter() - t0
    out["peak MB after ingestion"] = peak_mb()
    cfg = RunConfig.resolve(None, dict(window=window, horizon=1, test_size=28, target="return", model="gru",
                                       hidden_size=hidden, epochs=1, batch_size=batch, checkpoint_every=0))
    t0 = time.perf_counter()
    windows = window_panel(panel.values, panel.offsets, cfg.windows, np.float32, panel.times, panel.freq, None,
                           panel.ids)
    out["windowing"] = time.perf_counter() - t0
    out["peak MB after windowing"] = peak_mb()
    out["training windows"] = len(windows.train)
    out["series"] = windows.n_series
    result = train(windows, cfg.model, cfg.training)
    out["one GRU epoch (train + validation)"] = result.seconds
    out["backend"] = result.backend
    out["peak MB"] = peak_mb()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--series", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=1_000)
    p.add_argument("--window", type=int, default=28)
    p.add_argument("--hidden", type=int, default=24)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--run", help=argparse.SUPPRESS)   # internal: one repeat in this process
    args = p.parse_args()
    if args.run:
        print(json.dumps(one_run(args.run, args.window, args.hidden, args.batch)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "panel.csv"
        make_csv(path, args.series, args.steps)
        size = path.stat().st_size / 1e6
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, __file__, "--run", str(path), "--window", str(args.window),
                                  "--hidden", str(args.hidden), "--batch", str(args.batch)], cwd=ROOT,
                                 capture_output=True, text=True, check=True, env={**os.environ})
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"{args.series} series × {args.steps} daily steps ({size:.0f} MB CSV), window {args.window} → 1, "
          f"{runs[0]['training windows']} training windows; GRU hidden {args.hidden}, batch {args.batch}, "
          f"{runs[0]['backend']} backend; {os.cpu_count()} cores, {cpu}; {args.repeats} runs")
    print("| stage | median s | runs |")
    print("|---|---|---|")
    stages = ["ingestion + validation", "windowing", "one GRU epoch (train + validation)"]
    for stage in stages:
        values = [r[stage] for r in runs]
        print(f"| {stage} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    first_two = [r["ingestion + validation"] + r["windowing"] for r in runs]
    print(f"| ingestion + validation + windowing | {statistics.median(first_two):.2f} | "
          f"{', '.join(f'{v:.2f}' for v in first_two)} |")
    print(f"peak RSS: {max(r['peak MB after ingestion'] for r in runs):.0f} MB after ingestion, "
          f"{max(r['peak MB after windowing'] for r in runs):.0f} MB after windowing, "
          f"{max(r['peak MB'] for r in runs):.0f} MB with the epoch")


if __name__ == "__main__":
    main()
