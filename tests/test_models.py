"""Forecasters, and training: every public class takes optimizer steps; XOR; a sequence task; seeds."""
import numpy as np
import pytest

from nncore import (GRU, LSTM, MODELS, RNN, SGD, Activation, Adam, Dense, MLPForecaster, RecurrentForecaster,
                    Sequential, build_model, clip_grad_norm, mlp, mse, objective)

KINDS = ["rnn", "gru", "lstm"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("output_size", [1, 3])
def test_forecaster_gradients_match_finite_differences(kind, output_size, check_grad):
    rng = np.random.default_rng(0)
    model = RecurrentForecaster(kind, 4, input_size=2, output_size=output_size, rng=rng)
    x = rng.normal(size=(3, 5, 2))
    y = rng.normal(size=(3, output_size))
    f = lambda: mse(model.forward(x)[0], y)[0]  # noqa: E731
    model.zero_grad()
    pred, _ = model.forward(x)
    dx = model.backward(mse(pred, y)[1])
    check_grad(f, x, dx, f"{kind} forecaster dx")
    for key, p in model.params.items():
        check_grad(f, p, model.grads[key], f"{kind} forecaster d{key}")


def test_mlp_forecaster_gradients_match_finite_differences(check_grad):
    rng = np.random.default_rng(1)
    model = MLPForecaster(window=6, hidden_size=5, output_size=2, rng=rng)
    x, y = rng.normal(size=(4, 6, 1)), rng.normal(size=(4, 2))
    f = lambda: mse(model.forward(x)[0], y)[0]  # noqa: E731
    pred, state = model.forward(x)
    assert state == () and pred.shape == (4, 2) and not model.stateful
    dx = model.backward(mse(pred, y)[1])
    check_grad(f, x, dx, "mlp forecaster dx")
    for key, p in model.params.items():
        check_grad(f, p, model.grads[key], f"mlp forecaster d{key}")


@pytest.mark.parametrize("kind", KINDS)
def test_carried_state_continues_the_sequence(kind):
    """forward(window2, h=state after window1) == the last step of one pass over both windows."""
    rng = np.random.default_rng(2)
    model = RecurrentForecaster(kind, 6, rng=rng)
    x = rng.normal(size=(1, 12, 1))
    _, state = model.forward(x[:, :7])
    pred_carried, _ = model.forward(x[:, 7:], state)
    pred_full, _ = model.forward(x)
    np.testing.assert_allclose(pred_carried, pred_full, rtol=1e-13)
    pred_stateless, _ = model.forward(x[:, 7:])
    assert not np.allclose(pred_stateless, pred_full)
    # one state convention: a tuple whose first element is the hidden state
    assert isinstance(state, tuple) and len(state) == (2 if kind == "lstm" else 1) and state[0].shape == (1, 6)
    assert model.stateful and MODELS[kind].stateful


@pytest.mark.parametrize("kind", KINDS)
def test_saturation_probe_reads_the_last_state(kind):
    """Inputs scaled up drive the tanh units into saturation; zero inputs and weights keep them at 0."""
    model = RecurrentForecaster(kind, 6, rng=0)
    _, state = model.forward(np.zeros((3, 4, 1)))
    calm = model.saturation(state)
    model.rnn.params["W_ih"][...] = 50.0
    model.rnn.params["b_ih"][...] = 50.0
    if kind == "gru":  # the update gate z (rows H:2H) closed, so h_t takes the saturated candidate n_t
        model.rnn.params["W_ih"][6:12] = model.rnn.params["b_ih"][6:12] = -50.0
    _, state = model.forward(np.ones((3, 4, 1)))
    assert calm < 0.5 and model.saturation(state) > 0.5


def test_mlp_saturation_probe_and_state_free_forward():
    model = MLPForecaster(window=4, hidden_size=5, rng=0)
    model.forward(np.zeros((2, 4, 1)))
    calm = model.saturation(())
    model.mlp.layers[0].params["W"][...] = 100.0
    model.forward(np.ones((2, 4, 1)))
    assert calm < 0.5 and model.saturation(()) == 1.0
    assert np.isnan(MLPForecaster(window=4, hidden_size=5, activation="relu", rng=0).saturation(()))


def test_every_kind_builds_from_the_same_keywords_and_reports_its_cost():
    costs = {}
    for kind, entry in MODELS.items():
        model = entry(hidden_size=8, window=30, output_size=2, dtype=np.float32, rng=0, backend="numpy")
        assert model.stateful == entry.stateful
        assert model.forward(np.zeros((2, 30, 1), np.float32))[0].shape == (2, 2)
        costs[kind] = entry.multiply_adds(kind, 30, 8)
    # per window: the recurrent kinds scale with their gates (1, 3, 4); the MLP sees the window once
    assert costs["gru"] / costs["rnn"] == pytest.approx(3, rel=0.01)
    assert costs["lstm"] / costs["rnn"] == pytest.approx(4, rel=0.01)
    assert costs["mlp"] < costs["rnn"]
    with pytest.raises(ValueError, match="needs the window length"):
        MODELS["mlp"](hidden_size=3)


@pytest.mark.parametrize("kind", list(MODELS))
def test_config_rebuilds_the_same_architecture(kind):
    model = build_model(kind, hidden_size=5, window=8, rng=0)
    clone = build_model(rng=1, **model.config)
    assert clone.config == model.config
    assert {k: v.shape for k, v in clone.params.items()} == {k: v.shape for k, v in model.params.items()}


def test_unknown_model_kind_lists_valid_kinds():
    with pytest.raises(ValueError, match="valid kinds: rnn, gru, lstm, mlp"):
        build_model("transformer")
    with pytest.raises(ValueError, match="valid kinds: rnn, gru, lstm"):
        RecurrentForecaster("mlp", 3)


def test_mlp_forecaster_checks_window_shape():
    with pytest.raises(ValueError, match=r"expects windows of shape \(B, 8, 1\)"):
        MLPForecaster(8, 4).forward(np.zeros((2, 7, 1)))


# ----------------------------------------------------------------------------------------------
# Every public class trained for at least two optimizer steps, with both optimizers and dtypes.
# ----------------------------------------------------------------------------------------------
def _public_models(dtype, rng):
    """(name, module, forward(x) -> prediction, input, target) for every trainable public class."""
    seq_x = rng.normal(size=(6, 5, 2)).astype(dtype)
    flat_x = rng.normal(size=(6, 3)).astype(dtype)
    y = rng.normal(size=(6, 1)).astype(dtype)
    cases = []
    dense = Dense(3, 1, dtype=dtype, rng=rng)
    cases.append(("Dense", dense, dense.forward, dense.backward, flat_x, y))
    seq = Sequential([Dense(3, 4, dtype=dtype, rng=rng), Activation("leaky_relu", dtype=dtype, slope=0.1),
                      Dense(4, 1, dtype=dtype, rng=rng)])
    cases.append(("Sequential+Activation", seq, seq.forward, seq.backward, flat_x, y))
    for cls in (RNN, GRU, LSTM):
        layer = cls(2, 3, dtype=dtype, rng=rng)

        def fwd(x, layer=layer):  # loss on the mean over time of the outputs' first unit
            return layer.forward(x)[0][:, :, :1].mean(axis=1)

        def bwd(d, layer=layer):
            B, T, H = layer._last_shape()
            dout = np.zeros((B, T, H), dtype=dtype)
            dout[:, :, :1] = d[:, None, :] / T
            return layer.backward(dout)

        cases.append((cls.__name__, layer, fwd, bwd, seq_x, y))
    for kind in KINDS:
        m = RecurrentForecaster(kind, 3, input_size=2, dtype=dtype, rng=rng)
        cases.append((f"RecurrentForecaster({kind})", m, lambda x, m=m: m.forward(x)[0], m.backward, seq_x, y))
    m = MLPForecaster(5, [4, 3], input_size=2, dtype=dtype, rng=rng)
    cases.append(("MLPForecaster", m, lambda x, m=m: m.forward(x)[0], m.backward, seq_x, y))
    return cases


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_every_public_class_trains_for_several_steps(dtype, opt_name):
    rng = np.random.default_rng(3)
    for name, module, fwd, bwd, x, y in _public_models(dtype, rng):
        opt = SGD(module, lr=0.05, momentum=0.9) if opt_name == "sgd" else Adam(module, lr=0.01)
        losses = []
        for _ in range(4):
            opt.zero_grad()
            loss, dpred = mse(fwd(x), y)
            bwd(dpred)
            clip_grad_norm(module, 5.0)
            opt.step()
            losses.append(loss)
        final = mse(fwd(x), y)[0]
        assert np.all(np.isfinite(losses)), name
        assert final < losses[0], f"{name} ({opt_name}, {np.dtype(dtype).name}): loss {losses} -> {final}"
        assert all(p.dtype == dtype for p in module.params.values()), name
        assert all(g.dtype == dtype for g in module.grads.values()), name


def test_mlp_learns_xor():
    """2-4-1 tanh/sigmoid MLP, Adam lr 0.05, 500 full-batch steps: MSE < 1e-3, all four signs right."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    Y = np.array([[0], [1], [1], [0]], dtype=float)
    net = mlp([2, 4, 1], "tanh", "sigmoid", rng=0)
    opt = Adam(net, lr=0.05)
    for _ in range(500):
        opt.zero_grad()
        loss, _ = objective(net, X, Y)
        opt.step()
    assert loss < 1e-3
    np.testing.assert_array_equal(net.forward(X) > 0.5, Y > 0.5)


@pytest.mark.parametrize("kind", KINDS)
def test_recurrent_forecaster_learns_to_remember_the_first_value(kind):
    """Target = the first of 5 inputs, so the state must carry it: hidden 8, Adam lr 0.01,
    300 full-batch steps on 64 sequences; held-out MSE < 0.01 (the variance of the target is 1/3)."""
    rng = np.random.default_rng(0)
    model = RecurrentForecaster(kind, 8, rng=1)
    opt = Adam(model, lr=0.01)
    X = rng.uniform(-1, 1, size=(64, 5, 1))
    for _ in range(300):
        opt.zero_grad()
        objective(model, X, X[:, 0])
        opt.step()
    X_test = rng.uniform(-1, 1, size=(64, 5, 1))
    assert mse(model.forward(X_test)[0], X_test[:, 0])[0] < 0.01


@pytest.mark.parametrize("kind", list(MODELS))
def test_same_seed_gives_identical_weights_after_training(kind):
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(8, 6, 1)), rng.normal(size=(8, 1))

    def train(seed):
        model = build_model(kind, hidden_size=4, window=6, rng=seed)
        opt = Adam(model, lr=0.01)
        for _ in range(5):
            opt.zero_grad()
            objective(model, X, Y)
            opt.step()
        return model.state_dict()

    a, b, c = train(7), train(7), train(8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_loss_and_grad_fused_kernel_equals_forward_backward(kind, dtype):
    """On the compiled backend loss_and_grad runs the fused kernel; it must match the layer-by-layer path."""
    from nncore.recurrent import kernel_available

    if not kernel_available(kind):
        pytest.skip(f"no compiled {kind} kernel")
    rng = np.random.default_rng(6)
    x = rng.normal(size=(37, 25, 1)).astype(dtype)
    y = rng.normal(size=(37, 2)).astype(dtype)
    ref = RecurrentForecaster(kind, 7, output_size=2, dtype=dtype, rng=2, backend="numpy")
    fast = RecurrentForecaster(kind, 7, output_size=2, dtype=dtype, rng=2, backend="cython")
    assert fast.rnn.fused_train_step is not None and ref.rnn.fused_train_step is None
    loss_ref, state_ref = ref.loss_and_grad(x, y)
    loss_fast, state_fast = fast.loss_and_grad(x, y)
    tol = dict(rtol=0, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-6)
    assert loss_fast == pytest.approx(loss_ref, rel=1e-12 if dtype == np.float64 else 1e-5)
    assert len(state_fast) == len(state_ref) == (2 if kind == "lstm" else 1)
    for a, b in zip(state_fast, state_ref):
        np.testing.assert_allclose(a, b, **tol)
    for key in ref.grads:
        scale = float(np.abs(ref.grads[key]).max())
        np.testing.assert_allclose(fast.grads[key], ref.grads[key], rtol=tol["rtol"],
                                   atol=max(tol["atol"], 1e-5 * scale) if dtype == np.float32 else tol["atol"],
                                   err_msg=key)
