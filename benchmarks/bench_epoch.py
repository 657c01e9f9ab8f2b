"""Where a training epoch's time goes: the `notebook` preset's epoch against its fused training step.

    python benchmarks/bench_epoch.py [--kinds rnn,gru,lstm] [--epochs 30] [--repeats 3] [--profile]

Each kind runs in a fresh process: the notebook preset's windows (7000 values of a synthetic daily
random walk: window 240, 4900 training windows, full batch, hidden 24, Adam, float32), then

* *epoch*: ``train`` for ``--epochs`` epochs as the pipeline's training task runs it — per-epoch
  metrics to an MLflow run (``EpochLogger``) and a checkpoint every 25 epochs, into a local MLflow
  store in a temporary directory — wall time divided by the epochs;
* *step*: the time the same run spent in the fused training steps (``loss_and_grad`` on the 4900
  training windows, the kernel), per epoch, and *validation* in the validation pass
  (``evaluate_loss``), both timed around the calls inside the run, so the ratio is measured side by
  side on a machine whose speed drifts between runs;
* *epoch/step*: the ratio (the issue's target: at most 1.15). Medians of ``--repeats`` runs.

``--profile`` adds a cProfile breakdown of one training run per kind: the share of the epoch spent
in the fused step, the validation pass, the gradient norm, the optimizer, the best-weights copy,
the metric logging, the checkpoints and the metric flushes outside the per-epoch logging (before each
checkpoint and at the end). Prints Markdown tables and the CPU it ran on.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: profile rows: a label and the functions (file suffix, name) whose cumulative time it is
PARTS = [
    ("fused step (forward, head, loss, backward)", [("nncore/models.py", "loss_and_grad")]),
    ("validation pass", [("flows/core/training.py", "evaluate_loss")]),
    ("gradient norm", [("flows/core/training.py", "_grad_norm"), ("nncore/optim.py", "clip_grad_norm")]),
    ("optimizer step", [("nncore/optim.py", "step")]),
    ("zero_grad", [("nncore/layers.py", "zero_grad")]),
    ("best weights copy", [("nncore/layers.py", "state_dict")]),
    ("saturation probe", [("nncore/models.py", "saturation")]),
    ("metric logging (MLflow)", [("flows/runtime/tracking.py", "__call__")]),
    ("checkpoints (MLflow)", [("flows/runtime/tracking.py", "log_checkpoint")]),
]
#: the metric flushes the per-epoch logging row leaves out: before each checkpoint (the metrics up to a
#: checkpoint are in MLflow before it is, as in the pipeline) and at the end of the run
FLUSHES = "metric flushes before checkpoints and at the end (MLflow)"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def one_kind(kind: str, epochs: int, repeats: int, profile: bool) -> dict:
    """Runs in its own process."""
    import numpy as np

    from flows.core.config import RunConfig
    from flows.core.training import build, train
    from flows.core.windowing import make_windows

    import flows.core.training as training_module
    from nncore import models

    cfg = RunConfig.resolve("notebook", {"model": kind, "epochs": epochs})
    rng = np.random.default_rng(0)
    values = 1000 * np.exp(np.cumsum(rng.normal(0.0003, 0.01, cfg.data.n_values)))
    windows = make_windows(values, cfg.windows, np.dtype(cfg.model.dtype))
    X, y = windows.train.X, windows.train.y
    build(cfg.model, windows, np.random.default_rng(1)).loss_and_grad(X, y)  # warm-up
    timers = {"step": 0.0, "val": 0.0}

    def timed(fn, key):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timers[key] += time.perf_counter() - t0
        return wrapper

    # instrumentation of this benchmark process only: the time inside the steps and the validation passes
    models.RecurrentForecaster.loss_and_grad = timed(models.RecurrentForecaster.loss_and_grad, "step")
    training_module.evaluate_loss = timed(training_module.evaluate_loss, "val")

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        from flows.runtime import tracking

        def run_training(training=cfg.training) -> float:
            with tracking.run("bench-epoch") as run:
                logger = run.epoch_logger()
                t0 = time.perf_counter()
                try:
                    train(windows, cfg.model, training, logger,
                          on_checkpoint=lambda c: (logger.flush(), run.log_checkpoint(c, "bench")))
                finally:
                    logger.flush()
                return time.perf_counter() - t0

        run_training(dataclasses.replace(cfg.training, epochs=2))  # warm-up: the store's tables, the imports
        runs = []
        for _ in range(repeats):
            timers.update(step=0.0, val=0.0)
            wall = run_training()
            runs.append({"epoch": wall / epochs, "step": timers["step"] / epochs, "val": timers["val"] / epochs})
        parts = {}
        if profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            wall = run_training()
            prof.disable()
            stats = pstats.Stats(prof).stats
            for label, funcs in PARTS:
                parts[label] = sum(v[3] for (file, _, name), v in stats.items()
                                   if any(file.endswith(f) and name == n for f, n in funcs)) / epochs
            parts[FLUSHES] = sum(c[3] for (file, _, name), v in stats.items()
                                 if file.endswith("flows/runtime/tracking.py") and name == "flush"
                                 for (_, _, caller), c in v[4].items() if caller != "__call__") / epochs
            parts["epoch (profiled run)"] = wall / epochs
    med = {k: statistics.median(r[k] for r in runs) for k in ("epoch", "step", "val")}
    return {"kind": kind, "train": len(X), "val_windows": len(windows.val.X), **med,
            "ratio": statistics.median(r["epoch"] / r["step"] for r in runs), "parts": parts}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kinds", default="rnn,gru,lstm")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one_kind(args.one, args.epochs, args.repeats, args.profile)))
        return
    rows = []
    for kind in args.kinds.split(","):
        cmd = [sys.executable, __file__, "--one", kind, "--epochs", str(args.epochs), "--repeats", str(args.repeats)]
        out = subprocess.run(cmd + (["--profile"] if args.profile else []), check=True, capture_output=True,
                             text=True, cwd=ROOT).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    import kernels

    print(f"{cpu_name()}, {os.cpu_count()} cores, kernels {kernels.build_info()}; notebook preset, "
          f"{rows[0]['train']} training and {rows[0]['val_windows']} validation windows, float32, {args.epochs} epochs, "
          f"median of {args.repeats}\n")
    print("| kind | epoch (ms) | fused step (ms) | validation (ms) | rest (ms) | epoch / step | "
          "500 epochs (s, projected) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        rest = r["epoch"] - r["step"] - r["val"]
        print(f"| {r['kind']} | {r['epoch'] * 1e3:.1f} | {r['step'] * 1e3:.1f} | {r['val'] * 1e3:.1f} | "
              f"{rest * 1e3:.1f} | {r['ratio']:.2f} | {r['epoch'] * 500:.1f} |")
    if args.profile:
        print("\nPer epoch (ms, cProfile's cumulative time; the profiler adds its own overhead):\n")
        print("| part | " + " | ".join(r["kind"] for r in rows) + " |")
        print("|---|" + "---|" * len(rows))
        for label in [lbl for lbl, _ in PARTS] + [FLUSHES, "epoch (profiled run)"]:
            print(f"| {label} | " + " | ".join(f"{r['parts'][label] * 1e3:.2f}" for r in rows) + " |")


if __name__ == "__main__":
    main()
