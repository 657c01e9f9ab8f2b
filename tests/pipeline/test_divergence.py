"""A learning rate that explodes training fails the run naming the epoch; clipping prevents it."""
import pytest

SETTINGS = dict(source="sp500", n_values=900, window=20, test_size=60, hidden_size=6, epochs=30, seed=1,
                optimizer="sgd", lr=1.0, experiment="divergence", model_name="divergence-model")


@pytest.mark.flow
@pytest.mark.fault(fault="a learning rate that explodes training (plain SGD, lr 1.0, no clipping)",
                   did="train_model failed: 'training diverged at epoch 13: loss …, gradient norm nan'",
                   kept="no model version; the MLflow run FAILED; the same settings with --grad-clip 1 train to the end")
def test_divergence_fails_clearly_and_clipping_prevents_it(harness, seeded_cache):
    from mlflow import MlflowClient

    from flows.runtime import tracking
    from flows.nightly import nightly

    state = nightly(overrides={**SETTINGS, "grad_clip": 0}, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=r"training diverged at epoch \d+: .*try a smaller --lr or --grad-clip"):
        state.result()
    c = MlflowClient(tracking.tracking_uri())
    assert not c.search_registered_models(filter_string="name = 'divergence-model'")
    exp = c.get_experiment_by_name("divergence")
    (failed,) = c.search_runs([exp.experiment_id])
    assert failed.info.status == "FAILED"

    clipped = nightly(overrides={**SETTINGS, "grad_clip": 1.0})
    run = c.get_run(clipped.run_id)
    assert run.data.metrics["epochs_run"] == 30 and run.data.params["grad_clip"] == "1.0"
    assert [str(v.version) for v in c.search_model_versions("name = 'divergence-model'")] == [clipped.version]
