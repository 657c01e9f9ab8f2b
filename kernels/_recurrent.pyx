"""Compiled recurrent kernels: tanh RNN, GRU and LSTM (forward, backward, fused training step).

Same arguments and results as :mod:`nncore.recurrent`. The batch is cut into tiles of
``TILE`` rows (16 float32 or 8 float64: one AVX-512 or two AVX2 vectors; 8 or 4 with SSE2);
OpenMP threads take whole tiles, and each tile runs its time loop in C (``_tile.h``)
with the tile's states laid out feature-major, batch innermost. Every check happens here, with the GIL, before the single ``nogil`` block.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
cimport openmp

from ._tile cimport *


# --------------------------------------------------------------------------------------------
# Checks (all before nogil)
# --------------------------------------------------------------------------------------------
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _param_dtype(W_hh):
    """The dtype of the run, taken from ``W_hh`` (float32 or float64)."""
    if not isinstance(W_hh, np.ndarray) or W_hh.dtype not in _FLOATS:
        dt = getattr(W_hh, "dtype", type(W_hh).__name__)
        raise ValueError(f"W_hh must be a float32 or float64 array, got {dt}")
    return W_hh.dtype


def _check(a, str name, dtype, tuple shape):
    """``a`` as an array of exactly ``dtype`` and ``shape`` (None entries are free)."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise ValueError(f"{name} has dtype {a.dtype}, expected {dtype} (the dtype of W_hh)")
    if a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape)):
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} has shape {a.shape}, expected {want}")
    if any(n < 1 for n in a.shape):
        raise ValueError(f"{name} has an empty dimension: shape {a.shape}")
    return a


def _check_weights(W_ih, W_hh, int G):
    """dtype, H and I from ``W_ih`` (G·H, I) and ``W_hh`` (G·H, H)."""
    dtype = _param_dtype(W_hh)
    if W_hh.ndim != 2 or W_hh.shape[0] != G * W_hh.shape[1] or W_hh.shape[1] < 1:
        raise ValueError(f"W_hh has shape {W_hh.shape}, expected ({G}·H, H)")
    H = W_hh.shape[1]
    _check(W_ih, "W_ih", dtype, (G * H, None))
    return dtype, H, W_ih.shape[1]


def _check_x(x, dtype, I):
    return _check(x, "x", dtype, (None, None, I))


cdef int _num_threads(Py_ssize_t ntiles):
    cdef int n = openmp.omp_get_max_threads()
    if n > ntiles:
        n = <int>ntiles
    return n if n > 0 else 1


cdef Py_ssize_t _tile_rows(dtype):
    return tile_rows_f32() if dtype == np.float32 else tile_rows_f64()


def threads():
    """Number of OpenMP threads the kernels use (``OMP_NUM_THREADS`` or the core count)."""
    return openmp.omp_get_max_threads()


def build_info():
    """How the extension was built: ``native`` (-march=native), ``debug`` (bounds checks on),
    ``tanh``: the activation code (the kernels' own SIMD exp and expm1), ``vector_bytes``: the
    SIMD width of the tiles, ``tile_rows``: batch rows per tile and dtype."""
    return {"native": bool(nn_native_build()), "debug": bool(nn_debug_build()),
            "tanh": nn_tanh_backend().decode(), "vector_bytes": nn_vector_bytes(),
            "tile_rows": {"float32": tile_rows_f32(), "float64": tile_rows_f64()}}


_ACTIVATIONS = {"tanh": 0, "sigmoid": 1, "tanh_rnn": 2}


def _activation(floating[::1] a, str name="tanh"):
    """In place: the kernels' SIMD ``tanh``, ``sigmoid`` or ``tanh_rnn`` (the tanh RNN's, a
    faster approximation in float32) of a contiguous array (exposed for the accuracy tests)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(_ACTIVATIONS)}")
    cdef int which = _ACTIVATIONS[name]
    if a.shape[0] == 0:
        return
    if floating is float:
        act_array_f32(&a[0], a.shape[0], which)
    else:
        act_array_f64(&a[0], a.shape[0], which)


cdef class _Workspace:
    """Per-thread scratch, 64-byte aligned, allocated (with the GIL) before the kernel."""
    cdef object buf
    cdef char *base
    cdef Py_ssize_t stride

    def __cinit__(self, int nthreads, Py_ssize_t elems, Py_ssize_t itemsize):
        self.stride = (elems * itemsize + 127) // 64 * 64
        self.buf = np.empty(nthreads * self.stride + 64, dtype=np.uint8)
        cdef unsigned char[::1] view = self.buf
        self.base = nn_align64(<char *>&view[0])


# --------------------------------------------------------------------------------------------
# Fused dispatch to the float / double tile functions
# --------------------------------------------------------------------------------------------
cdef inline void _rnn_fwd_tile(int T, int I, int H, int nb,
                               const floating *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                               const floating *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                               const floating *W_cat, const floating *bias, floating *ws,
                               floating *out, Py_ssize_t osb, Py_ssize_t ost,
                               floating *hT, Py_ssize_t hTsb) noexcept nogil:
    if floating is float:
        rnn_fwd_tile_f32(T, I, H, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, W_cat, bias, ws, 0,
                         out, osb, ost, hT, hTsb)
    else:
        rnn_fwd_tile_f64(T, I, H, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, W_cat, bias, ws, 0,
                         out, osb, ost, hT, hTsb)


cdef inline void _rnn_bwd_tile(int T, int I, int H, int nb,
                               const floating *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                               const floating *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                               const floating *out, Py_ssize_t osb, Py_ssize_t ost, Py_ssize_t osj,
                               const floating *dout, Py_ssize_t dsb, Py_ssize_t dst, Py_ssize_t dsj,
                               const floating *dhT, Py_ssize_t dhsb, Py_ssize_t dhsj,
                               const floating *W_cat_T, floating *ws,
                               floating *dx, Py_ssize_t dxsb, Py_ssize_t dxst, Py_ssize_t dxsi,
                               floating *dh0, Py_ssize_t dh0sb,
                               floating *dW_cat, floating *db) noexcept nogil:
    if floating is float:
        rnn_backward_tile_f32(T, I, H, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, out, osb, ost, osj,
                              dout, dsb, dst, dsj, dhT, dhsb, dhsj, W_cat_T, ws,
                              dx, dxsb, dxst, dxsi, dh0, dh0sb, dW_cat, db)
    else:
        rnn_backward_tile_f64(T, I, H, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, out, osb, ost, osj,
                              dout, dsb, dst, dsj, dhT, dhsb, dhsj, W_cat_T, ws,
                              dx, dxsb, dxst, dxsi, dh0, dh0sb, dW_cat, db)


cdef inline double _rnn_train_tile(int T, int I, int H, int O, int nb,
                                   const floating *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                                   const floating *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                                   const floating *y, Py_ssize_t ysb, Py_ssize_t yso,
                                   const floating *W_cat, const floating *bias,
                                   const floating *W_cat_T, const floating *W_out,
                                   const floating *W_out_T, const floating *b_out,
                                   floating scale, floating *ws,
                                   floating *hT, Py_ssize_t hTsb, floating *dh0, Py_ssize_t dh0sb,
                                   floating *dW_cat, floating *db,
                                   floating *dW_out, floating *db_out) noexcept nogil:
    if floating is float:
        return rnn_train_tile_f32(T, I, H, O, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, y, ysb, yso,
                                  W_cat, bias, W_cat_T, W_out, W_out_T, b_out, scale,
                                  ws, hT, hTsb, dh0, dh0sb, dW_cat, db, dW_out, db_out)
    else:
        return rnn_train_tile_f64(T, I, H, O, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, y, ysb, yso,
                                  W_cat, bias, W_cat_T, W_out, W_out_T, b_out, scale,
                                  ws, hT, hTsb, dh0, dh0sb, dW_cat, db, dW_out, db_out)


cdef inline Py_ssize_t _rnn_ws(floating *dummy, int T, int I, int H, int O, int mode) noexcept nogil:
    if floating is float:
        return rnn_ws_f32(T, I, H, O, mode)
    else:
        return rnn_ws_f64(T, I, H, O, mode)


cdef void _reduce_threads(floating[:, ::1] acc) noexcept nogil:
    """acc[0] += acc[1:] summed: the per-thread gradient accumulators, reduced once."""
    cdef Py_ssize_t k, e
    for k in range(1, acc.shape[0]):
        for e in range(acc.shape[1]):
            acc[0, e] += acc[k, e]


# --------------------------------------------------------------------------------------------
# tanh RNN
# --------------------------------------------------------------------------------------------
def _rnn_forward_impl(const floating[:, :, :] x, const floating[:, :] h0, bint has_h0,
                      const floating[:, ::1] W_cat, const floating[::1] bias,
                      floating[:, :, ::1] out, floating[:, ::1] h_T):
    cdef int B = x.shape[0], T = x.shape[1], I = x.shape[2], H = W_cat.shape[0]
    cdef Py_ssize_t isz = sizeof(floating)
    cdef Py_ssize_t tile = tile_rows_f32() if floating is float else tile_rows_f64()
    cdef Py_ssize_t ntiles = (B + tile - 1) // tile
    cdef int nthreads = _num_threads(ntiles)
    cdef _Workspace wsp = _Workspace(nthreads, _rnn_ws(<floating *>NULL, T, I, H, 0, 0), isz)
    cdef const floating *h0p = &h0[0, 0] if has_h0 else NULL
    cdef Py_ssize_t h0sb = h0.strides[0] // isz if has_h0 else 0
    cdef Py_ssize_t h0sj = h0.strides[1] // isz if has_h0 else 0
    cdef Py_ssize_t xsb = x.strides[0] // isz, xst = x.strides[1] // isz, xsi = x.strides[2] // isz
    cdef Py_ssize_t it, b0
    cdef int nb
    cdef unsigned int csr
    cdef floating *ws
    with nogil, parallel(num_threads=nthreads):
        ws = <floating *>(wsp.base + threadid() * wsp.stride)
        csr = nn_ftz_on()
        for it in prange(ntiles, schedule="static"):
            b0 = it * tile
            nb = <int>(tile if B - b0 > tile else B - b0)
            _rnn_fwd_tile(T, I, H, nb, &x[b0, 0, 0], xsb, xst, xsi,
                          h0p + b0 * h0sb if has_h0 else NULL, h0sb, h0sj,
                          &W_cat[0, 0], &bias[0], ws, &out[b0, 0, 0], T * H, H, &h_T[b0, 0], H)
        nn_csr_restore(csr)


def rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    """Forward pass of the tanh RNN over a whole sequence (compiled :func:`nncore.recurrent.rnn_forward`).

    h_t = tanh(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)

    Parameters
    ----------
    x : (B, T, I) array, any strides;  h0 : (B, H) array or None (zeros)
    W_ih : (H, I), W_hh : (H, H), b_ih, b_hh : (H,); all of one dtype, float32 or float64

    Returns
    -------
    out : (B, T, H) C-contiguous hidden states h_1..h_T
    h_T : (B, H) last hidden state
    cache : dict ``x``, ``h0`` (or None) and ``out``, as given to :func:`rnn_backward`
        (references, not copies: do not modify ``x`` or ``out`` before the backward)
    """
    dtype, H, I = _check_weights(W_ih, W_hh, 1)
    x = _check_x(x, dtype, I)
    B, T = x.shape[0], x.shape[1]
    _check(b_ih, "b_ih", dtype, (H,))
    _check(b_hh, "b_hh", dtype, (H,))
    if h0 is not None:
        _check(h0, "h0", dtype, (B, H))
    bias = b_ih + b_hh
    out = np.empty((B, T, H), dtype=dtype)
    h_T = np.empty((B, H), dtype=dtype)
    # W_cat = [W_hh | W_ih] (H, H + I): one product per step makes the whole pre-activation
    args = (x, h0 if h0 is not None else h_T, h0 is not None, np.ascontiguousarray(np.hstack([W_hh, W_ih])), bias, out, h_T)
    _rnn_forward_impl(*args)
    return out, h_T, {"kind": "rnn", "x": x, "h0": h0, "out": out}


def _rnn_backward_impl(const floating[:, :, :] x, const floating[:, :] h0, bint has_h0,
                             const floating[:, :, ::1] out, const floating[:, :, :] dout,
                             bint has_dout, const floating[:, :] dh_T, bint has_dh_T,
                             const floating[:, ::1] W_cat_T, floating[:, :, ::1] dx,
                             floating[:, ::1] dh0, floating[:, ::1] gacc):
    cdef int B = x.shape[0], T = x.shape[1], I = x.shape[2], H = W_cat_T.shape[1]
    cdef Py_ssize_t isz = sizeof(floating)
    cdef Py_ssize_t tile = tile_rows_f32() if floating is float else tile_rows_f64()
    cdef Py_ssize_t ntiles = (B + tile - 1) // tile
    cdef int nthreads = gacc.shape[0]
    cdef _Workspace wsp = _Workspace(nthreads, _rnn_ws(<floating *>NULL, T, I, H, 0, 1), isz)
    cdef const floating *h0p = &h0[0, 0] if has_h0 else NULL
    cdef Py_ssize_t h0sb = h0.strides[0] // isz if has_h0 else 0
    cdef Py_ssize_t h0sj = h0.strides[1] // isz if has_h0 else 0
    cdef const floating *doutp = &dout[0, 0, 0] if has_dout else NULL
    cdef Py_ssize_t dsb = dout.strides[0] // isz if has_dout else 0
    cdef Py_ssize_t dst = dout.strides[1] // isz if has_dout else 0
    cdef Py_ssize_t dsj = dout.strides[2] // isz if has_dout else 0
    cdef const floating *dhTp = &dh_T[0, 0] if has_dh_T else NULL
    cdef Py_ssize_t dhsb = dh_T.strides[0] // isz if has_dh_T else 0
    cdef Py_ssize_t dhsj = dh_T.strides[1] // isz if has_dh_T else 0
    cdef Py_ssize_t xsb = x.strides[0] // isz, xst = x.strides[1] // isz, xsi = x.strides[2] // isz
    cdef Py_ssize_t it, b0
    cdef int nb, tid
    cdef unsigned int csr
    cdef floating *ws
    cdef floating *g
    with nogil:
        with parallel(num_threads=nthreads):
            tid = threadid()
            ws = <floating *>(wsp.base + tid * wsp.stride)
            g = &gacc[tid, 0]
            csr = nn_ftz_on()
            for it in prange(ntiles, schedule="static"):
                b0 = it * tile
                nb = <int>(tile if B - b0 > tile else B - b0)
                _rnn_bwd_tile(T, I, H, nb, &x[b0, 0, 0], xsb, xst, xsi,
                              h0p + b0 * h0sb if has_h0 else NULL, h0sb, h0sj,
                              &out[b0, 0, 0], T * H, H, 1,
                              doutp + b0 * dsb if has_dout else NULL, dsb, dst, dsj,
                              dhTp + b0 * dhsb if has_dh_T else NULL, dhsb, dhsj,
                              &W_cat_T[0, 0], ws, &dx[b0, 0, 0], T * I, I, 1, &dh0[b0, 0], H,
                              g, g + H * (H + I))
            nn_csr_restore(csr)
        _reduce_threads(gacc)


def _rnn_grads(g, H, I):
    """Split the flat accumulator [dW_cat (H, H + I) | db (H,)] into the gradient dict."""
    dW_cat = g[:H * (H + I)].reshape(H, H + I)
    db = g[H * (H + I):H * (H + I) + H].copy()
    return {"W_ih": dW_cat[:, H:].copy(), "W_hh": dW_cat[:, :H].copy(), "b_ih": db, "b_hh": db.copy()}


def _check_cache(cache, str kind):
    if not isinstance(cache, dict) or cache.get("kind") != kind:
        raise ValueError(f"cache must come from kernels.{kind}_forward (got {type(cache).__name__}"
                         f" with kind {cache.get('kind') if isinstance(cache, dict) else None!r})")
    return cache


def rnn_backward(dout, dh_T, cache, W_ih, W_hh):
    """Backpropagation through time for :func:`rnn_forward` (compiled :func:`nncore.recurrent.rnn_backward`).

    Parameters
    ----------
    dout : (B, T, H) gradient w.r.t. ``out``, or None
    dh_T : (B, H) gradient w.r.t. the last state, or None
    cache : from :func:`rnn_forward`;  W_ih : (H, I), W_hh : (H, H)

    Returns
    -------
    dx : (B, T, I);  dh0 : (B, H);  grads : dict ``W_ih``, ``W_hh``, ``b_ih``, ``b_hh``
    """
    dtype, H, I = _check_weights(W_ih, W_hh, 1)
    cache = _check_cache(cache, "rnn")
    x, h0, out = cache["x"], cache["h0"], cache["out"]
    x = _check_x(x, dtype, I)
    B, T = x.shape[0], x.shape[1]
    _check(out, "cache['out']", dtype, (B, T, H))
    if dout is not None:
        _check(dout, "dout", dtype, (B, T, H))
    if dh_T is not None:
        _check(dh_T, "dh_T", dtype, (B, H))
    tile = _tile_rows(dtype)
    nthreads = _num_threads((B + tile - 1) // tile)
    gacc = np.zeros((nthreads, H * (H + I) + H), dtype=dtype)
    dx = np.empty((B, T, I), dtype=dtype)
    dh0 = np.empty((B, H), dtype=dtype)
    args = (x, h0 if h0 is not None else dh0, h0 is not None, np.ascontiguousarray(out),
            dout if dout is not None else x, dout is not None,
            dh_T if dh_T is not None else dh0, dh_T is not None,
            np.ascontiguousarray(np.hstack([W_hh, W_ih]).T),
            dx, dh0, gacc)
    _rnn_backward_impl(*args)
    return dx, dh0, _rnn_grads(gacc[0], H, I)


def _rnn_train_impl(const floating[:, :, :] x, const floating[:, :] h0, bint has_h0,
                            const floating[:, :] y,
                            const floating[:, ::1] W_cat, const floating[::1] bias,
                            const floating[:, ::1] W_cat_T, const floating[:, ::1] W_out,
                            const floating[:, ::1] W_out_T, const floating[::1] b_out,
                            floating[:, ::1] h_T, floating[:, ::1] dh0,
                            floating[:, ::1] gacc, double[::1] lossacc):
    cdef int B = x.shape[0], T = x.shape[1], I = x.shape[2], H = W_cat.shape[0], O = W_out.shape[0]
    cdef Py_ssize_t isz = sizeof(floating)
    cdef Py_ssize_t tile = tile_rows_f32() if floating is float else tile_rows_f64()
    cdef Py_ssize_t ntiles = (B + tile - 1) // tile
    cdef int nthreads = gacc.shape[0]
    cdef _Workspace wsp = _Workspace(nthreads, _rnn_ws(<floating *>NULL, T, I, H, O, 1), isz)
    cdef const floating *h0p = &h0[0, 0] if has_h0 else NULL
    cdef Py_ssize_t h0sb = h0.strides[0] // isz if has_h0 else 0
    cdef Py_ssize_t h0sj = h0.strides[1] // isz if has_h0 else 0
    cdef Py_ssize_t ysb = y.strides[0] // isz, yso = y.strides[1] // isz
    cdef Py_ssize_t xsb = x.strides[0] // isz, xst = x.strides[1] // isz, xsi = x.strides[2] // isz
    cdef floating scale = 2.0 / (<double>B * O)
    cdef Py_ssize_t ng = H * (H + I) + H
    cdef Py_ssize_t it, b0, k
    cdef int nb, tid
    cdef unsigned int csr
    cdef floating *ws
    cdef floating *g
    cdef double loss = 0.0
    with nogil:
        with parallel(num_threads=nthreads):
            tid = threadid()
            ws = <floating *>(wsp.base + tid * wsp.stride)
            g = &gacc[tid, 0]
            csr = nn_ftz_on()
            for it in prange(ntiles, schedule="static"):
                b0 = it * tile
                nb = <int>(tile if B - b0 > tile else B - b0)
                lossacc[tid] += _rnn_train_tile(
                    T, I, H, O, nb, &x[b0, 0, 0], xsb, xst, xsi,
                    h0p + b0 * h0sb if has_h0 else NULL, h0sb, h0sj, &y[b0, 0], ysb, yso,
                    &W_cat[0, 0], &bias[0], &W_cat_T[0, 0],
                    &W_out[0, 0], &W_out_T[0, 0], &b_out[0], scale, ws, &h_T[b0, 0], H,
                    &dh0[b0, 0], H, g, g + H * (H + I), g + ng, g + ng + O * H)
            nn_csr_restore(csr)
        _reduce_threads(gacc)
        for k in range(nthreads):
            loss += lossacc[k]
    return loss / (<double>B * O)


def rnn_train_step(x, y, h0, W_ih, W_hh, b_ih, b_hh, W_out, b_out):
    """Fused training step: tanh RNN, dense head on the last state, mean squared error.

    ŷ = h_T W_outᵀ + b_out,  loss = mean((ŷ − y)²) over all B·O entries. Equal to
    :func:`rnn_forward`, the head, the loss and :func:`rnn_backward` with ``dout=None`` and
    ``dh_T = dŷ W_out``, ``dŷ = 2 (ŷ − y) / (B·O)``, but each tile of the batch runs forward,
    head and backward while its states are still in cache, and ``out``/``dx`` are never built.

    Parameters
    ----------
    x : (B, T, I);  y : (B, O);  h0 : (B, H) or None
    W_ih : (H, I), W_hh : (H, H), b_ih, b_hh : (H,), W_out : (O, H), b_out : (O,)

    Returns
    -------
    loss : float;  h_T : (B, H)
    grads : dict ``W_ih``, ``W_hh``, ``b_ih``, ``b_hh``, ``W_out``, ``b_out`` and ``dh0`` (B, H)
    """
    dtype, H, I = _check_weights(W_ih, W_hh, 1)
    x = _check_x(x, dtype, I)
    B, T = x.shape[0], x.shape[1]
    _check(b_ih, "b_ih", dtype, (H,))
    _check(b_hh, "b_hh", dtype, (H,))
    _check(W_out, "W_out", dtype, (None, H))
    O = W_out.shape[0]
    _check(b_out, "b_out", dtype, (O,))
    _check(y, "y", dtype, (B, O))
    if h0 is not None:
        _check(h0, "h0", dtype, (B, H))
    tile = _tile_rows(dtype)
    nthreads = _num_threads((B + tile - 1) // tile)
    ng = H * (H + I) + H
    gacc = np.zeros((nthreads, ng + O * H + O), dtype=dtype)
    lossacc = np.zeros(nthreads, dtype=np.float64)
    h_T = np.empty((B, H), dtype=dtype)
    dh0 = np.empty((B, H), dtype=dtype)
    W_out_c = np.ascontiguousarray(W_out)
    W_cat = np.ascontiguousarray(np.hstack([W_hh, W_ih]))
    args = (x, h0 if h0 is not None else h_T, h0 is not None, y, W_cat, b_ih + b_hh,
            np.ascontiguousarray(W_cat.T), W_out_c, np.ascontiguousarray(W_out.T),
            np.ascontiguousarray(b_out), h_T, dh0, gacc, lossacc)
    loss = _rnn_train_impl(*args)
    g = gacc[0]
    grads = _rnn_grads(g, H, I)
    grads.update(W_out=g[ng:ng + O * H].reshape(O, H).copy(), b_out=g[ng + O * H:].copy(), dh0=dh0)
    return float(loss), h_T, grads


# --------------------------------------------------------------------------------------------
# GRU and LSTM: the forward keeps, per tile, the state slots and the activated gates in one
# buffer (the cache); the backward reads it in place. The fused train step does the same in a
# per-thread buffer, so a tile's whole history stays in cache between forward and backward.
# --------------------------------------------------------------------------------------------
cdef inline Py_ssize_t _tilebuf(floating *dummy, bint lstm, int T, int I, int H) noexcept nogil:
    if floating is float:
        return lstm_tilebuf_f32(T, I, H) if lstm else gru_tilebuf_f32(T, I, H)
    else:
        return lstm_tilebuf_f64(T, I, H) if lstm else gru_tilebuf_f64(T, I, H)


cdef inline Py_ssize_t _work(floating *dummy, bint lstm, int I, int H, int O) noexcept nogil:
    if floating is float:
        return lstm_work_f32(I, H, O) if lstm else gru_work_f32(I, H, O)
    else:
        return lstm_work_f64(I, H, O) if lstm else gru_work_f64(I, H, O)


cdef inline void _gru_fwd(int T, int I, int H, int nb,
                          const floating *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                          const floating *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                          const floating *W_ih, const floating *W_hh, const floating *b_ih,
                          const floating *b_hh, floating *buf,
                          floating *out, Py_ssize_t osb, Py_ssize_t ost,
                          floating *hT, Py_ssize_t hTsb) noexcept nogil:
    if floating is float:
        gru_forward_tile_f32(T, I, H, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, W_ih, W_hh, b_ih, b_hh,
                             buf, out, osb, ost, hT, hTsb)
    else:
        gru_forward_tile_f64(T, I, H, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, W_ih, W_hh, b_ih, b_hh,
                             buf, out, osb, ost, hT, hTsb)


cdef inline void _gru_bwd(int T, int I, int H, int nb,
                          const floating *dout, Py_ssize_t dsb, Py_ssize_t dst, Py_ssize_t dsj,
                          const floating *dhT, Py_ssize_t dhsb, Py_ssize_t dhsj,
                          const floating *W_ih_T, const floating *W_hh_T, const floating *buf,
                          floating *work, floating *dx, Py_ssize_t dxsb, Py_ssize_t dxst,
                          Py_ssize_t dxsi, floating *dh0, Py_ssize_t dh0sb, floating *dW_ih,
                          floating *dW_hh, floating *db_ih, floating *db_hh) noexcept nogil:
    if floating is float:
        gru_backward_tile_f32(T, I, H, nb, dout, dsb, dst, dsj, dhT, dhsb, dhsj, W_ih_T, W_hh_T,
                              buf, work, dx, dxsb, dxst, dxsi, dh0, dh0sb, dW_ih, dW_hh, db_ih, db_hh)
    else:
        gru_backward_tile_f64(T, I, H, nb, dout, dsb, dst, dsj, dhT, dhsb, dhsj, W_ih_T, W_hh_T,
                              buf, work, dx, dxsb, dxst, dxsi, dh0, dh0sb, dW_ih, dW_hh, db_ih, db_hh)


cdef inline double _gru_train(int T, int I, int H, int O, int nb,
                              const floating *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                              const floating *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                              const floating *y, Py_ssize_t ysb, Py_ssize_t yso,
                              const floating *W_ih, const floating *W_hh, const floating *b_ih,
                              const floating *b_hh, const floating *W_ih_T, const floating *W_hh_T,
                              const floating *W_out, const floating *W_out_T,
                              const floating *b_out, floating scale, floating *ws,
                              floating *hT, Py_ssize_t hTsb, floating *dh0, Py_ssize_t dh0sb,
                              floating *dW_ih, floating *dW_hh, floating *db_ih, floating *db_hh,
                              floating *dW_out, floating *db_out) noexcept nogil:
    if floating is float:
        return gru_train_tile_f32(T, I, H, O, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, y, ysb, yso,
                                  W_ih, W_hh, b_ih, b_hh, W_ih_T, W_hh_T, W_out, W_out_T, b_out,
                                  scale, ws, hT, hTsb, dh0, dh0sb, dW_ih, dW_hh, db_ih, db_hh,
                                  dW_out, db_out)
    else:
        return gru_train_tile_f64(T, I, H, O, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, y, ysb, yso,
                                  W_ih, W_hh, b_ih, b_hh, W_ih_T, W_hh_T, W_out, W_out_T, b_out,
                                  scale, ws, hT, hTsb, dh0, dh0sb, dW_ih, dW_hh, db_ih, db_hh,
                                  dW_out, db_out)


cdef inline void _lstm_fwd(int T, int I, int H, int nb,
                           const floating *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                           const floating *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                           const floating *c0, Py_ssize_t c0sb, Py_ssize_t c0sj,
                           const floating *W_cat, const floating *bias, floating *buf,
                           floating *out, Py_ssize_t osb, Py_ssize_t ost,
                           floating *hT, Py_ssize_t hTsb, floating *cT, Py_ssize_t cTsb) noexcept nogil:
    if floating is float:
        lstm_forward_tile_f32(T, I, H, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, c0, c0sb, c0sj,
                              W_cat, bias, buf, out, osb, ost, hT, hTsb, cT, cTsb)
    else:
        lstm_forward_tile_f64(T, I, H, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, c0, c0sb, c0sj,
                              W_cat, bias, buf, out, osb, ost, hT, hTsb, cT, cTsb)


cdef inline void _lstm_bwd(int T, int I, int H, int nb,
                           const floating *dout, Py_ssize_t dsb, Py_ssize_t dst, Py_ssize_t dsj,
                           const floating *dhT, Py_ssize_t dhsb, Py_ssize_t dhsj,
                           const floating *dcT, Py_ssize_t dcsb, Py_ssize_t dcsj,
                           const floating *W_cat_T, const floating *buf, floating *work,
                           floating *dx, Py_ssize_t dxsb, Py_ssize_t dxst, Py_ssize_t dxsi,
                           floating *dh0, Py_ssize_t dh0sb, floating *dc0, Py_ssize_t dc0sb,
                           floating *dW_cat, floating *db) noexcept nogil:
    if floating is float:
        lstm_backward_tile_f32(T, I, H, nb, dout, dsb, dst, dsj, dhT, dhsb, dhsj, dcT, dcsb, dcsj,
                               W_cat_T, buf, work, dx, dxsb, dxst, dxsi, dh0, dh0sb, dc0, dc0sb,
                               dW_cat, db)
    else:
        lstm_backward_tile_f64(T, I, H, nb, dout, dsb, dst, dsj, dhT, dhsb, dhsj, dcT, dcsb, dcsj,
                               W_cat_T, buf, work, dx, dxsb, dxst, dxsi, dh0, dh0sb, dc0, dc0sb,
                               dW_cat, db)


cdef inline double _lstm_train(int T, int I, int H, int O, int nb,
                               const floating *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                               const floating *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                               const floating *c0, Py_ssize_t c0sb, Py_ssize_t c0sj,
                               const floating *y, Py_ssize_t ysb, Py_ssize_t yso,
                               const floating *W_cat, const floating *bias,
                               const floating *W_cat_T, const floating *W_out,
                               const floating *W_out_T, const floating *b_out, floating scale,
                               floating *ws, floating *hT, Py_ssize_t hTsb,
                               floating *cT, Py_ssize_t cTsb, floating *dh0, Py_ssize_t dh0sb,
                               floating *dc0, Py_ssize_t dc0sb, floating *dW_cat, floating *db,
                               floating *dW_out, floating *db_out) noexcept nogil:
    if floating is float:
        return lstm_train_tile_f32(T, I, H, O, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, c0, c0sb, c0sj,
                                   y, ysb, yso, W_cat, bias, W_cat_T, W_out, W_out_T, b_out, scale,
                                   ws, hT, hTsb, cT, cTsb, dh0, dh0sb, dc0, dc0sb, dW_cat, db,
                                   dW_out, db_out)
    else:
        return lstm_train_tile_f64(T, I, H, O, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, c0, c0sb, c0sj,
                                   y, ysb, yso, W_cat, bias, W_cat_T, W_out, W_out_T, b_out, scale,
                                   ws, hT, hTsb, cT, cTsb, dh0, dh0sb, dc0, dc0sb, dW_cat, db,
                                   dW_out, db_out)


cdef inline Py_ssize_t _s(Py_ssize_t stride_bytes, Py_ssize_t isz) noexcept nogil:
    return stride_bytes // isz


def _gated_forward_impl(bint lstm, const floating[:, :, :] x, const floating[:, :] h0, bint has_h0,
                        const floating[:, :] c0, bint has_c0,
                        const floating[:, ::1] W_a, const floating[:, ::1] W_b,
                        const floating[::1] b_a, const floating[::1] b_b,
                        floating[:, :, ::1] out, floating[:, ::1] h_T, floating[:, ::1] c_T,
                        _Workspace cache_buf):
    """GRU: W_a, W_b, b_a, b_b = W_ih, W_hh, b_ih, b_hh. LSTM: W_cat, unused, bias, unused."""
    cdef int B = x.shape[0], T = x.shape[1], I = x.shape[2], H = h_T.shape[1]
    cdef Py_ssize_t isz = sizeof(floating)
    cdef Py_ssize_t tile = tile_rows_f32() if floating is float else tile_rows_f64()
    cdef Py_ssize_t ntiles = (B + tile - 1) // tile
    cdef int nthreads = _num_threads(ntiles)
    cdef const floating *h0p = &h0[0, 0] if has_h0 else NULL
    cdef Py_ssize_t h0sb = _s(h0.strides[0], isz) if has_h0 else 0
    cdef Py_ssize_t h0sj = _s(h0.strides[1], isz) if has_h0 else 0
    cdef const floating *c0p = &c0[0, 0] if has_c0 else NULL
    cdef Py_ssize_t c0sb = _s(c0.strides[0], isz) if has_c0 else 0
    cdef Py_ssize_t c0sj = _s(c0.strides[1], isz) if has_c0 else 0
    cdef Py_ssize_t xsb = _s(x.strides[0], isz), xst = _s(x.strides[1], isz), xsi = _s(x.strides[2], isz)
    cdef Py_ssize_t it, b0
    cdef int nb
    cdef unsigned int csr
    cdef floating *buf
    with nogil, parallel(num_threads=nthreads):
        csr = nn_ftz_on()
        for it in prange(ntiles, schedule="static"):
            b0 = it * tile
            nb = <int>(tile if B - b0 > tile else B - b0)
            buf = <floating *>(cache_buf.base + it * cache_buf.stride)
            if lstm:
                _lstm_fwd(T, I, H, nb, &x[b0, 0, 0], xsb, xst, xsi,
                          h0p + b0 * h0sb if has_h0 else NULL, h0sb, h0sj,
                          c0p + b0 * c0sb if has_c0 else NULL, c0sb, c0sj,
                          &W_a[0, 0], &b_a[0], buf, &out[b0, 0, 0], T * H, H,
                          &h_T[b0, 0], H, &c_T[b0, 0], H)
            else:
                _gru_fwd(T, I, H, nb, &x[b0, 0, 0], xsb, xst, xsi,
                         h0p + b0 * h0sb if has_h0 else NULL, h0sb, h0sj,
                         &W_a[0, 0], &W_b[0, 0], &b_a[0], &b_b[0], buf,
                         &out[b0, 0, 0], T * H, H, &h_T[b0, 0], H)
        nn_csr_restore(csr)


def _gated_backward_impl(bint lstm, int B, int T, int I, _Workspace cache_buf,
                         const floating[:, :, :] dout, bint has_dout,
                         const floating[:, :] dh_T, bint has_dh_T,
                         const floating[:, :] dc_T, bint has_dc_T,
                         const floating[:, ::1] W_a_T, const floating[:, ::1] W_b_T,
                         floating[:, :, ::1] dx, floating[:, ::1] dh0, floating[:, ::1] dc0,
                         floating[:, ::1] gacc):
    """GRU: W_a_T, W_b_T = W_ihᵀ, W_hhᵀ; gacc [dW_ih | dW_hh | db_ih | db_hh].
    LSTM: W_a_T = W_catᵀ; gacc [dW_cat | db]."""
    cdef int H = dh0.shape[1]
    cdef Py_ssize_t isz = sizeof(floating)
    cdef Py_ssize_t tile = tile_rows_f32() if floating is float else tile_rows_f64()
    cdef Py_ssize_t ntiles = (B + tile - 1) // tile
    cdef int nthreads = gacc.shape[0]
    cdef _Workspace wsp = _Workspace(nthreads, _work(<floating *>NULL, lstm, I, H, 1), isz)
    cdef const floating *doutp = &dout[0, 0, 0] if has_dout else NULL
    cdef Py_ssize_t dsb = _s(dout.strides[0], isz) if has_dout else 0
    cdef Py_ssize_t dst = _s(dout.strides[1], isz) if has_dout else 0
    cdef Py_ssize_t dsj = _s(dout.strides[2], isz) if has_dout else 0
    cdef const floating *dhTp = &dh_T[0, 0] if has_dh_T else NULL
    cdef Py_ssize_t dhsb = _s(dh_T.strides[0], isz) if has_dh_T else 0
    cdef Py_ssize_t dhsj = _s(dh_T.strides[1], isz) if has_dh_T else 0
    cdef const floating *dcTp = &dc_T[0, 0] if has_dc_T else NULL
    cdef Py_ssize_t dcsb = _s(dc_T.strides[0], isz) if has_dc_T else 0
    cdef Py_ssize_t dcsj = _s(dc_T.strides[1], isz) if has_dc_T else 0
    cdef Py_ssize_t G3 = 3 * H
    cdef Py_ssize_t it, b0
    cdef int nb, tid
    cdef unsigned int csr
    cdef floating *ws
    cdef floating *g
    cdef const floating *buf
    with nogil:
        with parallel(num_threads=nthreads):
            tid = threadid()
            ws = <floating *>(wsp.base + tid * wsp.stride)
            g = &gacc[tid, 0]
            csr = nn_ftz_on()
            for it in prange(ntiles, schedule="static"):
                b0 = it * tile
                nb = <int>(tile if B - b0 > tile else B - b0)
                buf = <const floating *>(cache_buf.base + it * cache_buf.stride)
                if lstm:
                    _lstm_bwd(T, I, H, nb, doutp + b0 * dsb if has_dout else NULL, dsb, dst, dsj,
                              dhTp + b0 * dhsb if has_dh_T else NULL, dhsb, dhsj,
                              dcTp + b0 * dcsb if has_dc_T else NULL, dcsb, dcsj,
                              &W_a_T[0, 0], buf, ws, &dx[b0, 0, 0], T * I, I, 1,
                              &dh0[b0, 0], H, &dc0[b0, 0], H, g, g + 4 * H * (H + I))
                else:
                    _gru_bwd(T, I, H, nb, doutp + b0 * dsb if has_dout else NULL, dsb, dst, dsj,
                             dhTp + b0 * dhsb if has_dh_T else NULL, dhsb, dhsj,
                             &W_a_T[0, 0], &W_b_T[0, 0], buf, ws, &dx[b0, 0, 0], T * I, I, 1,
                             &dh0[b0, 0], H, g, g + G3 * I, g + G3 * (I + H), g + G3 * (I + H + 1))
            nn_csr_restore(csr)
        _reduce_threads(gacc)


def _gated_train_impl(bint lstm, const floating[:, :, :] x, const floating[:, :] h0, bint has_h0,
                      const floating[:, :] c0, bint has_c0, const floating[:, :] y,
                      const floating[:, ::1] W_a, const floating[:, ::1] W_b,
                      const floating[::1] b_a, const floating[::1] b_b,
                      const floating[:, ::1] W_a_T, const floating[:, ::1] W_b_T,
                      const floating[:, ::1] W_out, const floating[:, ::1] W_out_T,
                      const floating[::1] b_out, floating[:, ::1] h_T, floating[:, ::1] c_T,
                      floating[:, ::1] dh0, floating[:, ::1] dc0,
                      floating[:, ::1] gacc, double[::1] lossacc):
    cdef int B = x.shape[0], T = x.shape[1], I = x.shape[2], H = h_T.shape[1], O = W_out.shape[0]
    cdef Py_ssize_t isz = sizeof(floating)
    cdef Py_ssize_t tile = tile_rows_f32() if floating is float else tile_rows_f64()
    cdef Py_ssize_t ntiles = (B + tile - 1) // tile
    cdef int nthreads = gacc.shape[0]
    cdef _Workspace wsp = _Workspace(
        nthreads, _tilebuf(<floating *>NULL, lstm, T, I, H) + _work(<floating *>NULL, lstm, I, H, O), isz)
    cdef const floating *h0p = &h0[0, 0] if has_h0 else NULL
    cdef Py_ssize_t h0sb = _s(h0.strides[0], isz) if has_h0 else 0
    cdef Py_ssize_t h0sj = _s(h0.strides[1], isz) if has_h0 else 0
    cdef const floating *c0p = &c0[0, 0] if has_c0 else NULL
    cdef Py_ssize_t c0sb = _s(c0.strides[0], isz) if has_c0 else 0
    cdef Py_ssize_t c0sj = _s(c0.strides[1], isz) if has_c0 else 0
    cdef Py_ssize_t ysb = _s(y.strides[0], isz), yso = _s(y.strides[1], isz)
    cdef Py_ssize_t xsb = _s(x.strides[0], isz), xst = _s(x.strides[1], isz), xsi = _s(x.strides[2], isz)
    cdef floating scale = 2.0 / (<double>B * O)
    cdef Py_ssize_t G = 4 if lstm else 3
    cdef Py_ssize_t ng = G * H * (H + I) + (G * H if lstm else 2 * G * H)
    cdef Py_ssize_t it, b0, k
    cdef int nb, tid
    cdef unsigned int csr
    cdef floating *ws
    cdef floating *g
    cdef double loss = 0.0
    with nogil:
        with parallel(num_threads=nthreads):
            tid = threadid()
            ws = <floating *>(wsp.base + tid * wsp.stride)
            g = &gacc[tid, 0]
            csr = nn_ftz_on()
            for it in prange(ntiles, schedule="static"):
                b0 = it * tile
                nb = <int>(tile if B - b0 > tile else B - b0)
                if lstm:
                    lossacc[tid] += _lstm_train(
                        T, I, H, O, nb, &x[b0, 0, 0], xsb, xst, xsi,
                        h0p + b0 * h0sb if has_h0 else NULL, h0sb, h0sj,
                        c0p + b0 * c0sb if has_c0 else NULL, c0sb, c0sj, &y[b0, 0], ysb, yso,
                        &W_a[0, 0], &b_a[0], &W_a_T[0, 0], &W_out[0, 0], &W_out_T[0, 0],
                        &b_out[0], scale, ws, &h_T[b0, 0], H, &c_T[b0, 0], H,
                        &dh0[b0, 0], H, &dc0[b0, 0], H, g, g + G * H * (H + I),
                        g + ng, g + ng + O * H)
                else:
                    lossacc[tid] += _gru_train(
                        T, I, H, O, nb, &x[b0, 0, 0], xsb, xst, xsi,
                        h0p + b0 * h0sb if has_h0 else NULL, h0sb, h0sj, &y[b0, 0], ysb, yso,
                        &W_a[0, 0], &W_b[0, 0], &b_a[0], &b_b[0], &W_a_T[0, 0], &W_b_T[0, 0],
                        &W_out[0, 0], &W_out_T[0, 0], &b_out[0], scale, ws, &h_T[b0, 0], H,
                        &dh0[b0, 0], H, g, g + G * H * I, g + G * H * (I + H),
                        g + G * H * (I + H + 1), g + ng, g + ng + O * H)
            nn_csr_restore(csr)
        _reduce_threads(gacc)
        for k in range(nthreads):
            loss += lossacc[k]
    return loss / (<double>B * O)


def _tile_elems(dtype, bint lstm, int T, int I, int H):
    """Elements of one tile's forward buffer (the GRU/LSTM cache), in ``dtype``."""
    if dtype == np.float32:
        return _tilebuf(<float *>NULL, lstm, T, I, H)
    return _tilebuf(<double *>NULL, lstm, T, I, H)


def _check_state(s, str name, dtype, B, H):
    return None if s is None else _check(s, name, dtype, (B, H))


def _gated_forward(str kind, x, h0, c0, W_ih, W_hh, b_ih, b_hh):
    cdef bint lstm = kind == "lstm"
    G = 4 if lstm else 3
    dtype, H, I = _check_weights(W_ih, W_hh, G)
    x = _check_x(x, dtype, I)
    B, T = x.shape[0], x.shape[1]
    _check(b_ih, "b_ih", dtype, (G * H,))
    _check(b_hh, "b_hh", dtype, (G * H,))
    h0 = _check_state(h0, "h0", dtype, B, H)
    c0 = _check_state(c0, "c0", dtype, B, H)
    tile = _tile_rows(dtype)
    ntiles = (B + tile - 1) // tile
    cache_buf = _Workspace(ntiles, _tile_elems(dtype, lstm, T, I, H), dtype.itemsize)
    out = np.empty((B, T, H), dtype=dtype)
    h_T = np.empty((B, H), dtype=dtype)
    c_T = np.empty((B, H), dtype=dtype) if lstm else h_T
    if lstm:
        # W_cat = [W_hh | W_ih] (4H, H + I): one product per step makes all four gates
        W_a = np.ascontiguousarray(np.hstack([W_hh, W_ih]))
        W_b, b_a = W_a, np.ascontiguousarray(b_ih + b_hh)
        b_b = b_a
    else:
        W_a, W_b = np.ascontiguousarray(W_ih), np.ascontiguousarray(W_hh)
        b_a, b_b = np.ascontiguousarray(b_ih), np.ascontiguousarray(b_hh)
    _gated_forward_impl(lstm, x, h0 if h0 is not None else h_T, h0 is not None,
                        c0 if c0 is not None else h_T, c0 is not None,
                        W_a, W_b, b_a, b_b, out, h_T, c_T, cache_buf)
    cache = {"kind": kind, "B": B, "T": T, "I": I, "H": H, "dtype": dtype, "tiles": cache_buf}
    return out, h_T, c_T, cache


def _gated_backward(str kind, dout, dh_T, dc_T, cache, W_ih, W_hh):
    cdef bint lstm = kind == "lstm"
    G = 4 if lstm else 3
    dtype, H, I = _check_weights(W_ih, W_hh, G)
    cache = _check_cache(cache, kind)
    B, T = cache["B"], cache["T"]
    if cache["dtype"] != dtype or cache["H"] != H or cache["I"] != I:
        raise ValueError(f"W_ih {W_ih.shape} / W_hh {W_hh.shape} ({dtype}) do not match the cache "
                         f"(H={cache['H']}, I={cache['I']}, {cache['dtype']})")
    if dout is not None:
        _check(dout, "dout", dtype, (B, T, H))
    dh_T = _check_state(dh_T, "dh_T", dtype, B, H)
    dc_T = _check_state(dc_T, "dc_T", dtype, B, H)
    tile = _tile_rows(dtype)
    nthreads = _num_threads((B + tile - 1) // tile)
    ng = G * H * (H + I) + (G * H if lstm else 2 * G * H)
    gacc = np.zeros((nthreads, ng), dtype=dtype)
    dx = np.empty((B, T, I), dtype=dtype)
    dh0 = np.empty((B, H), dtype=dtype)
    dc0 = np.empty((B, H), dtype=dtype) if lstm else dh0
    if lstm:
        W_a_T = np.ascontiguousarray(np.hstack([W_hh, W_ih]).T)
        W_b_T = W_a_T
    else:
        W_a_T, W_b_T = np.ascontiguousarray(W_ih.T), np.ascontiguousarray(W_hh.T)
    _gated_backward_impl(lstm, B, T, I, cache["tiles"], dout if dout is not None else dx,
                         dout is not None, dh_T if dh_T is not None else dh0, dh_T is not None,
                         dc_T if dc_T is not None else dh0, dc_T is not None,
                         W_a_T, W_b_T, dx, dh0, dc0, gacc)
    return dx, dh0, dc0, _gated_grads(lstm, gacc[0], H, I)


def _gated_grads(bint lstm, g, H, I):
    if lstm:
        dW_cat = g[:4 * H * (H + I)].reshape(4 * H, H + I)
        db = g[4 * H * (H + I):4 * H * (H + I) + 4 * H].copy()
        return {"W_ih": dW_cat[:, H:].copy(), "W_hh": dW_cat[:, :H].copy(), "b_ih": db, "b_hh": db.copy()}
    a, b = 3 * H * I, 3 * H * (I + H)
    return {"W_ih": g[:a].reshape(3 * H, I).copy(), "W_hh": g[a:b].reshape(3 * H, H).copy(),
            "b_ih": g[b:b + 3 * H].copy(), "b_hh": g[b + 3 * H:b + 6 * H].copy()}


def gru_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    """Forward pass of the GRU (compiled :func:`nncore.recurrent.gru_forward`, gates r, z, n).

    Parameters as :func:`rnn_forward` with ``W_ih`` (3H, I), ``W_hh`` (3H, H), biases (3H,).
    Returns ``out`` (B, T, H), ``h_T`` (B, H) and the kernel's cache: per batch tile the states
    and the gates r, z, n and W_hn h + b_hn, as the backward reads them.
    """
    out, h_T, _, cache = _gated_forward("gru", x, h0, None, W_ih, W_hh, b_ih, b_hh)
    return out, h_T, cache


def gru_backward(dout, dh_T, cache, W_ih, W_hh):
    """Backpropagation through time for :func:`gru_forward`; returns ``dx, dh0, grads``.

    ``dout`` (B, T, H) or None, ``dh_T`` (B, H) or None; grads: ``W_ih``, ``W_hh``, ``b_ih``, ``b_hh``.
    """
    dx, dh0, _, grads = _gated_backward("gru", dout, dh_T, None, cache, W_ih, W_hh)
    return dx, dh0, grads


def _pair(state, str name):
    if state is None:
        return None, None
    if not (isinstance(state, (tuple, list)) and len(state) == 2):
        raise ValueError(f"{name} must be a pair (h, c) or None, got {type(state).__name__}")
    return state[0], state[1]


def lstm_forward(x, state, W_ih, W_hh, b_ih, b_hh):
    """Forward pass of the LSTM (compiled :func:`nncore.recurrent.lstm_forward`, gates i, f, g, o).

    ``state`` is ``(h0, c0)`` (either may be None) or None; ``W_ih`` (4H, I), ``W_hh`` (4H, H),
    biases (4H,). Returns ``out`` (B, T, H), ``(h_T, c_T)`` and the kernel's cache.
    """
    h0, c0 = _pair(state, "state")
    out, h_T, c_T, cache = _gated_forward("lstm", x, h0, c0, W_ih, W_hh, b_ih, b_hh)
    return out, (h_T, c_T), cache


def lstm_backward(dout, dstate, cache, W_ih, W_hh):
    """Backpropagation through time for :func:`lstm_forward`.

    ``dstate`` is ``(dh_T, dc_T)`` (either may be None) or None. Returns ``dx``, ``(dh0, dc0)``
    and the parameter gradients.
    """
    dh_T, dc_T = _pair(dstate, "dstate")
    dx, dh0, dc0, grads = _gated_backward("lstm", dout, dh_T, dc_T, cache, W_ih, W_hh)
    return dx, (dh0, dc0), grads


def _gated_train_step(str kind, x, y, h0, c0, W_ih, W_hh, b_ih, b_hh, W_out, b_out):
    cdef bint lstm = kind == "lstm"
    G = 4 if lstm else 3
    dtype, H, I = _check_weights(W_ih, W_hh, G)
    x = _check_x(x, dtype, I)
    B, T = x.shape[0], x.shape[1]
    _check(b_ih, "b_ih", dtype, (G * H,))
    _check(b_hh, "b_hh", dtype, (G * H,))
    _check(W_out, "W_out", dtype, (None, H))
    O = W_out.shape[0]
    _check(b_out, "b_out", dtype, (O,))
    _check(y, "y", dtype, (B, O))
    h0 = _check_state(h0, "h0", dtype, B, H)
    c0 = _check_state(c0, "c0", dtype, B, H)
    tile = _tile_rows(dtype)
    nthreads = _num_threads((B + tile - 1) // tile)
    ng = G * H * (H + I) + (G * H if lstm else 2 * G * H)
    gacc = np.zeros((nthreads, ng + O * H + O), dtype=dtype)
    lossacc = np.zeros(nthreads, dtype=np.float64)
    h_T = np.empty((B, H), dtype=dtype)
    dh0 = np.empty((B, H), dtype=dtype)
    c_T = np.empty((B, H), dtype=dtype) if lstm else h_T
    dc0 = np.empty((B, H), dtype=dtype) if lstm else dh0
    if lstm:
        W_a = np.ascontiguousarray(np.hstack([W_hh, W_ih]))
        W_b, W_a_T = W_a, np.ascontiguousarray(W_a.T)
        W_b_T, b_a = W_a_T, np.ascontiguousarray(b_ih + b_hh)
        b_b = b_a
    else:
        W_a, W_b = np.ascontiguousarray(W_ih), np.ascontiguousarray(W_hh)
        W_a_T, W_b_T = np.ascontiguousarray(W_ih.T), np.ascontiguousarray(W_hh.T)
        b_a, b_b = np.ascontiguousarray(b_ih), np.ascontiguousarray(b_hh)
    loss = _gated_train_impl(lstm, x, h0 if h0 is not None else h_T, h0 is not None,
                             c0 if c0 is not None else h_T, c0 is not None, y, W_a, W_b, b_a, b_b,
                             W_a_T, W_b_T, np.ascontiguousarray(W_out),
                             np.ascontiguousarray(W_out.T), np.ascontiguousarray(b_out),
                             h_T, c_T, dh0, dc0, gacc, lossacc)
    g = gacc[0]
    grads = _gated_grads(lstm, g, H, I)
    grads.update(W_out=g[ng:ng + O * H].reshape(O, H).copy(), b_out=g[ng + O * H:].copy(), dh0=dh0)
    if lstm:
        grads["dc0"] = dc0
    return float(loss), h_T, c_T, grads


def gru_train_step(x, y, h0, W_ih, W_hh, b_ih, b_hh, W_out, b_out):
    """Fused training step of a GRU with a dense head on the last state and the MSE loss.

    As :func:`rnn_train_step` with GRU weights; returns ``loss, h_T, grads`` (grads with
    ``W_ih``, ``W_hh``, ``b_ih``, ``b_hh``, ``W_out``, ``b_out`` and ``dh0``).
    """
    loss, h_T, _, grads = _gated_train_step("gru", x, y, h0, None, W_ih, W_hh, b_ih, b_hh, W_out, b_out)
    return loss, h_T, grads


def lstm_train_step(x, y, state, W_ih, W_hh, b_ih, b_hh, W_out, b_out):
    """Fused training step of an LSTM with a dense head on the last hidden state and the MSE loss.

    ``state`` is ``(h0, c0)`` or None. Returns ``loss, (h_T, c_T), grads`` (grads with the
    parameter gradients, ``W_out``, ``b_out``, ``dh0`` and ``dc0``).
    """
    h0, c0 = _pair(state, "state")
    loss, h_T, c_T, grads = _gated_train_step("lstm", x, y, h0, c0, W_ih, W_hh, b_ih, b_hh, W_out, b_out)
    return loss, (h_T, c_T), grads


# --------------------------------------------------------------------------------------------
# Inference: forward with no cache (rings of two state slots per tile) and the dense head fused
# --------------------------------------------------------------------------------------------
_KINDS = {"rnn": 0, "gru": 1, "lstm": 2}


def _infer_impl(int kind, const floating[:, :, :] x, const floating[:, :] h0, bint has_h0,
                const floating[:, :] c0, bint has_c0,
                const floating[:, ::1] W_a, const floating[:, ::1] W_b,
                const floating[::1] b_a, const floating[::1] b_b,
                const floating[:, ::1] W_out, const floating[::1] b_out, bint has_head,
                floating[:, ::1] yhat, floating[:, ::1] h_T, floating[:, ::1] c_T):
    cdef int B = x.shape[0], T = x.shape[1], I = x.shape[2], H = h_T.shape[1], O = W_out.shape[0]
    cdef Py_ssize_t isz = sizeof(floating)
    cdef Py_ssize_t tile = tile_rows_f32() if floating is float else tile_rows_f64()
    cdef Py_ssize_t ntiles = (B + tile - 1) // tile
    cdef int nthreads = _num_threads(ntiles)
    cdef Py_ssize_t elems = infer_ws_f32(kind, I, H, O) if floating is float else infer_ws_f64(kind, I, H, O)
    cdef _Workspace wsp = _Workspace(nthreads, elems, isz)
    cdef const floating *h0p = &h0[0, 0] if has_h0 else NULL
    cdef Py_ssize_t h0sb = _s(h0.strides[0], isz) if has_h0 else 0
    cdef Py_ssize_t h0sj = _s(h0.strides[1], isz) if has_h0 else 0
    cdef const floating *c0p = &c0[0, 0] if has_c0 else NULL
    cdef Py_ssize_t c0sb = _s(c0.strides[0], isz) if has_c0 else 0
    cdef Py_ssize_t c0sj = _s(c0.strides[1], isz) if has_c0 else 0
    cdef Py_ssize_t xsb = _s(x.strides[0], isz), xst = _s(x.strides[1], isz), xsi = _s(x.strides[2], isz)
    cdef const floating *Wo = &W_out[0, 0] if has_head else NULL
    cdef Py_ssize_t it, b0
    cdef int nb
    cdef unsigned int csr
    cdef floating *ws
    with nogil, parallel(num_threads=nthreads):
        ws = <floating *>(wsp.base + threadid() * wsp.stride)
        csr = nn_ftz_on()
        for it in prange(ntiles, schedule="static"):
            b0 = it * tile
            nb = <int>(tile if B - b0 > tile else B - b0)
            if floating is float:
                infer_tile_f32(kind, T, I, H, O, nb, &x[b0, 0, 0], xsb, xst, xsi,
                               h0p + b0 * h0sb if has_h0 else NULL, h0sb, h0sj,
                               c0p + b0 * c0sb if has_c0 else NULL, c0sb, c0sj,
                               &W_a[0, 0], &W_b[0, 0], &b_a[0], &b_b[0], Wo, &b_out[0], ws,
                               &yhat[b0, 0], O, &h_T[b0, 0], H, &c_T[b0, 0] if kind == 2 else NULL, H)
            else:
                infer_tile_f64(kind, T, I, H, O, nb, &x[b0, 0, 0], xsb, xst, xsi,
                               h0p + b0 * h0sb if has_h0 else NULL, h0sb, h0sj,
                               c0p + b0 * c0sb if has_c0 else NULL, c0sb, c0sj,
                               &W_a[0, 0], &W_b[0, 0], &b_a[0], &b_b[0], Wo, &b_out[0], ws,
                               &yhat[b0, 0], O, &h_T[b0, 0], H, &c_T[b0, 0] if kind == 2 else NULL, H)
        nn_csr_restore(csr)


def _predict(str kind, x, h0, c0, W_ih, W_hh, b_ih, b_hh, W_out, b_out):
    G = {"rnn": 1, "gru": 3, "lstm": 4}[kind]
    dtype, H, I = _check_weights(W_ih, W_hh, G)
    x = _check_x(x, dtype, I)
    B = x.shape[0]
    _check(b_ih, "b_ih", dtype, (G * H,))
    _check(b_hh, "b_hh", dtype, (G * H,))
    h0 = _check_state(h0, "h0", dtype, B, H)
    c0 = _check_state(c0, "c0", dtype, B, H)
    has_head = W_out is not None
    if has_head:
        _check(W_out, "W_out", dtype, (None, H))
        _check(b_out, "b_out", dtype, (W_out.shape[0],))
        W_out, b_out = np.ascontiguousarray(W_out), np.ascontiguousarray(b_out)
    elif b_out is not None:
        raise ValueError("b_out given without W_out")
    else:
        W_out, b_out = np.zeros((1, H), dtype), np.zeros(1, dtype)
    yhat = np.empty((B, W_out.shape[0]), dtype=dtype)
    h_T = np.empty((B, H), dtype=dtype)
    c_T = np.empty((B, H), dtype=dtype) if kind == "lstm" else h_T
    if kind == "gru":
        W_a, W_b = np.ascontiguousarray(W_ih), np.ascontiguousarray(W_hh)
        b_a, b_b = np.ascontiguousarray(b_ih), np.ascontiguousarray(b_hh)
    else:  # one product per step with W_cat = [W_hh | W_ih], as the training forward
        W_a = W_b = np.ascontiguousarray(np.hstack([W_hh, W_ih]))
        b_a = b_b = np.ascontiguousarray(b_ih + b_hh)
    _infer_impl(_KINDS[kind], x, h0 if h0 is not None else h_T, h0 is not None,
                c0 if c0 is not None else h_T, c0 is not None, W_a, W_b, b_a, b_b, W_out, b_out, has_head,
                yhat, h_T, c_T)
    return (yhat if has_head else None), h_T, c_T


def rnn_predict(x, h0, W_ih, W_hh, b_ih, b_hh, W_out=None, b_out=None):
    """Inference of the tanh RNN: the forward of :func:`rnn_forward` without its cache or ``out``
    (two state slots per batch tile), and the dense head ŷ = h_T W_outᵀ + b_out fused.

    Returns ``(yhat (B, O) or None when W_out is None, h_T (B, H))``; the same arithmetic as the
    training forward, so the same h_T.
    """
    yhat, h_T, _ = _predict("rnn", x, h0, None, W_ih, W_hh, b_ih, b_hh, W_out, b_out)
    return yhat, h_T


def gru_predict(x, h0, W_ih, W_hh, b_ih, b_hh, W_out=None, b_out=None):
    """Inference of the GRU (see :func:`rnn_predict`); returns ``(yhat or None, h_T)``."""
    yhat, h_T, _ = _predict("gru", x, h0, None, W_ih, W_hh, b_ih, b_hh, W_out, b_out)
    return yhat, h_T


def lstm_predict(x, state, W_ih, W_hh, b_ih, b_hh, W_out=None, b_out=None):
    """Inference of the LSTM (see :func:`rnn_predict`); ``state`` is ``(h0, c0)`` or None.
    Returns ``(yhat or None, (h_T, c_T))``."""
    h0, c0 = _pair(state, "state")
    yhat, h_T, c_T = _predict("lstm", x, h0, c0, W_ih, W_hh, b_ih, b_hh, W_out, b_out)
    return yhat, (h_T, c_T)


# --------------------------------------------------------------------------------------------
# The machine's FMA peak (the roofline of benchmarks/bench_rnn.py)
# --------------------------------------------------------------------------------------------
def fma_peak(dtype, long iters=2_000_000, int nthreads=0):
    """Run the FMA peak loop on ``nthreads`` OpenMP threads at once (0: the kernels' count).

    Every thread runs ``iters`` rounds of independent multiply-add chains in the widest vectors the build
    can use. Returns ``(FLOP, seconds)``: 2 FLOP per multiply-add and lane, wall time of the parallel
    region; FLOP / seconds is the peak the kernels' GFLOP/s are a fraction of.
    """
    dtype = np.dtype(dtype)
    if dtype not in _FLOATS:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if nthreads <= 0:
        nthreads = openmp.omp_get_max_threads()
    cdef bint f32 = dtype == np.float32
    cdef int t
    cdef double sink = 0, t0, t1
    with nogil:
        t0 = openmp.omp_get_wtime()
        for t in prange(nthreads, num_threads=nthreads, schedule="static", chunksize=1):
            if f32:
                sink += nn_fma_loop_f32(iters, 0.999999, 1e-6)
            else:
                sink += nn_fma_loop_f64(iters, 0.999999, 1e-6)
        t1 = openmp.omp_get_wtime()
    if sink != sink:
        raise RuntimeError("the FMA loop produced NaN")
    lanes = nn_peak_bytes() // dtype.itemsize
    return 2.0 * nthreads * iters * nn_peak_chains() * lanes, t1 - t0
