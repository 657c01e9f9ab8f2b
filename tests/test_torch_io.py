"""PyTorch state-dict conversion, and parity with PyTorch where torch happens to be installed.

The conversion tests need only NumPy. The parity tests (marked ``torch``) compare forward values,
gradients and optimizer updates with PyTorch's own modules; they are skipped without torch.
"""
import numpy as np
import pytest

from nncore import (Adam, GRU, LSTM, RNN, SGD, MLPForecaster, RecurrentForecaster, load_torch_state_dict, mlp,
                    to_torch_state_dict)

KINDS = {"rnn": RNN, "gru": GRU, "lstm": LSTM}


def test_forecaster_names_round_trip():
    model = RecurrentForecaster("lstm", 4, rng=0)
    state = to_torch_state_dict(model, {"rnn": "lstm", "head": "fc"})
    assert sorted(state) == ["fc.bias", "fc.weight", "lstm.bias_hh_l0", "lstm.bias_ih_l0",
                             "lstm.weight_hh_l0", "lstm.weight_ih_l0"]
    assert state["lstm.weight_ih_l0"].shape == (16, 1)
    other = RecurrentForecaster("lstm", 4, rng=1)
    load_torch_state_dict(other, state)  # prefixes detected from the keys
    for k in model.params:
        np.testing.assert_array_equal(other.params[k], model.params[k])


def test_sequential_names_match_torch_sequential_numbering():
    net = mlp([3, 4, 1], "relu")
    assert sorted(to_torch_state_dict(net)) == ["0.bias", "0.weight", "2.bias", "2.weight"]


def test_loading_converts_dtype_and_reports_mismatches():
    model = RecurrentForecaster("rnn", 3, dtype=np.float32, rng=0)
    state = {k: v.astype(np.float64) for k, v in to_torch_state_dict(model).items()}
    state["head.num_batches_tracked"] = np.array(0)
    load_torch_state_dict(model, state, {})
    assert all(p.dtype == np.float32 for p in model.params.values())
    del state["rnn.bias_hh_l0"]
    with pytest.raises(ValueError, match=r"missing \['rnn.bias_hh_l0'\]"):
        load_torch_state_dict(model, state, {})
    with pytest.raises(ValueError, match="cannot tell the recurrent layer and the head apart"):
        load_torch_state_dict(model, {"a.weight": 0, "b.weight": 0, "rnn.weight_ih_l0": 0})


# ----------------------------------------------------------------------------------------------
# Parity with PyTorch (skipped when torch is not installed)
# ----------------------------------------------------------------------------------------------
def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("kind", KINDS)
def test_recurrent_layers_match_pytorch(kind):
    torch = _torch()
    torch.manual_seed(0)
    B, T, I, H = 3, 7, 2, 5
    ref = getattr(torch.nn, kind.upper())(I, H, batch_first=True).double()
    layer = KINDS[kind](I, H, rng=0)
    load_torch_state_dict(layer, {k: v.detach().numpy() for k, v in ref.state_dict().items()}, {})
    rng = np.random.default_rng(1)
    x = rng.normal(size=(B, T, I))
    h0 = rng.normal(size=(1, B, H))
    c0 = rng.normal(size=(1, B, H))
    R = rng.normal(size=(B, T, H))
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    if kind == "lstm":
        out_t, (hT_t, cT_t) = ref(xt, (h0t, c0t))
        out, (hT, cT) = layer.forward(x, (h0[0], c0[0]))
        np.testing.assert_allclose(cT, cT_t[0].detach().numpy(), rtol=1e-12, atol=1e-14)
    else:
        out_t, hT_t = ref(xt, h0t)
        out, hT = layer.forward(x, h0[0])
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(hT, hT_t[0].detach().numpy(), rtol=1e-12, atol=1e-14)
    (out_t * torch.tensor(R)).sum().backward()
    dx = layer.backward(R)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-13)
    d0 = layer.dstate0[0] if kind == "lstm" else layer.dh0
    np.testing.assert_allclose(d0, h0t.grad.numpy()[0], rtol=1e-10, atol=1e-13)
    torch_grads = {k: p.grad.numpy() for k, p in ref.named_parameters()}
    ours = to_torch_state_dict(layer.grads)  # our gradients under torch names
    for k, g in torch_grads.items():
        np.testing.assert_allclose(ours[k], g, rtol=1e-10, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("kind", KINDS)
def test_notebook_style_pytorch_model_loads_and_predicts_the_same(kind):
    """A model with ``self.<kind>`` + ``self.fc`` on the last step, as in the source notebooks."""
    torch = _torch()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            setattr(self, kind, getattr(torch.nn, kind.upper())(1, 24, batch_first=True))
            self.fc = torch.nn.Linear(24, 1)

        def forward(self, x):
            out, _ = getattr(self, kind)(x)
            return self.fc(out[:, -1, :])

    torch.manual_seed(3)
    net = Net()
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    model = RecurrentForecaster(kind, 24, dtype=np.float32)
    load_torch_state_dict(model, state)
    x = np.random.default_rng(0).normal(size=(4, 30, 1)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.tensor(x)).numpy()
    np.testing.assert_allclose(model.forward(x)[0], expected, rtol=1e-5, atol=1e-6)


def test_mlp_forecaster_matches_pytorch_sequential():
    torch = _torch()
    torch.manual_seed(4)
    ref = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).double()
    model = MLPForecaster(6, 5)
    load_torch_state_dict(model.mlp, {k: v.numpy() for k, v in ref.state_dict().items()})
    x = np.random.default_rng(0).normal(size=(3, 6, 1))
    np.testing.assert_allclose(model.forward(x)[0], ref(torch.tensor(x[:, :, 0])).detach().numpy(), rtol=1e-13)


@pytest.mark.parametrize("opt_name", ["adam", "sgd"])
def test_optimizers_match_pytorch(opt_name):
    torch = _torch()
    model = mlp([3, 4, 1], "tanh", rng=0)
    ref = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    ref.load_state_dict({k: torch.tensor(v) for k, v in to_torch_state_dict(model).items()})
    if opt_name == "adam":
        ours, theirs = Adam(model, lr=0.03), torch.optim.Adam(ref.parameters(), lr=0.03)
    else:
        ours, theirs = SGD(model, lr=0.1, momentum=0.9), torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(1)
    for _ in range(5):
        x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 1))
        ours.zero_grad()
        pred = model.forward(x)
        model.backward(2 * (pred - y) / y.size)
        ours.step()
        theirs.zero_grad()
        torch.nn.functional.mse_loss(ref(torch.tensor(x)), torch.tensor(y)).backward()
        theirs.step()
    for k, v in ref.state_dict().items():
        np.testing.assert_allclose(to_torch_state_dict(model)[k], v.numpy(), rtol=1e-12, atol=1e-14, err_msg=k)
