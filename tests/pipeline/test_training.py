"""Training: reproducible, best validation epoch kept, early stopping, divergence named by epoch."""
import numpy as np
import pytest

from flows.core.config import RunConfig
from flows.core.training import TrainingDiverged, evaluate_loss, train, weights_hash

from .helpers import cut


@pytest.fixture(scope="module")
def small_windows():
    rng = np.random.default_rng(0)
    t = np.arange(700)
    values = 100 + 10 * np.sin(t / 15) + np.cumsum(rng.normal(scale=0.3, size=t.size))
    return cut(values, window=20, test_size=60)


def _cfg(**kw):
    base = dict(window=20, test_size=60, hidden_size=8, epochs=15, lr=0.01, log_every=5, target="level")
    return RunConfig.resolve(None, {**base, **kw})


def fit(cfg, windows, **kw):
    return train(windows, cfg.model, cfg.training, **kw)


@pytest.mark.parametrize("model", ["rnn", "gru", "lstm", "mlp"])
def test_same_seed_same_weights_and_hash(model, small_windows):
    a = fit(_cfg(model=model, seed=3), small_windows)
    b = fit(_cfg(model=model, seed=3), small_windows)
    c = fit(_cfg(model=model, seed=4), small_windows)
    assert a.weights_sha256 == b.weights_sha256 == weights_hash(b.model)
    assert a.weights_sha256 != c.weights_sha256
    assert a.history["train_loss"] == b.history["train_loss"]
    assert a.history["val_loss"][-1] < a.history["val_loss"][0]


def test_history_and_best_epoch_weights_are_kept(small_windows):
    seen = []
    result = fit(_cfg(epochs=12), small_windows, on_epoch=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == list(range(1, 13))
    assert set(seen[0][1]) == {"train_loss", "val_loss", "grad_norm", "saturation", "epoch_seconds"}
    assert all(0 <= m["saturation"] <= 1 for _, m in seen)
    best = int(np.argmin(result.history["val_loss"])) + 1
    assert result.best_epoch == best
    # the model holds the best epoch's weights: its validation loss is the best one seen
    assert evaluate_loss(result.model, small_windows.val.X, small_windows.val.y, "mse") == pytest.approx(
        result.best_val_loss, rel=1e-5)


def test_early_stopping_patience(small_windows):
    result = fit(_cfg(epochs=200, patience=3, lr=0.05), small_windows)
    assert result.stopped_early and result.epochs_run < 200
    assert result.epochs_run - result.best_epoch == 3


def test_shuffled_mini_batches_are_seeded(small_windows):
    a = fit(_cfg(batch_size=64, epochs=3, seed=1), small_windows)
    b = fit(_cfg(batch_size=64, epochs=3, seed=1), small_windows)
    full = fit(_cfg(epochs=3, seed=1), small_windows)
    assert a.weights_sha256 == b.weights_sha256 != full.weights_sha256


def test_divergence_raises_naming_the_epoch(small_windows):
    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch 1: "):
        fit(_cfg(lr=1e30, grad_clip=0, epochs=5, model="mlp", hidden_size=64), small_windows)


def test_float64_training_keeps_float64(small_windows):
    w64 = cut(small_windows.values, np.float64, window=20, test_size=60)
    result = fit(_cfg(dtype="float64", epochs=2), w64)
    assert all(p.dtype == np.float64 for p in result.model.params.values())
