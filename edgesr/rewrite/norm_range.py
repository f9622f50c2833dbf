"""SRConvNet's channel LayerNorm with a variance that fits float16.

SRConvNet runs on a 0..255 image, and its ``ChannelLayerNorm`` squares deviations of a
few hundred: past 256 the square overflows float16 (max 65504), the variance becomes
inf and the normalised map 0. fp16 CoreML exports lost 25-30 dB to it (x3: 44.8 dB vs
fp32, under the 45 dB gate; ONNX and TFLite fp16 keep those ops in float32 on CPU).

The rewritten norm divides the deviations by 256 before squaring and eps by 256**2: the
same value in real arithmetic, and in float32 too (scaling by a power of two is exact),
with squares that fit float16 for deviations up to 65504.
"""
from __future__ import annotations

import torch
from torch import nn

from edgesr.models.srconvnet import ChannelLayerNorm
from edgesr.rewrite.plan import Rewrite, register_rewrite, replace_modules

# A power of two, so that the scaling itself rounds nothing.
DEVIATION_SCALE = 2.0**-8


class RangeSafeChannelLayerNorm(nn.Module):
    def __init__(self, norm: ChannelLayerNorm) -> None:
        super().__init__()
        self.weight = norm.weight
        self.bias = norm.bias
        self.eps = norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = (x - x.mean(1, keepdim=True)) * DEVIATION_SCALE
        variance = (scaled * scaled).mean(1, keepdim=True)
        normalised = scaled / torch.sqrt(variance + self.eps * DEVIATION_SCALE * DEVIATION_SCALE)
        return self.weight[:, None, None] * normalised + self.bias[:, None, None]


def _is_channel_norm(module: nn.Module) -> bool:
    return isinstance(module, ChannelLayerNorm)


def range_safe_channel_norms(model: nn.Module) -> nn.Module:
    return replace_modules(model, _is_channel_norm, RangeSafeChannelLayerNorm)


CHANNEL_NORM_RANGE = register_rewrite(Rewrite(
    name="channel_norm_range",
    description="SRConvNet channel LayerNorm with deviations scaled by 1/256 before squaring "
                "(float16 range; exact in float32)",
    # Every target and precision: fp16 needs it, and in fp32 it changes no bit.
    applies=lambda model, context: any(map(_is_channel_norm, model.modules())),
    apply=lambda model, context: range_safe_channel_norms(model),
))
