"""HiT-SRF's feed-forward hidden width padded for onnxruntime's int8 depthwise kernel.

onnxruntime runs an int8 depthwise conv (QLinearConv, symmetric int8 weights) with its
fast indirect kernel (MLAS ``ConvSym`` depthwise) only when the group count is a multiple
of 16 on x86 (8 on ARM64); otherwise it takes a generic path. HiT-SRF's ConvFFN has 120
hidden channels (HiTNet): its 24 int8 5x5 depthwise convs took 44 ms in that path at
128x128 against 17 ms for the float NCHWc conv. Padded to 128, one such conv measured
0.94 ms in int8 against 1.83 ms at 120 and 1.36 ms in float with its layout reorders
(onnxruntime 1.31, AMD EPYC AVX-512 VNNI, 2 threads).

The padding is exact: the extra fc1 rows, depthwise filters and biases are zero, so the
extra channels are GELU(0) = 0 everywhere, and fc2 reads them with zero weights. It costs
8/120 more MACs in fc1 and fc2, so only the int8 file for onnxruntime's CPU gets it.
"""
from __future__ import annotations

import torch
from torch import nn

from edgesr.models.hit_common import padding_to_multiple
from edgesr.models.hit_srf import ConvFeedForward
from edgesr.rewrite.plan import Rewrite, register_rewrite, replace_modules


def _needs_padding(module: nn.Module, multiple: int) -> bool:
    return isinstance(module, ConvFeedForward) and module.fc1.out_features % multiple != 0


def _padded_feed_forward(mlp: ConvFeedForward, multiple: int) -> ConvFeedForward:
    dim, hidden = mlp.fc1.in_features, mlp.fc1.out_features
    padded = ConvFeedForward(dim, hidden + padding_to_multiple(hidden, multiple)).to(mlp.fc1.weight)
    depthwise, new_depthwise = mlp.dwconv.depthwise_conv[0], padded.dwconv.depthwise_conv[0]
    with torch.no_grad():
        for parameter in padded.parameters():
            parameter.zero_()
        padded.fc1.weight[:hidden] = mlp.fc1.weight
        padded.fc1.bias[:hidden] = mlp.fc1.bias
        new_depthwise.weight[:hidden] = depthwise.weight
        new_depthwise.bias[:hidden] = depthwise.bias
        padded.fc2.weight[:, :hidden] = mlp.fc2.weight
        padded.fc2.bias.copy_(mlp.fc2.bias)
    return padded.train(mlp.training)


def pad_depthwise_channels(model: nn.Module, multiple: int) -> nn.Module:
    """``model`` with every ConvFFN's hidden width rounded up to ``multiple`` (zero channels)."""
    return replace_modules(model, lambda module: _needs_padding(module, multiple),
                           lambda mlp: _padded_feed_forward(mlp, multiple))


def _zero_macs_per_pixel(mlp: ConvFeedForward, multiple: int) -> int:
    """The MACs per pixel that the zero channels add (fc1 rows, fc2 columns, filters)."""
    extra = padding_to_multiple(mlp.fc1.out_features, multiple)
    kernel = mlp.dwconv.depthwise_conv[0].kernel_size
    return extra * (2 * mlp.fc1.in_features + kernel[0] * kernel[1])


def _explain(model: nn.Module, context) -> str:
    multiple = context.depthwise_multiple
    mlps = [m for m in model.modules() if _needs_padding(m, multiple)]
    widths = sorted({m.fc1.out_features for m in mlps})
    padded = [width + padding_to_multiple(width, multiple) for width in widths]
    cost = ""
    if context.input_size is not None:
        pixels = context.batch * context.input_size[0] * context.input_size[1]
        zeros = pixels * sum(_zero_macs_per_pixel(m, multiple) for m in mlps)
        cost = f"; +{zeros / 1e9:.2f} GMAC of zeros at {context.input_size[0]}x{context.input_size[1]}"
    return (f"HiT-SRF ConvFFN hidden width {', '.join(map(str, widths))} -> {', '.join(map(str, padded))} "
            f"(zero channels): onnxruntime's fast int8 depthwise kernel needs a multiple of {multiple} "
            f"channels{cost}")


DEPTHWISE_PADDING = register_rewrite(Rewrite(
    name="depthwise_channel_padding",
    description="HiT-SRF ConvFFN hidden width padded with zero channels for the int8 depthwise kernel",
    applies=lambda model, context: context.depthwise_multiple > 1
    and any(_needs_padding(module, context.depthwise_multiple) for module in model.modules()),
    apply=lambda model, context: pad_depthwise_channels(model, context.depthwise_multiple),
    explain=_explain,
))
