"""SRConvNet's channel LayerNorm with a variance that fits float16.

SRConvNet runs on a 0..255 image, and its ``ChannelLayerNorm`` squares deviations of a
few hundred: past 256 the square overflows float16 (max 65504), the variance becomes
inf and the normalised map 0. fp16 CoreML exports lost 25-30 dB to it (x3: 44.8 dB vs
fp32, under the 45 dB gate; ONNX and TFLite fp16 keep those ops in float32 on CPU).

The rewritten norm divides the deviations by 256 before squaring and eps by 256**2: the
same value in real arithmetic, and in float32 too (scaling by a power of two is exact),
with squares that fit float16 for deviations up to 65504.

In ONNX graphs the two channel means are 1x1 convs with weights 1/C: onnxruntime's
ReduceMean over the channel axis of an NCHW map is 5x slower than that conv (5.3 vs
1.0 ms at 64x128x128 on 2 cores; ~9 % of SRConvNet x4's time). Sums in another order:
about 1e-7 relative, not bit-exact.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgesr.models.srconvnet import ChannelLayerNorm
from edgesr.rewrite.plan import Rewrite, register_rewrite, replace_modules

# A power of two, so that the scaling itself rounds nothing.
DEVIATION_SCALE = 2.0**-8


class RangeSafeChannelLayerNorm(nn.Module):
    def __init__(self, norm: ChannelLayerNorm, mean_by_conv: bool = False) -> None:
        super().__init__()
        self.weight = norm.weight
        self.bias = norm.bias
        self.eps = norm.eps
        self.mean_by_conv = mean_by_conv
        channels = norm.weight.numel()
        self.register_buffer("averaging", torch.full((1, channels, 1, 1), 1.0 / channels), persistent=False)

    def channel_mean(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.averaging) if self.mean_by_conv else x.mean(1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = (x - self.channel_mean(x)) * DEVIATION_SCALE
        variance = self.channel_mean(scaled * scaled)
        normalised = scaled / torch.sqrt(variance + self.eps * DEVIATION_SCALE * DEVIATION_SCALE)
        return self.weight[:, None, None] * normalised + self.bias[:, None, None]


def _is_channel_norm(module: nn.Module) -> bool:
    return isinstance(module, ChannelLayerNorm)


def range_safe_channel_norms(model: nn.Module, mean_by_conv: bool = False) -> nn.Module:
    return replace_modules(model, _is_channel_norm, lambda norm: RangeSafeChannelLayerNorm(norm, mean_by_conv))


CHANNEL_NORM_RANGE = register_rewrite(Rewrite(
    name="channel_norm_range",
    description="SRConvNet channel LayerNorm with deviations scaled by 1/256 before squaring "
                "(float16 range; exact in float32)",
    # Every target and precision: fp16 needs it, and in fp32 it changes no bit.
    applies=lambda model, context: any(map(_is_channel_norm, model.modules())),
    apply=lambda model, context: range_safe_channel_norms(model, mean_by_conv=context.target == "onnx"),
    explain=lambda model, context: ("SRConvNet channel LayerNorm: deviations scaled by 1/256 before squaring"
                                    + ("; channel means as 1x1 convs (faster than ReduceMean in onnxruntime)"
                                       if context.target == "onnx" else "")),
))
