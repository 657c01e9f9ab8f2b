"""Losses, L1/L2 regularisation and the gradient-norm penalty (double backpropagation)."""
import numpy as np
import pytest

from nncore import LOSSES, MLPForecaster, RecurrentForecaster, Regularization, get_loss, mae, mlp, mse, objective
from nncore.regularization import gradient_norm_penalty


@pytest.mark.parametrize("name", ["mse", "mae"])
def test_loss_gradients_match_finite_differences(name, check_grad):
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    loss = LOSSES[name]
    _, dpred = loss(pred, target)
    check_grad(lambda: loss(pred, target)[0], pred, dpred, f"{name} dpred")


def test_loss_values_are_the_source_equations():
    pred, target = np.array([[1.0], [2.0], [4.0]]), np.array([[1.5], [2.0], [1.0]])
    assert mse(pred, target)[0] == pytest.approx((0.25 + 0 + 9) / 3)
    assert mae(pred, target)[0] == pytest.approx((0.5 + 0 + 3) / 3)


def test_mae_subgradient_is_zero_at_a_tie():
    _, d = mae(np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0, 5.0]))
    np.testing.assert_array_equal(d, [1 / 3, 0.0, -1 / 3])


def test_loss_shape_mismatch_and_unknown_name():
    with pytest.raises(ValueError, match=r"prediction shape \(3, 1\) does not match target shape \(3,\)"):
        mse(np.zeros((3, 1)), np.zeros(3))
    with pytest.raises(ValueError, match="valid names: mae, mse"):
        get_loss("huber")


def _penalty_loss(model, reg, x):
    """Penalty value without touching the gradients."""
    saved = {k: g.copy() for k, g in model.grads.items()}
    value = reg(model, x)
    for k, g in model.grads.items():
        g[...] = saved[k]
    return value


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_weight_penalties_gradients_and_biases_untouched(kind, check_grad):
    rng = np.random.default_rng(1)
    model = RecurrentForecaster("gru", 3, rng=rng)
    reg = Regularization(**{kind: 0.3})
    x = rng.normal(size=(2, 4, 1))
    model.zero_grad()
    value = reg(model, x)
    grads = {k: g.copy() for k, g in model.grads.items()}
    for key, p in model.params.items():
        if key.rsplit(".", 1)[-1].startswith("b"):
            assert not grads[key].any(), f"bias {key} was penalised"
        else:
            check_grad(lambda: _penalty_loss(model, reg, x), p, grads[key], f"{kind} d{key}")
    weights = [p for k, p in model.params.items() if k.rsplit(".", 1)[-1].startswith("W")]
    expected = 0.3 * sum(np.abs(w).sum() for w in weights) if kind == "l1" else 0.15 * sum((w * w).sum() for w in weights)
    assert value == pytest.approx(expected, rel=1e-12)


def _jacobian_norm_by_per_sample_backprop(net, x):
    """Reference value of mean_b Σ_k ‖∂ŷ_k/∂w‖² from the network's own backward, one sample and output at a time."""
    total = 0.0
    for b in range(x.shape[0]):
        out = net.forward(x[b:b + 1])
        for k in range(out.shape[1]):
            net.zero_grad()
            net.forward(x[b:b + 1])
            e = np.zeros_like(out)
            e[0, k] = 1
            net.backward(e)
            total += sum(float(np.sum(g * g)) for key, g in net.grads.items() if key.endswith("W"))
    return total / x.shape[0]


@pytest.mark.parametrize("act,out_act,sizes", [
    ("tanh", None, [3, 4, 1]),
    ("sigmoid", None, [2, 3, 3, 1]),
    ("relu", None, [3, 5, 2]),
    ("leaky_relu", "sigmoid", [2, 4, 2]),
    ("tanh", "tanh", [1, 1, 1]),
])
def test_gradient_norm_penalty_value_and_exact_gradient(act, out_act, sizes, check_grad):
    rng = np.random.default_rng(2)
    net = mlp(sizes, act, out_act, rng=rng)
    x = rng.normal(size=(4, sizes[0]))
    lam = 0.7
    value = gradient_norm_penalty(net, x, lam, accumulate=False)
    assert value == pytest.approx(lam * _jacobian_norm_by_per_sample_backprop(net, x), rel=1e-12)

    net.zero_grad()
    gradient_norm_penalty(net, x, lam)
    grads = {k: g.copy() for k, g in net.grads.items()}
    f = lambda: gradient_norm_penalty(net, x, lam, accumulate=False)  # noqa: E731
    for key, p in net.params.items():
        check_grad(f, p, grads[key], f"grad-penalty({act}) d{key}")


def test_gradient_norm_penalty_on_the_mlp_forecaster(check_grad):
    rng = np.random.default_rng(3)
    model = MLPForecaster(window=5, hidden_size=[4, 3], rng=rng)
    x = rng.normal(size=(3, 5, 1))
    y = rng.normal(size=(3, 1))
    reg = Regularization(l1=0.01, l2=0.02, grad_penalty=0.5)
    model.zero_grad()
    objective(model, x, y, "mse", reg)
    grads = {k: g.copy() for k, g in model.grads.items()}

    def total():
        saved = {k: g.copy() for k, g in model.grads.items()}
        value = objective(model, x, y, "mse", reg)[0]
        for k, g in model.grads.items():
            g[...] = saved[k]
        return value

    for key, p in model.params.items():
        check_grad(total, p, grads[key], f"objective+all penalties d{key}")


def test_gradient_norm_penalty_rejects_recurrent_models_and_needs_x():
    model = RecurrentForecaster("rnn", 3, rng=0)
    with pytest.raises(ValueError, match="supports Dense networks"):
        Regularization(grad_penalty=0.1)(model, np.zeros((1, 2, 1)))
    with pytest.raises(ValueError, match="needs the model input"):
        Regularization(grad_penalty=0.1)(mlp([2, 1]))


def test_regularization_strengths_are_validated():
    with pytest.raises(ValueError, match="l2 must be a finite number >= 0"):
        Regularization(l2=-1.0)
    with pytest.raises(ValueError, match="grad_penalty"):
        Regularization(grad_penalty=float("nan"))


def test_objective_adds_penalty_to_the_data_loss():
    rng = np.random.default_rng(4)
    model = RecurrentForecaster("lstm", 3, rng=rng)
    x, y = rng.normal(size=(2, 4, 1)), rng.normal(size=(2, 1))
    total, data = objective(model, x, y, "mae", Regularization(l2=0.1))
    penalty = 0.05 * sum(float((p * p).sum()) for k, p in model.params.items() if k.rsplit(".", 1)[-1].startswith("W"))
    assert data == pytest.approx(mae(model.forward(x)[0], y)[0])
    assert total == pytest.approx(data + penalty)
