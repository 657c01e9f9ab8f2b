"""Checkpoints: resuming gives the uninterrupted run's weights; a killed run registers nothing."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flows.core import checkpoint
from flows.core.config import RunConfig
from flows.core.training import train
from flows.core.windowing import make_windows

ROOT = Path(__file__).resolve().parents[2]


def _windows(sp500, cfg):
    return make_windows(sp500.tail(cfg.data.n_values).values, cfg.windows, np.dtype(cfg.model.dtype))


def resolve_config(**kw):
    return RunConfig.resolve(None, kw)


@pytest.mark.parametrize("model,optimizer,batch_size", [("rnn", "adam", None), ("lstm", "adam", 64),
                                                        ("gru", "sgd", 100), ("mlp", "adam", 50)])
def test_resume_from_a_checkpoint_ends_with_the_same_weights(sp500, tmp_path, model, optimizer, batch_size):
    """Through a real save/load round trip; shuffled mini-batches make the RNG state matter."""
    cfg = resolve_config(n_values=600, window=15, test_size=40, hidden_size=5, epochs=12, checkpoint_every=5,
                         model=model, optimizer=optimizer, batch_size=batch_size, lr=0.01, seed=3)
    w = _windows(sp500, cfg)
    saved = []
    key = cfg.training_key()
    full = train(w, cfg.model, cfg.training,
                 on_checkpoint=lambda ck: saved.append(checkpoint.save(ck, tmp_path / f"ck{ck.epoch}.npz", key)))
    assert [p.name for p in saved] == ["ck5.npz", "ck10.npz"]
    for path in saved:
        ck = checkpoint.load(path, key)
        resumed = train(w, cfg.model, cfg.training, resume=ck)
        assert resumed.weights_sha256 == full.weights_sha256, f"resumed after epoch {ck.epoch}"
        assert resumed.best_epoch == full.best_epoch and resumed.history["val_loss"] == full.history["val_loss"]


def test_a_checkpoint_of_other_parameters_is_refused(sp500, tmp_path):
    cfg = resolve_config(n_values=600, window=15, test_size=40, hidden_size=5, epochs=6, checkpoint_every=5)
    saved = []
    train(_windows(sp500, cfg), cfg.model, cfg.training,
          on_checkpoint=lambda ck: saved.append(checkpoint.save(ck, tmp_path / "ck.npz", cfg.training_key())))
    other = resolve_config(n_values=600, window=15, test_size=40, hidden_size=5, epochs=6, checkpoint_every=5, lr=0.02)
    with pytest.raises(checkpoint.CheckpointError, match="other training parameters"):
        checkpoint.load(saved[0], other.training_key())
    (tmp_path / "bad.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match="unreadable"):
        checkpoint.load(tmp_path / "bad.npz")


KILL_ARGS = ["--source", "sp500", "--n-values", "900", "--window", "20", "--test-size", "60", "--hidden-size", "6",
             "--epochs", "60", "--checkpoint-every", "10", "--log-every", "10", "--seed", "5",
             "--experiment", "kill-test"]


@pytest.mark.flow
@pytest.mark.fault(fault="SIGKILL of the pipeline process mid-training",
                   did="no model version registered, the MLflow run left unfinished with its last checkpoint; "
                       "`--resume latest` continued from it",
                   kept="the champion; the resumed run ends with the uninterrupted run's weights (same SHA-256)")
def test_a_killed_run_registers_nothing_and_resumes_to_the_same_weights(harness, seeded_cache):
    from mlflow import MlflowClient

    from flows.nightly import nightly

    c = MlflowClient()
    # the champion of the model the killed run trains (other seed: a different training key)
    champion = nightly(overrides=_flow_args(KILL_ARGS, seed=6, model_name="kill-model"))
    reference = nightly(overrides=_flow_args(KILL_ARGS, model_name="kill-reference"))  # never interrupted
    ref_hash = c.get_run(reference.run_id).data.tags["weights_sha256"]

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "flows.nightly", *KILL_ARGS, "--model-name", "kill-model"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "checkpoint after epoch 20" in line:
                os.killpg(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)

    exp = c.get_experiment_by_name("kill-test")
    killed = c.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'")
    assert len(killed) == 1, [r.info.status for r in c.search_runs([exp.experiment_id])]
    assert [int(v.version) for v in c.search_model_versions("name = 'kill-model'")] == [1]
    assert str(c.get_model_version_by_alias("kill-model", "champion").version) == champion.version == "1"

    resumed = nightly(overrides=_flow_args(KILL_ARGS, model_name="kill-model", resume="latest"))
    run = c.get_run(resumed.run_id)
    assert run.data.tags["resumed_from"] == killed[0].info.run_id and run.data.tags["resumed_after_epoch"] == "20"
    assert run.data.tags["weights_sha256"] == ref_hash
    assert c.get_run(killed[0].info.run_id).info.status == "KILLED"
    assert sorted(int(v.version) for v in c.search_model_versions("name = 'kill-model'")) == [1, 2]


def _flow_args(argv: list[str], **extra) -> dict:
    args = {argv[i][2:].replace("-", "_"): argv[i + 1] for i in range(0, len(argv), 2)}
    for k in ("n_values", "window", "test_size", "hidden_size", "epochs", "checkpoint_every", "log_every", "seed"):
        args[k] = int(args[k])
    return {**args, **extra}
