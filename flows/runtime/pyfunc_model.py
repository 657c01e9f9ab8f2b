"""MLflow "model from code": the pyfunc wrapper of a saved forecaster (no pickle anywhere).

Logged with ``mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"model_dir": ...})``.
Input: recent history as a DataFrame ``unique_id, ds, y`` (at least ``window`` rows per series; a model with
covariates also reads their columns, and ``horizon`` rows after each series' last value with ``y`` empty and the
known-in-advance covariates filled) → output the forecasts DataFrame ``unique_id, ds, step, yhat``; or, for a
model of one series without covariates, raw
windows in original units, an array (n, window) → the next ``horizon`` values of each, (n, horizon).
"""
import mlflow
import numpy as np
import pandas as pd

from flows.core.model_io import forecast_frame, load_forecaster


class ForecasterModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.forecaster = load_forecaster(context.artifacts["model_dir"])

    # MLflow hands a DataFrame (the column signature of a panel model) or an array (the tensor signature of a
    # one-series model); a pandas or NumPy hint tells it the signature is the logged one, not inferred from the hint
    def predict(self, context, model_input: pd.DataFrame, params=None):
        if isinstance(model_input, pd.DataFrame) and "unique_id" in model_input.columns:
            return forecast_frame(self.forecaster, model_input)
        return self.forecaster.predict(np.asarray(model_input, dtype=np.float64))


mlflow.models.set_model(ForecasterModel())
