"""Parameters: presets, overrides, validation before any work, the CLI."""
import subprocess
import sys
from dataclasses import fields

import pytest

from flows.config import PRESETS, PipelineConfig, resolve_config
from flows.nightly import _parser, main

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_notebook_preset_is_the_source_protocol_and_flags_override_it():
    cfg = resolve_config("notebook")
    assert (cfg.n_values, cfg.window, cfg.test_size, cfg.train_size) == (7000, 240, 300, 4900)
    assert (cfg.hidden_size, cfg.lr, cfg.epochs, cfg.batch_size, cfg.loss, cfg.target) == (24, 0.03, 500, None, "mse", "return")
    cfg = resolve_config("notebook", epochs=5, model="lstm", grad_clip=0)
    assert (cfg.epochs, cfg.model, cfg.window, cfg.grad_clip) == (5, "lstm", 240, None)


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
    ({"horizon": 61, "test_size": 60}, r"parameter horizon=61: larger than the test part \(60 windows"),
    ({"optimizer": "rmsprop"}, r"parameter optimizer='rmsprop': unknown value; valid: adam, sgd"),
    ({"checkpoint_every": -1}, r"parameter checkpoint_every=-1"),
])
@pytest.mark.fault(fault="bad parameters (window ≤ 0, horizon larger than the test part, unknown model kind, "
                         "negative or infinite learning rate, …; 15 cases)",
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


def test_help_lists_every_parameter():
    out = subprocess.run([sys.executable, "-m", "flows.nightly", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for f in fields(PipelineConfig):
        assert "--" + f.name.replace("_", "-") in out.stdout
    for flag in ("--source", "--date-column", "--value-column", "--model", "--hidden-size", "--window",
                 "--horizon", "--epochs", "--lr", "--seed", "--preset"):
        assert flag in out.stdout


def test_cli_rejects_bad_parameters_before_any_work(capsys):
    assert main(["--window", "0"]) == 2
    assert "parameter window=0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parser().parse_args(["--epochs", "many"])


def test_every_preset_is_valid():
    for name in PRESETS:
        assert resolve_config(name).preset == name
