import numpy as np
import pytest

from nncore.activations import ACTIVATIONS, get_activation, sigmoid
from nncore.gradcheck import numerical_gradient, relative_error

NAMES = ["sigmoid", "tanh", "relu", "leaky_relu"]


def _points(rng, name):
    z = rng.normal(scale=2.0, size=(5, 7))
    if name in ("relu", "leaky_relu"):  # keep finite differences away from the kink at 0
        z[np.abs(z) < 0.1] += 0.5
    return z


@pytest.mark.parametrize("name", NAMES + ["identity"])
def test_first_derivative_matches_finite_differences(name, check_grad):
    act = get_activation(name)
    z = _points(np.random.default_rng(0), name)
    w = np.random.default_rng(1).normal(size=z.shape)
    # f = Σ w ⊙ act(z), so ∂f/∂z = w ⊙ act'(z)
    check_grad(lambda: float(np.sum(w * act(z))), z, w * act.df(z, act(z)), f"{name}'")


@pytest.mark.parametrize("name", NAMES + ["identity"])
def test_second_derivative_matches_finite_differences(name, check_grad):
    act = get_activation(name)
    z = _points(np.random.default_rng(2), name)
    w = np.random.default_rng(3).normal(size=z.shape)
    check_grad(lambda: float(np.sum(w * act.df(z, act(z)))), z, w * act.d2f(z, act(z)), f"{name}''")


def test_leaky_relu_slope_is_a_parameter():
    z = np.array([-2.0, -0.5, 0.5, 3.0])
    default = get_activation("leaky_relu")
    steep = get_activation("leaky_relu", slope=0.2)
    np.testing.assert_array_equal(default(z), [-0.02, -0.005, 0.5, 3.0])
    np.testing.assert_allclose(steep(z), [-0.4, -0.1, 0.5, 3.0])
    np.testing.assert_allclose(steep.df(z, steep(z)), [0.2, 0.2, 1.0, 1.0])


def test_relu_values_and_subgradient_at_zero():
    relu = get_activation("relu")
    z = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(relu(z), [0.0, 0.0, 2.0])
    np.testing.assert_array_equal(relu.df(z, relu(z)), [0.0, 0.0, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_stable_at_extremes(dtype):
    z = np.array([-1000.0, -100.0, 0.0, 100.0, 1000.0], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = sigmoid(z)
    assert s.dtype == dtype
    assert np.all(np.isfinite(s))
    np.testing.assert_array_equal(s[[0, 2, 4]], np.array([0.0, 0.5, 1.0], dtype=dtype))
    # the stable form agrees with the textbook one where the latter does not overflow
    mid = np.linspace(-30, 30, 61)
    np.testing.assert_allclose(sigmoid(mid), 1 / (1 + np.exp(-mid)), rtol=1e-15, atol=1e-300)


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError) as exc:
        get_activation("swish")
    for name in ACTIVATIONS:
        assert name in str(exc.value)


def test_registry_has_the_source_activations():
    assert set(NAMES) <= set(ACTIVATIONS)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_preserve_dtype(name, dtype):
    act = get_activation(name)
    z = np.linspace(-3, 3, 11).astype(dtype)
    a = act(z)
    assert a.dtype == dtype and act.df(z, a).dtype == dtype and act.d2f(z, a).dtype == dtype


def test_numerical_gradient_rejects_float32():
    with pytest.raises(ValueError, match="float64"):
        numerical_gradient(lambda: 0.0, np.zeros(3, dtype=np.float32))


def test_checker_rejects_a_wrong_gradient():
    """The checker can fail: a wrong tanh derivative and a slightly perturbed one are both flagged."""
    z = np.random.default_rng(0).normal(size=(4, 3))
    f = lambda: float(np.sum(np.tanh(z)))  # noqa: E731
    numeric = numerical_gradient(f, z)
    right = 1 - np.tanh(z) ** 2
    wrong = 1 - np.tanh(z)  # a classic slip: forgot to square the saved output
    slightly_off = right * (1 + 1e-5 * np.random.default_rng(1).normal(size=z.shape))
    assert relative_error(right, numeric) < 1e-6
    assert relative_error(wrong, numeric) > 1e-2
    assert relative_error(slightly_off, numeric) > 1e-6
