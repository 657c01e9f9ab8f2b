"""Parameters: presets, overrides, validation before any work, the CLI generated from the specs."""
import subprocess
import sys

import pytest

from flows.core.config import PARAMETERS, PRESETS, SPECS, ConfigError, RunConfig, parse_value, value_type
from flows.nightly import _parser, main
from nncore import BACKENDS, LOSSES, MODELS, OPTIMIZERS


def resolve_config(preset=None, **overrides):
    return RunConfig.resolve(preset, overrides)

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_notebook_preset_is_the_source_protocol_and_flags_override_it():
    cfg = resolve_config("notebook")
    w = cfg.windows
    assert (cfg.data.n_values, w.window, w.test_size, w.train_size) == (7000, 240, 300, 4900)
    t = cfg.training
    assert (cfg.model.hidden_size, t.lr, t.epochs, t.batch_size, t.loss, cfg.windows.target) == \
        (24, 0.03, 500, None, "mse", "return")
    cfg = resolve_config("notebook", epochs=5, model="lstm", grad_clip=0)
    assert (cfg.training.epochs, cfg.model.model, cfg.windows.window, cfg.training.grad_clip) == (5, "lstm", 240, None)
    assert (cfg.origin("epochs"), cfg.origin("window"), cfg.origin("seed")) == ("given", "preset", "default")


@pytest.mark.parametrize("overrides,pattern", [
    ({"window": 0}, r"parameter window=0: must be an integer >= 1"),
    ({"window": -5}, r"parameter window=-5"),
    ({"horizon": 1.5}, r"parameter horizon=1.5"),
    ({"model": "transformer"}, r"parameter model='transformer': unknown value; valid: rnn, gru, lstm, mlp"),
    ({"lr": -0.1}, r"parameter lr=-0.1: learning rate must be a finite number > 0"),
    ({"lr": float("inf")}, r"parameter lr=inf"),
    ({"epochs": 0}, r"parameter epochs=0"),
    ({"target": "log"}, r"parameter target='log'"),
    ({"dtype": "float16"}, r"parameter dtype='float16'"),
    ({"val_fraction": 1.0}, r"parameter val_fraction=1.0"),
    ({"seed": -1}, r"parameter seed=-1"),
    ({"source": " "}, r"parameter source=' '"),
    ({"fill": "mean"}, r"parameter fill='mean': unknown value; valid: none, ffill, interpolate"),
    ({"optimizer": "rmsprop"}, r"parameter optimizer='rmsprop': unknown value; valid: adam, sgd"),
    ({"checkpoint_every": -1}, r"parameter checkpoint_every=-1"),
    ({"stat_baselines": "prophet"}, r"parameter stat_baselines='prophet': unknown baseline prophet"),
])
@pytest.mark.fault(fault="bad parameters (window ≤ 0, unknown model kind or fill method, negative or infinite learning "
                         "rate, unknown statistical baseline, …; 16 cases)",
                   did="rejected before any work: 'parameter NAME=VALUE: problem'; the CLI exits 2",
                   kept="everything: no flow run, no MLflow run, no download")
def test_bad_parameters_are_rejected_with_the_parameter_named(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        resolve_config(**overrides)


def test_unknown_preset_and_parameter():
    with pytest.raises(ValueError, match="unknown preset; valid: notebook"):
        resolve_config("paper")
    with pytest.raises(ValueError, match="unknown parameters: windw"):
        resolve_config(windw=3)


def test_values_from_text_take_the_parameter_type():
    """A UI form or ``--param`` may send text; an integer where a float is expected is the same run."""
    assert resolve_config(window="30", lr="0.5").windows.window == 30
    assert resolve_config(grad_clip=1).training_key() == resolve_config(grad_clip=1.0).training_key()
    assert (value_type("max_gap"), value_type("lr"), value_type("resume")) == (int, float, str)
    with pytest.raises(ConfigError, match=r"parameter epochs='many': not a valid int"):
        parse_value("epochs", "many")


def test_the_training_key_ignores_where_and_how_often_a_run_is_logged():
    base = resolve_config()
    for name, value in (("experiment", "other"), ("model_name", "other"), ("log_every", 3), ("checkpoint_every", 5),
                        ("resume", "latest")):
        assert resolve_config(**{name: value}).training_key() == base.training_key(), name
    for name, value in (("seed", 1), ("lr", 0.02), ("source", "x.csv"), ("window", 30), ("dtype", "float64"),
                        ("ensemble", 3), ("per_series", True), ("stat_baselines", "none")):
        changed = resolve_config(**{name: value}).training_key() != base.training_key()
        assert changed == (name != "stat_baselines"), name


def test_parameters_added_later_keep_the_earlier_training_keys():
    """A version registered before --ensemble and --per-series existed is still this run's version: the notebook
    preset's key as the commit before them (bf4146d) computed it."""
    assert resolve_config("notebook", model="rnn").training_key() == \
        "c406abd272ff7d3b0c0f77fb459ddd2df9ae6d6744899f19646d3e4d89c45382"
    assert resolve_config("notebook", model="rnn", ensemble=1, per_series=False).training_key() == \
        resolve_config("notebook", model="rnn").training_key()


def test_choices_come_from_the_registries():
    assert (PARAMETERS["model"][1].metadata["choices"], PARAMETERS["loss"][1].metadata["choices"],
            PARAMETERS["optimizer"][1].metadata["choices"], PARAMETERS["backend"][1].metadata["choices"]) == \
        (MODELS, LOSSES, OPTIMIZERS, BACKENDS)


def test_help_lists_every_parameter_grouped_by_spec():
    out = subprocess.run([sys.executable, "-m", "flows.nightly", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in PARAMETERS:
        assert "--" + name.replace("_", "-") in out.stdout
    for section, spec in SPECS.items():
        assert f"{section} ({spec.__name__}" in out.stdout
    assert "{rnn,gru,lstm,mlp,linear}" in out.stdout  # the model registry's kinds are the choices


def test_cli_rejects_bad_parameters_before_any_work(capsys):
    assert main(["--window", "0"]) == 2
    assert "parameter window=0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parser().parse_args(["--epochs", "many"])
    with pytest.raises(SystemExit):
        _parser().parse_args(["--model", "transformer"])
    args = _parser().parse_args(["--hidden-size", "8", "--grad-clip", "0", "--preset", "notebook"])
    assert {k: v for k, v in vars(args).items() if k in PARAMETERS} == {"hidden_size": 8, "grad_clip": 0.0}


def test_every_preset_is_valid():
    for name in PRESETS:
        assert resolve_config(name).preset == name


def test_the_cli_reports_bad_data_before_any_run_starts(tmp_path, capsys):
    """A local file with bad data fails the command at once: no flow run, no MLflow run, exit 1."""
    from mlflow import MlflowClient

    from flows.runtime import tracking

    bad = tmp_path / "bad.csv"
    bad.write_text("ds,y\n2020-01-01,1\n2020-01-02,oops\n")
    assert main(["--source", str(bad), "--experiment", "cli-bad-data"]) == 1
    assert f"error: {bad} line 3: value 'oops' in column 'y' is not a number" in capsys.readouterr().err
    assert MlflowClient(tracking.tracking_uri()).get_experiment_by_name("cli-bad-data") is None
