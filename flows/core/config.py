"""Run configuration: five small specs, the registries they are checked against, and the presets.

A run is a :class:`RunConfig` of five frozen specs, and each stage receives only the spec it uses:

* :class:`DataSpec` — what to read (``load_series``);
* :class:`WindowSpec` — how to cut and scale it (``make_windows``);
* :class:`ModelSpec` — what to build;
* :class:`TrainSpec` — how to fit it (``train``);
* :class:`TrackingSpec` — where the run is recorded (MLflow experiment, registered model, resume).

Parameter names are unique across the specs, so one flat name space serves the command line
(``--hidden-size``), the flows' ``overrides`` and the MLflow parameters.
``RunConfig.resolve(preset, overrides)`` applies the defaults, then the preset, then the overrides,
and validates every value before any work; an error names the parameter
(``parameter NAME=VALUE: problem``). Optional counts take 0 for "none", so a flag can switch off
what a preset switched on.

Choices come from the registries of the code that uses them — ``nncore.MODELS``, ``LOSSES``,
``OPTIMIZERS``, ``BACKENDS``, ``DTYPES`` and :data:`flows.core.transforms.TRANSFORMS` — so a new entry
there is a valid value here and a choice on the command line.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import pandas as pd

from nncore import BACKENDS, DTYPES, LOSSES, MODELS, OPTIMIZERS

from .calendar import FrequencyError, parse_freq
from . import covariates, statistical
from .panel import FILLS
from .sources import redact
from .transforms import TRANSFORMS


class ConfigError(ValueError):
    """A parameter with a bad value; the message names it: ``parameter NAME=VALUE: problem``."""


# ----------------------------------------------------------------------------------------------
# Checks: each returns the problem with a value, or None
# ----------------------------------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_count(v) -> str | None:
    return None if _is_int(v) and v >= 1 else "must be an integer >= 1"


def is_seed(v) -> str | None:
    return None if _is_int(v) and v >= 0 else "must be an integer >= 0"


def is_rate(v) -> str | None:
    return None if _is_number(v) and v > 0 else "must be a finite number > 0"


def is_learning_rate(v) -> str | None:
    return None if _is_number(v) and v > 0 else "learning rate must be a finite number > 0"


def is_penalty(v) -> str | None:
    return None if _is_number(v) and v >= 0 else "must be a finite number >= 0"


def is_fraction(v) -> str | None:
    return None if _is_number(v) and 0 < v < 1 else "must be between 0 and 1"


def is_name(v) -> str | None:
    return None if isinstance(v, str) and v.strip() else "must be a non-empty string"


def is_gap(v) -> str | None:
    return None if v is None or (_is_int(v) and v >= 0) else "must be an integer >= 0 (or none: the default)"


def is_freq(v) -> str | None:
    if v is None:
        return None
    try:
        parse_freq(v)
    except FrequencyError as e:
        return str(e).split(": ", 1)[-1]
    return None


def is_flag(v) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def is_timestamp(v) -> str | None:
    try:
        pd.Timestamp(v)
    except (ValueError, TypeError):
        return "not a date or date-time (ISO: 2008-04-11 or 2008-04-11T00:00)"
    return None


def is_duration(v) -> str | None:
    try:
        d = pd.Timedelta(v)
    except (ValueError, TypeError):
        return "not a duration (36h, 3D, 2W, 90min)"
    return None if d > pd.Timedelta(0) else "must be longer than zero"


def param(default, help: str, check: Callable[[Any], str | None] | None = None, *, choices=None,
          optional: bool = False, nullable: bool = False, training: bool = True, keyed_when_set: bool = False):
    """A spec field: its help text, its check (or registry of choices), whether 0/None means "none"
    (``optional``) or None alone does (``nullable``: the check sees None), and whether it changes what is
    trained (``training=False``: where or how often it is logged). ``keyed_when_set``: a training parameter
    added after registries stored training keys enters the key only when it differs from its default, so the
    keys of earlier versions (and "unchanged" reruns) stay valid."""
    return field(default=default, metadata={"help": help, "check": check, "choices": choices, "optional": optional,
                                            "nullable": nullable, "training": training,
                                            "keyed_when_set": keyed_when_set})


class _Spec:
    """Validation shared by the specs: 0 → None for optional parameters, then each field's check."""

    def __post_init__(self):
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if meta["optional"] and (value is None or (value == 0 and not isinstance(value, bool))):
                object.__setattr__(self, f.name, None)
                continue
            if meta["choices"] is not None and value not in meta["choices"]:
                _fail(f.name, value, f"unknown value; valid: {', '.join(meta['choices'])}")
            problem = meta["check"](value) if meta["check"] else None
            if problem:
                _fail(f.name, value, problem + (" (or none)" if meta["optional"] and meta["check"] is is_rate else ""))


def _fail(name: str, value, problem: str):
    raise ConfigError(f"parameter {name}={value!r}: {problem}")


# ----------------------------------------------------------------------------------------------
# The specs
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataSpec(_Spec):
    """What to read."""

    source: str = param("sp500", "registered source name (data/sources.json), CSV or Parquet path, or http(s) URL",
                        is_name)
    date_column: str = param("ds", "name of the time column (ISO dates or date-times)", is_name)
    value_column: str = param("y", "name of the value column; several (a,b,c) or * for a wide file, one column "
                                   "per series", is_name)
    id_column: str | None = param(None, "long format: the column(s) naming each series (a or a,b)", is_name,
                                  optional=True)
    freq: str | None = param(None, "pandas frequency (B, D, W-SUN, MS, QE-DEC, YS, h, 30min, …); inferred when not "
                                   "given", is_freq, optional=True)
    max_gap: int | None = param(None, "missing periods in a row to accept (default: 5 for business days, market "
                                      "holidays; 0 otherwise)", is_gap, nullable=True)
    fill: str = param("none", "fill missing periods: none (they are an error beyond --max-gap) | ffill | "
                              "interpolate", choices=FILLS)
    n_values: int | None = param(None, "use only the last N values of each series (0: all)", is_count, optional=True)
    season: int | None = param(None, "season length in periods, for the seasonal naive baseline (default from the "
                                     "frequency: 5 business days, 7 days, 52 weeks, 12 months, 4 quarters, 24 hours, "
                                     "48 half-hours, …)", is_count, optional=True, training=False)
    past_covariates: str | None = param(None, "observed covariates: columns known only up to the forecast origin "
                                              "(comma list), extra input channels of the window", is_name,
                                        optional=True, keyed_when_set=True)
    future_covariates: str | None = param(None, "known-in-advance covariates: columns known over the horizon too "
                                                "(comma list), input channels and the model's inputs for the "
                                                "target steps", is_name, optional=True, keyed_when_set=True)
    calendar: str | None = param(None, "calendar features of the timestamps, known in advance (comma list of "
                                       "hour, dayofweek, month, dayofyear, weekend; sine/cosine pairs)",
                                 covariates.check_calendar, optional=True, keyed_when_set=True)
    as_of: str | None = param(None, "point in time: use only the values at or before this timestamp (replays a past "
                                    "night as it was; default: everything the source holds)", is_timestamp,
                              optional=True, training=False)
    max_staleness: str | None = param(None, "fail the night (and notify) when the newest value is older than this "
                                            "(a duration: 36h, 3D, 2W); measured from now, or from --as-of",
                                      is_duration, optional=True, training=False)
    stat_baselines: str = param("auto", "statistical baselines fitted on each series' history before its test "
                                        "period: auto (AutoETS when statsforecast is installed) | none | a comma "
                                        "list of ets, arima, theta", statistical.check, training=False)


@dataclass(frozen=True)
class WindowSpec(_Spec):
    """How the series is cut into windows and chronological parts, and what the model sees."""

    window: int = param(60, "input window length (values)", is_count)
    horizon: int = param(1, "values forecast per window (direct multi-step)", is_count)
    test_size: int = param(300, "number of test windows (the last ones)", is_count)
    test_stride: int = param(1, "steps between test windows, counting back from the last (48 with half-hours: one "
                                "day-ahead forecast a day)", is_count, keyed_when_set=True)
    train_size: int | None = param(None, "number of training windows; the rest before the test part is validation "
                                         "(0: use --val-fraction)", is_count, optional=True)
    val_fraction: float = param(0.2, "validation share of the non-test windows when --train-size is not given",
                                is_fraction)
    target: str = param("return", "level: min-max scaled values; delta: changes from each window's last value; "
                                  "return: log returns from it (see flows/core/transforms.py)", choices=TRANSFORMS)

    @property
    def positive_only(self) -> bool:
        """Whether the target transform needs positive values (``return`` takes logarithms)."""
        return TRANSFORMS[self.target].positive_only


@dataclass(frozen=True)
class ModelSpec(_Spec):
    """What to build."""

    model: str = param("rnn", "model kind", choices=MODELS)
    hidden_size: int = param(24, "hidden units", is_count)
    dtype: str = param("float32", "floating-point precision of the model", choices=DTYPES)
    backend: str = param("auto", "recurrent kernel (auto: the compiled one when built)", choices=BACKENDS)
    per_series: bool = param(False, "one network per series (trained as mapped Prefect tasks; on Dask with "
                                    "--dask) instead of one global network on every series' windows", is_flag,
                                    keyed_when_set=True)


@dataclass(frozen=True)
class TrainSpec(_Spec):
    """How to fit it."""

    epochs: int = param(200, "maximum number of epochs", is_count)
    optimizer: str = param("adam", "adam | sgd (plain gradient descent)", choices=OPTIMIZERS)
    lr: float = param(0.01, "learning rate", is_learning_rate)
    batch_size: int | None = param(None, "mini-batch size, shuffled each epoch (0: full batch)", is_count,
                                   optional=True)
    grad_clip: float | None = param(1.0, "clip the global gradient norm to this value (0: no clipping)", is_rate,
                                    optional=True)
    patience: int | None = param(None, "stop after this many epochs without a better validation loss (0: never)",
                                 is_count, optional=True)
    loss: str = param("mse", "training loss", choices=LOSSES)
    l1: float = param(0.0, "L1 penalty on the weights", is_penalty)
    l2: float = param(0.0, "L2 weight decay", is_penalty)
    seed: int = param(0, "random seed (initialisation and shuffling)", is_seed)
    ensemble: int = param(1, "train N networks from seeds seed … seed+N-1 and forecast with their mean (N > 1: "
                             "not checkpointed)", is_count, keyed_when_set=True)
    init: str = param("none", "starting weights: none (random, from --seed) | champion (the registered champion's "
                              "weights when its architecture and inputs match, else random with the reason logged)",
                      choices=("none", "champion"), keyed_when_set=True)
    warm_epochs: int | None = param(None, "epochs when the training starts from the champion's weights (--init "
                                          "champion; default: --epochs)", is_count, optional=True,
                                    keyed_when_set=True)
    log_every: int = param(25, "print training progress every N epochs", is_count, training=False)
    checkpoint_every: int | None = param(25, "save a training checkpoint to the MLflow run every N epochs (0: never)",
                                         is_count, optional=True, training=False)


@dataclass(frozen=True)
class TrackingSpec(_Spec):
    """Where the run is recorded."""

    experiment: str = param("nightly", "MLflow experiment name", is_name, training=False)
    model_name: str = param("nncore-forecaster", "MLflow registered model name", is_name, training=False)
    ledger_url: str | None = param(None, "the forecast ledger's database, a SQLAlchemy URL (${NAME} is read from the "
                                         "environment; default: ledger.db beside the MLflow store)", is_name,
                                   optional=True, training=False)
    notify: str | None = param(None, "Prefect notification block told when a night fails (block-type/name, e.g. "
                                     "custom-webhook/nightly-alerts; default: $NNFORECAST_NOTIFY_BLOCK)", is_name,
                               optional=True, training=False)
    figures: bool = param(True, "draw the run's figures (series, test forecast, loss curves, residuals) into MLflow "
                                "and the report (the backfill leaves them out: --no-figures)", is_flag,
                          training=False)
    score_nights: int = param(20, "realized errors: the rolling window of scored nights (metrics realized_*_last); "
                                  "a champion needs this many scored nights before promotion is by realized accuracy",
                              is_count, training=False)
    resume: str | None = param(None, "continue an interrupted run from its last checkpoint: its MLflow run id, or "
                                     "'latest' (the newest unfinished run of this experiment with the same training "
                                     "parameters)", is_name, optional=True, training=False)


#: section name -> spec class, in the order of ``--help``
SPECS: dict[str, type] = {"data": DataSpec, "windows": WindowSpec, "model": ModelSpec, "training": TrainSpec,
                          "tracking": TrackingSpec}
#: parameter name -> (section, dataclasses.Field)
PARAMETERS: dict[str, tuple[str, dataclasses.Field]] = {
    f.name: (section, f) for section, spec in SPECS.items() for f in fields(spec)}


def value_type(name: str) -> type:
    """The Python type of a parameter's values (``int`` for ``int | None``), from the spec's annotations."""
    section, f = PARAMETERS[name]
    hint = typing.get_type_hints(SPECS[section])[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def parse_value(name: str, text: str):
    """A parameter value from text (the command line, ``--set``, ``--grid``): ``int('5')`` for an integer
    parameter and so on; an error names the parameter."""
    if name not in PARAMETERS:
        raise ConfigError(f"unknown parameter {name!r}; valid: {', '.join(sorted(PARAMETERS))}")
    typ = value_type(name)
    if typ is bool:
        flag = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower())
        if flag is None:
            raise ConfigError(f"parameter {name}={text!r}: not true or false")
        return flag
    try:
        return typ(text)
    except ValueError:
        raise ConfigError(f"parameter {name}={text!r}: not a valid {typ.__name__}") from None


def _normalize(name: str, value):
    """Text to the parameter's type (from a UI form or ``--param``); an int to float where a float is expected."""
    typ = value_type(name)
    if isinstance(value, str) and typ is not str:
        return parse_value(name, value)
    if typ is float and _is_int(value):
        return float(value)
    return value


# ----------------------------------------------------------------------------------------------
# The run configuration and the presets
# ----------------------------------------------------------------------------------------------
#: The source notebooks' protocol: last 7000 values, window 240, test 300 windows, first 4900 of the
#: remaining windows train, the rest validation, hidden 24, Adam lr 0.03, 500 full-batch epochs, MSE,
#: no gradient clipping. Two deliberate differences: the transform is fitted on the training part
#: only (the notebooks' whole-series min-max scaling leaks the test period's range), and the model
#: sees log returns relative to each window's last value instead of min-max levels: with an honest
#: scaler, min-max levels at lr 0.03 without clipping train unstably and the result depends on the
#: seed (``--target level``: see the README's results).
PRESETS: dict[str, dict] = {
    "notebook": dict(n_values=7000, window=240, horizon=1, test_size=300, train_size=4900, target="return",
                     hidden_size=24, lr=0.03, epochs=500, batch_size=None, loss="mse", grad_clip=None,
                     patience=None),
}


@dataclass(frozen=True)
class RunConfig:
    """Every parameter of one run, as five specs (see the module docstring)."""

    data: DataSpec = field(default_factory=DataSpec)
    windows: WindowSpec = field(default_factory=WindowSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    training: TrainSpec = field(default_factory=TrainSpec)
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    preset: str | None = None
    #: the parameters given explicitly (for :meth:`origin`; not part of the configuration's identity)
    given: frozenset = field(default=frozenset(), compare=False, repr=False)


    @classmethod
    def resolve(cls, preset: str | None = None, overrides: dict | None = None) -> "RunConfig":
        """The defaults, then the preset's values, then ``overrides`` (flat parameter names; None = not given)."""
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        unknown = sorted(set(overrides) - set(PARAMETERS))
        if unknown:
            raise ConfigError(f"unknown parameters: {', '.join(unknown)}; valid: {', '.join(sorted(PARAMETERS))}")
        values: dict = {}
        if preset is not None:
            if preset not in PRESETS:
                _fail("preset", preset, f"unknown preset; valid: {', '.join(PRESETS)}")
            values.update(PRESETS[preset])
        values.update({k: _normalize(k, v) for k, v in overrides.items()})
        sections: dict[str, dict] = {section: {} for section in SPECS}
        for k, v in values.items():
            sections[PARAMETERS[k][0]][k] = v
        cfg = cls(**{section: SPECS[section](**kw) for section, kw in sections.items()}, preset=preset,
                  given=frozenset(overrides))
        both = set(covariates.names(cfg.data.past_covariates)) & set(covariates.names(cfg.data.future_covariates))
        if both:
            _fail("future_covariates", cfg.data.future_covariates, f"{', '.join(sorted(both))} also named in "
                  "--past-covariates: a covariate is either observed (past) or known in advance (future)")
        if cfg.model.per_series and cfg.training.init == "champion":
            _fail("init", "champion", "per-series networks do not start from the champion's weights: rerun without "
                                      "--init champion, or train one global network")
        if (cfg.model.per_series or cfg.training.ensemble > 1) and cfg.tracking.resume:
            _fail("resume", cfg.tracking.resume, "per-series networks and ensembles are not checkpointed: rerun "
                                                 "without --resume")
        return cfg

    def flat(self) -> dict:
        """Every parameter by name (what the MLflow run records), and the preset."""
        out = {k: v for section in SPECS for k, v in dataclasses.asdict(getattr(self, section)).items()}
        return {**out, "preset": self.preset}

    def public(self) -> dict:
        """:meth:`flat` fit to show (logs, tags, the Prefect UI): a source URL's secrets redacted."""
        return {**self.flat(), "source": redact(self.data.source),
                "ledger_url": None if self.tracking.ledger_url is None else redact(self.tracking.ledger_url)}

    def origin(self, name: str) -> str:
        """Where a parameter's value came from: 'default', 'preset' or 'given'."""
        if name in self.given:
            return "given"
        return "preset" if self.preset is not None and name in PRESETS[self.preset] else "default"

    def training_key(self) -> str:
        """SHA-256 of every parameter that changes what is trained (not where it is logged or how often)."""
        d = {k: v for k, v in self.flat().items() if k != "preset" and PARAMETERS[k][1].metadata["training"]
             and not (PARAMETERS[k][1].metadata["keyed_when_set"] and v == PARAMETERS[k][1].default)}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()
