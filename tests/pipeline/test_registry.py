"""The registry compares only like with like: versions that forecast the same data, on a scale-free score."""
import pytest

SHORT = dict(n_values=600, window=20, test_size=60, hidden_size=6, epochs=3, seed=1, experiment="registry")


@pytest.mark.flow
@pytest.mark.fault(fault="a run on another source (in other units) under the same --model-name",
                   did="not compared with the champion (what each forecasts differs): registered as a challenger, "
                       "the report saying to give the source its own --model-name",
                   kept="the first source's champion; later runs on it are compared on test MASE")
def test_a_run_on_other_data_under_the_same_model_name_never_takes_the_alias(harness, seeded_cache, tmp_path):
    """sp500 first; then the same model name on a series in other units (a thousand times larger): however
    its score compares, it is not compared, stays a challenger, and the report says why."""
    import numpy as np

    from flows.core.config import DataSpec
    from flows.core.ingest import load_series
    from flows.nightly import nightly
    from flows.runtime import tracking

    first = nightly(overrides={**SHORT, "model_name": "shared-name"})
    assert first.status == "champion"
    sp = load_series(DataSpec())
    other = tmp_path / "other.csv"
    other.write_text("ds,y\n" + "".join(f"{d},{v * 1000:.1f}\n" for d, v in zip(sp.times, sp.values)))
    second = nightly(overrides={**SHORT, "model_name": "shared-name", "source": str(other), "seed": 2})
    assert second.status == "challenger" and second.previous_version == first.version
    c = tracking.client()
    assert str(c.get_model_version_by_alias("shared-name", "champion").version) == first.version
    v2 = c.get_model_version("shared-name", second.version)
    assert v2.tags["forecast_key"].startswith(f"source={other}") and v2.tags["role"] == "challenger"
    # a third run on the first source is compared with the champion again, on test MASE
    third = nightly(overrides={**SHORT, "model_name": "shared-name", "seed": 3})
    champion = c.get_model_version_by_alias("shared-name", "champion")
    scores = {v: float(c.get_model_version("shared-name", v).tags["test_mase"]) for v in (first.version, third.version)}
    assert str(champion.version) == min(scores, key=scores.get)
    assert third.status == ("champion" if scores[third.version] < scores[first.version] else "challenger")
    assert np.isfinite(list(scores.values())).all()


def test_a_champion_registered_before_versions_were_tagged_is_read_from_its_run():
    """An older version carries no forecast_key/test_mase tags: its run's parameters and metrics stand in."""
    from flows.runtime import tracking

    c = tracking.client()
    exp = tracking.ensure_experiment(c, "registry-legacy")
    c.create_registered_model("legacy-model")
    params = {"source": "sp500", "value_column": "y", "horizon": "1"}

    def version(mase: float) -> str:
        run = c.create_run(exp)
        for k, v in params.items():
            c.log_param(run.info.run_id, k, v)
        c.log_metric(run.info.run_id, "test_mase", mase)
        return str(c.create_model_version("legacy-model", source=f"runs:/{run.info.run_id}/model",
                                          run_id=run.info.run_id).version)

    old = version(0.99)
    c.set_registered_model_alias("legacy-model", "champion", old)  # as the first release left it: no tags
    key = tracking.forecast_key({**params, "horizon": 1})
    worse = tracking.promote("legacy-model", version(1.2), 1.2, key)
    assert (worse.status, worse.previous_version, worse.previous_score, worse.note) == ("challenger", old, 0.99, "")
    better = tracking.promote("legacy-model", version(0.95), 0.95, key)
    assert better.status == "champion"
    assert str(c.get_model_version_by_alias("legacy-model", "champion").version) == better.version
