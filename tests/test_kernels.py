"""Compiled recurrent kernels (kernels/) against the NumPy references (nncore.recurrent).

Without the built extension these tests skip, unless NNCORE_REQUIRE_KERNELS=1 (CI), where a
missing extension is a failure.

Tolerances. float64: 1e-12 absolute on every array. float32: rtol 1e-5 plus an absolute floor
of 1e-5 × max|reference| of the same array, i.e. 1e-5 relative to the array's scale: entries of
a gradient that are sums of many terms of mixed sign cancel to values far below the terms, and
no float32 summation order (BLAS in the reference, tile-then-thread sums in the kernel) gives
those entries 1e-5 *relative* accuracy; 1e-5 of the array's scale is ~100 float32 ulps.
Gated cells add one more float32 effect: σ'(a) = σ(1 − σ) is computed from the saved σ, and
1 − σ cancels when σ → 1, so one ulp of σ becomes a relative error of eps/(1 − σ) in the
gradient, in the reference as much as in the kernel. So for gated cells an entry also passes
when the kernel is at most twice as far from the float64 result on the same inputs as the
float32 reference is: the kernel must be as accurate as the reference, not equal to its errors.
"""
import os
import zlib

import numpy as np
import pytest

import kernels
from nncore import recurrent as ref

if not kernels.available():
    if os.environ.get("NNCORE_REQUIRE_KERNELS") == "1":
        pytest.fail(f"NNCORE_REQUIRE_KERNELS=1 but the kernels are not built: {kernels.import_error()}",
                    pytrace=False)
    pytest.skip(f"kernels not built ({kernels.import_error()})", allow_module_level=True)

DTYPES = [np.float64, np.float32]
# (B, T, I, H): edge sizes, a batch not divisible by any tile (37), exact tiles (16, 8); input sizes
# I = 1 (univariate), 3 and 8 (covariates as channels) in every shape list
SHAPES = [(1, 1, 1, 1), (37, 17, 3, 5), (1, 30, 1, 24), (5, 1, 2, 3), (16, 9, 1, 7), (8, 6, 4, 13),
          (37, 40, 1, 24), (23, 13, 8, 6)]


def assert_close(actual, desired, dtype, name="", exact=None):
    """Kernel result vs reference; ``exact``: the reference in float64 on the same inputs."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.shape == desired.shape, f"{name}: shape {actual.shape} != {desired.shape}"
    assert actual.dtype == np.dtype(dtype), f"{name}: dtype {actual.dtype} != {np.dtype(dtype)}"
    if dtype == np.float64:
        np.testing.assert_allclose(actual, desired, rtol=0, atol=1e-12, err_msg=name)
        return
    scale = float(np.max(np.abs(desired))) if desired.size else 0.0
    if exact is None:
        np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-5 * scale, err_msg=name)
        return
    a, d, e = (np.asarray(v, dtype=np.float64) for v in (actual, desired, exact))
    # within 1e-5 of the float32 reference, or at most twice as far from the float64 result
    bad = (np.abs(a - d) > 1e-5 * np.abs(d) + 1e-5 * scale) & (np.abs(a - e) > 2 * np.abs(d - e))
    assert not bad.any(), (f"{name}: {bad.sum()} of {bad.size} entries differ, e.g. kernel "
                           f"{a[bad][0]!r}, reference {d[bad][0]!r}, float64 {e[bad][0]!r}")


def up(a):
    """float64 copy of an array (or of each member of a pair), None stays None."""
    if a is None:
        return None
    if isinstance(a, tuple):
        return tuple(up(v) for v in a)
    return np.asarray(a, dtype=np.float64)


def rnn_params(rng, I, H, dtype, scale=None):
    bound = 1 / np.sqrt(H) if scale is None else scale
    W_ih = rng.uniform(-bound, bound, (H, I)).astype(dtype)
    W_hh = rng.uniform(-bound, bound, (H, H)).astype(dtype)
    b_ih = rng.uniform(-bound, bound, H).astype(dtype)
    b_hh = rng.uniform(-bound, bound, H).astype(dtype)
    return W_ih, W_hh, b_ih, b_hh


def compare_rnn(x, h0, params, dout, dh_T, dtype):
    W_ih, W_hh, b_ih, b_hh = params
    out_r, hT_r, cache_r = ref.rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh)
    out_k, hT_k, cache_k = kernels.rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh)
    assert_close(out_k, out_r, dtype, "out")
    assert_close(hT_k, hT_r, dtype, "h_T")
    dx_r, dh0_r, g_r = ref.rnn_backward(dout, dh_T, cache_r, W_ih, W_hh)
    dx_k, dh0_k, g_k = kernels.rnn_backward(dout, dh_T, cache_k, W_ih, W_hh)
    assert_close(dx_k, dx_r, dtype, "dx")
    assert_close(dh0_k, dh0_r, dtype, "dh0")
    assert set(g_k) == set(g_r) == {"W_ih", "W_hh", "b_ih", "b_hh"}
    for k in g_r:
        assert_close(g_k[k], g_r[k], dtype, f"d{k}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_h0", [True, False])
@pytest.mark.parametrize("with_dout", [True, False])
def test_rnn_matches_reference(dtype, shape, with_h0, with_dout):
    B, T, I, H = shape
    rng = np.random.default_rng(zlib.crc32(repr((shape, with_h0, with_dout)).encode()))
    x = rng.standard_normal((B, T, I)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype) if with_h0 else None
    dout = rng.standard_normal((B, T, H)).astype(dtype) if with_dout else None
    dh_T = rng.standard_normal((B, H)).astype(dtype)
    compare_rnn(x, h0, rnn_params(rng, I, H, dtype), dout, dh_T, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rnn_absent_dh_T_and_dout(dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 4, 2)).astype(dtype)
    compare_rnn(x, None, rnn_params(rng, 2, 3, dtype), None, None, dtype)
    dx, dh0, grads = kernels.rnn_backward(None, None, kernels.rnn_forward(x, None, *rnn_params(rng, 2, 3, dtype))[2],
                                          *rnn_params(rng, 2, 3, dtype)[:2])
    assert not dx.any() and not dh0.any() and not any(g.any() for g in grads.values())


@pytest.mark.parametrize("dtype", DTYPES)
def test_rnn_non_contiguous_inputs(dtype):
    rng = np.random.default_rng(2)
    B, T, I, H = 37, 11, 3, 6
    x = rng.standard_normal((B, 2 * T, I)).astype(dtype)[:, ::2]             # step slice
    h0 = np.asfortranarray(rng.standard_normal((B, H)).astype(dtype))       # Fortran order
    W_ih, W_hh, b_ih, b_hh = rnn_params(rng, I, H, dtype)
    W_hh = np.asfortranarray(W_hh)
    W_ih = np.ascontiguousarray(W_ih.T).T                                   # transposed view
    b_ih = np.repeat(b_ih, 2)[::2]
    dout = np.asfortranarray(rng.standard_normal((B, T, H)).astype(dtype))
    dh_T = rng.standard_normal((H, B)).astype(dtype).T
    assert not x.flags.c_contiguous and not W_ih.flags.c_contiguous and not dh_T.flags.c_contiguous
    compare_rnn(x, h0, (W_ih, W_hh, b_ih, b_hh), dout, dh_T, dtype)
    compare_rnn(np.asfortranarray(x), h0, (W_ih, W_hh, b_ih, b_hh), dout, dh_T, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rnn_long_sequence_saturated(dtype):
    """240 steps driven into saturation by a strong input: tanh' ~ 0, so the gradient carried
    back decays into the denormal range (the kernels flush denormals to zero; results must still
    match). W_hh stays contractive: a chaotic RNN would amplify rounding differences and make
    any comparison meaningless."""
    rng = np.random.default_rng(3)
    B, T, I, H = 21, 240, 1, 24
    x = rng.standard_normal((B, T, I)).astype(dtype)
    W_ih, W_hh, b_ih, b_hh = rnn_params(rng, I, H, dtype)
    W_ih *= 8
    dh_T = rng.standard_normal((B, H)).astype(dtype)
    _, _, cache = ref.rnn_forward(x, None, W_ih, W_hh, b_ih, b_hh)
    _, dh0, _ = ref.rnn_backward(None, dh_T, cache, W_ih, W_hh)
    # the regime this test is about: float32 reaches the denormal range, float64 decays by 80 decades
    assert np.max(np.abs(dh0)) < (np.finfo(np.float32).tiny * 1e3 if dtype == np.float32 else 1e-80)
    compare_rnn(x, None, (W_ih, W_hh, b_ih, b_hh), None, dh_T, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rnn_sequential_equals_chunked(dtype):
    """Two chunks carrying h (forward) and dh (backward) equal one pass."""
    rng = np.random.default_rng(4)
    B, T, I, H = 19, 12, 2, 5
    x = rng.standard_normal((B, T, I)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    params = rnn_params(rng, I, H, dtype)
    dout = rng.standard_normal((B, T, H)).astype(dtype)
    out, h_T, cache = kernels.rnn_forward(x, h0, *params)
    dx, dh0, g = kernels.rnn_backward(dout, None, cache, *params[:2])
    out1, h1, c1 = kernels.rnn_forward(x[:, :5], h0, *params)
    out2, h2, c2 = kernels.rnn_forward(x[:, 5:], h1, *params)
    assert_close(np.concatenate([out1, out2], axis=1), out, dtype, "out")
    assert_close(h2, h_T, dtype, "h_T")
    dx2, dh_mid, g2 = kernels.rnn_backward(dout[:, 5:], None, c2, *params[:2])
    dx1, dh0_1, g1 = kernels.rnn_backward(dout[:, :5], dh_mid, c1, *params[:2])
    assert_close(np.concatenate([dx1, dx2], axis=1), dx, dtype, "dx")
    assert_close(dh0_1, dh0, dtype, "dh0")
    for k in g:
        assert_close(g1[k] + g2[k], g[k], dtype, f"d{k}")


def reference_train_step(x, y, h0, W_ih, W_hh, b_ih, b_hh, W_out, b_out):
    """rnn_forward + dense head + mean squared error + rnn_backward, all NumPy."""
    _, h_T, cache = ref.rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh)
    y_hat = h_T @ W_out.T + b_out
    loss = float(np.mean((y_hat - y) ** 2))
    dy = 2 * (y_hat - y) / y.size
    _, dh0, grads = ref.rnn_backward(None, dy @ W_out, cache, W_ih, W_hh)
    grads.update(W_out=dy.T @ h_T, b_out=dy.sum(axis=0), dh0=dh0)
    return loss, h_T, grads


# (B, T, I, H, O)
RNN_TRAIN_SHAPES = [(1, 1, 1, 1, 1), (37, 25, 1, 24, 1), (10, 7, 3, 5, 4), (16, 3, 2, 8, 2), (23, 9, 8, 6, 3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", RNN_TRAIN_SHAPES)
@pytest.mark.parametrize("with_h0", [True, False])
def test_rnn_train_step_matches_composition(dtype, shape, with_h0):
    B, T, I, H, O = shape
    rng = np.random.default_rng(5)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    y = rng.standard_normal((B, O)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype) if with_h0 else None
    params = rnn_params(rng, I, H, dtype)
    W_out = rng.uniform(-1, 1, (O, H)).astype(dtype)
    b_out = rng.uniform(-1, 1, O).astype(dtype)
    loss_r, hT_r, g_r = reference_train_step(x, y, h0, *params, W_out, b_out)
    loss_k, hT_k, g_k = kernels.rnn_train_step(x, y, h0, *params, W_out, b_out)
    assert isinstance(loss_k, float)
    if dtype == np.float64:
        assert abs(loss_k - loss_r) <= 1e-12
    else:
        assert abs(loss_k - loss_r) <= 1e-5 * abs(loss_r)
    assert_close(hT_k, hT_r, dtype, "h_T")
    assert set(g_k) == set(g_r)
    for k in g_r:
        assert_close(g_k[k], g_r[k], dtype, f"d{k}")


def _good_args(dtype=np.float64, B=4, T=3, I=2, H=5):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    return x, None, *rnn_params(rng, I, H, dtype)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: (a[0].astype(np.float32), *a[1:]), "x has dtype float32"),
        (lambda a: (a[0], *a[1:4], a[4].astype(np.float32), a[5]), "b_ih has dtype float32"),
        (lambda a: (np.ones((4, 3, 2), dtype=np.int64), *a[1:]), "x has dtype int64"),
        (lambda a: (*a[:3], a[3].astype(np.int32), *a[4:]), "W_hh must be a float32 or float64"),
        (lambda a: (a[0], np.zeros((4, 4)), *a[2:]), r"h0 has shape \(4, 4\), expected \(4, 5\)"),
        (lambda a: (a[0], np.zeros((3, 5)), *a[2:]), r"h0 has shape \(3, 5\)"),
        (lambda a: (a[0], None, np.zeros((4, 2)), *a[3:]), r"W_ih has shape \(4, 2\), expected \(5, \?\)"),
        (lambda a: (a[0], None, a[2], np.zeros((5, 4)), *a[4:]), "W_hh has shape"),
        (lambda a: (a[0][..., :1], *a[1:]), r"x has shape \(4, 3, 1\), expected \(\?, \?, 2\)"),
        (lambda a: (a[0][:, :0], *a[1:]), "empty dimension"),
        (lambda a: (*a[:4], np.zeros(4), a[5]), r"b_ih has shape \(4,\)"),
        (lambda a: (a[0].tolist(), *a[1:]), "x must be a numpy array"),
    ],
)
def test_rnn_forward_rejects_bad_input(change, match):
    with pytest.raises(ValueError, match=match):
        kernels.rnn_forward(*change(_good_args()))


def test_rnn_backward_rejects_bad_input():
    x, h0, W_ih, W_hh, b_ih, b_hh = _good_args()
    out, h_T, cache = kernels.rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match=r"dout has shape \(4, 3, 4\)"):
        kernels.rnn_backward(out[..., :4], None, cache, W_ih, W_hh)
    with pytest.raises(ValueError, match="dh_T has dtype float32"):
        kernels.rnn_backward(None, h_T.astype(np.float32), cache, W_ih, W_hh)
    with pytest.raises(ValueError, match="W_ih has dtype float32"):
        kernels.rnn_backward(None, h_T, cache, W_ih.astype(np.float32), W_hh)
    with pytest.raises(ValueError, match="cache must come from kernels.rnn_forward"):
        kernels.rnn_backward(None, h_T, ref.rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh)[2], W_ih, W_hh)
    with pytest.raises(ValueError, match=r"cache\['out'\] has shape"):
        kernels.rnn_backward(None, None, cache, np.zeros((6, 2)), np.zeros((6, 6)))


def test_rnn_train_step_rejects_bad_input():
    x, h0, W_ih, W_hh, b_ih, b_hh = _good_args()
    W_out, b_out = np.zeros((2, 5)), np.zeros(2)
    with pytest.raises(ValueError, match=r"y has shape \(4, 3\), expected \(4, 2\)"):
        kernels.rnn_train_step(x, np.zeros((4, 3)), h0, W_ih, W_hh, b_ih, b_hh, W_out, b_out)
    with pytest.raises(ValueError, match=r"W_out has shape \(2, 4\)"):
        kernels.rnn_train_step(x, np.zeros((4, 2)), h0, W_ih, W_hh, b_ih, b_hh, np.zeros((2, 4)), b_out)
    with pytest.raises(ValueError, match="y has dtype float32"):
        kernels.rnn_train_step(x, np.zeros((4, 2), np.float32), h0, W_ih, W_hh, b_ih, b_hh, W_out, b_out)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["tanh", "sigmoid", "tanh_rnn"])
def test_simd_activation_accuracy(dtype, name):
    """The kernels' own vector tanh and sigmoid are libm-exact to a few ulp in both precisions,
    including the tails, ±0 and huge inputs. The tanh RNN's float32 tanh is a rational
    approximation (<= 5 ulp, ±(1 − 2.4e-7) when saturated); in float64 it is the exact one."""
    x = np.concatenate([np.linspace(-100, 100, 200_001), np.geomspace(1e-30, 1, 10_001),
                        -np.geomspace(1e-30, 1, 10_001), [0.0, -0.0, 0.625, -0.625, 9.0, 30.0, 1e30, -1e30]])
    x = x.astype(dtype)
    y = x.copy()
    kernels._recurrent._activation(y, name)
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        exact = 1 / (1 + np.exp(-x64)) if name == "sigmoid" else np.tanh(x64)
    exact = exact.astype(dtype).astype(np.float64)  # correctly rounded target
    tiny = np.finfo(dtype).tiny
    ulp = np.spacing(np.maximum(np.abs(exact), tiny).astype(dtype)).astype(np.float64)
    err = np.abs(y.astype(np.float64) - exact) / ulp
    err[np.abs(exact) < tiny * 2**24] = 0  # the flush-to-zero range: absolute error < 1e-30
    fast = name == "tanh_rnn" and dtype == np.float32
    assert np.max(err) <= (5 if fast else 4), (x[np.argmax(err)], np.max(err))
    if name == "sigmoid":
        assert y[-2] == 1 and 0 <= y[-1] < 1e-37 and y[-8] == 0.5 and y[-7] == 0.5
    else:
        assert abs(y[-2] - 1) <= (2.4e-7 if fast else 0) and y[-2] == -y[-1]
        assert y[-7] == 0 and np.signbit(y[-7])  # tanh(-0) = -0
    with pytest.raises(ValueError, match="unknown activation 'relu'; valid: tanh, sigmoid, tanh_rnn"):
        kernels._recurrent._activation(y, "relu")


def test_denormal_mode_restored():
    """The kernels flush denormals only while they run: the caller's MXCSR comes back."""
    x, h0, W_ih, W_hh, b_ih, b_hh = _good_args(np.float32)
    kernels.rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh)
    tiny = np.array([1e-38], dtype=np.float32)
    assert (tiny * np.float32(1e-3))[0] > 0


def test_every_kind_the_extension_reports_has_its_kernels_and_nncore_uses_them():
    for kind, built in kernels.KERNELS.items():
        assert built == all(callable(getattr(kernels, f"{kind}_{part}", None))
                            for part in ("forward", "backward", "train_step")), kind
        assert ref.kernel_available(kind) == built
        assert ref.RECURRENT_LAYERS[kind](1, 2, backend="auto").backend == ("cython" if built else "numpy")


def test_the_thread_count_follows_omp_num_threads():
    import subprocess
    import sys

    for n in (1, 3):
        out = subprocess.run([sys.executable, "-c", "import kernels; print(kernels.threads())"], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "OMP_NUM_THREADS": str(n)})
        assert out.returncode == 0 and out.stdout.strip() == str(n), out.stdout + out.stderr


def test_the_build_is_the_one_the_test_run_asked_for():
    """``make test`` runs the kernel tests a second time on a bounds-checked build (NNCORE_KERNEL_DEBUG=1):
    it tells the tests through NNCORE_EXPECT_DEBUG, so a stale optimised build cannot pass as the debug one."""
    info = kernels.build_info()
    assert info["debug"] == (os.environ.get("NNCORE_EXPECT_DEBUG", "0") == "1"), info
    assert info["native"] == (os.environ.get("NNCORE_EXPECT_NATIVE", "1") == "1"), info
    assert info["tanh"]
    # the SIMD width: the one asked for (NNCORE_VECTOR_BYTES), else the widest the build targets: this
    # machine's with -march=native, SSE2's in the portable build
    widest = widest_vector_bytes() if info["native"] else 16
    want = int(os.environ.get("NNCORE_EXPECT_VECTOR_BYTES") or widest)
    assert info["vector_bytes"] == want, info
    vectors = 1 if want == 64 else 2   # a tile is one zmm vector of rows with AVX-512, else two vectors
    assert info["tile_rows"] == {"float32": vectors * want // 4, "float64": vectors * want // 8}, info
    # wide tiles (two vectors) exist exactly in the 64-byte builds; NNCORE_TILES (as CI sets it) is reported
    assert info["wide_tile_rows"] == ({"float32": 32, "float64": 16} if want == 64 else None), info
    assert info["tiles"] == os.environ.get("NNCORE_TILES", "auto"), info
    if info["wide_tile_rows"] is not None:  # built together with the narrow tiles, not left from another build
        wide = kernels._wide.build_info()
        assert {k: wide[k] for k in ("native", "debug", "vector_bytes")} == \
            {k: info[k] for k in ("native", "debug", "vector_bytes")}, wide


WIDE = kernels.available() and kernels.build_info()["wide_tile_rows"] is not None


@pytest.mark.skipif(not WIDE, reason="no wide tiles in this build (64-byte vectors only)")
def test_a_batch_runs_on_the_tiles_that_cost_less_for_its_size(monkeypatch):
    monkeypatch.setattr(kernels, "TILES", "auto")
    n = kernels.threads()
    for dtype, rows in (("float32", 16), ("float64", 8)):
        # one row: a narrow tile (a wide one would compute twice the padding)
        assert kernels._module(1, dtype) is kernels._narrow
        # one narrow tile per thread: wide tiles would leave threads idle
        assert kernels._module(rows * n, dtype) is kernels._narrow
        # many full tiles: the wide ones, which cost less per row
        assert kernels._module(100 * rows * n, dtype) is kernels._wide
    for forced in ("narrow", "wide"):
        monkeypatch.setattr(kernels, "TILES", forced)
        assert kernels._module(1, "float32") is getattr(kernels, "_" + forced)
        assert kernels._module(10_000, "float64") is getattr(kernels, "_" + forced)


@pytest.mark.skipif(not WIDE, reason="no wide tiles in this build (64-byte vectors only)")
@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_wide_and_narrow_tiles_give_the_same_forecasts_and_gradients(kind):
    """Each row's forward is the same arithmetic in either tile (bitwise); the weight gradients sum the
    tiles in another grouping (the last bits)."""
    G = {"rnn": 1, "gru": 3, "lstm": 4}[kind]
    rng = np.random.default_rng(3)
    B, T, I, H, O = 77, 9, 3, 5, 2
    x = rng.standard_normal((B, T, I))
    W_ih, W_hh = rng.standard_normal((G * H, I)) * 0.4, rng.standard_normal((G * H, H)) * 0.4
    b_ih, b_hh = rng.standard_normal(G * H) * 0.1, rng.standard_normal(G * H) * 0.1
    W_out, b_out, y = rng.standard_normal((O, H)), rng.standard_normal(O), rng.standard_normal((B, O))
    got = {}
    for name in ("_narrow", "_wide"):
        mod = getattr(kernels, name)
        yhat = getattr(mod, f"{kind}_predict")(x, None, W_ih, W_hh, b_ih, b_hh, W_out, b_out)
        loss, _, grads = getattr(mod, f"{kind}_train_step")(x, y, None, W_ih, W_hh, b_ih, b_hh, W_out, b_out)
        got[name] = (yhat, loss, grads)
    (y_n, loss_n, g_n), (y_w, loss_w, g_w) = got["_narrow"], got["_wide"]
    assert np.array_equal(y_n[0] if isinstance(y_n, tuple) else y_n, y_w[0] if isinstance(y_w, tuple) else y_w)
    assert loss_w == pytest.approx(loss_n, rel=1e-14)
    assert g_n.keys() == g_w.keys()
    for k in g_n:
        np.testing.assert_allclose(g_w[k], g_n[k], rtol=1e-12, atol=1e-14, err_msg=k)


def test_nncore_tiles_must_be_auto_narrow_or_wide():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import kernels"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "NNCORE_TILES": "wider"})
    assert out.returncode != 0 and "NNCORE_TILES must be auto, narrow or wide, got 'wider'" in out.stderr


def widest_vector_bytes() -> int:
    """The widest SIMD vector this CPU runs: 64 bytes with AVX-512, 32 with AVX, else 16."""
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    return 64 if "avx512f" in flags else 32 if "avx" in flags else 16


def test_fma_peak_loop_counts_its_flop_and_checks_its_arguments():
    f32, s32 = kernels.fma_peak("float32", 20_000, 1)
    f64, s64 = kernels.fma_peak(np.float64, 20_000, 1)
    assert s32 > 0 and s64 > 0
    assert f32 == 2 * f64                                   # the same vectors hold twice the float32 lanes
    assert kernels.fma_peak("float32", 40_000, 2)[0] == 4 * f32   # linear in iterations and in threads
    assert f32 % (2 * 20_000 * (widest_vector_bytes() if kernels.build_info()["native"] else 16) // 4) == 0
    with pytest.raises(ValueError, match="dtype must be float32 or float64, got int64"):
        kernels.fma_peak("int64")
    with pytest.raises(ValueError, match="iters must be >= 1, got 0"):
        kernels.fma_peak("float32", 0)


# --------------------------------------------------------------------------------------------
# GRU and LSTM: same checks through one adapter (the LSTM state is the pair (h, c))
# --------------------------------------------------------------------------------------------
GATED = {"gru": 3, "lstm": 4}
GATED_SHAPES = [(1, 1, 1, 1), (37, 17, 3, 5), (1, 30, 1, 24), (16, 9, 1, 7), (8, 6, 4, 13), (23, 13, 8, 6)]


def gated_params(rng, kind, I, H, dtype):
    G, bound = GATED[kind], 1 / np.sqrt(H)
    return tuple(rng.uniform(-bound, bound, shape).astype(dtype)
                 for shape in [(G * H, I), (G * H, H), (G * H,), (G * H,)])


def _state(kind, h, c):
    return h if kind == "gru" else (None if h is None and c is None else (h, c))


def compare_gated(kind, x, h0, c0, params, dout, dh_T, dc_T, dtype):
    W_ih, W_hh, b_ih, b_hh = params
    fwd_r, bwd_r = getattr(ref, f"{kind}_forward"), getattr(ref, f"{kind}_backward")
    fwd_k, bwd_k = getattr(kernels, f"{kind}_forward"), getattr(kernels, f"{kind}_backward")
    out_r, s_r, cache_r = fwd_r(x, _state(kind, h0, c0), *params)
    out_k, s_k, cache_k = fwd_k(x, _state(kind, h0, c0), *params)
    dx_r, d0_r, g_r = bwd_r(dout, _state(kind, dh_T, dc_T), cache_r, W_ih, W_hh)
    dx_k, d0_k, g_k = bwd_k(dout, _state(kind, dh_T, dc_T), cache_k, W_ih, W_hh)
    # the float64 result on the same inputs (float32 only: see the module docstring)
    exact = {}
    if dtype == np.float32:
        out_e, s_e, cache_e = fwd_r(up(x), _state(kind, up(h0), up(c0)), *up(tuple(params)))
        dx_e, d0_e, g_e = bwd_r(up(dout), _state(kind, up(dh_T), up(dc_T)), cache_e, up(W_ih), up(W_hh))
        exact = {"out": out_e, "s": s_e, "dx": dx_e, "d0": d0_e, **g_e}
    pick = lambda s, i: s[i] if kind == "lstm" else s  # noqa: E731
    assert_close(out_k, out_r, dtype, "out", exact.get("out"))
    for i, name in enumerate(["h_T", "c_T"] if kind == "lstm" else ["h_T"]):
        assert_close(pick(s_k, i), pick(s_r, i), dtype, name, pick(exact["s"], i) if exact else None)
    assert_close(dx_k, dx_r, dtype, "dx", exact.get("dx"))
    for i, name in enumerate(["dh0", "dc0"] if kind == "lstm" else ["dh0"]):
        assert_close(pick(d0_k, i), pick(d0_r, i), dtype, name, pick(exact["d0"], i) if exact else None)
    assert set(g_k) == set(g_r) == {"W_ih", "W_hh", "b_ih", "b_hh"}
    for k in g_r:
        assert_close(g_k[k], g_r[k], dtype, f"d{k}", exact.get(k))


@pytest.mark.parametrize("kind", list(GATED))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", GATED_SHAPES)
@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("with_dout", [True, False])
def test_gated_matches_reference(kind, dtype, shape, with_state, with_dout):
    B, T, I, H = shape
    rng = np.random.default_rng(zlib.crc32(repr((kind, shape, with_state, with_dout)).encode()))
    x = rng.standard_normal((B, T, I)).astype(dtype)
    h0, c0 = (rng.standard_normal((2, B, H)).astype(dtype) if with_state else (None, None))
    dout = rng.standard_normal((B, T, H)).astype(dtype) if with_dout else None
    dh_T, dc_T = rng.standard_normal((2, B, H)).astype(dtype)
    compare_gated(kind, x, h0, c0, gated_params(rng, kind, I, H, dtype), dout, dh_T, dc_T, dtype)


@pytest.mark.parametrize("kind", list(GATED))
@pytest.mark.parametrize("dtype", DTYPES)
def test_gated_partial_and_absent_gradients(kind, dtype):
    rng = np.random.default_rng(7)
    B, T, I, H = 11, 5, 2, 4
    x = rng.standard_normal((B, T, I)).astype(dtype)
    params = gated_params(rng, kind, I, H, dtype)
    compare_gated(kind, x, None, None, params, None, None, None, dtype)
    if kind == "lstm":  # only c0 given, only dc_T given
        c0, dc_T = rng.standard_normal((2, B, H)).astype(dtype)
        compare_gated(kind, x, None, c0, params, None, None, dc_T, dtype)


@pytest.mark.parametrize("kind", list(GATED))
@pytest.mark.parametrize("dtype", DTYPES)
def test_gated_non_contiguous_inputs(kind, dtype):
    rng = np.random.default_rng(8)
    B, T, I, H = 37, 7, 3, 6
    x = np.asfortranarray(rng.standard_normal((B, 2 * T, I)).astype(dtype)[:, ::2])
    h0, c0 = (np.asfortranarray(a) for a in rng.standard_normal((2, B, H)).astype(dtype))
    W_ih, W_hh, b_ih, b_hh = gated_params(rng, kind, I, H, dtype)
    params = (np.asfortranarray(W_ih), np.asfortranarray(W_hh), np.repeat(b_ih, 2)[::2], b_hh)
    dout = rng.standard_normal((B, T, H)).astype(dtype).transpose(0, 1, 2)[:, :, ::-1][:, :, ::-1]
    dh_T = rng.standard_normal((H, B)).astype(dtype).T
    compare_gated(kind, x, h0, c0, params, np.asfortranarray(dout), dh_T, dh_T[::-1][::-1], dtype)


@pytest.mark.parametrize("kind", list(GATED))
@pytest.mark.parametrize("dtype", DTYPES)
def test_gated_sequential_equals_chunked(kind, dtype):
    """Two chunks carrying the state (forward) and its gradient (backward) equal one pass."""
    rng = np.random.default_rng(9)
    B, T, I, H = 19, 10, 2, 5
    x = rng.standard_normal((B, T, I)).astype(dtype)
    params = gated_params(rng, kind, I, H, dtype)
    dout = rng.standard_normal((B, T, H)).astype(dtype)
    fwd, bwd = getattr(kernels, f"{kind}_forward"), getattr(kernels, f"{kind}_backward")
    state0 = _state(kind, *rng.standard_normal((2, B, H)).astype(dtype))
    out, s_T, cache = fwd(x, state0, *params)
    dx, d0, g = bwd(dout, None, cache, *params[:2])
    out1, s1, c1 = fwd(x[:, :4], state0, *params)
    out2, s2, c2 = fwd(x[:, 4:], s1, *params)
    assert_close(np.concatenate([out1, out2], axis=1), out, dtype, "out")
    dx2, d_mid, g2 = bwd(dout[:, 4:], None, c2, *params[:2])
    dx1, d0_1, g1 = bwd(dout[:, :4], d_mid, c1, *params[:2])
    assert_close(np.concatenate([dx1, dx2], axis=1), dx, dtype, "dx")
    for a, b in zip(np.atleast_1d(d0_1) if kind == "gru" else d0_1, np.atleast_1d(d0) if kind == "gru" else d0):
        assert_close(a, b, dtype, "d state0")
    for k in g:
        assert_close(g1[k] + g2[k], g[k], dtype, f"d{k}")


GATED_TRAIN_SHAPES = [(1, 1, 1, 1, 1), (37, 25, 1, 24, 1), (10, 7, 3, 5, 4), (23, 9, 8, 6, 3)]


def test_shape_lists_cover_input_sizes_1_3_8():
    """Every kernel-vs-reference shape list runs a univariate input and covariates as 3 and 8 channels."""
    for shapes in (SHAPES, GATED_SHAPES, RNN_TRAIN_SHAPES, GATED_TRAIN_SHAPES):
        assert {1, 3, 8} <= {shape[2] for shape in shapes}


@pytest.mark.parametrize("kind", list(GATED))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", GATED_TRAIN_SHAPES)
@pytest.mark.parametrize("with_state", [True, False])
def test_gated_train_step_matches_composition(kind, dtype, shape, with_state):
    B, T, I, H, O = shape
    rng = np.random.default_rng(10)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    y = rng.standard_normal((B, O)).astype(dtype)
    h0, c0 = (rng.standard_normal((2, B, H)).astype(dtype) if with_state else (None, None))
    params = gated_params(rng, kind, I, H, dtype)
    W_ih, W_hh = params[:2]
    W_out = rng.uniform(-1, 1, (O, H)).astype(dtype)
    b_out = rng.uniform(-1, 1, O).astype(dtype)
    _, s_T, cache = getattr(ref, f"{kind}_forward")(x, _state(kind, h0, c0), *params)
    h_T = s_T[0] if kind == "lstm" else s_T
    y_hat = h_T @ W_out.T + b_out
    loss_r = float(np.mean((y_hat - y) ** 2))
    dy = 2 * (y_hat - y) / y.size
    _, d0, g_r = getattr(ref, f"{kind}_backward")(None, _state(kind, dy @ W_out, None), cache, W_ih, W_hh)
    g_r.update(W_out=dy.T @ h_T, b_out=dy.sum(axis=0))
    if kind == "lstm":
        g_r.update(dh0=d0[0], dc0=d0[1])
    else:
        g_r.update(dh0=d0)
    loss_k, s_k, g_k = getattr(kernels, f"{kind}_train_step")(x, y, _state(kind, h0, c0), *params, W_out, b_out)
    assert abs(loss_k - loss_r) <= (1e-12 if dtype == np.float64 else 1e-5 * abs(loss_r))
    assert_close(s_k[0] if kind == "lstm" else s_k, h_T, dtype, "h_T")
    assert set(g_k) == set(g_r)
    for k in g_r:
        assert_close(g_k[k], g_r[k], dtype, f"d{k}")


@pytest.mark.parametrize("kind", list(GATED))
def test_gated_rejects_bad_input(kind):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 3, 2))
    W_ih, W_hh, b_ih, b_hh = gated_params(rng, kind, 2, 5, np.float64)
    fwd, bwd = getattr(kernels, f"{kind}_forward"), getattr(kernels, f"{kind}_backward")
    G = GATED[kind]
    with pytest.raises(ValueError, match=rf"W_hh has shape \(5, 5\), expected \({G}·H, H\)"):
        fwd(x, None, W_ih, W_hh[:5], b_ih, b_hh)
    with pytest.raises(ValueError, match="x has dtype float32"):
        fwd(x.astype(np.float32), None, W_ih, W_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match=rf"b_hh has shape \({G * 5 - 1},\)"):
        fwd(x, None, W_ih, W_hh, b_ih, b_hh[1:])
    bad_h0 = np.zeros((4, 4))
    with pytest.raises(ValueError, match=r"h0 has shape \(4, 4\), expected \(4, 5\)"):
        fwd(x, _state(kind, bad_h0, None), W_ih, W_hh, b_ih, b_hh)
    _, _, cache = fwd(x, None, W_ih, W_hh, b_ih, b_hh)
    other = "lstm" if kind == "gru" else "gru"
    with pytest.raises(ValueError, match=f"cache must come from kernels.{kind}_forward"):
        bwd(None, None, getattr(kernels, f"{other}_forward")(x, None, *gated_params(rng, other, 2, 5, np.float64))[2],
            W_ih, W_hh)
    with pytest.raises(ValueError, match="do not match the cache"):
        bwd(None, None, cache, W_ih.astype(np.float32), W_hh.astype(np.float32))
    with pytest.raises(ValueError, match="dout has shape"):
        bwd(np.zeros((4, 3, 4)), None, cache, W_ih, W_hh)
    if kind == "lstm":
        with pytest.raises(ValueError, match=r"state must be a pair \(h, c\)"):
            fwd(x, np.zeros((4, 5)), W_ih, W_hh, b_ih, b_hh)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_train_step_is_bitwise_reproducible(kind, dtype):
    """Same inputs, same thread count → identical bits (static tile scheduling, ordered reductions)."""
    rng = np.random.default_rng(12)
    B, T, I, H = 101, 20, 1, 9
    G = {"rnn": 1, "gru": 3, "lstm": 4}[kind]
    x = rng.normal(size=(B, T, I)).astype(dtype)
    y = rng.normal(size=(B, 1)).astype(dtype)
    W_ih, W_hh = (rng.uniform(-0.3, 0.3, size=s).astype(dtype) for s in ((G * H, I), (G * H, H)))
    b_ih, b_hh = (rng.uniform(-0.3, 0.3, size=G * H).astype(dtype) for _ in range(2))
    W_out, b_out = rng.normal(size=(1, H)).astype(dtype), rng.normal(size=1).astype(dtype)
    step = getattr(kernels, f"{kind}_train_step")
    runs = [step(x, y, None, W_ih, W_hh, b_ih, b_hh, W_out, b_out) for _ in range(4)]
    for loss, _, grads in runs[1:]:
        assert loss == runs[0][0]
        for k, g in grads.items():
            assert np.array_equal(g, runs[0][2][k]), k


# ----------------------------------------------------------------------------------------------
# Inference kernels: the forward without a cache, the dense head fused
# ----------------------------------------------------------------------------------------------
INFER_SHAPES = [(1, 1, 1, 1, 1), (37, 17, 3, 5, 2), (1, 30, 1, 24, 1), (16, 9, 1, 7, 3), (23, 13, 8, 6, 1),
                (40, 2, 4, 13, 5)]


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", INFER_SHAPES)
@pytest.mark.parametrize("with_state", [True, False])
def test_predict_matches_the_reference_forward_and_head(kind, dtype, shape, with_state):
    """ŷ = h_T W_outᵀ + b_out and the last state as the NumPy reference forward gives them (1e-12 in float64),
    and the last state bitwise equal to the training forward's (the same arithmetic without its cache)."""
    B, T, I, H, O = shape
    rng = np.random.default_rng(B * 1000 + T * 10 + H)
    G = {"rnn": 1, "gru": 3, "lstm": 4}[kind]
    bound = 1 / np.sqrt(H)
    params = tuple(rng.uniform(-bound, bound, s).astype(dtype) for s in [(G * H, I), (G * H, H), (G * H,), (G * H,)])
    x = rng.normal(size=(B, T, I)).astype(dtype)
    W_out, b_out = rng.normal(size=(O, H)).astype(dtype), rng.normal(size=O).astype(dtype)
    h0 = rng.normal(size=(B, H)).astype(dtype) if with_state else None
    c0 = rng.normal(size=(B, H)).astype(dtype) if with_state else None
    state = (h0, c0) if kind == "lstm" and with_state else (None if kind == "lstm" else h0)
    _, s_ref, _ = getattr(ref, f"{kind}_forward")(x, state, *params)
    _, s_fwd, _ = getattr(kernels, f"{kind}_forward")(x, state, *params)
    yhat, s_k = getattr(kernels, f"{kind}_predict")(x, state, *params, W_out, b_out)
    states = [("h_T", s_k[0], s_ref[0], s_fwd[0]), ("c_T", s_k[1], s_ref[1], s_fwd[1])] if kind == "lstm" \
        else [("h_T", s_k, s_ref, s_fwd)]
    exact = None
    if dtype == np.float32:
        _, s_e, _ = getattr(ref, f"{kind}_forward")(up(x), up(state), *up(params))
        h_e = s_e[0] if kind == "lstm" else s_e
        exact = h_e @ up(W_out).T + up(b_out)
    for name, got, want, fwd in states:
        assert_close(got, want, dtype, name)
        assert np.array_equal(got, fwd), f"{name} differs from the training forward's"
    h_ref = s_ref[0] if kind == "lstm" else s_ref
    assert_close(yhat, h_ref @ W_out.T + b_out, dtype, "yhat", exact)
    # without a head: the state alone, the same bits
    none, s_only = getattr(kernels, f"{kind}_predict")(x, state, *params)
    assert none is None
    for (name, got, *_), again in zip(states, s_only if kind == "lstm" else [s_only]):
        assert np.array_equal(got, again), name


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_predict_reads_non_contiguous_windows(kind):
    rng = np.random.default_rng(5)
    G, H, I = {"rnn": 1, "gru": 3, "lstm": 4}[kind], 6, 2
    params = tuple(rng.uniform(-0.4, 0.4, s) for s in [(G * H, I), (G * H, H), (G * H,), (G * H,)])
    big = rng.normal(size=(30, 24, 2 * I))
    x = big[::2, ::3, ::2]                      # every stride non-unit
    W_out, b_out = rng.normal(size=(1, H)), rng.normal(size=1)
    want, _ = getattr(kernels, f"{kind}_predict")(np.ascontiguousarray(x), None, *params, W_out, b_out)
    got, _ = getattr(kernels, f"{kind}_predict")(x, None, *params, W_out, b_out)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_predict_rejects_bad_input(kind):
    rng = np.random.default_rng(6)
    G, H, I = {"rnn": 1, "gru": 3, "lstm": 4}[kind], 5, 1
    params = [rng.normal(size=s) for s in [(G * H, I), (G * H, H), (G * H,), (G * H,)]]
    x = rng.normal(size=(4, 3, I))
    predict = getattr(kernels, f"{kind}_predict")
    with pytest.raises(ValueError, match=r"W_out has shape \(1, 4\), expected \(\?, 5\)"):
        predict(x, None, *params, np.zeros((1, 4)), np.zeros(1))
    with pytest.raises(ValueError, match=r"b_out has shape \(2,\), expected \(1\)"):
        predict(x, None, *params, np.zeros((1, H)), np.zeros(2))
    with pytest.raises(ValueError, match="b_out given without W_out"):
        predict(x, None, *params, None, np.zeros(1))
    with pytest.raises(ValueError, match="x has dtype float32"):
        predict(x.astype(np.float32), None, *params)
    with pytest.raises(ValueError, match=r"x has shape \(4, 3, 2\), expected \(\?, \?, 1\)"):
        predict(np.zeros((4, 3, 2)), None, *params)
