"""The op table: MIL op type -> numpy kernel.

A kernel is ``fn(args, op) -> array | tuple[array, ...]`` where ``args`` maps every
input name of the op (defaults included) to its value: a numpy array, a Python
scalar/str/bool for consts, a list of arrays for tuple inputs (``concat``'s
``values``), or None for an absent optional input. ``op`` is the pymil Operation
(for its output types); kernels must not read runtime values from it.

Kernels compute in float32 (fp16 inputs arrive as float32 arrays holding fp16
values); the evaluator casts every result to the dtype the program gives the
output var, rounding through float16 where that dtype is fp16.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

Kernel = Callable[[Mapping[str, Any], Any], Any]
KERNELS: dict[str, Kernel] = {}


class UnsupportedOpError(NotImplementedError):
    """The program holds an op the reference evaluator has no kernel for."""

    def __init__(self, op_type: str, name: str = "", where: str = ""):
        self.op_type = op_type
        location = f" (op {name!r}{' in ' + where if where else ''})" if name else ""
        super().__init__(
            f"the CoreML reference evaluator does not implement MIL op '{op_type}'{location}; "
            f"known ops: {', '.join(sorted(KERNELS))}")


def kernel(*op_types: str) -> Callable[[Kernel], Kernel]:
    """Register ``fn`` as the kernel of each MIL op type in ``op_types``."""

    def register(fn: Kernel) -> Kernel:
        for op_type in op_types:
            if op_type in KERNELS:
                raise ValueError(f"kernel for {op_type!r} registered twice")
            KERNELS[op_type] = fn
        return fn

    return register


def supported_ops() -> list[str]:
    """Every MIL op type the evaluator can run (constexpr_* ops included)."""
    from edgesr.coreml_eval import ops_elementwise, ops_nn, ops_quant, ops_tensor  # noqa: F401

    return sorted(KERNELS)


# Small shared helpers -------------------------------------------------------------

def f32(value: Any) -> np.ndarray:
    """``value`` as a float32 array (no copy when it already is one)."""
    return np.asarray(value, dtype=np.float32)


def axis_list(axes: Any, rank: int) -> tuple[int, ...]:
    """Normalised (non-negative) axes; None means every axis."""
    if axes is None:
        return tuple(range(rank))
    values = np.atleast_1d(np.asarray(axes)).astype(int).tolist()
    return tuple(sorted(a % rank if rank else 0 for a in values))


def scalar(value: Any) -> Any:
    """A 0-d/1-element const as a Python scalar."""
    array = np.asarray(value)
    return array.reshape(-1)[0].item() if array.size == 1 else array
