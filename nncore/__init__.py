"""nncore: a small neural-network library in NumPy for recurrent forecasting.

Dense layers, activations, MSE/MAE losses with regularisation, tanh RNN / GRU / LSTM with
backpropagation through time, SGD and Adam. Every gradient is checked against finite
differences in the test suite. See the README for an example.
"""
from ._utils import DTYPES
from .activations import ACTIVATIONS, get_activation
from .layers import Activation, Dense, Layer, Module
from .losses import LOSSES, get_loss, mae, mse
from .models import MODELS, LinearForecaster, MLPForecaster, RecurrentForecaster, build_model
from .network import Sequential, mlp
from .optim import OPTIMIZERS, SGD, Adam, clip_grad_norm
from .recurrent import BACKENDS, GRU, LSTM, RNN
from .regularization import Regularization, gradient_norm_penalty, objective
from .torch_io import load_torch_state_dict, to_torch_state_dict

__all__ = [
    "ACTIVATIONS", "BACKENDS", "DTYPES", "LOSSES", "MODELS", "OPTIMIZERS",
    "Activation", "Adam", "Dense", "GRU", "LSTM", "Layer", "LinearForecaster", "MLPForecaster", "Module", "RNN",
    "RecurrentForecaster", "Regularization", "SGD", "Sequential",
    "build_model", "clip_grad_norm", "get_activation", "get_loss", "gradient_norm_penalty",
    "load_torch_state_dict", "mae", "mlp", "mse", "objective", "to_torch_state_dict",
]
__version__ = "0.1.0"
