"""Rewrites that keep every op inside the mobile delegates (NNAPI, CoreML, LiteRT GPU).

They run after the architecture rewrites (``fourier``, ``dynamic_conv``, ``hit_windows``)
and touch only ops that a delegate's judge rejects (see ``edgesr.export.readiness``):

=====================  =========================================  =====================
rewrite                what the delegate rejects                  equivalent form
=====================  =========================================  =====================
``gelu_without_erf``   ONNX ``Erf`` (exact GELU): NNAPI has no    ``x/2 + |x|/2 *
                       Erf, so ORT splits the graph at every       erf(|x|/sqrt 2)``, erf
                       GELU (and no Reciprocal; MLProgram has no   by a rational-exp form
                       Abs or Neg)                                 (abs error < 1.2e-7)
``layernorm_ops``      ONNX ``LayerNormalization``: not in NNAPI  mean / sub / pow /
                                                                   mean / add / sqrt / div
``reflect_pad_slices`` ONNX ``Pad`` (reflect): not in CoreML      slices reversed by a
                       MLProgram; NNAPI takes constant Pad only   constant flip + concat
``bias_slices``        ``Gather`` with a constant index           concat of contiguous
                       (HiT-SR's folded position bias): not in    slices (exact copy)
                       CoreML MLProgram, not on the Neural Engine
=====================  =========================================  =====================

Each rewrite is chosen per target: LiteRT's GPU delegate and CoreML take GELU and
LayerNorm natively, so those stay fused there. Every form is exact maths; the GELU one
differs from ``erf`` by less than fp32's own rounding of GELU's output magnitudes
(parity tests in tests/test_readiness.py).
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from edgesr.rewrite.plan import ExportContext, Rewrite, register_rewrite

# --------------------------------------------------------------------------------------
# GELU without Erf
# --------------------------------------------------------------------------------------

# erf(z) for z >= 0 as 1 - t * exp(-z^2 + P(t)), t = 1 / (1 + z/2): Numerical Recipes'
# erfc (Chebyshev fit, fractional error < 1.2e-7 everywhere).
_ERFC_COEFFS = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
                0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def erf_nonnegative(z: torch.Tensor) -> torch.Tensor:
    """erf of ``z >= 0`` from Mul/Add/Div/Exp only (no Erf, Neg, Reciprocal or Where).

    ``t = 2 / (2 + z)`` with a tensor numerator rather than ``1 / (1 + z/2)``: a
    Python-number numerator traces as ONNX Reciprocal, which NNAPI does not take.
    """
    two = torch.full((1,), 2.0, dtype=z.dtype, device=z.device)
    t = two / (z + 2.0)  # a tensor numerator: ``2.0 / d`` would trace as Reciprocal
    poly = torch.full_like(z, _ERFC_COEFFS[-1])
    for coeff in reversed(_ERFC_COEFFS[:-1]):
        poly = poly * t + coeff
    return 1.0 - t * torch.exp(poly - z * z)


def gelu_without_erf(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU, ``x * Phi(x)``, written as ``x/2 + |x|/2 * erf(|x|/sqrt(2))``.

    ``x * erf(x / sqrt 2)`` is even, so only erf of a non-negative argument is needed and
    no sign or select op appears. ``|x|`` is ``max(x, -1 * x)``: CoreML MLProgram has no
    Abs and no Neg, both take Max and Mul.
    """
    magnitude = torch.maximum(x, x * -1.0)
    return 0.5 * x + 0.5 * magnitude * erf_nonnegative(magnitude * (1.0 / math.sqrt(2.0)))


class ErfFreeGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu_without_erf(x)


# --------------------------------------------------------------------------------------
# LayerNorm as elementary ops
# --------------------------------------------------------------------------------------


class ElementaryLayerNorm(nn.Module):
    """``nn.LayerNorm`` over the last axis as ReduceMean/Sub/Pow/Add/Sqrt/Div/Mul/Add.

    The op sequence is the one onnxruntime's LayerNormFusion recognises, so a desktop
    ORT session fuses it back into its LayerNormalization kernel (no CPU cost), while
    NNAPI, which has no LayerNormalization, takes each op.
    """

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        if len(norm.normalized_shape) != 1:
            raise ValueError("only LayerNorm over the last axis is rewritten")
        self.eps = float(norm.eps)
        self.weight = norm.weight
        self.bias = norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        centred = x - mean
        variance = centred.pow(2).mean(dim=-1, keepdim=True)
        out = centred / torch.sqrt(variance + self.eps)
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out


# --------------------------------------------------------------------------------------
# Reflect padding as slices
# --------------------------------------------------------------------------------------


def _reflect_axis(x: torch.Tensor, axis: int, before: int, after: int) -> torch.Tensor:
    """Reflect-pad one axis (no edge repeat) with slices and a flip."""
    size = x.shape[axis]
    if before > size - 1 or after > size - 1:
        raise ValueError(f"reflect pad of {before}/{after} on an axis of {size}")
    parts = []
    if before:
        parts.append(x.narrow(axis, 1, before).flip(axis))
    parts.append(x)
    if after:
        parts.append(x.narrow(axis, size - 1 - after, after).flip(axis))
    return torch.cat(parts, dim=axis) if len(parts) > 1 else x


def reflect_pad_by_slices(x: torch.Tensor, pad: tuple[int, ...]) -> torch.Tensor:
    """``F.pad(x, pad, mode="reflect")`` for the last ``len(pad) // 2`` axes."""
    for index in range(len(pad) // 2):
        axis = x.dim() - 1 - index
        x = _reflect_axis(x, axis, int(pad[2 * index]), int(pad[2 * index + 1]))
    return x


_ORIGINAL_PAD = F.pad


def _pad_with_slices(input: torch.Tensor, pad, mode: str = "constant", value=None) -> torch.Tensor:
    if mode == "reflect" and all(isinstance(p, int) and p >= 0 for p in pad):
        return reflect_pad_by_slices(input, tuple(pad))
    if value is None:
        return _ORIGINAL_PAD(input, pad, mode=mode)
    return _ORIGINAL_PAD(input, pad, mode=mode, value=value)


@contextlib.contextmanager
def reflect_pads_as_slices() -> Iterator[None]:
    """While active, reflect-mode ``F.pad`` with static non-negative pads runs as slices.

    The two forms give identical values, so a concurrent caller of ``F.pad`` is not
    affected in its results.
    """
    saved = F.pad
    F.pad = _pad_with_slices
    try:
        yield
    finally:
        F.pad = saved


class ReflectPadAsSlices(nn.Module):
    """Wraps a network: its reflect pads become Slice/Concat ops in the traced graph."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with reflect_pads_as_slices():
            return self.network(x)


# --------------------------------------------------------------------------------------
# HiT-SR folded position bias: constant-index gathers as slices
# --------------------------------------------------------------------------------------


def _contiguous_runs(index: torch.Tensor, run: int) -> list[int] | None:
    """Start of each run if ``index`` is consecutive runs of ``run`` increasing values."""
    values = index.tolist()
    if not values or len(values) % run:
        return None
    starts = values[::run]
    for k, start in enumerate(starts):
        if values[k * run:(k + 1) * run] != list(range(start, start + run)):
            return None
    return starts


class _SlicedBias(nn.Module):
    """Mixin forward for a ``FoldedWindowBias``: same expansion, slices instead of gathers."""

    def forward(self, anchor: torch.Tensor) -> torch.Tensor:
        (win_h, win_w), (grid_h, grid_w) = self.window_size, self.key_grid
        table = self.table + anchor
        rows = torch.cat([table[:, s:s + win_h] for s in self.row_starts], dim=1)
        expanded = torch.cat([rows[:, :, s:s + win_w] for s in self.col_starts], dim=2)
        expanded = expanded.view(self.heads, grid_h, win_h, grid_w, win_w).permute(0, 2, 4, 1, 3)
        return expanded.reshape(self.heads, win_h * win_w, grid_h * grid_w)


_SLICED_CLASSES: dict[type, type] = {}


def _sliced_class(cls: type) -> type:
    if cls not in _SLICED_CLASSES:
        _SLICED_CLASSES[cls] = type(f"Sliced{cls.__name__}", (_SlicedBias, cls), {})
    return _SLICED_CLASSES[cls]


def _bias_modules(model: nn.Module) -> list[nn.Module]:
    found = []
    for module in model.modules():
        if isinstance(module, _SlicedBias):
            continue
        if type(module).__name__ != "FoldedWindowBias":
            continue
        if not all(hasattr(module, a) for a in ("table", "rows", "cols", "window_size", "key_grid", "heads")):
            continue
        rows = _contiguous_runs(module.rows, module.window_size[0])
        cols = _contiguous_runs(module.cols, module.window_size[1])
        if rows is not None and cols is not None:
            found.append(module)
    return found


def bias_gathers_as_slices(model: nn.Module) -> nn.Module:
    new = copy.deepcopy(model)
    for module in _bias_modules(new):
        module.row_starts = _contiguous_runs(module.rows, module.window_size[0])
        module.col_starts = _contiguous_runs(module.cols, module.window_size[1])
        module.__class__ = _sliced_class(type(module))
    return _keep_info(model, new)


# --------------------------------------------------------------------------------------
# Module replacement helpers and registration
# --------------------------------------------------------------------------------------


def _keep_info(old: nn.Module, new: nn.Module) -> nn.Module:
    for attr in ("edgesr_info", "edgesr_rewrites"):
        if hasattr(old, attr):
            object.__setattr__(new, attr, getattr(old, attr))
    return new.train(old.training)


def _replace(model: nn.Module, match, make) -> nn.Module:
    new = copy.deepcopy(model)
    targets = [(name, m) for name, m in new.named_modules() if name and match(m)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = new.get_submodule(parent_name) if parent_name else new
        setattr(parent, child, make(module))
    return _keep_info(model, new)


def _is_exact_gelu(module: nn.Module) -> bool:
    return isinstance(module, nn.GELU) and module.approximate == "none"


def _is_last_axis_layernorm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1


def gelu_as_elementary(model: nn.Module) -> nn.Module:
    return _replace(model, _is_exact_gelu, lambda m: ErfFreeGELU())


def layernorm_as_elementary(model: nn.Module) -> nn.Module:
    return _replace(model, _is_last_axis_layernorm, ElementaryLayerNorm)


def reflect_pads_sliced(model: nn.Module) -> nn.Module:
    """The model wrapped so that its reflect pads trace as slices (fixed sizes only)."""
    return _keep_info(model, ReflectPadAsSlices(copy.deepcopy(model)))


def _has(model: nn.Module, match) -> bool:
    return any(match(m) for m in model.modules())


def _uses_reflect_pad(model: nn.Module) -> bool:
    # HiT-SR pads its windows (and HiT-SNG its n-gram maps) by reflection.
    from edgesr.models.hit_common import HiTSR

    return _has(model, lambda m: isinstance(m, HiTSR)) and not isinstance(model, ReflectPadAsSlices)


def _onnx_fixed(context: ExportContext) -> bool:
    return context.target == "onnx" and context.input_size is not None


GELU_WITHOUT_ERF = register_rewrite(Rewrite(
    name="gelu_without_erf",
    description="exact GELU without Erf (NNAPI has no Erf): x/2 + |x|/2*erf(|x|/sqrt2), erf by exp",
    applies=lambda model, context: context.target == "onnx" and _has(model, _is_exact_gelu),
    apply=lambda model, context: gelu_as_elementary(model),
))

LAYERNORM_OPS = register_rewrite(Rewrite(
    name="layernorm_ops",
    description="LayerNorm as ReduceMean/Sub/Pow/Sqrt/Div (NNAPI has no LayerNormalization; "
                "ORT fuses it back on desktop)",
    applies=lambda model, context: context.target == "onnx" and _has(model, _is_last_axis_layernorm),
    apply=lambda model, context: layernorm_as_elementary(model),
))

REFLECT_PAD_SLICES = register_rewrite(Rewrite(
    name="reflect_pad_slices",
    description="reflect padding as slices + flips + concat (CoreML MLProgram has no Pad, "
                "NNAPI only constant Pad)",
    applies=lambda model, context: _onnx_fixed(context) and _uses_reflect_pad(model),
    apply=lambda model, context: reflect_pads_sliced(model),
))

BIAS_SLICES = register_rewrite(Rewrite(
    name="bias_slices",
    description="HiT-SR position bias expanded by contiguous slices, not constant-index gathers "
                "(Gather: not in CoreML MLProgram, not on the Neural Engine)",
    applies=lambda model, context: bool(_bias_modules(model)),
    apply=lambda model, context: bias_gathers_as_slices(model),
))
