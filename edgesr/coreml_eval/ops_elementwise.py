"""Elementwise MIL ops: binary (with numpy broadcasting, as MIL defines it), unary,
activations, comparisons and logic, ``cast``, ``clip``."""
from __future__ import annotations

import math

import numpy as np

from edgesr.coreml_eval.registry import f32, kernel, scalar

try:  # scipy is not an edgesr dependency; when present its erf is exact to float64
    from scipy.special import erf as _scipy_erf
except ImportError:  # pragma: no cover - depends on the environment
    _scipy_erf = None


def erf(x: np.ndarray) -> np.ndarray:
    """Error function; scipy's when available, else a float64 rational fit
    (Abramowitz & Stegun 7.1.26 refined: |error| < 1.2e-7, below fp32 needs here)."""
    if _scipy_erf is not None:
        return _scipy_erf(x).astype(np.float32)
    z = np.asarray(x, dtype=np.float64)
    t = 1.0 / (1.0 + 0.5 * np.abs(z))
    # Numerical Recipes erfc (Chebyshev), fractional error < 1.2e-7 everywhere.
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    erfc = t * np.exp(poly)
    return np.where(z >= 0, 1.0 - erfc, erfc - 1.0).astype(np.float32)


# Binary -------------------------------------------------------------------------------

def _binary(fn):
    def run(args, op):
        return fn(np.asarray(args["x"]), np.asarray(args["y"]))
    return run


_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.true_divide,
    "pow": np.power,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "floor_div": np.floor_divide,
    "mod": np.mod,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}
for _name, _fn in _BINARY.items():
    kernel(_name)(_binary(_fn))


# Unary --------------------------------------------------------------------------------

def _unary(fn):
    def run(args, op):
        return fn(f32(args["x"]))
    return run


def _sigmoid(x):
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


_UNARY = {
    "abs": np.abs,
    "acos": np.arccos,
    "asin": np.arcsin,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "ceil": np.ceil,
    "cos": np.cos,
    "cosh": np.cosh,
    "erf": erf,
    "exp": np.exp,
    "exp2": np.exp2,
    "floor": np.floor,
    "round": np.round,
    "sign": np.sign,
    "sin": np.sin,
    "sinh": np.sinh,
    "sqrt": np.sqrt,
    "square": np.square,
    "tan": np.tan,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "sigmoid": _sigmoid,
    "silu": lambda x: x * _sigmoid(x),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "softplus": lambda x: np.logaddexp(0.0, x),
}
for _name, _fn in _UNARY.items():
    kernel(_name)(_unary(_fn))


@kernel("identity")
def identity(args, op):
    return args["x"]


@kernel("logical_not")
def logical_not(args, op):
    return np.logical_not(args["x"])


@kernel("inverse")
def inverse(args, op):  # 1 / (x + epsilon)
    return 1.0 / (f32(args["x"]) + np.float32(scalar(args["epsilon"])))


@kernel("log")
def log(args, op):  # log(x + epsilon)
    return np.log(f32(args["x"]) + np.float32(scalar(args["epsilon"])))


@kernel("rsqrt")
def rsqrt(args, op):  # 1 / sqrt(x + epsilon)
    return 1.0 / np.sqrt(f32(args["x"]) + np.float32(scalar(args["epsilon"])))


@kernel("threshold")
def threshold(args, op):  # max(x, alpha)
    return np.maximum(f32(args["x"]), np.float32(scalar(args["alpha"])))


@kernel("clip")
def clip(args, op):  # min(max(x, alpha), beta)
    return np.minimum(np.maximum(f32(args["x"]), np.float32(scalar(args["alpha"]))),
                      np.float32(scalar(args["beta"])))


@kernel("cast")
def cast(args, op):
    # The evaluator casts to the output var's dtype; MIL's float -> int cast truncates
    # toward zero, which is what numpy's astype does.
    return np.asarray(args["x"])


# Activations with parameters ---------------------------------------------------------

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@kernel("gelu")
def gelu(args, op):
    x = f32(args["x"])
    mode = args.get("mode") or "EXACT"
    if mode == "EXACT":
        return 0.5 * x * (1.0 + erf(x / np.float32(math.sqrt(2.0))))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1.0 + np.tanh(np.float32(_SQRT_2_OVER_PI) * (x + np.float32(0.044715) * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(np.float32(1.702) * x)
    raise ValueError(f"gelu: unknown mode {mode!r}")


@kernel("leaky_relu")
def leaky_relu(args, op):
    x = f32(args["x"])
    return np.where(x >= 0, x, x * np.float32(scalar(args["alpha"])))


@kernel("elu")
def elu(args, op):
    x = f32(args["x"])
    return np.where(x > 0, x, np.float32(scalar(args["alpha"])) * (np.exp(np.minimum(x, 0)) - 1.0))


@kernel("prelu")
def prelu(args, op):  # alpha per channel, channel axis -3
    x = f32(args["x"])
    alpha = f32(args["alpha"]).reshape(-1, 1, 1)
    return np.where(x >= 0, x, x * alpha)


@kernel("linear_activation")
def linear_activation(args, op):
    return f32(args["x"]) * np.float32(scalar(args["alpha"])) + np.float32(scalar(args["beta"]))


@kernel("scaled_tanh")
def scaled_tanh(args, op):
    return np.float32(scalar(args["alpha"])) * np.tanh(f32(args["x"]) * np.float32(scalar(args["beta"])))


@kernel("sigmoid_hard")
def sigmoid_hard(args, op):
    x = f32(args["x"])
    return np.clip(np.float32(scalar(args["alpha"])) * x + np.float32(scalar(args["beta"])), 0.0, 1.0)


@kernel("softplus_parametric")
def softplus_parametric(args, op):
    x = f32(args["x"])
    alpha = f32(args["alpha"]).reshape(-1, 1, 1)
    beta = f32(args["beta"]).reshape(-1, 1, 1)
    return alpha * np.logaddexp(0.0, beta * x)


@kernel("select")
def select(args, op):
    return np.where(np.asarray(args["cond"]).astype(bool), args["a"], args["b"])
