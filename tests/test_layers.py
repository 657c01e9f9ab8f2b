"""Dense, Activation, Sequential: gradients, parameter counts, state dicts."""
import numpy as np
import pytest

from nncore import Activation, Dense, Sequential, mlp


@pytest.mark.parametrize("shape", [(1, 1, 1), (4, 3, 2), (2, 5, 7)], ids=lambda s: "B%dI%dO%d" % s)
def test_dense_gradients_match_finite_differences(shape, check_grad):
    B, I, O = shape
    rng = np.random.default_rng(0)
    layer = Dense(I, O, rng=rng)
    x = rng.normal(size=(B, I))
    R = rng.normal(size=(B, O))
    f = lambda: float(np.sum(layer.forward(x) * R))  # noqa: E731
    f()
    dx = layer.backward(R)
    check_grad(f, x, dx, "dense dx")
    check_grad(f, layer.params["W"], layer.grads["W"], "dense dW")
    check_grad(f, layer.params["b"], layer.grads["b"], "dense db")


def test_dense_accepts_leading_batch_dimensions(check_grad):
    rng = np.random.default_rng(1)
    layer = Dense(3, 2, rng=rng)
    x = rng.normal(size=(2, 4, 3))
    R = rng.normal(size=(2, 4, 2))
    f = lambda: float(np.sum(layer.forward(x) * R))  # noqa: E731
    f()
    dx = layer.backward(R)
    assert dx.shape == x.shape
    check_grad(f, layer.params["W"], layer.grads["W"], "dense 3-d dW")


def test_dense_layout_and_pytorch_init():
    layer = Dense(5, 3, rng=0)
    assert layer.params["W"].shape == (3, 5) and layer.params["b"].shape == (3,)
    assert np.abs(layer.params["W"]).max() <= 1 / np.sqrt(5)
    x = np.arange(10.0).reshape(2, 5)
    np.testing.assert_allclose(layer.forward(x), x @ layer.params["W"].T + layer.params["b"])


def test_gradients_accumulate_until_zero_grad():
    rng = np.random.default_rng(2)
    layer = Dense(3, 2, rng=rng)
    x, R = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    layer.forward(x)
    layer.backward(R)
    once = layer.grads["W"].copy()
    layer.forward(x)
    layer.backward(R)
    np.testing.assert_allclose(layer.grads["W"], 2 * once)
    layer.zero_grad()
    assert not layer.grads["W"].any() and not layer.grads["b"].any()


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "relu", "leaky_relu"])
def test_sequential_gradients_match_finite_differences(act, check_grad):
    rng = np.random.default_rng(3)
    net = mlp([3, 4, 4, 2], act, rng=rng)
    x = rng.normal(size=(5, 3))
    R = rng.normal(size=(5, 2))
    f = lambda: float(np.sum(net.forward(x) * R))  # noqa: E731
    f()
    dx = net.backward(R)
    check_grad(f, x, dx, f"mlp({act}) dx")
    for name, p in net.params.items():
        check_grad(f, p, net.grads[name], f"mlp({act}) d{name}")


def test_source_example_networks_parameter_counts():
    """The source text's 3→4→2 network has 26 parameters and 3→4→4→1 has 41."""
    assert mlp([3, 4, 2]).num_params() == 26
    assert mlp([3, 4, 4, 1]).num_params() == 41
    by_hand = Sequential([Dense(3, 4), Activation("sigmoid"), Dense(4, 4), Activation("relu"), Dense(4, 1)])
    assert by_hand.num_params() == 41


def test_sequential_keys_follow_torch_sequential_numbering():
    net = mlp([3, 4, 1], "tanh")
    assert list(net.params) == ["0.W", "0.b", "2.W", "2.b"]
    assert net.params["0.W"] is net.layers[0].params["W"]  # a view of the layers' arrays, not a copy


def test_state_dict_round_trip_and_validation():
    a, b = mlp([3, 4, 1], rng=0), mlp([3, 4, 1], rng=1)
    b.load_state_dict(a.state_dict())
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    with pytest.raises(ValueError, match="missing keys"):
        b.load_state_dict({"0.W": a.params["0.W"]})
    bad = a.state_dict()
    bad["0.W"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match="shape"):
        b.load_state_dict(bad)
    bad = a.state_dict()
    bad["2.b"] = np.array([np.nan])
    before = b.state_dict()
    with pytest.raises(ValueError, match="non-finite"):
        b.load_state_dict(bad)
    for k in before:  # a rejected state dict leaves the model untouched
        np.testing.assert_array_equal(b.params[k], before[k])


def test_mixed_dtypes_are_rejected():
    with pytest.raises(ValueError, match="share one dtype"):
        Sequential([Dense(2, 2, dtype=np.float32), Dense(2, 1, dtype=np.float64)])
    with pytest.raises(ValueError, match="float32 or float64"):
        Dense(2, 2, dtype=np.float16)
    with pytest.raises(ValueError, match="expected float32"):
        Dense(2, 2, dtype=np.float32).forward(np.zeros((1, 2)))


def test_integer_input_is_converted_to_the_layer_dtype():
    layer = Dense(2, 1, dtype=np.float32, rng=0)
    assert layer.forward([[1, 2]]).dtype == np.float32


def test_unknown_activation_layer_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: identity, leaky_relu, relu, sigmoid, tanh"):
        Activation("gelu")
