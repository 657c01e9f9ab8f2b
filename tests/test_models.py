"""Forecasters, and training: every public class takes optimizer steps; XOR; a sequence task; seeds."""
import numpy as np
import pytest

from nncore import (GRU, LSTM, MODELS, RNN, SGD, Activation, Adam, Dense, LinearForecaster, MLPForecaster,
                    RecurrentForecaster, Regularization, Sequential, build_model, clip_grad_norm, mlp, mse, objective)
from nncore.recurrent import kernel_available

KINDS = ["rnn", "gru", "lstm"]


@pytest.fixture(params=["numpy", "cython"])
def backend(request):
    """Recurrent-model tests run on the NumPy reference and on the compiled kernel (fused step included)."""
    return request.param


def recurrent(kind, backend, *args, **kwargs):
    """A RecurrentForecaster on ``backend``; skipped when that kernel is not built."""
    if backend == "cython" and not kernel_available(kind):
        pytest.skip(f"no compiled {kind} kernel")
    return RecurrentForecaster(kind, *args, backend=backend, **kwargs)


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
        # the same keywords with covariates: 3 input channels, 4 future inputs
        model = entry(hidden_size=8, window=30, input_size=3, output_size=2, future_size=4, dtype=np.float32, rng=0,
                      backend="numpy")
        pred, _ = model.forward(np.zeros((2, 30, 3), np.float32), future=np.zeros((2, 4), np.float32))
        assert pred.shape == (2, 2)
        assert entry.multiply_adds(kind, 30, 8, 3, 2, 4) > entry.multiply_adds(kind, 30, 8, 3, 2) \
            > entry.multiply_adds(kind, 30, 8, 1, 2)
    # per window: the recurrent kinds scale with their gates (1, 3, 4); the MLP sees the window once;
    # the linear model has no hidden layer
    assert costs["gru"] / costs["rnn"] == pytest.approx(3, rel=0.01)
    assert costs["lstm"] / costs["rnn"] == pytest.approx(4, rel=0.01)
    assert costs["linear"] < costs["mlp"] < costs["rnn"]
    assert costs["linear"] == 3 * 30 * 1  # 30 inputs, one output, no hidden layer
    for kind in ("mlp", "linear"):
        with pytest.raises(ValueError, match=f"model kind '{kind}' needs the window length"):
            MODELS[kind](hidden_size=3)


@pytest.mark.parametrize("kind", list(MODELS))
def test_config_rebuilds_the_same_architecture(kind):
    model = build_model(kind, hidden_size=5, window=8, rng=0)
    clone = build_model(rng=1, **model.config)
    assert clone.config == model.config
    assert {k: v.shape for k, v in clone.params.items()} == {k: v.shape for k, v in model.params.items()}


def test_unknown_model_kind_lists_valid_kinds():
    with pytest.raises(ValueError, match="valid kinds: rnn, gru, lstm, mlp, linear$"):
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
    m = LinearForecaster(5, input_size=2, dtype=dtype, rng=rng)
    cases.append(("LinearForecaster", m, lambda x, m=m: m.forward(x)[0], m.backward, seq_x, y))
    # with known-in-advance inputs: the future enters every forward pass
    future = rng.normal(size=(6, 4)).astype(dtype)
    for m in (RecurrentForecaster("gru", 3, input_size=2, future_size=4, dtype=dtype, rng=rng),
              MLPForecaster(5, 4, input_size=2, future_size=4, dtype=dtype, rng=rng),
              LinearForecaster(5, input_size=2, future_size=4, dtype=dtype, rng=rng)):
        cases.append((f"{type(m).__name__}(future)", m, lambda x, m=m: m.forward(x, future=future)[0], m.backward,
                      seq_x, y))
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
@pytest.mark.parametrize("input_size, future_size", [(1, 0), (3, 6)], ids=["univariate", "covariates+future"])
def test_loss_and_grad_fused_kernel_equals_forward_backward(kind, dtype, input_size, future_size):
    """On the compiled backend loss_and_grad runs the fused kernel; it must match the layer-by-layer path.

    With future inputs the kernel's head sees W_h and the target y − future W_fᵀ; the loss, every
    gradient (dW_f included) and the state must still be those of the plain path. Two steps, the
    second from the carried state, so the gradients are checked accumulated (``+=``) as well.
    """
    if not kernel_available(kind):
        pytest.skip(f"no compiled {kind} kernel")
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 37, 25, input_size)).astype(dtype)
    y = rng.normal(size=(2, 37, 2)).astype(dtype)
    future = rng.normal(size=(2, 37, future_size)).astype(dtype) if future_size else [None, None]
    sizes = dict(input_size=input_size, output_size=2, future_size=future_size, dtype=dtype, rng=2)
    ref = RecurrentForecaster(kind, 7, backend="numpy", **sizes)
    fast = RecurrentForecaster(kind, 7, backend="cython", **sizes)
    assert fast.rnn.fused_train_step is not None and ref.rnn.fused_train_step is None
    state_ref = state_fast = None
    for step in range(2):
        loss_ref, state_ref = ref.loss_and_grad(x[step], y[step], state=state_ref, future=future[step])
        loss_fast, state_fast = fast.loss_and_grad(x[step], y[step], state=state_fast, future=future[step])
    tol = dict(rtol=0, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-6)
    assert loss_fast == pytest.approx(loss_ref, rel=1e-12 if dtype == np.float64 else 1e-5)
    assert len(state_fast) == len(state_ref) == (2 if kind == "lstm" else 1)
    for a, b in zip(state_fast, state_ref):
        np.testing.assert_allclose(a, b, **tol)
    assert fast.head.grads["W"].shape == (2, 7 + future_size)
    for key in ref.grads:
        scale = float(np.abs(ref.grads[key]).max())
        np.testing.assert_allclose(fast.grads[key], ref.grads[key], rtol=tol["rtol"],
                                   atol=max(tol["atol"], 1e-5 * scale) if dtype == np.float32 else tol["atol"],
                                   err_msg=key)


# ----------------------------------------------------------------------------------------------
# Covariates: input_size > 1 and known-in-advance inputs for the horizon (future_size > 0).
# ----------------------------------------------------------------------------------------------
def _covariate_batch(rng, B=4, T=5, I=3, F=4, O=2):
    """x (B, T, I), future (B, F), y (B, O), float64."""
    return rng.normal(size=(B, T, I)), rng.normal(size=(B, F)), rng.normal(size=(B, O))


def _check_model_gradients(model, x, future, y, check_grad, name):
    """Finite differences of the MSE against ``backward`` (dx, every parameter) and against
    ``loss_and_grad`` (the fused kernel on the compiled backend)."""
    f = lambda: mse(model.forward(x, future=future)[0], y)[0]  # noqa: E731
    model.zero_grad()
    pred, _ = model.forward(x, future=future)
    dx = model.backward(mse(pred, y)[1])
    assert dx.shape == x.shape
    check_grad(f, x, dx, f"{name} dx")
    for key, p in model.params.items():
        check_grad(f, p, model.grads[key], f"{name} d{key}")
    model.zero_grad()
    loss, _ = model.loss_and_grad(x, y, future=future)
    assert loss == pytest.approx(f(), rel=1e-12)
    for key, p in model.params.items():
        check_grad(f, p, model.grads[key], f"{name} loss_and_grad d{key}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("future_size", [0, 4])
def test_forecaster_with_covariates_gradients_match_finite_differences(kind, future_size, backend, check_grad):
    rng = np.random.default_rng(10)
    model = recurrent(kind, backend, 4, input_size=3, output_size=2, future_size=future_size, rng=rng)
    x, future, y = _covariate_batch(rng, F=future_size)
    future = future if future_size else None
    assert model.params["head.W"].shape == (2, 4 + future_size)
    _check_model_gradients(model, x, future, y, check_grad, f"{kind} I=3 F={future_size} ({backend})")


@pytest.mark.parametrize("kind", KINDS)
def test_forecaster_head_reads_the_last_state_and_the_future(kind, backend):
    """ŷ = h_T W_hᵀ + future W_fᵀ + b with head.W = [W_h | W_f]: the equation written out."""
    rng = np.random.default_rng(11)
    model = recurrent(kind, backend, 5, input_size=3, output_size=2, future_size=6, rng=rng)
    x, future, _ = _covariate_batch(rng, F=6)
    pred, state = model.forward(x, future=future)
    W, b = model.params["head.W"], model.params["head.b"]
    np.testing.assert_allclose(pred, state[0] @ W[:, :5].T + future @ W[:, 5:].T + b, rtol=1e-13)
    pred_other, state_other = model.forward(x, future=future + 1.0)
    np.testing.assert_array_equal(state_other[0], state[0])  # the future is not an input of the recurrent layer
    np.testing.assert_allclose(pred_other - pred, np.broadcast_to(W[:, 5:].sum(axis=1), pred.shape), rtol=1e-12)


@pytest.mark.parametrize("future_size", [0, 4])
def test_mlp_forecaster_with_covariates_gradients_match_finite_differences(future_size, check_grad):
    rng = np.random.default_rng(12)
    model = MLPForecaster(window=5, hidden_size=[6, 3], input_size=3, output_size=2, future_size=future_size, rng=rng)
    x, future, y = _covariate_batch(rng, F=future_size)
    future = future if future_size else None
    assert model.params["mlp.0.W"].shape == (6, 5 * 3 + future_size)
    _check_model_gradients(model, x, future, y, check_grad, f"mlp I=3 F={future_size}")
    if future_size:  # the MLP's input is [flatten(x), future]
        z = np.concatenate([x.reshape(4, -1), future], axis=1)
        np.testing.assert_array_equal(model.forward(x, future=future)[0], model.mlp.forward(z))


@pytest.mark.parametrize("input_size, future_size", [(1, 0), (3, 0), (3, 4)])
def test_linear_forecaster_gradients_match_finite_differences(input_size, future_size, check_grad):
    rng = np.random.default_rng(13)
    model = LinearForecaster(5, input_size=input_size, output_size=2, future_size=future_size, rng=rng)
    x, future, y = _covariate_batch(rng, I=input_size, F=future_size)
    future = future if future_size else None
    _check_model_gradients(model, x, future, y, check_grad, f"linear I={input_size} F={future_size}")
    # ŷ = [flatten(x), future] Wᵀ + b, the weights of flatten(x) in x's own (t, i) order
    W, b = model.params["dense.W"], model.params["dense.b"]
    expected = np.einsum("bti,oti->bo", x, W[:, :5 * input_size].reshape(2, 5, input_size)) + b
    if future_size:
        expected += future @ W[:, 5 * input_size:].T
    np.testing.assert_allclose(model.forward(x, future=future)[0], expected, rtol=1e-12)


def test_linear_forecaster_kind_state_and_saturation():
    model = build_model("linear", hidden_size=99, window=6, input_size=2, output_size=3, rng=0)
    assert isinstance(model, LinearForecaster) and model.kind == "linear"
    assert not model.stateful and not MODELS["linear"].stateful
    pred, state = model.forward(np.ones((4, 6, 2)))
    assert pred.shape == (4, 3) and state == ()
    assert np.isnan(model.saturation(state))
    assert sorted(model.params) == ["dense.W", "dense.b"] and model.num_params() == 3 * 12 + 3
    # hidden_size is accepted like every kind's, and ignored
    assert model.state_dict().keys() == build_model("linear", hidden_size=2, window=6, input_size=2, output_size=3,
                                                    rng=0).state_dict().keys()
    assert "hidden_size" not in model.config


@pytest.mark.parametrize("kind", list(MODELS))
def test_future_inputs_are_checked(kind):
    """Missing, unexpected, mis-shaped or mis-typed ``future`` is a ValueError naming the expected
    shape, from forward and from loss_and_grad (the fused kernel path on the default backend)."""
    rng = np.random.default_rng(14)
    model = build_model(kind, hidden_size=3, window=5, input_size=2, output_size=2, future_size=4, rng=0)
    plain = build_model(kind, hidden_size=3, window=5, input_size=2, output_size=2, rng=0)
    x, future, y = _covariate_batch(rng, T=5, I=2, F=4)
    cases = [
        (model, None, r"built with future_size=4: pass future=\.\.\. of shape \(B, 4\)"),
        (model, future[:, :3], r"future \(B, 4\) must have last dimension 4, got shape \(4, 3\)"),
        (model, future[:3], r"future \(B, 4\) has shape \(3, 4\), expected \(4, 4\)"),
        (model, future[:, :, None], r"future \(B, 4\) must have 2 dimensions"),
        (model, future.astype(np.float32), r"future \(B, 4\) has dtype float32, expected float64"),
        (model, future.ravel(), r"must have 2 dimensions, got shape \(16,\)"),
        (plain, future, r"built with future_size=0 and takes no future inputs, got future of shape \(4, 4\)"),
    ]
    for m, fut, match in cases:
        with pytest.raises(ValueError, match=match):
            m.forward(x, future=fut)
        with pytest.raises(ValueError, match=match):
            m.loss_and_grad(x, y, future=fut)
        assert not any(g.any() for g in m.grads.values())  # nothing accumulated before the error
    model.loss_and_grad(x, y, future=future.astype(np.int64))  # integers convert, like x
    with pytest.raises(ValueError, match="future_size must be an integer >= 0"):
        build_model(kind, hidden_size=3, window=5, future_size=-1)


@pytest.mark.parametrize("kind", list(MODELS))
def test_config_with_future_inputs_round_trips(kind):
    rng = np.random.default_rng(15)
    model = build_model(kind, hidden_size=5, window=8, input_size=3, output_size=2, future_size=6, rng=0)
    assert model.config["future_size"] == 6 and model.config["input_size"] == 3
    clone = build_model(rng=0, **model.config)
    assert clone.config == model.config
    assert {k: v.shape for k, v in clone.params.items()} == {k: v.shape for k, v in model.params.items()}
    x, future, _ = _covariate_batch(rng, T=8, I=3, F=6)
    np.testing.assert_array_equal(clone.forward(x, future=future)[0], model.forward(x, future=future)[0])
    # without future inputs the config is what it was before future_size existed
    plain = build_model(kind, hidden_size=5, window=8, input_size=3, output_size=2, future_size=0, rng=0)
    assert "future_size" not in plain.config
    assert build_model(rng=1, **plain.config).config == plain.config


def test_configs_saved_before_future_inputs_still_build():
    saved = {"rnn": {"kind": "rnn", "hidden_size": 24, "input_size": 1, "output_size": 1, "dtype": "float64"},
             "mlp": {"kind": "mlp", "window": 30, "hidden_size": 24, "input_size": 1, "output_size": 1,
                     "activation": "tanh", "dtype": "float64"}}
    for config in saved.values():
        model = build_model(rng=0, **config)
        assert model.config == config and model.future_size == 0


def test_gradient_norm_penalty_with_future_inputs_on_the_mlp_forecaster(check_grad):
    """objective(..., future=) carries the future into the loss and into the penalty's input."""
    rng = np.random.default_rng(16)
    model = MLPForecaster(window=5, hidden_size=4, input_size=2, future_size=3, rng=rng)
    x, future, y = _covariate_batch(rng, B=3, T=5, I=2, F=3, O=1)
    reg = Regularization(l2=0.02, grad_penalty=0.5)
    model.zero_grad()
    objective(model, x, y, "mse", reg, future=future)
    grads = {k: g.copy() for k, g in model.grads.items()}

    def total():
        saved = {k: g.copy() for k, g in model.grads.items()}
        value = objective(model, x, y, "mse", reg, future=future)[0]
        for k, g in model.grads.items():
            g[...] = saved[k]
        return value

    for key, p in model.params.items():
        check_grad(total, p, grads[key], f"objective+penalties with future d{key}")
    with pytest.raises(ValueError, match="pass future="):
        reg(model, x)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("future_size", [0, 6])
def test_predict_is_forward_for_inference(kind, dtype, future_size, backend):
    """``predict`` (the inference kernel with the head fused, on the compiled backend) gives forward's prediction
    and state, carried state included, and keeps no cache: a backward after it is refused."""
    rng = np.random.default_rng(13)
    model = recurrent(kind, backend, 7, input_size=3, output_size=2, future_size=future_size, dtype=dtype, rng=rng)
    x = rng.normal(size=(37, 11, 3)).astype(dtype)
    future = rng.normal(size=(37, future_size)).astype(dtype) if future_size else None
    tol = dict(rtol=0, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    state_f = state_p = None
    for _ in range(2):
        pred_f, state_f = model.forward(x, state_f, future=future)
        pred_p, state_p = model.predict(x, state_p, future=future)
        assert pred_p.dtype == np.dtype(dtype) and pred_p.shape == (37, 2)
        np.testing.assert_allclose(pred_p, pred_f, **tol)
        assert len(state_p) == len(state_f)
        for a, b in zip(state_p, state_f):
            np.testing.assert_array_equal(a, b)   # the same arithmetic: the same bits
    fresh = recurrent(kind, backend, 7, input_size=3, output_size=2, future_size=future_size, dtype=dtype, rng=1)
    fresh.predict(x, future=future)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        fresh.backward(np.ones((37, 2), dtype))
    # between a forward and its backward, a prediction on other windows changes nothing
    model.zero_grad()
    pred, _ = model.forward(x[:5], future=None if future is None else future[:5])
    model.backward(np.ones_like(pred))
    want = {k: g.copy() for k, g in model.grads.items()}
    model.zero_grad()
    model.forward(x[:5], future=None if future is None else future[:5])
    model.predict(x[5:], future=None if future is None else future[5:])
    model.backward(np.ones_like(pred))
    for k, g in model.grads.items():
        np.testing.assert_array_equal(g, want[k], err_msg=k)


def test_window_models_predict_as_they_forward():
    rng = np.random.default_rng(14)
    x, future = rng.normal(size=(9, 5, 2)), rng.normal(size=(9, 3))
    for model in (MLPForecaster(5, 4, input_size=2, output_size=2, future_size=3, rng=1),
                  LinearForecaster(5, input_size=2, output_size=2, future_size=3, rng=1)):
        np.testing.assert_array_equal(model.predict(x, future=future)[0], model.forward(x, future=future)[0])
