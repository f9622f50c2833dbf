"""Quantisation ops: the compile-time ``constexpr_*`` decompressions (weights stored
as int8/uint8/palettes/sparse) and the runtime ``quantize`` / ``dequantize`` of W8A8
programs.

For ``constexpr_*`` ops the arithmetic is coremltools' own: each op class (the iOS16
and the iOS18 variant of the same name are different classes) has a static
``decompress`` whose parameters are named like the op's inputs, so the evaluator
calls ``type(op).decompress`` with the input values. Only ``constexpr_cast`` has
none; it is a plain cast.
"""
from __future__ import annotations

import inspect

import numpy as np

from edgesr.coreml_eval.registry import kernel, scalar

_INTEGER_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767),
                   "uint16": (0, 65535), "int4": (-8, 7), "uint4": (0, 15)}


def _decompress(args, op):
    decompress = getattr(type(op), "decompress", None)
    if decompress is None:
        raise NotImplementedError(f"{op.op_type}: no decompress in coremltools for {type(op).__module__}")
    parameters = inspect.signature(decompress).parameters
    values = {name: args.get(name) for name in parameters}
    result = decompress(**values)
    return tuple(result) if isinstance(result, (tuple, list)) else result


for _name in ("constexpr_affine_dequantize", "constexpr_lut_to_dense", "constexpr_sparse_to_dense",
              "constexpr_blockwise_shift_scale", "constexpr_lut_to_sparse",
              "constexpr_sparse_blockwise_shift_scale"):
    kernel(_name)(_decompress)


@kernel("constexpr_cast")
def constexpr_cast(args, op):
    return np.asarray(args["source_val"])  # the evaluator casts to the output dtype


def _promote(value, data: np.ndarray, axis) -> np.ndarray:
    """A per-axis scale/zero point shaped to broadcast against ``data``."""
    array = np.asarray(value, dtype=np.float32)
    if array.ndim == 0 or array.size == 1 or axis is None:
        return array.reshape(()) if array.size == 1 else array
    if array.ndim == data.ndim:
        return array
    shape = [1] * data.ndim
    shape[int(axis) % data.ndim] = -1
    return array.reshape(shape)


@kernel("quantize")
def quantize(args, op):
    """clip(round(x / scale) + zero_point) into output_dtype's range (round half to even)."""
    x = np.asarray(args["input"], dtype=np.float32)
    axis = None if args.get("axis") is None else int(scalar(args["axis"]))
    scale = _promote(args["scale"], x, axis)
    zero = 0.0 if args.get("zero_point") is None else _promote(args["zero_point"], x, axis)
    low, high = _INTEGER_RANGES[str(args["output_dtype"])]
    return np.clip(np.round(x / scale) + zero, low, high)


@kernel("dequantize")
def dequantize(args, op):
    """(x - zero_point) * scale."""
    x = np.asarray(args["input"], dtype=np.float32)
    axis = None if args.get("axis") is None else int(scalar(args["axis"]))
    scale = _promote(args["scale"], x, axis)
    zero = 0.0 if args.get("zero_point") is None else _promote(args["zero_point"], x, axis)
    return (x - zero) * scale
