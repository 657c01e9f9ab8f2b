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
chooses a narrower width, one source for all). OpenMP threads take whole tiles
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
try:
    from ._recurrent import (
        build_info,
        fma_peak,
        gru_backward,
        gru_forward,
        gru_predict,
        gru_train_step,
        lstm_backward,
        lstm_forward,
        lstm_predict,
        lstm_train_step,
        rnn_backward,
        rnn_forward,
        rnn_predict,
        rnn_train_step,
        threads,
    )
except ImportError as exc:  # not built: nncore falls back to NumPy
    _IMPORT_ERROR = exc
    KERNELS = {"rnn": False, "gru": False, "lstm": False}
else:
    _IMPORT_ERROR = None
    KERNELS = {"rnn": True, "gru": True, "lstm": True}


def available() -> bool:
    """True when the compiled extension is importable."""
    return _IMPORT_ERROR is None


def import_error():
    """The ImportError raised when the extension was loaded, or None."""
    return _IMPORT_ERROR
