"""Recurrent layers: finite-difference gradients, chunked = one pass, edge shapes, dtypes."""
import functools
import zlib

import numpy as np
import pytest

from nncore import GRU, LSTM, RNN
from nncore.recurrent import gru_forward, kernel_available, lstm_forward, rnn_forward

KINDS = {"rnn": RNN, "gru": GRU, "lstm": LSTM}


@pytest.fixture(params=["numpy", "cython"])
def backend(request):
    """Every layer test runs on the NumPy reference and, where it is built, on the compiled kernel."""
    return request.param


def make_layer(kind, backend):
    if backend == "cython" and not kernel_available(kind):
        pytest.skip(f"no compiled {kind} kernel")
    return functools.partial(KINDS[kind], backend=backend)

# (B, T, I, H): the edge cases T=1, B=1, H=1 and a few seeded random shapes
EDGE_SHAPES = [(1, 1, 1, 1), (1, 4, 1, 1), (3, 1, 2, 1), (1, 1, 3, 2), (2, 3, 1, 4)]
RANDOM_SHAPES = [tuple(int(v) for v in np.random.default_rng(s).integers(1, 5, size=4)) for s in range(3)]
SHAPES = EDGE_SHAPES + RANDOM_SHAPES


def _state(kind, B, H, rng, dtype=np.float64):
    if kind == "lstm":
        return (rng.normal(size=(B, H)).astype(dtype), rng.normal(size=(B, H)).astype(dtype))
    return rng.normal(size=(B, H)).astype(dtype)


def _parts(kind, state):
    """The arrays of a state: (h, c) for an LSTM, (h,) otherwise."""
    return tuple(state) if kind == "lstm" else (state,)


def _loss_fn(kind, layer, x, state, R_out, R_state):
    """L = Σ out ⊙ R_out + Σ state_T ⊙ R_state (both parts of an LSTM state)."""

    def f():
        out, s = layer.forward(x, state)
        total = np.sum(out * R_out)
        if kind == "lstm":
            return float(total + np.sum(s[0] * R_state[0]) + np.sum(s[1] * R_state[1]))
        return float(total + np.sum(s * R_state))

    return f


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B%dT%dI%dH%d" % s)
@pytest.mark.parametrize("with_state", [True, False], ids=["h0", "no-h0"])
def test_gradients_match_finite_differences(kind, shape, with_state, check_grad, backend):
    B, T, I, H = shape
    rng = np.random.default_rng(zlib.crc32(repr((kind, shape)).encode()))  # stable across processes
    layer = make_layer(kind, backend)(I, H, rng=rng)
    x = rng.normal(size=(B, T, I))
    state = _state(kind, B, H, rng) if with_state else None
    R_out = rng.normal(size=(B, T, H))
    R_state = _state(kind, B, H, rng)
    f = _loss_fn(kind, layer, x, state, R_out, R_state)

    f()
    dx = layer.backward(R_out, R_state)
    check_grad(f, x, dx, f"{kind} dx")
    for name, p in layer.params.items():
        check_grad(f, p, layer.grads[name], f"{kind} d{name}")
    if with_state:
        if kind == "lstm":
            check_grad(f, state[0], layer.dstate0[0], "lstm dh0")
            check_grad(f, state[1], layer.dstate0[1], "lstm dc0")
        else:
            check_grad(f, state, layer.dh0, f"{kind} dh0")


@pytest.mark.parametrize("kind", KINDS)
def test_backward_with_only_last_state_gradient(kind, check_grad, backend):
    """``backward(None, dh_T)``: the forecaster's case, no loss on the intermediate outputs."""
    rng = np.random.default_rng(5)
    B, T, I, H = 3, 6, 2, 4
    layer = make_layer(kind, backend)(I, H, rng=rng)
    x = rng.normal(size=(B, T, I))
    R_h = rng.normal(size=(B, H))

    def f():
        _, s = layer.forward(x)
        return float(np.sum((s[0] if kind == "lstm" else s) * R_h))

    f()
    dx = layer.backward(None, (R_h, None) if kind == "lstm" else R_h)
    check_grad(f, x, dx, f"{kind} dx (dout=None)")
    check_grad(f, layer.params["W_hh"], layer.grads["W_hh"], f"{kind} dW_hh (dout=None)")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("split", [1, 3, 6])
def test_two_chunks_with_carried_state_equal_one_pass(kind, split, backend):
    rng = np.random.default_rng(11)
    B, T, I, H = 3, 7, 2, 5
    full = make_layer(kind, backend)(I, H, rng=3)
    first, second = make_layer(kind, backend)(I, H, rng=3), make_layer(kind, backend)(I, H, rng=3)
    x = rng.normal(size=(B, T, I))
    h0 = _state(kind, B, H, rng)
    R_out = rng.normal(size=(B, T, H))
    R_state = _state(kind, B, H, rng)

    out, state = full.forward(x, h0)
    dx = full.backward(R_out, R_state)

    out1, state1 = first.forward(x[:, :split], h0)
    out2, state2 = second.forward(x[:, split:], state1)
    dx2 = second.backward(R_out[:, split:], R_state)
    carried = second.dstate0 if kind == "lstm" else second.dh0
    dx1 = first.backward(R_out[:, :split], carried)

    np.testing.assert_allclose(np.concatenate([out1, out2], axis=1), out, rtol=0, atol=1e-14)
    for a, b in zip(_parts(kind, state2), _parts(kind, state)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-14)
    np.testing.assert_allclose(np.concatenate([dx1, dx2], axis=1), dx, rtol=0, atol=1e-13)
    for name in full.grads:
        np.testing.assert_allclose(first.grads[name] + second.grads[name], full.grads[name], rtol=0, atol=1e-12)
    first_d0 = first.dstate0 if kind == "lstm" else first.dh0
    full_d0 = full.dstate0 if kind == "lstm" else full.dh0
    for a, b in zip(_parts(kind, first_d0), _parts(kind, full_d0)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)


@pytest.mark.parametrize("kind", KINDS)
def test_parameter_shapes_follow_pytorch(kind):
    I, H = 3, 5
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[kind]
    layer = KINDS[kind](I, H, rng=0)
    assert layer.params["W_ih"].shape == (gates * H, I)
    assert layer.params["W_hh"].shape == (gates * H, H)
    assert layer.params["b_ih"].shape == (gates * H,)
    assert layer.params["b_hh"].shape == (gates * H,)
    for name, p in layer.params.items():
        assert layer.grads[name].shape == p.shape and not layer.grads[name].any()
        assert np.abs(p).max() <= 1 / np.sqrt(H)  # PyTorch init U(-1/√H, 1/√H)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept_end_to_end(kind, dtype, backend):
    rng = np.random.default_rng(0)
    layer = make_layer(kind, backend)(2, 3, dtype=dtype, rng=rng)
    x = rng.normal(size=(4, 5, 2)).astype(dtype)
    out, state = layer.forward(x)
    dx = layer.backward(np.ones_like(out), None)
    arrays = [out, dx, *layer.params.values(), *layer.grads.values()]
    arrays += list(state) if kind == "lstm" else [state]
    assert all(a.dtype == dtype for a in arrays)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_matches_float64(kind, backend):
    rng = np.random.default_rng(1)
    l64 = make_layer(kind, backend)(2, 6, dtype=np.float64, rng=4)
    l32 = make_layer(kind, backend)(2, 6, dtype=np.float32, rng=4)
    x = rng.normal(size=(5, 20, 2))
    out64, _ = l64.forward(x)
    out32, _ = l32.forward(x.astype(np.float32))
    l64.backward(np.ones_like(out64))
    l32.backward(np.ones_like(out32))
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5)
    for name in l64.grads:
        np.testing.assert_allclose(l32.grads[name], l64.grads[name], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_inputs_raise_clear_errors(kind, backend):
    layer = make_layer(kind, backend)(2, 3, dtype=np.float32, rng=0)
    with pytest.raises(ValueError, match="dtype float64, expected float32"):
        layer.forward(np.zeros((1, 4, 2)))
    with pytest.raises(ValueError, match="last dimension 2"):
        layer.forward(np.zeros((1, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="3 dimensions"):
        layer.forward(np.zeros((4, 2), dtype=np.float32))
    bad_state = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="batch size 2, expected 1"):
        layer.forward(np.zeros((1, 4, 2), dtype=np.float32), (bad_state, bad_state) if kind == "lstm" else bad_state)
    with pytest.raises(RuntimeError, match="before forward"):
        make_layer(kind, backend)(2, 3).backward(None, None)
    layer.forward(np.zeros((1, 4, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="dout has shape"):
        layer.backward(np.zeros((1, 5, 3), dtype=np.float32))


def test_rnn_forward_matches_the_equation_written_out():
    """One step by hand: h_1 = tanh(x W_ihᵀ + b_ih + h0 W_hhᵀ + b_hh)."""
    rng = np.random.default_rng(2)
    x, h0 = rng.normal(size=(2, 1, 3)), rng.normal(size=(2, 4))
    W_ih, W_hh, b_ih, b_hh = rng.normal(size=(4, 3)), rng.normal(size=(4, 4)), rng.normal(size=4), rng.normal(size=4)
    out, h_T, _ = rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh)
    expected = np.tanh(x[:, 0] @ W_ih.T + b_ih + h0 @ W_hh.T + b_hh)
    np.testing.assert_allclose(h_T, expected, rtol=1e-15)
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-15)


def test_gru_and_lstm_forward_match_the_equations_written_out():
    rng = np.random.default_rng(3)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    B, I, H = 2, 3, 2
    x, h0, c0 = rng.normal(size=(B, 1, I)), rng.normal(size=(B, H)), rng.normal(size=(B, H))
    W_ih, W_hh = rng.normal(size=(3 * H, I)), rng.normal(size=(3 * H, H))
    b_ih, b_hh = rng.normal(size=3 * H), rng.normal(size=3 * H)
    gi, gh = x[:, 0] @ W_ih.T + b_ih, h0 @ W_hh.T + b_hh
    r, z = sig(gi[:, :H] + gh[:, :H]), sig(gi[:, H:2 * H] + gh[:, H:2 * H])
    n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    _, h1, _ = gru_forward(x, h0, W_ih, W_hh, b_ih, b_hh)
    np.testing.assert_allclose(h1, (1 - z) * n + z * h0, rtol=1e-14)

    W_ih, W_hh = rng.normal(size=(4 * H, I)), rng.normal(size=(4 * H, H))
    b_ih, b_hh = rng.normal(size=4 * H), rng.normal(size=4 * H)
    a = x[:, 0] @ W_ih.T + b_ih + h0 @ W_hh.T + b_hh
    i, f, g, o = sig(a[:, :H]), sig(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), sig(a[:, 3 * H:])
    c1 = f * c0 + i * g
    _, (h1, c1_), _ = lstm_forward(x, (h0, c0), W_ih, W_hh, b_ih, b_hh)
    np.testing.assert_allclose(c1_, c1, rtol=1e-14)
    np.testing.assert_allclose(h1, o * np.tanh(c1), rtol=1e-14)


def test_backend_is_visible_and_selectable(monkeypatch):
    from nncore import recurrent

    auto = RNN(1, 2)
    assert auto.backend == ("cython" if kernel_available("rnn") else "numpy")
    assert RNN(1, 2, backend="numpy").backend == "numpy"
    with pytest.raises(ValueError, match="valid backends: auto, numpy, cython"):
        RNN(1, 2, backend="fortran")

    # as on a machine where the extension was never built
    monkeypatch.setattr(recurrent, "_kernels", lambda: (None, ImportError("No module named 'kernels'")))
    assert RNN(1, 2).backend == "numpy"
    with pytest.raises(ValueError, match=r"backend='cython' requested for lstm, but the compiled kernel is not "
                                         r"available \(No module named 'kernels'\)"):
        LSTM(1, 2, backend="cython")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("input_size", [1, 3, 8])
def test_backends_agree_on_a_forecaster_sized_batch(kind, input_size):
    """The default backend and the NumPy reference give the same outputs and gradients in float64,
    for a univariate series (I = 1) and with covariates as input channels (I = 3, 8)."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(37, 30, input_size))
    ref, fast = KINDS[kind](input_size, 24, rng=1, backend="numpy"), KINDS[kind](input_size, 24, rng=1)
    dh = rng.normal(size=(37, 24))
    outs = []
    for layer in (ref, fast):
        out, _ = layer.forward(x)
        layer.backward(None, (dh, None) if kind == "lstm" else dh)
        outs.append(out)
    np.testing.assert_allclose(outs[1], outs[0], rtol=0, atol=1e-12)
    for name in ref.grads:
        np.testing.assert_allclose(fast.grads[name], ref.grads[name], rtol=0, atol=1e-11, err_msg=name)
