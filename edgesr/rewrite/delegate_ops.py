"""Rewrites that keep every op inside the mobile delegates (NNAPI, CoreML, LiteRT GPU).

They run after the architecture rewrites (``fourier``, ``dynamic_conv``, ``hit_windows``)
and touch only ops that a delegate's judge rejects (see ``edgesr.export.readiness``):

=====================  =========================================  =====================
rewrite                what the delegate rejects                  equivalent form
=====================  =========================================  =====================
``gelu_without_erf``   ONNX ``Erf`` (exact GELU): NNAPI has no    ``x * sigmoid(x * R(x^2))``,
                       Erf, so ORT splits the graph at every       R a fitted rational
                       GELU (and no Reciprocal; MLProgram has no   function (abs error
                       Abs or Neg)                                 <= 1.9e-6 in fp32)
``layernorm_ops``      ONNX ``LayerNormalization``: not in NNAPI  mean / sub / mul /
                       (the Pow form would be re-fused by ORT)     mean / add / sqrt / div
``reflect_pad_slices`` ONNX ``Pad`` (reflect): not in CoreML      slices reversed by a
                       MLProgram; NNAPI takes constant Pad only   constant flip + concat
(same rewrite)         ONNX ``Resize`` (bilinear/nearest x s):     fixed 3x3 depthwise
                       ORT's judge sees its empty optional         conv to s*s phases +
                       inputs as not fixed-size: 1 node outside    DepthToSpace (edge
                       every partition                             pad by slices)
``bias_slices``        ``Gather`` with a constant index           concat of contiguous
                       (HiT-SR's folded position bias): not in    slices (exact copy)
                       CoreML MLProgram, not on the Neural Engine
``reflect_pad_slices_  TFLite ``MIRROR_PAD`` and ``REVERSE_V2``:  slices, the reflected
xnnpack``              not in XNNPACK                             rows reversed by an
                                                                  exchange-matrix matmul
=====================  =========================================  =====================

Each rewrite is chosen per target: LiteRT's GPU delegate and CoreML take GELU and
LayerNorm natively, so those stay fused there; ONNX graphs change only when their input
size is fixed (the mobile case: NNAPI takes no dynamic shapes), so ``--dynamic`` desktop
graphs keep onnxruntime's fused Gelu and LayerNormalization kernels, and so do fixed-size
ones exported with ``--fused-ops`` (``ExportContext.delegate_forms``); ``gelu_fusable``
writes their GELU in the order onnxruntime's GeluFusion recognises (the exporter's
order is not). Every form is
exact maths except GELU's, which differs from erf-GELU by at most 1.9e-6 in fp32 (torch's
own fp32 GELU: 4e-7). Parity tests in tests/test_readiness.py.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from edgesr.rewrite import plan as _plan
from edgesr.rewrite.plan import ExportContext, Rewrite, keep_descriptor, register_rewrite, replace_modules

# These rewrites act on what the architecture rewrites produce, so they must be
# registered after them even when this module is imported first (e.g. by a test):
# import the modules listed before this one in REWRITE_MODULES now.
if __name__.rpartition(".")[2] in _plan.REWRITE_MODULES:
    for _module in _plan.REWRITE_MODULES[:_plan.REWRITE_MODULES.index(__name__.rpartition(".")[2])]:
        importlib.import_module(f"edgesr.rewrite.{_module}")

# --------------------------------------------------------------------------------------
# GELU without Erf
# --------------------------------------------------------------------------------------

# gelu(x) = x * Phi(x) = x * sigmoid(x * R(x^2)), where R(u) = logit(Phi(sqrt u)) / sqrt u
# is smooth, positive and tends to a constant. R is approximated by
# alpha + r1/(u + s1) + r2/(u + s2), fitted minimax (weighted by how much an error in R
# moves GELU) over |x| <= 9: |GELU error| <= 1.4e-6 in exact arithmetic, 1.9e-6 in fp32
# (torch's own fp32 GELU: 4e-7), far inside the 1e-5 x output-range parity of the
# rewritten models. Beyond |x| = 9 sigmoid(x * R) is 0 or 1 to fp32 precision. In
# float16, x*x overflows to inf for |x| > 256, which only sends the two fractions to 0:
# no NaN.
_GELU_ALPHA = 6.352711942891419
_GELU_POLES = ((-280.90024869477065, 58.20329160569944), (0.45880178582082204, 6.618950586214471))


def gelu_without_erf(x: torch.Tensor) -> torch.Tensor:
    """GELU, ``x * Phi(x)``, as ``x * sigmoid(x * R(x^2))`` (within 1.9e-6): 10 elementwise ops
    (Mul, Add, Div, Sigmoid), none of them Erf, Exp, Abs, Neg, Reciprocal or Where.

    On onnxruntime's CPU EP every op is a pass over the whole map and SRConvNet applies
    GELU to every hidden map, so the op count is what the delegate graph costs there
    (the exporter's Erf GELU is 5 ops).
    """
    u = x * x
    (r1, s1), (r2, s2) = _GELU_POLES
    # Tensor numerators: a number over a tensor traces as Reciprocal, which NNAPI lacks.
    r1, r2 = (torch.full((1,), r, dtype=x.dtype, device=x.device) for r in (r1, r2))
    logit_over_x = (r1 / (u + s1) + _GELU_ALPHA) + r2 / (u + s2)
    return x * torch.sigmoid(x * logit_over_x)


class ErfFreeGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu_without_erf(x)


class FusableGELU(nn.Module):
    """Exact GELU for the graphs that keep Erf, in an order onnxruntime's GeluFusion
    matches: ``(x * 0.5) * (erf(x/sqrt2) + 1)`` becomes one Gelu kernel, while the
    exporter's own ``((erf(x/sqrt2) + 1) * 0.5) * x`` stays five elementwise ops. The
    halving comes first because a trailing ``* 0.5`` before a conv is folded into the conv's
    weights on export, which leaves four ops that no fusion matches (SRConvNet: 18 of its 50
    GELUs, the upsampler's two at 4x and 16x the input's pixels among them)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 0.5) * (torch.erf(x / math.sqrt(2.0)) + 1.0)


# --------------------------------------------------------------------------------------
# LayerNorm as elementary ops
# --------------------------------------------------------------------------------------


class ElementaryLayerNorm(nn.Module):
    """``nn.LayerNorm`` over the last axis as ReduceMean/Sub/Mul/ReduceMean/Add/Sqrt/Div.

    The square is a Mul, not a Pow: with Pow the sequence is the one onnxruntime's
    LayerNormFusion recognises, and ORT (on the phone too: the fusion runs at its BASIC
    level, when a session loads the model) would rebuild the LayerNormalization that
    NNAPI cannot take. The price is that desktop ORT runs the ops unfused.
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
        variance = (centred * centred).mean(dim=-1, keepdim=True)
        out = centred / torch.sqrt(variance + self.eps)
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out


# --------------------------------------------------------------------------------------
# Reflect padding as slices
# --------------------------------------------------------------------------------------


def _reversed_run(x: torch.Tensor, axis: int, start: int, count: int, flip_as_matmul: bool) -> torch.Tensor:
    """Elements ``start .. start+count-1`` of ``axis`` in reverse order."""
    run = x.narrow(axis, start, count)
    if not flip_as_matmul:
        return run.flip(axis)
    # TFLite lowers flip to REVERSE_V2, which XNNPACK does not take, and merges nested
    # concatenations of single rows into one wider than XNNPACK's (at most 4-5 inputs).
    # A product with the exchange matrix is an exact reversal: each output is one input
    # times 1 plus zeros. The axis goes last for it, so the matrix is the constant operand.
    exchange = torch.tensor([[1.0 if i + j == count - 1 else 0.0 for j in range(count)] for i in range(count)],
                            dtype=x.dtype, device=x.device)  # data, not eye().flip(): a constant in the graph
    return (run.transpose(axis, -1) @ exchange).transpose(axis, -1)


def _reflect_axis(x: torch.Tensor, axis: int, before: int, after: int, flip_as_matmul: bool = False) -> torch.Tensor:
    """Reflect-pad one axis (no edge repeat) with slices and a flip."""
    size = x.shape[axis]
    if before > size - 1 or after > size - 1:
        raise ValueError(f"reflect pad of {before}/{after} on an axis of {size}")
    parts = []
    if before:
        parts.append(_reversed_run(x, axis, 1, before, flip_as_matmul))
    parts.append(x)
    if after:
        parts.append(_reversed_run(x, axis, size - 1 - after, after, flip_as_matmul))
    return torch.cat(parts, dim=axis) if len(parts) > 1 else x


def reflect_pad_by_slices(x: torch.Tensor, pad: tuple[int, ...], flip_as_matmul: bool = False) -> torch.Tensor:
    """``F.pad(x, pad, mode="reflect")`` for the last ``len(pad) // 2`` axes."""
    for index in range(len(pad) // 2):
        axis = x.dim() - 1 - index
        x = _reflect_axis(x, axis, int(pad[2 * index]), int(pad[2 * index + 1]), flip_as_matmul)
    return x


_ORIGINAL_PAD = F.pad


def _pad_with_slices(input: torch.Tensor, pad, mode: str = "constant", value=None,
                     flip_as_matmul: bool = False) -> torch.Tensor:
    if mode == "reflect" and all(isinstance(p, int) and p >= 0 for p in pad):
        return reflect_pad_by_slices(input, tuple(pad), flip_as_matmul)
    if value is None:
        return _ORIGINAL_PAD(input, pad, mode=mode)
    return _ORIGINAL_PAD(input, pad, mode=mode, value=value)


@contextlib.contextmanager
def reflect_pads_as_slices(pads: bool = True, upsampling: bool = False,
                           flip_as_matmul: bool = False) -> Iterator[None]:
    """While active, reflect-mode ``F.pad`` (static non-negative pads) runs as slices (the
    reversed rows, with ``flip_as_matmul``, as a product with an exchange matrix) and, with
    ``upsampling``, integer-factor bilinear/nearest ``F.interpolate`` as a conv.

    Both forms give the same values, so a concurrent caller of ``F.pad`` or
    ``F.interpolate`` is not affected in its results.
    """
    saved_pad, saved_interpolate = F.pad, F.interpolate
    if pads:
        @functools.wraps(_ORIGINAL_PAD)  # torch.export reads the patched function's __name__
        def pad(input, pad, mode="constant", value=None):
            return _pad_with_slices(input, pad, mode, value, flip_as_matmul)

        F.pad = pad
    if upsampling:
        F.interpolate = _interpolate_with_conv
    try:
        yield
    finally:
        F.pad, F.interpolate = saved_pad, saved_interpolate


class ReflectPadAsSlices(nn.Module):
    """Wraps a network: while it traces, its reflect pads become Slice/Concat ops and
    (with ``upsampling``) its Resize ops fixed convs + DepthToSpace."""

    def __init__(self, network: nn.Module, pads: bool = True, upsampling: bool = False,
                 flip_as_matmul: bool = False) -> None:
        super().__init__()
        self.network = network
        self.pads = pads
        self.upsampling = upsampling
        self.flip_as_matmul = flip_as_matmul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with reflect_pads_as_slices(self.pads, self.upsampling, self.flip_as_matmul):
            return self.network(x)


# --------------------------------------------------------------------------------------
# Integer-factor upsampling as a fixed convolution + DepthToSpace
# --------------------------------------------------------------------------------------


def _edge_pad1(x: torch.Tensor) -> torch.Tensor:
    """Replicate-pad H and W by one pixel with slices and concat (no Pad op)."""
    x = torch.cat([x[:, :, :1], x, x[:, :, -1:]], dim=2)
    return torch.cat([x[:, :, :, :1], x, x[:, :, :, -1:]], dim=3)


def _bilinear_taps(scale: int) -> torch.Tensor:
    """``(scale, 3)``: weights of rows i-1, i, i+1 for output phase p (align_corners=False).

    Output ``i*s + p`` samples source ``i + (p + 0.5)/s - 0.5``; the clamping of the
    source index at the borders equals sampling a replicate-padded map.
    """
    taps = torch.zeros(scale, 3, dtype=torch.float64)
    for phase in range(scale):
        offset = (phase + 0.5) / scale - 0.5
        if offset < 0:
            taps[phase, 0], taps[phase, 1] = -offset, 1 + offset
        else:
            taps[phase, 1], taps[phase, 2] = 1 - offset, offset
    return taps


def upsample_by_conv(x: torch.Tensor, scale: int, mode: str) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=scale, mode)`` (bilinear without align_corners, or
    nearest) as a per-channel 3x3 conv to ``scale**2`` phases and a pixel shuffle."""
    channels = x.shape[1]
    if mode == "nearest":
        taps = torch.zeros(scale, 3, dtype=torch.float64)
        taps[:, 1] = 1.0
    else:
        taps = _bilinear_taps(scale)
    kernel = (taps[:, None, :, None] * taps[None, :, None, :]).reshape(scale * scale, 1, 3, 3)
    weight = kernel.repeat(channels, 1, 1, 1).to(dtype=x.dtype, device=x.device)
    phases = F.conv2d(_edge_pad1(x), weight, groups=channels)
    return F.pixel_shuffle(phases, scale)


_ORIGINAL_INTERPOLATE = F.interpolate


def _interpolate_with_conv(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                           recompute_scale_factor=None, antialias=False):
    scale = scale_factor
    if (input.dim() == 4 and size is None and isinstance(scale, (int, float)) and float(scale).is_integer()
            and int(scale) >= 2 and not antialias and not recompute_scale_factor
            and (mode == "nearest" or (mode == "bilinear" and not align_corners))):
        return upsample_by_conv(input, int(scale), mode)
    return _ORIGINAL_INTERPOLATE(input, size=size, scale_factor=scale_factor, mode=mode,
                                 align_corners=align_corners, recompute_scale_factor=recompute_scale_factor,
                                 antialias=antialias)


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


# The widest CONCATENATION XNNPACK took in LiteRT 2.3 (8 inputs stay outside it).
XNNPACK_CONCAT_INPUTS = 4


def concat_narrow(parts: list[torch.Tensor], dim: int, width: int = XNNPACK_CONCAT_INPUTS) -> torch.Tensor:
    """``torch.cat(parts, dim)`` with at most ``width`` inputs per concatenation, for parts
    of one shape: groups of ``width`` are concatenated, then stacked on a new axis and
    reshaped (the last group filled up with copies that a slice drops). A plain tree of
    concatenations would not do: the TFLite converter merges nested ones on one axis back
    into a single wide one."""
    if len(parts) <= width:
        return torch.cat(parts, dim=dim) if len(parts) > 1 else parts[0]
    dim = dim % parts[0].dim()
    filled = parts + [parts[-1]] * (-len(parts) % width)
    groups = [torch.cat(filled[i:i + width], dim=dim).unsqueeze(dim) for i in range(0, len(filled), width)]
    shape = list(parts[0].shape)
    shape[dim] *= len(filled)
    whole = concat_narrow(groups, dim, width).reshape(shape)
    return whole if len(filled) == len(parts) else whole.narrow(dim, 0, parts[0].shape[dim] * len(parts))


class _SlicedBias(nn.Module):
    """Mixin forward for a ``FoldedWindowBias``: same expansion, slices instead of gathers."""

    def forward(self, anchor: torch.Tensor) -> torch.Tensor:
        win_h, win_w = self.window_size
        table = self.table + anchor
        concat = concat_narrow if self.narrow_concats else torch.cat
        rows = concat([table[:, s:s + win_h] for s in self.row_starts], dim=1)
        return self.cells_by_pixels(concat([rows[:, :, s:s + win_w] for s in self.col_starts], dim=2))


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


def bias_gathers_as_slices(model: nn.Module, narrow_concats: bool = False) -> nn.Module:
    """``narrow_concats``: at most XNNPACK_CONCAT_INPUTS per concatenation (TFLite)."""
    new = copy.deepcopy(model)
    for module in _bias_modules(new):
        module.row_starts = _contiguous_runs(module.rows, module.window_size[0])
        module.col_starts = _contiguous_runs(module.cols, module.window_size[1])
        module.narrow_concats = narrow_concats
        module.__class__ = _sliced_class(type(module))
    return keep_descriptor(model, new)


# --------------------------------------------------------------------------------------
# Module replacement helpers and registration
# --------------------------------------------------------------------------------------


def _is_exact_gelu(module: nn.Module) -> bool:
    return isinstance(module, nn.GELU) and module.approximate == "none"


def _is_last_axis_layernorm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1


def gelu_as_elementary(model: nn.Module) -> nn.Module:
    return replace_modules(model, _is_exact_gelu, lambda m: ErfFreeGELU())


def gelu_as_fusable(model: nn.Module) -> nn.Module:
    return replace_modules(model, _is_exact_gelu, lambda m: FusableGELU())


def layernorm_as_elementary(model: nn.Module) -> nn.Module:
    return replace_modules(model, _is_last_axis_layernorm, ElementaryLayerNorm)


def reflect_pads_sliced(model: nn.Module, upsampling: bool = False, flip_as_matmul: bool = False) -> nn.Module:
    """The model wrapped so that its reflect pads trace as slices (fixed sizes only) and,
    with ``upsampling``, its integer-factor interpolations as convs."""
    return keep_descriptor(model, ReflectPadAsSlices(copy.deepcopy(model), pads=True, upsampling=upsampling,
                                                     flip_as_matmul=flip_as_matmul))


def _has(model: nn.Module, match) -> bool:
    return any(match(m) for m in model.modules())


def _uses_reflect_pad_or_resize(model: nn.Module) -> bool:
    # HiT-SR pads its windows (and HiT-SNG its n-gram maps) by reflection; SRConvNet
    # adds a bilinear upsampling of its input, HiT-SR's nearest+conv head a nearest one.
    from edgesr.models.hit_common import HiTSR
    from edgesr.models.srconvnet import SRConvNet

    if isinstance(model, ReflectPadAsSlices):
        return False
    return _has(model, lambda m: isinstance(m, (HiTSR, SRConvNet)))


def _onnx_fixed(context: ExportContext) -> bool:
    return context.target == "onnx" and context.input_size is not None and context.delegate_forms


GELU_WITHOUT_ERF = register_rewrite(Rewrite(
    name="gelu_without_erf",
    description="GELU without Erf (NNAPI has no Erf): x*sigmoid(x*R(x^2)), R rational, |error| <= 1.9e-6",
    applies=lambda model, context: _onnx_fixed(context) and _has(model, _is_exact_gelu),
    apply=lambda model, context: gelu_as_elementary(model),
))

GELU_FUSABLE = register_rewrite(Rewrite(
    name="gelu_fusable",
    description="exact GELU as (x*0.5)*(erf(x/sqrt2)+1), an order onnxruntime fuses into one "
                "Gelu kernel (desktop graphs: --dynamic or --fused-ops)",
    applies=lambda model, context: (context.target == "onnx" and not _onnx_fixed(context)
                                    and _has(model, _is_exact_gelu)),
    apply=lambda model, context: gelu_as_fusable(model),
))

LAYERNORM_OPS = register_rewrite(Rewrite(
    name="layernorm_ops",
    description="LayerNorm as ReduceMean/Sub/Mul/Sqrt/Div (NNAPI has no LayerNormalization; "
                "Mul rather than Pow so that ORT's LayerNormFusion does not rebuild it)",
    applies=lambda model, context: _onnx_fixed(context) and _has(model, _is_last_axis_layernorm),
    apply=lambda model, context: layernorm_as_elementary(model),
))

REFLECT_PAD_SLICES = register_rewrite(Rewrite(
    name="reflect_pad_slices",
    description="reflect padding as slices + flips + concat (CoreML MLProgram has no Pad, "
                "NNAPI only constant Pad); integer-factor bilinear/nearest upsampling as a "
                "fixed 3x3 conv + DepthToSpace (ORT's judge counts Resize with empty "
                "roi/scales inputs as not fixed-size)",
    applies=lambda model, context: _onnx_fixed(context) and _uses_reflect_pad_or_resize(model),
    apply=lambda model, context: reflect_pads_sliced(model, upsampling=True),
))

REFLECT_PAD_SLICES_XNNPACK = register_rewrite(Rewrite(
    name="reflect_pad_slices_xnnpack",
    description="reflect padding as slices, the reflected rows reversed by a constant exchange-matrix "
                "product (exact; XNNPACK takes neither MIRROR_PAD nor REVERSE_V2, each a partition cut)",
    applies=lambda model, context: (context.target == "tflite" and context.input_size is not None
                                    and _uses_reflect_pad_or_resize(model)),
    apply=lambda model, context: reflect_pads_sliced(model, flip_as_matmul=True),
))

BIAS_SLICES = register_rewrite(Rewrite(
    name="bias_slices",
    description="HiT-SR position bias expanded by contiguous slices, not constant-index gathers "
                "(Gather: not in CoreML MLProgram, not on the Neural Engine)",
    applies=lambda model, context: bool(_bias_modules(model)),
    apply=lambda model, context: bias_gathers_as_slices(model, narrow_concats=context.target == "tflite"),
))
