"""Benchmark of one training pass (forward + backward) of the recurrent layer.

Workload per case: a recurrent layer over (B, T, I) inputs, a dense head on the last state and
the mean squared error; one pass = forward, loss gradient, backward, all parameter gradients.
Backends:

  numpy        nncore.recurrent *_forward / *_backward (dout=None, dh_T from the head)
  kernel       kernels.*_forward / *_backward, separate calls (out and dx are built)
  fused        kernels.*_train_step (forward, head, loss, backward per tile; no out, no dx)
  predict      kernels.*_predict (inference: the forward with the head fused, no cache; not a
               training pass, so its time is not compared with the others')
  torch        torch.nn.RNN/GRU/LSTM (batch_first) + Linear + MSELoss, .backward()
  torch-ftz    the same with torch.set_flush_denormal(True), set before torch starts its threads

Each backend is timed in its own subprocess (OpenMP runtimes of torch and of the kernels are
never mixed in one process), with the same thread count (kernels.threads()). Reported: the
median of --repeats runs after one warm-up, ratios, and GFLOP/s with

  FLOP = B · T · G · (6 H² + 6 H I)   (G = 1 RNN, 3 GRU, 4 LSTM)

i.e. the multiply-adds (2 FLOP each) of the forward products x W_ihᵀ and h W_hhᵀ and of the
backward's dh, dx, dW_hh and dW_ih; activations and elementwise work are not counted.

Input size. ``--input-sizes 1,8`` runs every case at each input size I (covariates as input
channels; B, T, H stay the case's) and adds a table of the time per step at each I against the
first, beside the FLOP ratio; the fused step at I = 1 vs I = 8 on the reference workload is

  python benchmarks/bench_rnn.py --cases reference --backends fused --input-sizes 1,8 --kinds rnn,gru,lstm

Roofline. Before the cases, the machine's FMA peak is measured in each dtype on the kernels' threads
(``kernels.fma_peak``: independent multiply-add chains in the widest vectors the build may use, all
threads at once; one warm-up, then the median of 5 runs of ~0.1 s, since AVX-512 units need a few
milliseconds to reach full speed), and every fused GFLOP/s is also printed as a fraction of it.

Against another build. ``--against DIR`` (another source tree with its kernels built in place, e.g.
``git worktree add /tmp/before <commit> && (cd /tmp/before && python setup.py build_ext --inplace)``)
times the kernel backends of every case on both builds, alternating them (``--rounds`` rounds, the
order swapped every round), and adds a table of the medians and their ratio. This machine's speed
drifts by up to ±30 % over minutes, so two builds timed one after the other may differ by the drift
alone; alternating them puts the drift into both.

Narrow against wide tiles. ``--tiles`` (a build with wide tiles: 64-byte vectors) times the kernel
backends of every case with ``NNCORE_TILES=narrow`` and with ``NNCORE_TILES=wide``, alternating them
the same way, and adds a table of the medians and their ratio: what ``kernels`` weighs when it
chooses the tiles of a call (``WIDE_ROW_COST``), e.g.

  python benchmarks/bench_rnn.py --kinds rnn,gru,lstm --backends fused,predict --tiles --rounds 4

Usage: python benchmarks/bench_rnn.py [--quick] [--kinds rnn,gru,lstm] [--repeats N] [--input-sizes 1,8]
                                      [--against DIR | --tiles] [--rounds N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
CASES = {  # name: (B, T, I, H)
    "reference": (4900, 240, 1, 24),
    "small-batch": (1, 240, 1, 24),
    "large-hidden": (256, 100, 1, 128),
}
BACKENDS = ["numpy", "kernel", "fused", "predict", "torch", "torch-ftz"]
KERNEL_BACKENDS = ("kernel", "fused", "predict")  # the ones --against and --tiles compare


def flops(kind, B, T, I, H):
    return B * T * GATES[kind] * (6 * H * H + 6 * H * I)


def make_data(kind, B, T, I, H, dtype, O=1, seed=0):
    rng = np.random.default_rng(seed)
    G = GATES[kind]
    bound = 1 / np.sqrt(H)
    return {
        "x": rng.standard_normal((B, T, I)).astype(dtype),
        "y": rng.standard_normal((B, O)).astype(dtype),
        "W_ih": rng.uniform(-bound, bound, (G * H, I)).astype(dtype),
        "W_hh": rng.uniform(-bound, bound, (G * H, H)).astype(dtype),
        "b_ih": rng.uniform(-bound, bound, G * H).astype(dtype),
        "b_hh": rng.uniform(-bound, bound, G * H).astype(dtype),
        "W_out": rng.uniform(-bound, bound, (O, H)).astype(dtype),
        "b_out": np.zeros(O, dtype=dtype),
    }


def _last(kind, state):
    return state[0] if kind == "lstm" else state


def _dstate(kind, dh):
    return (dh, None) if kind == "lstm" else dh


def numpy_like_pass(mod, kind):
    """forward + head + MSE + backward with a module of *_forward/*_backward functions."""
    fwd, bwd = getattr(mod, f"{kind}_forward"), getattr(mod, f"{kind}_backward")

    def run(d):
        _, state, cache = fwd(d["x"], None, d["W_ih"], d["W_hh"], d["b_ih"], d["b_hh"])
        h_T = _last(kind, state)
        y_hat = h_T @ d["W_out"].T + d["b_out"]
        dy = 2 * (y_hat - d["y"]) / d["y"].size
        bwd(None, _dstate(kind, dy @ d["W_out"]), cache, d["W_ih"], d["W_hh"])

    return run


def fused_pass(kind):
    import kernels

    step = getattr(kernels, f"{kind}_train_step")

    def run(d):
        step(d["x"], d["y"], None, d["W_ih"], d["W_hh"], d["b_ih"], d["b_hh"], d["W_out"], d["b_out"])

    return run


def predict_pass(kind):
    import kernels

    predict = getattr(kernels, f"{kind}_predict")

    def run(d):
        predict(d["x"], None, d["W_ih"], d["W_hh"], d["b_ih"], d["b_hh"], d["W_out"], d["b_out"])

    return run


def torch_pass(kind, d, threads, ftz):
    import torch

    if ftz:
        torch.set_flush_denormal(True)
    torch.set_num_threads(threads)
    dtype = torch.float32 if d["x"].dtype == np.float32 else torch.float64
    H, I = d["W_hh"].shape[1], d["W_ih"].shape[1]
    cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[kind]
    layer = cls(I, H, batch_first=True).to(dtype)
    head = torch.nn.Linear(H, d["y"].shape[1]).to(dtype)
    with torch.no_grad():
        layer.weight_ih_l0.copy_(torch.from_numpy(d["W_ih"]))
        layer.weight_hh_l0.copy_(torch.from_numpy(d["W_hh"]))
        layer.bias_ih_l0.copy_(torch.from_numpy(d["b_ih"]))
        layer.bias_hh_l0.copy_(torch.from_numpy(d["b_hh"]))
    x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])

    def run(_):
        layer.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        _, state = layer(x)
        h_T = (state[0] if kind == "lstm" else state)[0]
        loss = torch.nn.functional.mse_loss(head(h_T), y)
        loss.backward()

    return run


def time_it(run, d, repeats):
    run(d)  # warm-up: first-touch allocations, thread start
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(d)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


AGAINST_ENV = "NNBENCH_KERNELS_FROM"  # worker: import kernels from this source tree instead of ROOT's


def _extension_tree(kernels):
    """The source tree whose compiled extensions ``kernels`` runs (None if it has none, or if they come
    from several trees): an editable install's finder supplies this tree's extension to another tree's
    package that has none (the narrow tiles' ``_recurrent`` or the wide tiles' ``_recurrent_wide``)."""
    exts = [m for name, m in sys.modules.items() if name.startswith("kernels._recurrent") and m is not None]
    if not kernels.available() or not exts:
        return None
    trees = {os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(m.__file__)))) for m in exts}
    return trees.pop() if len(trees) == 1 else None


def _kernels_from(tree):
    """Import ``kernels`` and its extension from the source tree ``tree`` (a clear error if not there)."""
    sys.path.insert(0, tree)
    import kernels

    where = os.path.dirname(os.path.dirname(os.path.abspath(kernels.__file__)))
    if os.path.realpath(where) != os.path.realpath(tree):
        raise SystemExit(f"--against {tree}: imported kernels from {where}, not from that tree")
    if _extension_tree(kernels) != os.path.realpath(tree):
        files = sorted(m.__file__ for name, m in sys.modules.items() if name.startswith("kernels._recurrent"))
        raise SystemExit(f"--against {tree}: its kernels are not built (the extensions loaded: {files or 'none'}); "
                         f"run `python setup.py build_ext --inplace` there")
    return kernels


def worker(args):
    """Time one (backend, kind, case, dtype, input size) in this process; print JSON."""
    if os.environ.get(AGAINST_ENV):
        _kernels_from(os.environ[AGAINST_ENV])
    B, T, I, H = CASES[args.case]
    I = args.input_size or I
    dtype = np.dtype(args.dtype)
    d = make_data(args.kind, B, T, I, H, dtype)
    if args.backend == "numpy":
        from nncore import recurrent

        run = numpy_like_pass(recurrent, args.kind)
    elif args.backend == "kernel":
        import kernels

        run = numpy_like_pass(kernels, args.kind)
    elif args.backend == "fused":
        run = fused_pass(args.kind)
    elif args.backend == "predict":
        run = predict_pass(args.kind)
    else:
        run = torch_pass(args.kind, d, args.threads, args.backend == "torch-ftz")
    out = {"seconds": time_it(run, d, args.repeats)}
    if args.backend in KERNEL_BACKENDS:
        import kernels

        out["kernels"] = _extension_tree(kernels)
        out["tiles"] = kernels.build_info().get("tiles")  # None: kernels from before NNCORE_TILES (--against)
    print(json.dumps(out))


def machine(threads):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        f"CPU: {cpu}, {os.cpu_count()} logical cores; {platform.system()} {platform.machine()}",
        f"Python {platform.python_version()}, numpy {np.__version__}",
    ]
    try:
        import torch

        lines.append(f"torch {torch.__version__}")
    except ImportError:
        lines.append("torch: not installed (torch rows skipped)")
    import kernels

    info = kernels.build_info() if kernels.available() else {"error": str(kernels.import_error())}
    lines.append(f"kernels: {info}, threads {threads} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    return lines


def peak_worker(dtype):
    """GFLOP/s of the FMA peak loop on the kernels' threads (warm-up, then the median of 5)."""
    import kernels

    kernels.fma_peak(dtype, 5_000_000)
    runs = [kernels.fma_peak(dtype, 20_000_000) for _ in range(5)]
    print(json.dumps({"gflops": statistics.median(f / s / 1e9 for f, s in runs)}))


def measure_peak(dtype, threads):
    cmd = [sys.executable, os.path.abspath(__file__), "--peak-worker", dtype]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])["gflops"]


def have(backend, kind):
    if backend.startswith("torch"):
        try:
            import importlib.util

            return importlib.util.find_spec("torch") is not None
        except ImportError:
            return False
    if backend in KERNEL_BACKENDS:
        import kernels

        return kernels.available() and kernels.KERNELS.get(kind, False)
    return True


def run_subprocess(backend, kind, case, dtype, repeats, threads, input_size, against=None, tiles=None):
    """Seconds of one measurement in a fresh process; ``against``: with the kernels of that source tree;
    ``tiles``: with NNCORE_TILES set to it."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--backend", backend, "--kind", kind,
           "--case", case, "--dtype", dtype, "--repeats", str(repeats), "--threads", str(threads),
           "--input-size", str(input_size)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.pop(AGAINST_ENV, None)
    if against:
        env[AGAINST_ENV] = against
    if tiles:
        env["NNCORE_TILES"] = tiles
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{backend} {kind} {case} {dtype} I={input_size}"
                           f"{' (against ' + against + ')' if against else ''}"
                           f"{' (NNCORE_TILES=' + tiles + ')' if tiles else ''} failed:\n{res.stderr}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    tree = against or ROOT
    if "kernels" in out and out["kernels"] != os.path.realpath(tree):
        raise RuntimeError(f"{backend} {kind} {case}: the worker ran the kernels built in {out['kernels']}, "
                           f"not those of {tree}")
    if tiles and out.get("tiles") != tiles:
        raise RuntimeError(f"{backend} {kind} {case}: the worker ran the tiles {out.get('tiles')!r}, not {tiles!r}")
    return out["seconds"]


def compare(ours, theirs, measurements, rounds, repeats, threads):
    """Alternate two ways of running the kernels (``run_subprocess`` keywords: ``{}`` and ``{"against":
    tree}``, or ``{"tiles": "wide"}`` and ``{"tiles": "narrow"}``) over ``rounds`` rounds for every
    measurement (kind, case, dtype, I, backend); returns rows of (key, our seconds, theirs)."""
    rows = []
    for kind, case, dtype, I, backend in measurements:
        times = ([], [])
        for r in range(rounds):
            for side in ((0, 1) if r % 2 == 0 else (1, 0)):
                times[side].append(run_subprocess(backend, kind, case, dtype, repeats, threads, I,
                                                  **(ours, theirs)[side]))
        rows.append(((kind, case, dtype, I, backend), *times))
    return rows


def compare_table(title, columns, rows):
    """The table of ``compare``'s rows: ``columns`` names our side and theirs."""
    lines = [title,
             f"{'kind':5} {'case':13} {'I':>3} {'dtype':8} {'backend':7} {columns[0] + ' (ms)':>12} "
             f"{columns[1] + ' (ms)':>12} {'ratio':>6}  ratio per round"]
    lines.append("-" * len(lines[-1]))
    for (kind, case, dtype, I, backend), mine, theirs in rows:
        a, b = statistics.median(mine), statistics.median(theirs)
        per = " ".join(f"{t / m:.2f}" for m, t in zip(mine, theirs))
        lines.append(f"{kind:5} {case:13} {I:3d} {dtype:8} {backend:7} {a * 1e3:12.3f} {b * 1e3:12.3f} "
                     f"{b / a:6.2f}  {per}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="3 repeats, float32 only, no NumPy on the large cases")
    p.add_argument("--kinds", default="rnn", help="comma list of rnn,gru,lstm (default rnn)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 5)")
    p.add_argument("--cases", default=",".join(CASES), help="comma list of " + ",".join(CASES))
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma list of " + ",".join(BACKENDS))
    p.add_argument("--input-sizes", default="",
                   help="comma list of input sizes I to run every case at (default: each case's own I); "
                        "more than one adds a time-per-step table against the first")
    p.add_argument("--against", metavar="DIR",
                   help="another source tree with its kernels built in place: time the kernel backends of "
                        "every case on both builds, alternating, and print their ratio")
    p.add_argument("--tiles", action="store_true",
                   help="time the kernel backends of every case on this build's narrow and wide tiles "
                        "(NNCORE_TILES), alternating, and print their ratio")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the --against or --tiles comparison (default 3)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--peak-worker", help=argparse.SUPPRESS)
    p.add_argument("--backend", help=argparse.SUPPRESS)
    p.add_argument("--kind", help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--dtype", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--input-size", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.peak_worker:
        return peak_worker(args.peak_worker)

    import kernels

    threads = kernels.threads() if kernels.available() else (os.cpu_count() or 1)
    repeats = args.repeats or (3 if args.quick else 5)
    kinds = [k for k in args.kinds.split(",") if k]
    for k in kinds:
        if k not in GATES:
            raise SystemExit(f"unknown kind {k!r}; valid: {', '.join(GATES)}")
    dtypes = ["float32"] if args.quick else ["float32", "float64"]
    backends = args.backends.split(",")
    input_sizes = [int(v) for v in args.input_sizes.split(",") if v]
    if any(v < 1 for v in input_sizes):
        raise SystemExit(f"input sizes must be >= 1, got {input_sizes}")
    if args.against and args.tiles:
        raise SystemExit("--against and --tiles are two comparisons: give one")
    if args.against or args.tiles:
        if args.rounds < 1:
            raise SystemExit(f"--rounds must be >= 1, got {args.rounds}")
        if not set(KERNEL_BACKENDS) & set(backends):
            raise SystemExit(f"--against and --tiles compare the kernel backends: add one of "
                             f"{', '.join(KERNEL_BACKENDS)} to --backends")
    if args.tiles and not (kernels.available() and kernels.build_info()["wide_tile_rows"]):
        raise SystemExit("--tiles: this build has no wide tiles (they are built with 64-byte vectors: "
                         "kernels.build_info()['wide_tile_rows'])")
    if args.against:
        args.against = os.path.abspath(args.against)
        if not os.path.isfile(os.path.join(args.against, "kernels", "__init__.py")):
            raise SystemExit(f"--against {args.against}: no kernels/ package there (give a source tree of "
                             "this project with its kernels built in place)")
        if os.path.realpath(args.against) == os.path.realpath(ROOT):
            raise SystemExit(f"--against {args.against}: that is this tree")
    print("\n".join(machine(threads)))
    peak = {}
    if kernels.available():
        peak = {d: measure_peak(d, threads) for d in dtypes}
        print("FMA peak on " + f"{threads} threads (kernels.fma_peak, {kernels.build_info()['vector_bytes']}-byte "
              "tiles, peak loop in the widest vectors): "
              + ", ".join(f"{d} {g:.1f} GFLOP/s" for d, g in peak.items()))
    print(f"median of {repeats} runs (after 1 warm-up) per forward+backward; FLOP = B·T·G·(6H² + 6HI)\n")
    header = f"{'kind':5} {'case':13} {'I':>3} {'dtype':8} " + " ".join(f"{b:>10}" for b in backends)
    header += "   fused vs: numpy  torch  t-ftz | kernel vs numpy | GFLOP/s fused | % of peak"
    print(header)
    print("-" * len(header))
    results = {}  # (kind, case, dtype, I) -> {backend: seconds}
    for kind in kinds:
        for case in args.cases.split(","):
            B, T, I_case, H = CASES[case]
            for I in input_sizes or [I_case]:
                for dtype in dtypes:
                    secs = results[kind, case, dtype, I] = {}
                    for b in backends:
                        if not have(b, kind) or (args.quick and b == "numpy" and case != "small-batch"):
                            continue
                        secs[b] = run_subprocess(b, kind, case, dtype, repeats, threads, I)
                    print(row(kind, case, dtype, I, secs, backends, flops(kind, B, T, I, H), peak.get(dtype)),
                          flush=True)
    print("\nseconds; 'fused vs X' = X's time / fused time, 'kernel vs numpy' = numpy's time / the "
          "separate kernel calls' time (higher: compiled faster)")
    if len(input_sizes) > 1:
        print(input_size_table(results, input_sizes, backends))
    measurements = [(k, c, d, i, b) for (k, c, d, i), secs in results.items() for b in KERNEL_BACKENDS
                    if b in secs]
    if args.against:
        rows = compare({}, {"against": args.against}, measurements, args.rounds, repeats, threads)
        print(compare_table(f"\nthis tree ({ROOT}) against {args.against}: {args.rounds} rounds alternating the "
                            "two builds; median seconds; ratio = theirs / ours (> 1: this tree faster)",
                            ("this", "against"), rows))
    if args.tiles:
        rows = compare({"tiles": "wide"}, {"tiles": "narrow"}, measurements, args.rounds, repeats, threads)
        print(compare_table(f"\nwide tiles against narrow ones (NNCORE_TILES): {args.rounds} rounds alternating "
                            "the two; median seconds; ratio = narrow / wide (> 1: the wide tiles faster)",
                            ("wide", "narrow"), rows))


def row(kind, case, dtype, I, secs, backends, flop, peak=None):
    """One line of the main table (``peak``: the dtype's FMA peak in GFLOP/s, for the fraction)."""
    cells = " ".join(f"{secs[b]:10.4f}" if b in secs else f"{'-':>10}" for b in backends)
    f = secs.get("fused")
    ratios = " ".join(f"{secs[other] / f:6.1f}x" if f and other in secs else "      -"
                      for other in ("numpy", "torch", "torch-ftz"))
    gf = f"{flop / f / 1e9:8.1f}" if f else "       -"
    kvn = f"{secs['numpy'] / secs['kernel']:6.1f}x" if "numpy" in secs and "kernel" in secs else "      -"
    frac = f"{100 * flop / f / 1e9 / peak:8.0f} %" if f and peak else "         -"
    return f"{kind:5} {case:13} {I:3d} {dtype:8} {cells}   {ratios} |         {kvn} |      {gf} | {frac}"


def input_size_table(results, input_sizes, backends):
    """Time per step at each input size against the first, per backend, beside the FLOP ratio."""
    base = input_sizes[0]
    lines = [f"\ntime per step vs input size (ratio = time at I / time at I={base}; FLOP ratio from the formula)",
             f"{'kind':5} {'case':13} {'dtype':8} {'backend':9} "
             + " ".join(f"{'I=' + str(i):>9}" for i in input_sizes)
             + "  " + " ".join(f"{'ratio ' + str(i):>9}" for i in input_sizes[1:])
             + "  " + " ".join(f"{'FLOP ' + str(i):>8}" for i in input_sizes[1:])]
    lines.append("-" * len(lines[-1]))
    keys = sorted({(k, c, d) for k, c, d, _ in results}, key=lambda t: (list(GATES).index(t[0]), t[1], t[2]))
    for kind, case, dtype in keys:
        B, T, _, H = CASES[case]
        for b in backends:
            secs = [results[kind, case, dtype, i].get(b) for i in input_sizes]
            if secs[0] is None or any(v is None for v in secs):
                continue
            lines.append(f"{kind:5} {case:13} {dtype:8} {b:9} " + " ".join(f"{v:9.4f}" for v in secs)
                         + "  " + " ".join(f"{v / secs[0]:8.2f}x" for v in secs[1:])
                         + "  " + " ".join(f"{flops(kind, B, T, i, H) / flops(kind, B, T, base, H):7.2f}x"
                                           for i in input_sizes[1:]))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
