"""Warm starts (``--init champion``): training from given weights, deciding whether the champion's fit tonight's
model, and reading them from the registry."""
import tempfile
from pathlib import Path

import numpy as np
import pytest

from flows.core.composite import Ensemble, LocalModels
from flows.core.config import RunConfig
from flows.core.model_io import read_forecaster, save_forecaster, warm_start_weights
from flows.core.training import build, evaluate_loss, train, train_one
from flows.core.windowing import make_windows, window_panel

from .test_panels import panel

SHORT = dict(n_values=600, window=20, test_size=60, hidden_size=8, epochs=30, lr=0.01, seed=1, target="level")


def resolve(**kw):
    return RunConfig.resolve(None, {**SHORT, **kw})


def sp500_windows(sp500, cfg):
    return make_windows(sp500.tail(cfg.data.n_values).values, cfg.windows, np.dtype(cfg.model.dtype))


@pytest.fixture(scope="module")
def windows(sp500):
    return sp500_windows(sp500, resolve())


@pytest.fixture(scope="module")
def trained(windows):
    cfg = resolve()
    return train(windows, cfg.model, cfg.training)


def fresh(cfg, w, seed: int = 0):
    return build(cfg.model, w, np.random.default_rng(seed))


def saved(model, w, tmp_path) -> tuple[dict, dict]:
    """``model`` through a real save: the config dict and weights a champion would hand back."""
    return read_forecaster(save_forecaster(model, w, tmp_path / "saved"))


def val_loss(model, w) -> float:
    return evaluate_loss(model, w.val.X, w.val.y, "mse")


# ----------------------------------------------------------------------------------------------
# Training from given weights
# ----------------------------------------------------------------------------------------------
def test_training_from_trained_weights_starts_where_they_left_off(windows, trained):
    """One epoch at a tiny learning rate barely moves the weights: its validation loss is the trained model's,
    far below a cold start's from the same seed."""
    cfg = resolve(epochs=1, lr=1e-7)
    warm = train_one(windows, cfg.model, cfg.training, init=trained.model.state_dict())
    cold = train_one(windows, cfg.model, cfg.training)
    assert warm.history["val_loss"][0] == pytest.approx(trained.best_val_loss, rel=1e-3)
    assert cold.history["val_loss"][0] > 5 * warm.history["val_loss"][0]
    assert warm.weights_sha256 != trained.weights_sha256   # it did train: one step, however small


def test_starting_from_the_seeds_own_weights_changes_nothing(windows):
    """``init`` = the weights the seed draws anyway: the same weights at the end, bit for bit, so loading does not
    disturb the generator (the shuffled batches are the same); ``init=None`` is the unchanged path."""
    cfg = resolve(epochs=4, batch_size=64)
    plain = train_one(windows, cfg.model, cfg.training)
    again = train_one(windows, cfg.model, cfg.training, init=None)
    same_start = train_one(windows, cfg.model, cfg.training,
                           init=fresh(cfg, windows, cfg.training.seed).state_dict())
    other_start = train_one(windows, cfg.model, cfg.training, init=fresh(cfg, windows, seed=99).state_dict())
    assert plain.weights_sha256 == again.weights_sha256 == same_start.weights_sha256
    assert plain.history == {**same_start.history, "epoch_seconds": plain.history["epoch_seconds"]}
    assert other_start.weights_sha256 != plain.weights_sha256


def test_each_ensemble_member_starts_from_its_own_weights(windows):
    cfg = resolve(ensemble=2, epochs=10)
    ensemble = train(windows, cfg.model, cfg.training)
    tiny = resolve(ensemble=2, epochs=1, lr=1e-7)
    warm = train(windows, tiny.model, tiny.training, init=ensemble.model.state_dict())
    assert isinstance(warm.model, Ensemble) and len(warm.model) == 2
    for before, after in zip(ensemble.model.models, warm.model.models):
        assert val_loss(after, windows) == pytest.approx(val_loss(before, windows), rel=1e-3)
    members = [m.state_dict()["head.W"] for m in warm.model.models]
    assert not np.allclose(members[0], members[1], atol=1e-3)   # not one member's weights twice
    with pytest.raises(ValueError, match="state dict mismatch"):   # one network's weights do not fit an ensemble
        train(windows, tiny.model, tiny.training, init=ensemble.model.models[0].state_dict())


def test_resume_and_init_together_are_refused(windows, trained):
    from flows.core.checkpoint import Checkpoint

    cfg = resolve(epochs=1)
    ckpt = Checkpoint(epoch=1, model={}, optimizer={}, rng={}, best_val_loss=1.0, best_epoch=1, best_model={},
                      since_best=0, history={}, elapsed=0.0)
    for fit in (train, train_one):
        with pytest.raises(ValueError, match="resume .* and init .* exclude each other"):
            fit(windows, cfg.model, cfg.training, resume=ckpt, init=trained.model.state_dict())


# ----------------------------------------------------------------------------------------------
# Whether the champion's weights fit tonight's model
# ----------------------------------------------------------------------------------------------
def test_the_same_architecture_gets_the_saved_weights(windows, trained, tmp_path):
    config, weights = saved(trained.model, windows, tmp_path)
    state, reason = warm_start_weights(config, weights, fresh(resolve(), windows))
    assert reason == "" and state.keys() == trained.model.state_dict().keys()
    for k, v in trained.model.state_dict().items():
        np.testing.assert_array_equal(state[k], v)


@pytest.mark.parametrize("tonight,named", [
    (dict(hidden_size=12), ["an rnn with hidden size 8", "an rnn with hidden size 12"]),
    (dict(model="gru", hidden_size=24), ["the champion is an rnn with hidden size 8",
                                         "tonight's model is a gru with hidden size 24"]),
    (dict(horizon=3), ["output size 1", "output size 3"]),
    (dict(dtype="float64"), ["dtype float32", "dtype float64"]),
])
def test_another_architecture_is_refused_naming_the_difference(sp500, windows, trained, tmp_path, tonight, named):
    config, weights = saved(trained.model, windows, tmp_path)
    cfg = resolve(**tonight)
    state, reason = warm_start_weights(config, weights, fresh(cfg, sp500_windows(sp500, cfg)))
    assert state is None
    for words in named:
        assert words in reason


def test_the_window_matters_to_an_mlp_and_not_to_a_recurrent_network(sp500, tmp_path):
    """An MLP's first layer is as wide as the window; a recurrent network reads a window of any length."""
    for kind, fits in (("mlp", False), ("rnn", True)):
        cfg20, cfg30 = resolve(model=kind), resolve(model=kind, window=30)
        w20, w30 = sp500_windows(sp500, cfg20), sp500_windows(sp500, cfg30)
        config, weights = saved(fresh(cfg20, w20), w20, tmp_path / kind)
        state, reason = warm_start_weights(config, weights, fresh(cfg30, w30))
        assert (state is not None) == fits, reason
        if not fits:
            assert reason == "the champion is an mlp with window 20; tonight's model is an mlp with window 30"


def test_an_ensemble_round_trips_and_another_layout_is_refused(windows, tmp_path):
    cfg = resolve()
    two = Ensemble([fresh(cfg, windows, seed=k) for k in range(2)])
    config, weights = saved(two, windows, tmp_path)
    state, reason = warm_start_weights(config, weights, Ensemble([fresh(cfg, windows, seed=7 + k) for k in range(2)]))
    assert reason == "" and sorted(state) == sorted(two.state_dict())
    np.testing.assert_array_equal(state["m1/rnn.W_hh"], two.models[1].params["rnn.W_hh"])
    assert warm_start_weights(config, weights, fresh(cfg, windows)) == (
        None, "the champion is an ensemble of 2 networks; tonight's model is one network")
    three = Ensemble([fresh(cfg, windows, seed=k) for k in range(3)])
    assert warm_start_weights(config, weights, three)[1] == (
        "the champion is an ensemble of 2 networks; tonight's model is an ensemble of 3 networks")


def test_per_series_networks_need_the_same_series(tmp_path):
    cfg = RunConfig.resolve(None, dict(window=6, horizon=3, test_size=2, hidden_size=4))
    values, offsets, times, ids = panel(lengths=(60, 48))
    w = window_panel(values, offsets, cfg.windows, np.float32, times, "MS", None, ids)
    local = LocalModels([fresh(cfg, w, seed=k) for k in range(2)])
    config, weights = saved(local, w, tmp_path)
    tonight = LocalModels([fresh(cfg, w, seed=5 + k) for k in range(2)])
    state, reason = warm_start_weights(config, weights, tonight, series=w.ids)
    assert reason == "" and sorted(state) == sorted(local.state_dict())
    assert warm_start_weights(config, weights, tonight, series=["b", "a"])[1].endswith(
        "(the same series in another order)")
    assert warm_start_weights(config, weights, tonight, series=["a", "z"])[1] == (
        "the champion's per-series networks are of other series than tonight's (tonight adds ['z'] and drops ['b'])")
    assert warm_start_weights(config, weights, fresh(cfg, w))[1] == (
        "the champion is one network per series (2 series); tonight's model is one network")
    with pytest.raises(ValueError, match="series=windows.ids"):
        warm_start_weights(config, weights, tonight)


def test_weights_of_another_shape_are_refused_naming_the_parameter(windows, trained, tmp_path):
    config, weights = saved(trained.model, windows, tmp_path)
    state, reason = warm_start_weights(config, {**weights, "head.b": np.zeros(2)}, fresh(resolve(), windows))
    assert state is None and reason == ("the champion's weights do not fit tonight's model: head.b is (2,) in the "
                                        "champion, (1,) tonight")
    assert warm_start_weights({**config, "format_version": 99}, weights, fresh(resolve(), windows))[0] is None


# ----------------------------------------------------------------------------------------------
# The champion's weights from the registry
# ----------------------------------------------------------------------------------------------
def test_the_champions_weights_come_back_from_the_registry(windows, trained):
    from mlflow import MlflowClient

    from flows.runtime import tracking

    name = "warm-start-model"
    with tempfile.TemporaryDirectory() as tmp, tracking.run("warm-start") as run:
        model_dir = save_forecaster(trained.model, windows, Path(tmp) / "model")
        config, weights = read_forecaster(model_dir)
        example = windows.values[-windows.window:][None, :]
        version = tracking.log_model(run, model_dir, example, np.zeros((1, windows.horizon)), name)
    assert tracking.champion_weights(name) is None   # registered, but no champion yet
    MlflowClient().set_registered_model_alias(name, tracking.CHAMPION, version)
    got_version, got_config, got_weights = tracking.champion_weights(name)
    assert (got_version, got_config) == (version, config)
    assert got_weights.keys() == weights.keys()
    for k, v in weights.items():
        np.testing.assert_array_equal(got_weights[k], v)
        assert got_weights[k].dtype == v.dtype
    # and they start tonight's training where the champion left off
    state, reason = warm_start_weights(got_config, got_weights, fresh(resolve(), windows))
    cfg = resolve(epochs=1, lr=1e-7)
    warm = train_one(windows, cfg.model, cfg.training, init=state)
    assert reason == "" and warm.history["val_loss"][0] == pytest.approx(trained.best_val_loss, rel=1e-3)


def test_no_registered_model_means_no_champion():
    from flows.runtime import tracking

    assert tracking.champion_weights("never-registered") is None


def test_models_logged_from_several_threads_leave_no_stand_in_module_behind(windows, trained):
    """MLflow loads a model-from-code with a stand-in ``dbutils`` module in ``sys.modules``, put back
    afterwards; two threads doing it at once (a backfill's concurrent nights) restored each other's stand-in
    for good, and anything that then walks ``sys.modules`` met an object that is not a module."""
    import sys
    import threading

    from mlflow import MlflowClient

    from flows.runtime import tracking

    n = 4
    barrier, errors = threading.Barrier(n), []

    def log(i):
        try:
            with tempfile.TemporaryDirectory() as tmp, tracking.run("threads") as run:
                model_dir = save_forecaster(trained.model, windows, Path(tmp) / "model")
                example = windows.values[-windows.window:][None, :]
                barrier.wait()
                tracking.log_model(run, model_dir, example, np.zeros((1, windows.horizon)), f"threads-{i}")
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=log, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert "dbutils" not in sys.modules, sys.modules["dbutils"]
    logged = MlflowClient().search_model_versions("name LIKE 'threads-%'")
    assert sorted((v.name, int(v.version)) for v in logged) == [(f"threads-{i}", 1) for i in range(n)]
