"""Run a MIL program (one function of a pymil Program) with numpy.

The function's operations are already in topological order. ``compile`` walks them
once: ``const`` values are read (fp16 constants as float32 arrays holding fp16
values), every op whose inputs are all known at load time (``constexpr_*``
decompressions, constant folds) is evaluated then, and every other op becomes a
step: its kernel, its constant arguments, the names of its runtime inputs and a
cast per output. ``run`` executes the steps and drops each value after its last use.

dtypes follow the program: after each op the result is cast to the dtype the program
gives the output var. For fp16 vars the value is rounded to float16 and held as
float32 (numpy's float16 arithmetic is slow): every op computes in float32 from
fp16-exact inputs and stores an fp16-exact result, which is fp16 storage with fp32
accumulation, as Apple's CPU and GPU kernels do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgesr.coreml_eval.registry import KERNELS, UnsupportedOpError, supported_ops

_NUMPY_DTYPES = {
    "fp32": np.float32, "fp64": np.float64, "int32": np.int32, "int64": np.int64,
    "int16": np.int16, "uint16": np.uint16, "int8": np.int8, "uint8": np.uint8,
    "int4": np.int8, "uint4": np.uint8, "uint1": np.uint8, "uint2": np.uint8,
    "uint3": np.uint8, "uint6": np.uint8, "bool": np.bool_,
}


def dtype_name(var) -> str:
    from coremltools.converters.mil.mil import types

    return types.builtin_to_string(var.dtype)


def _to_fp16(value: Any) -> np.ndarray:
    """Round to float16 (out-of-range values become +-inf, as in fp16 storage)."""
    with np.errstate(over="ignore"):
        return np.asarray(value, dtype=np.float32).astype(np.float16).astype(np.float32)


def caster(dtype: str) -> Callable[[Any], Any]:
    """The function that stores a kernel result as the program's ``dtype``."""
    if dtype == "fp16":
        return _to_fp16
    if dtype == "fp32":
        return lambda value: np.asarray(value, dtype=np.float32)
    if dtype in _NUMPY_DTYPES:
        target = _NUMPY_DTYPES[dtype]
        return lambda value: np.asarray(value).astype(target, copy=False)
    return lambda value: value  # str and other non-tensor values pass through


def _const_value(var) -> Any:
    value = var.val
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        return value
    array = np.asarray(value)
    if array.dtype.kind in "US" or array.dtype == object:
        return value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value
    return caster(dtype_name(var))(array)


@dataclass
class Step:
    op: Any
    kernel: Callable
    constants: dict[str, Any]
    # name -> var name, or name -> [(is_runtime, var name or value), ...] for tuple inputs
    runtime: dict[str, Any]
    outputs: list[str]
    casts: list[Callable]
    # var names no longer needed once this step ran
    release: list[str]


class ProgramEvaluator:
    """A compiled MIL function: ``evaluator.run({"input": array}) -> {"output": array}``."""

    def __init__(self, program, function_name: str = "main"):
        supported_ops()  # import every kernel module
        self.program = program
        self.function_name = function_name
        function = program.functions[function_name]
        self.function = function
        self.input_names = list(function.inputs)
        self.input_types = {name: dtype_name(var) for name, var in function.inputs.items()}
        self.input_shapes = {name: tuple(var.shape) for name, var in function.inputs.items()}
        self.output_names = [var.name for var in function.outputs]
        self.known: dict[str, Any] = {}
        self.steps: list[Step] = []
        self.op_types: set[str] = set()
        self._compile(function)

    # -- compilation ---------------------------------------------------------------
    def _compile(self, function) -> None:
        missing = sorted({op.op_type for op in function.operations
                          if op.op_type != "const" and op.op_type not in KERNELS})
        if missing:
            raise UnsupportedOpError(missing[0], next(op.name for op in function.operations
                                                     if op.op_type == missing[0]), self.function_name)
        runtime_names = set(self.input_names)
        for op in function.operations:
            self.op_types.add(op.op_type)
            if op.blocks:
                raise UnsupportedOpError(op.op_type + " (control flow)", op.name, self.function_name)
            if op.op_type == "const":
                self.known[op.outputs[0].name] = _const_value(op.outputs[0])
                continue
            constants: dict[str, Any] = {}
            runtime: dict[str, Any] = {}
            for name, bound in op.inputs.items():
                if isinstance(bound, (list, tuple)):
                    items = []
                    for var in bound:
                        if var.name in runtime_names:
                            items.append((True, var.name))
                        else:
                            items.append((False, self._known_value(var)))
                    if any(flag for flag, _ in items):
                        runtime[name] = items
                    else:
                        constants[name] = [value for _, value in items]
                elif bound.name in runtime_names:
                    runtime[name] = bound.name
                else:
                    constants[name] = self._known_value(bound)
            step = Step(op, KERNELS[op.op_type], constants, runtime, [v.name for v in op.outputs],
                        [caster(dtype_name(v)) for v in op.outputs], [])
            if not runtime:  # everything known now: evaluate once (constexpr_*, folds)
                for name, value in zip(step.outputs, self._execute(step, constants)):
                    self.known[name] = value
                continue
            self.steps.append(step)
            runtime_names.update(step.outputs)
        self._plan_release()

    def _known_value(self, var) -> Any:
        if var.name in self.known:
            return self.known[var.name]
        if var.val is not None:  # an input bound to a var whose value pymil already knows
            value = _const_value(var)
            self.known[var.name] = value
            return value
        raise ValueError(f"{var.name!r} is used before it is defined")

    def _plan_release(self) -> None:
        last_use: dict[str, int] = {}
        for index, step in enumerate(self.steps):
            for bound in step.runtime.values():
                names = [name for flag, name in bound if flag] if isinstance(bound, list) else [bound]
                for name in names:
                    last_use[name] = index
        keep = set(self.output_names)
        for name, index in last_use.items():
            if name not in keep:
                self.steps[index].release.append(name)

    # -- execution -----------------------------------------------------------------
    def _execute(self, step: Step, args: Mapping[str, Any]) -> list[Any]:
        try:
            result = step.kernel(args, step.op)
        except UnsupportedOpError:
            raise
        except Exception as exc:
            raise RuntimeError(f"reference evaluation of MIL op {step.op.op_type} {step.op.name!r} "
                               f"failed: {type(exc).__name__}: {exc}") from exc
        results = list(result) if isinstance(result, tuple) else [result]
        if len(results) != len(step.outputs):
            raise RuntimeError(f"MIL op {step.op.op_type} {step.op.name!r}: kernel gave "
                               f"{len(results)} outputs, the program has {len(step.outputs)}")
        return [cast(value) for cast, value in zip(step.casts, results)]

    def run(self, inputs: Mapping[str, np.ndarray], keep_intermediates: bool = False) -> dict[str, np.ndarray]:
        """Evaluate the function on ``inputs`` (name -> array, as the program's input
        vars expect them) and return {output name: array}. fp16 values come back as
        float32 arrays holding fp16 values. With ``keep_intermediates`` every var's
        value is returned (for debugging and calibration)."""
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise ValueError(f"missing input(s) {', '.join(missing)}; the program takes "
                             f"{', '.join(self.input_names)}")
        env: dict[str, Any] = {}
        for name in self.input_names:
            value = np.asarray(inputs[name])
            expected = self.input_shapes[name]
            if len(expected) != value.ndim or any(
                    isinstance(d, (int, np.integer)) and d != s for d, s in zip(expected, value.shape)):
                raise ValueError(f"input {name!r} has shape {value.shape}; the program expects "
                                 f"{tuple(d if isinstance(d, (int, np.integer)) else '?' for d in expected)}")
            env[name] = caster(self.input_types[name])(value)
        trace = dict(env) if keep_intermediates else None
        for step in self.steps:
            args = dict(step.constants)
            for name, bound in step.runtime.items():
                if isinstance(bound, list):
                    args[name] = [env[item] if flag else item for flag, item in bound]
                else:
                    args[name] = env[bound]
            for name, value in zip(step.outputs, self._execute(step, args)):
                env[name] = value
                if trace is not None:
                    trace[name] = value
            if trace is None:
                for name in step.release:
                    env.pop(name, None)
        source = trace if trace is not None else env
        outputs = {}
        for name in self.output_names:
            outputs[name] = source[name] if name in source else self.known[name]
        if trace is not None:
            return {**{k: v for k, v in self.known.items() if isinstance(v, np.ndarray)}, **trace, **outputs}
        return outputs


def op_counts(evaluator: ProgramEvaluator) -> dict[str, int]:
    """How many ops of each type the function holds (consts included)."""
    counts: dict[str, int] = {}
    for op in evaluator.function.operations:
        counts[op.op_type] = counts.get(op.op_type, 0) + 1
    return dict(sorted(counts.items()))


def unsupported_in(program, function_name: str = "main") -> Sequence[str]:
    """Op types of ``program`` the evaluator has no kernel for (empty: it can run it)."""
    supported_ops()
    return sorted({op.op_type for op in program.functions[function_name].operations
                   if op.op_type != "const" and op.op_type not in KERNELS})
