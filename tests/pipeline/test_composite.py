"""``--ensemble``: N networks from consecutive seeds, forecast by their mean; saved, loaded and served like one."""
import numpy as np
import pandas as pd
import pytest

from flows.core.composite import Ensemble, LocalModels
from flows.core.config import RunConfig
from flows.core.evaluation import evaluate, forecast_next, predict, predict_carried
from flows.core.model_io import forecast_frame, load_forecaster, save_forecaster
from flows.core.training import train
from flows.core.windowing import window_panel

from .test_panels import panel


def windows(cfg):
    values, offsets, times, ids = panel(lengths=(60, 48))
    return window_panel(values, offsets, cfg.windows, np.float32, times, "MS", None, ids), (values, offsets, times)


@pytest.mark.parametrize("kind", ["gru", "mlp"])
def test_an_ensemble_is_the_mean_of_the_networks_its_seeds_train(kind):
    base = dict(window=6, horizon=3, test_size=2, model=kind, hidden_size=4, epochs=4, seed=5)
    cfg = RunConfig.resolve(None, {**base, "ensemble": 3})
    w, _ = windows(cfg)
    result = train(w, cfg.model, cfg.training)
    assert isinstance(result.model, Ensemble) and len(result.model) == 3
    singles = [train(w, cfg.model, RunConfig.resolve(None, {**base, "seed": 5 + k}).training) for k in range(3)]
    np.testing.assert_allclose(predict(result.model, w.test.X),
                               np.mean([predict(s.model, w.test.X).astype(np.float64) for s in singles], axis=0),
                               rtol=1e-12)
    assert result.epochs_run == sum(s.epochs_run for s in singles)
    assert result.weights_sha256 not in {s.weights_sha256 for s in singles}
    out = evaluate(result.model, w)    # both modes: the carried state is one state per member
    if result.model.stateful:
        members = np.mean([predict_carried(s.model, w.test.X[w.test.series == 0], w.val.X[w.val.series == 0])
                           for s in singles], axis=0)
        np.testing.assert_allclose(w.to_levels(members, w.test.last[w.test.series == 0]),
                                   out.predictions["carried"][w.test.series == 0], rtol=1e-9)


@pytest.mark.parametrize("per_series", [False, True])
def test_an_ensemble_is_saved_loaded_and_served(tmp_path, per_series):
    from flows.core.training import combine

    cfg = RunConfig.resolve(None, dict(window=6, horizon=3, test_size=2, model="gru", hidden_size=4, epochs=3,
                                       ensemble=2, per_series=per_series))
    w, (values, offsets, times) = windows(cfg)
    if per_series:
        results = [train(w.only(s), cfg.model, cfg.training) for s in range(w.n_series)]
        model = combine(results, LocalModels([r.model for r in results])).model
    else:
        model = train(w, cfg.model, cfg.training).model
    f = forecast_next(model, w)
    loaded = load_forecaster(save_forecaster(model, w, tmp_path / "model"))
    assert loaded.config["ensemble"] == 2 and ("per_series_models" in loaded.config) == per_series
    history = pd.DataFrame({"unique_id": np.repeat(["a", "b"], 6),
                            "ds": np.concatenate([times[54:60], times[offsets[1] + 42:offsets[2]]]),
                            "y": np.concatenate([values[54:60], values[offsets[1] + 42:offsets[2]]])})
    np.testing.assert_allclose(forecast_frame(loaded, history)["yhat"], f.yhat, rtol=1e-12)


def test_an_ensemble_cannot_resume():
    from flows.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"parameter resume='r1': per-series networks and ensembles are not "
                                          r"checkpointed"):
        RunConfig.resolve(None, dict(ensemble=3, resume="r1"))
    with pytest.raises(ConfigError, match=r"parameter ensemble=0"):
        RunConfig.resolve(None, dict(ensemble=0))
