"""Optimizers and gradient clipping."""
import math

import numpy as np
import pytest

from nncore import SGD, Adam, Dense, clip_grad_norm


def _layer_with_grads(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    layer = Dense(3, 2, dtype=dtype, rng=rng)
    for g in layer.grads.values():
        g[...] = rng.normal(size=g.shape)
    return layer


def test_adam_matches_the_written_out_update_for_several_steps():
    layer = _layer_with_grads()
    w = layer.params["W"].copy()
    opt = Adam(layer, lr=0.1, betas=(0.8, 0.9), eps=1e-6)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    rng = np.random.default_rng(9)
    for t in range(1, 4):
        g = rng.normal(size=w.shape)
        layer.grads["W"][...] = g
        opt.step()
        m = 0.8 * m + 0.2 * g
        v = 0.9 * v + 0.1 * g * g
        w = w - 0.1 * (m / (1 - 0.8 ** t)) / (np.sqrt(v / (1 - 0.9 ** t)) + 1e-6)
        np.testing.assert_allclose(layer.params["W"], w, rtol=1e-13, atol=1e-15)


def test_adam_defaults_are_pytorchs():
    opt = Adam(_layer_with_grads())
    assert (opt.lr, opt.betas, opt.eps) == (1e-3, (0.9, 0.999), 1e-8)


def test_adam_first_step_moves_each_parameter_by_lr():
    layer = _layer_with_grads()
    before = layer.params["W"].copy()
    Adam(layer, lr=0.01).step()
    np.testing.assert_allclose(np.abs(layer.params["W"] - before), 0.01, rtol=1e-5)


def test_sgd_momentum_matches_pytorch_rule():
    layer = _layer_with_grads()
    w = layer.params["b"].copy()
    opt = SGD(layer, lr=0.1, momentum=0.9)
    buf = None
    rng = np.random.default_rng(3)
    for _ in range(3):
        g = rng.normal(size=w.shape)
        layer.grads["b"][...] = g
        opt.step()
        buf = g.copy() if buf is None else 0.9 * buf + g
        w = w - 0.1 * buf
        np.testing.assert_allclose(layer.params["b"], w, rtol=1e-14)


def test_sgd_nesterov_and_plain():
    layer = _layer_with_grads()
    w = layer.params["b"].copy()
    g = layer.grads["b"].copy()
    SGD(layer, lr=0.5).step()
    np.testing.assert_allclose(layer.params["b"], w - 0.5 * g)
    w = layer.params["b"].copy()
    SGD(layer, lr=0.5, momentum=0.5, nesterov=True).step()
    np.testing.assert_allclose(layer.params["b"], w - 0.5 * (g + 0.5 * g))


@pytest.mark.parametrize("opt_cls", [SGD, Adam])
def test_float32_parameters_and_state_stay_float32(opt_cls):
    layer = _layer_with_grads(dtype=np.float32)
    opt = opt_cls(layer, lr=0.01, **({"momentum": 0.9} if opt_cls is SGD else {}))
    opt.step()
    opt.step()
    assert all(p.dtype == np.float32 for p in layer.params.values())
    state = opt.state_dict()
    arrays = [a for v in state.values() if isinstance(v, dict) for a in v.values()]
    assert arrays and all(a.dtype == np.float32 for a in arrays)


@pytest.mark.parametrize("opt_cls", [SGD, Adam])
def test_optimizer_state_round_trip_continues_identically(opt_cls):
    kw = {"momentum": 0.9} if opt_cls is SGD else {}
    a, b = _layer_with_grads(1), _layer_with_grads(1)
    opt_a, opt_b = opt_cls(a, lr=0.01, **kw), opt_cls(b, lr=0.01, **kw)
    opt_a.step()
    opt_b.load_state_dict(opt_a.state_dict())
    b.load_state_dict(a.state_dict())
    opt_a.step()
    opt_b.step()
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_invalid_hyperparameters_are_rejected():
    layer = _layer_with_grads()
    with pytest.raises(ValueError, match="learning rate must be a finite number > 0, got -0.1"):
        Adam(layer, lr=-0.1)
    with pytest.raises(ValueError, match="learning rate"):
        SGD(layer, lr=float("nan"))
    with pytest.raises(ValueError, match="momentum"):
        SGD(layer, lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="betas"):
        Adam(layer, betas=(0.9, 1.0))


def test_clip_grad_norm_returns_pre_clip_norm_and_scales_to_max():
    layer = _layer_with_grads()
    norm = math.sqrt(sum(float((g * g).sum()) for g in layer.grads.values()))
    assert clip_grad_norm(layer, 0.5) == pytest.approx(norm)
    after = math.sqrt(sum(float((g * g).sum()) for g in layer.grads.values()))
    assert after == pytest.approx(0.5, rel=1e-5)
    before = {k: g.copy() for k, g in layer.grads.items()}
    assert clip_grad_norm(layer, 10.0) == pytest.approx(after)
    for k, g in layer.grads.items():  # below the threshold nothing changes
        np.testing.assert_array_equal(g, before[k])


def test_clip_grad_norm_leaves_non_finite_gradients_for_the_caller():
    layer = _layer_with_grads()
    layer.grads["b"][0] = np.inf
    assert clip_grad_norm(layer, 1.0) == math.inf
    assert np.isinf(layer.grads["b"][0])
