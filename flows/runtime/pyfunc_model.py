"""MLflow "model from code": the pyfunc wrapper of a saved forecaster (no pickle anywhere).

Logged with ``mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"model_dir": ...})``.
Input: raw windows in original units, an array or DataFrame of shape (n, window); output: the
next ``horizon`` values of each window, (n, horizon).
"""
import mlflow
import numpy as np

from flows.core.model_io import load_forecaster


class ForecasterModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.forecaster = load_forecaster(context.artifacts["model_dir"])

    def predict(self, context, model_input: np.ndarray, params=None):
        return self.forecaster.predict(np.asarray(model_input, dtype=np.float64))


mlflow.models.set_model(ForecasterModel())
