"""Compiled recurrent kernels (Cython + OpenMP), drop-in for :mod:`nncore.recurrent`.

Functions take the same arguments and return the same arrays as the NumPy references
(``rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh) -> (out, h_T, cache)``,
``rnn_backward(dout, dh_T, cache, W_ih, W_hh) -> (dx, dh0, grads)``); the cache is the
kernel's own and only its own backward consumes it. Likewise ``gru_forward/gru_backward`` and
``lstm_forward(x, state, ...)/lstm_backward(dout, dstate, ...)``. ``rnn_train_step``,
``gru_train_step`` and ``lstm_train_step`` fuse the recurrent layer, a dense head on the last
hidden state and the MSE loss into one pass (no ``out``, no ``dx``). ``rnn_predict``,
``gru_predict`` and ``lstm_predict`` are the inference kernels: the forward without a cache
(two state slots per tile instead of T + 1) with the dense head fused, for validation,
evaluation and prediction.

Layout. The batch is cut into tiles of 16 float32 or 8 float64 rows: one SIMD vector per feature
with AVX-512 (the default on a machine that has it), two with AVX2, and 8 or 4 rows in two SSE2
vectors in the portable build (``build_info()`` says which; ``NNCORE_VECTOR_BYTES`` at build time
chooses a narrower width, one source for all). With AVX-512 a second extension, ``_recurrent_wide``,
is the same source with tiles of two vectors (32 / 16 rows): each weight loaded into a register then
feeds two multiply-adds. Each call runs on the tiles that cost less for its batch (``_module``: a
batch of one row stays on a 16-row tile, 4900 rows go to the wide tiles); ``NNCORE_TILES=narrow`` or
``wide`` forces one (the tests run both). A forward's cache goes back to the backward of the same
extension. Per row, the forward is the same arithmetic in either tile (bitwise); the weight gradients
sum the tiles in another grouping. OpenMP threads take whole tiles
(``OMP_NUM_THREADS`` is honoured). Inside a tile, states are feature-major with the batch
innermost (one feature of a tile is one or two SIMD vectors), time-major over the sequence, so
a time step is a few broadcast-FMA sweeps and the tile's states stay in L2 between the forward
and the backward. Weight gradients are accumulated per tile over chunks of 16 steps and per
thread, reduced once at the end.

Reproducibility. Tiles are assigned to threads statically (OpenMP ``schedule(static)``) and each
thread sums its tiles in order before the per-thread sums are added in thread order, so results
are bitwise identical from run to run for a given thread count (``OMP_NUM_THREADS``); a
different thread count changes the summation order, i.e. the last bits.

Numerics. tanh, sigmoid and exp are SIMD code of their own (GCC vector extensions; tanh through
expm1, sigmoid through exp) inlined into the time loop: <= 3 ulp for tanh,
<= 4 ulp for sigmoid, in float64 as
in float32 (float64 is exact to ~1e-16: no float32 shortcut). The one exception is the float32
tanh RNN, whose tanh is a rational approximation (<= 5 ulp) worth 20% of its time. Each worker
thread sets flush-to-zero / denormals-are-zero for the duration of the kernel and restores its
MXCSR after: backprop through hundreds of tanh steps produces denormal gradients, each costing a
microcode assist. Only values below ~1e-38 (float32) / ~1e-308 (float64) are affected. With
AVX-512 the activations' divisions are a reciprocal estimate refined by Newton steps (within an
ulp; the same accuracy bounds are tested).

``fma_peak(dtype, iters, nthreads)`` runs the machine's FMA peak loop (the roofline of
``benchmarks/bench_rnn.py``).

Build switches (environment, at build time): ``NNCORE_KERNEL_DEBUG=1`` turns on boundscheck,
wraparound and initializedcheck (CI builds once that way). ``-march=native`` is the DEFAULT
because it was measured to be needed for the targets: the portable ``-O3`` build (SSE2, no FMA)
is 2.8x slower on the reference workload (measured: fused RNN step 208 vs 75 ms float32,
580 vs 205 ms float64, one thread). ``NNCORE_NATIVE=0``
builds the portable binary, for a wheel that leaves the machine it was built on.
``build_info()`` reports what was built.

``KERNELS`` says which recurrent kinds are compiled; ``available()`` whether the extension is
importable at all; ``threads()`` the OpenMP thread count the kernels use.
"""
import functools as _functools
import math as _math
import os as _os

try:
    from . import _recurrent as _narrow
    from ._recurrent import fma_peak, threads  # noqa: F401 (the package's API)
except ImportError as exc:  # not built: nncore falls back to NumPy
    _IMPORT_ERROR = exc
    KERNELS = {"rnn": False, "gru": False, "lstm": False}
else:
    _IMPORT_ERROR = None
    KERNELS = {"rnn": True, "gru": True, "lstm": True}
    try:
        from . import _recurrent_wide as _wide
    except ImportError:  # built only with 64-byte vectors (setup.py)
        _wide = None

#: NNCORE_TILES: ``auto`` (the default: per call, the tiles that cost less for the batch), ``narrow``
#: or ``wide`` (always those; ``wide`` needs the wide extension): read once, at import.
TILES = _os.environ.get("NNCORE_TILES", "auto")
if TILES not in ("auto", "narrow", "wide"):
    raise ValueError(f"NNCORE_TILES must be auto, narrow or wide, got {TILES!r}")
if TILES == "wide" and _IMPORT_ERROR is None and _wide is None:
    raise ValueError("NNCORE_TILES=wide, but this build has no wide tiles (they are built with 64-byte "
                     "vectors only: see kernels.build_info())")

#: time per batch row of a wide tile against a narrow one, both full (measured on an AMD EPYC, Zen 4,
#: alternating the two in one process): 0.87-0.95 for the large-hidden steps and the tanh RNN's, 0.88-0.97
#: for inference, 0.98-1.02 for the GRU and LSTM steps of the reference workload; on a Zen 5 (full-width
#: AVX-512 units) 0.78-1.01 for the steps and 0.68-0.89 for inference in one process, 0.85-1.05 for the
#: steps in separate processes (benchmarks/bench_rnn.py --tiles; README, Compiled kernels)
WIDE_ROW_COST = 0.95


def _module(B: int, dtype):
    """The extension whose tiles run a batch of B rows in less time: the wide tiles (two vectors per
    feature) unless their padding and the share of the last tiles between threads cost more than the
    wide tiles save (a batch of one row: a 16-row tile rather than a 32-row one)."""
    if _wide is None or TILES == "narrow":
        return _narrow
    if TILES == "wide":
        return _wide
    return _wide if _wide_costs_less(B, str(dtype) == "float32", threads()) else _narrow


@_functools.lru_cache(maxsize=1024)
def _wide_costs_less(B: int, f32: bool, n: int) -> bool:
    rows = _narrow.build_info()["tile_rows"]["float32" if f32 else "float64"]
    n = max(1, n)

    def cost(tile: int) -> int:  # rows the busiest thread runs
        return _math.ceil(_math.ceil(B / tile) / n) * tile

    return cost(2 * rows) * WIDE_ROW_COST < cost(rows)


def _pick(x):
    """The extension for the batch ``x`` (the first argument of every kernel): its rows and dtype."""
    try:
        B, dtype = x.shape[0], x.dtype   # an array: the usual case, without a conversion
    except (AttributeError, IndexError):
        import numpy as np

        a = np.asarray(x)
        B, dtype = (a.shape[0] if a.ndim else 0), a.dtype
    return _module(B, dtype)


def _named(name: str, call):
    """``call`` under the extension function's name and docstring."""
    call.__name__ = call.__qualname__ = name
    call.__doc__ = getattr(_narrow, name).__doc__
    return call


def _per_batch(name: str):
    return _named(name, lambda x, *args, **kwargs: getattr(_pick(x), name)(x, *args, **kwargs))


def _forward(name: str):
    """A forward whose cache remembers the extension that made it: only that one's backward reads it."""
    def call(x, *args, **kwargs):
        mod = _pick(x)
        *res, cache = getattr(mod, name)(x, *args, **kwargs)
        cache["extension"] = "wide" if mod is _wide else "narrow"  # a str: caches may be copied or pickled
        return (*res, cache)

    return _named(name, call)


def _backward(name: str):
    def call(dout, dstate, cache, *args, **kwargs):
        wide = isinstance(cache, dict) and cache.get("extension") == "wide"
        if wide and _wide is None:
            raise ValueError(f"{name}: the cache comes from the wide tiles, which this build does not have")
        mod = _wide if wide else _narrow
        return getattr(mod, name)(dout, dstate, cache, *args, **kwargs)

    return _named(name, call)


if _IMPORT_ERROR is None:
    if _wide is None:  # one extension: its functions, without a wrapper's call
        from ._recurrent import (gru_backward, gru_forward, gru_predict, gru_train_step, lstm_backward,  # noqa: F401
                                 lstm_forward, lstm_predict, lstm_train_step, rnn_backward, rnn_forward,
                                 rnn_predict, rnn_train_step)
    else:
        rnn_forward, gru_forward, lstm_forward = (_forward(f"{k}_forward") for k in ("rnn", "gru", "lstm"))
        rnn_backward, gru_backward, lstm_backward = (_backward(f"{k}_backward") for k in ("rnn", "gru", "lstm"))
        rnn_train_step, gru_train_step, lstm_train_step = (_per_batch(f"{k}_train_step")
                                                           for k in ("rnn", "gru", "lstm"))
        rnn_predict, gru_predict, lstm_predict = (_per_batch(f"{k}_predict") for k in ("rnn", "gru", "lstm"))

    def build_info() -> dict:
        """How the extension was built (see ``_recurrent.build_info``); ``wide_tile_rows``: the rows per
        wide tile and dtype (None when this build has none), ``tiles``: the NNCORE_TILES choice."""
        info = _narrow.build_info()
        info["wide_tile_rows"] = None if _wide is None else _wide.build_info()["tile_rows"]
        info["tiles"] = TILES
        return info


def available() -> bool:
    """True when the compiled extension is importable."""
    return _IMPORT_ERROR is None


def import_error():
    """The ImportError raised when the extension was loaded, or None."""
    return _IMPORT_ERROR
