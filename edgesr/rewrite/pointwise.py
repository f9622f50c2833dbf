"""SRConvNet's 1x1 convs as matmuls on the channels-first map, for LiteRT.

A TFLite CONV_2D is channels-last, so litert-torch wraps every conv of an NCHW graph in
NCHW -> NHWC -> NCHW transposes; in SRConvNet's blocks only the depthwise convs need that
layout, while the elementwise work (LayerNorm, GELU, softmax, the shifted multiply-adds of
the dynamic conv) and the DFT matmuls run on NCHW. A 1x1 conv is ``W @ x`` with ``x`` viewed
as (C, H*W): the constant weight on the left, a BATCH_MATMUL that XNNPACK takes with no
layout change. The block's projections (``v``, ``proj``, ``proj_in``, ``proj_out``) and the
Fourier unit's spectral ``conv_layer`` go that way: at 256x256 one block's transposes go from
20 (338 MiB moved) to 8 (129 MiB; the CPE's depthwise conv and the DFT's digit reorders).

Measured (2026-12-05, AMD EPYC avx2/avx512f/avx512_vnni, LiteRT XNNPACK, 2 threads, one
SRConvNet block on 1x64x256x256, 15 interleaved rounds): 187 -> 172 ms (median; one MixFFN
alone: 106 -> 97 ms, 9 rounds). onnxruntime gains nothing from the same change (160 vs
161 ms for the block: its NCHWc 1x1 convs are as fast), so ONNX files keep the convs. So do
CoreML files (not measured; the Neural Engine is built around convs) and int8 TFLite files
(``edgesr.quantize.pt2e`` leaves every matmul float: as matmuls these layers would not be
int8).
"""
from __future__ import annotations

import torch
from torch import nn

from edgesr.models.srconvnet import DynamicDepthwiseConv2d, FourierModulation, MixFFN
from edgesr.rewrite.fourier import DFTFourierUnit
from edgesr.rewrite.plan import ExportContext, Rewrite, register_rewrite, replace_modules

# The 1x1 convs of each module type that read and write channels-first maps.
POINTWISE_CONVS = {FourierModulation: ("v", "proj"), MixFFN: ("proj_in", "proj_out"),
                   DFTFourierUnit: ("conv_layer",)}


class PointwiseMatmul(nn.Module):
    """``conv`` (1x1, groups 1) as ``weight @ x`` on the (C, H*W) view of an NCHW map.
    Keeps the conv's parameters, so state-dict keys and shapes stay the official ones."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        # Batch 1 as a 2-D product: a batched one makes litert-torch broadcast the weight
        # (BROADCAST_TO, which XNNPACK does not take).
        flat = x.reshape(channels, height * width) if batch == 1 else x.reshape(batch, channels, height * width)
        y = torch.matmul(self.weight.reshape(self.weight.shape[0], channels), flat)
        if self.bias is not None:
            y = y + self.bias[:, None]
        return y.reshape(batch, -1, height, width)


def _is_pointwise(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.groups == 1
            and conv.stride == (1, 1) and conv.padding == (0, 0))


def _channels_first(owner: nn.Module) -> bool:
    """Whether the module's maps stay NCHW around its 1x1 convs. A MixFFN that keeps the
    runtime-weight dynamic conv (``--fused-ops``: LiteRT's own DEPTHWISE_CONV_2D, channels
    last) does not: as matmuls its projections would move the transposes onto that conv's
    input and output instead of removing them."""
    return not (isinstance(owner, MixFFN)
                and any(isinstance(module, DynamicDepthwiseConv2d) for module in owner.modules()))


def _is_owner(module: nn.Module) -> bool:
    return isinstance(module, tuple(POINTWISE_CONVS)) and _channels_first(module)


def _owners(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if _is_owner(module)]


def _pointwise_names(owner: nn.Module) -> list[str]:
    return [name for name in POINTWISE_CONVS[type(owner)] if _is_pointwise(getattr(owner, name))]


def _pointwise_convs(model: nn.Module) -> list[nn.Conv2d]:
    return [getattr(owner, name) for owner in _owners(model) for name in _pointwise_names(owner)]


def pointwise_as_matmul(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose SRConvNet block projections and spectral convs are matmuls."""
    def rebuilt(owner: nn.Module) -> nn.Module:
        for name in _pointwise_names(owner):
            setattr(owner, name, PointwiseMatmul(getattr(owner, name)))
        return owner

    # replace_modules deep-copies first; the owners are rebuilt in the copy.
    return replace_modules(model, _is_owner, rebuilt)


def _applies(model: nn.Module, context: ExportContext) -> bool:
    return (context.target == "tflite" and context.float_precision
            and context.input_size is not None and bool(_pointwise_convs(model)))


POINTWISE_MATMUL = register_rewrite(Rewrite(
    name="pointwise_as_matmul",
    description="SRConvNet 1x1 convs as matmuls on the NCHW map (no layout transposes in LiteRT)",
    applies=_applies,
    apply=lambda model, context: pointwise_as_matmul(model),
    explain=lambda model, context: (
        f"SRConvNet: {len(_pointwise_convs(model))} 1x1 convs as matmuls "
        "with the weight on the left of the NCHW map: XNNPACK runs them without the NCHW<->NHWC "
        "transposes of a CONV_2D (one block at 256x256: 187 -> 172 ms in LiteRT)"),
))
