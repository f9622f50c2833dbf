"""SRConvNet: a Transformer-style ConvNet for lightweight image super-resolution.

Feng Li et al., IJCV 2025 (official code: https://github.com/lifengcs/SRConvNet).
This is an independent re-implementation: the maths and the state-dict layout
(key names and tensor shapes) follow the official model, so official checkpoints
load with ``strict=True`` once the ``module.`` prefix of ``nn.DataParallel`` is
stripped. Several attribute names (``a``, ``v``, ``CPE``, ``conv1.conv``...) look
odd for that reason only.

The network maps RGB in [0, 255] to RGB in [0, 255]; it does not normalise its
input (the official ``MeanShift`` layers exist but are never applied).

Two parts depend on the whole image rather than a local window, so tiled
inference is *not* equivalent to full-image inference:
  * the Fourier unit mixes every spatial frequency of the feature map, and
  * the Fourier modulation takes a softmax over all H*W positions per channel.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgesr.models.registry import ArchSpec, StateDict, register

# Official kernel sizes of the two dynamic depthwise branches in the FFN.
_FFN_KERNEL_SIZES = (5, 7)
# Official squeeze ratio of the kernel-attention MLP.
_KERNEL_ATTENTION_REDUCTION = 8
# The official MeanShift constants (DIV2K mean); only their values in a
# checkpoint matter, and only for strict loading.
_DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (ConvNeXt "channels_first").

    y = weight[c] * (x - mean_c(x)) / sqrt(var_c(x) + eps) + bias[c], with the
    biased variance. Written out rather than permuting to NHWC so that export
    backends see plain reductions over dim 1.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class FourierUnit(nn.Module):
    """Pointwise channel mixing in the 2-D Fourier domain.

    For x of shape (B, C, H, W):
        X = rfft2(x, norm="ortho")                       # (B, C, H, W//2+1), complex
        Z = [Re X_0, Im X_0, Re X_1, Im X_1, ...]        # (B, 2C, H, W//2+1), real
        Z = GELU(conv_layer(Z))                          # 1x1 conv, 2C -> 2C, no bias
        y = irfft2(Z[:, 0::2] + i Z[:, 1::2], s=(H, W), norm="ortho")
    Real and imaginary parts are interleaved per channel (not concatenated),
    because the pretrained ``conv_layer`` weights were learnt in that order.
    The imaginary parts of the DC column (and of the Nyquist column for even W)
    are discarded by irfft2, as in the official code.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_layer = nn.Conv2d(2 * channels, 2 * channels, kernel_size=1, bias=False)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        spectrum = torch.fft.rfft2(x, norm="ortho")
        z = torch.stack((spectrum.real, spectrum.imag), dim=2).flatten(1, 2)
        z = self.act(self.conv_layer(z))
        z = z.unflatten(1, (-1, 2))
        spectrum = torch.complex(z[:, :, 0], z[:, :, 1])
        return torch.fft.irfft2(spectrum, s=(height, width), norm="ortho")


class FourierModulation(nn.Module):
    """Fourier modulated attention (official ``FConvMod``).

        a    = FourierUnit(LN(x)),  v = conv1x1(LN(x))
        attn = softmax_{over H*W}(layer_scale[head(c)] * a * v)    per (sample, channel)
        out  = x + proj(attn + CPE(x))
    ``CPE`` is a 3x3 depthwise conv applied to the un-normalised input. Channels
    are split into ``num_heads`` contiguous groups that only differ by their
    learnt ``layer_scale`` (the softmax temperature).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = ChannelLayerNorm(dim)
        self.a = FourierUnit(dim)
        self.v = nn.Conv2d(dim, dim, 1)
        self.layer_scale = nn.Parameter(torch.full((num_heads,), 1e-6))
        self.CPE = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        positional = self.CPE(x)
        normed = self.norm(x)
        logits = (self.a(normed) * self.v(normed)).view(
            batch, self.num_heads, channels // self.num_heads, height * width
        )
        logits = self.layer_scale.view(1, -1, 1, 1) * logits
        attn = F.softmax(logits, dim=-1).view(batch, channels, height, width)
        return x + self.proj(attn + positional)


class KernelAttention(nn.Module):
    """Per-sample mixing coefficients for a kernel bank.

        alpha = sigmoid(conv2(GELU(conv1(mean_{H,W}(x)))))     # (B, num_kernels)
    Independent sigmoids, not a softmax: the coefficients do not sum to one.
    """

    def __init__(self, channels: int, num_kernels: int) -> None:
        super().__init__()
        # The official rule: squeeze by 8, except for a 3-channel input where the
        # hidden width equals the bank size.
        hidden = num_kernels if channels == 3 else channels // _KERNEL_ATTENTION_REDUCTION
        self.conv1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(hidden, num_kernels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=(2, 3), keepdim=True)
        x = self.conv2(self.act(self.conv1(x)))
        return torch.sigmoid(x.flatten(1))


class KernelBank(nn.Module):
    """A bank of ``num_kernels`` depthwise kxk kernels and biases.

    ``weight``: (K, C, 1, k, k), ``bias``: (K, C). Calling it with coefficients
    alpha (B, K) returns the per-sample mixtures sum_k alpha[b, k] * bank[k],
    flattened to grouped-conv layout: weight (B*C, 1, k, k), bias (B*C,).
    """

    def __init__(self, channels: int, kernel_size: int, num_kernels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_kernels, channels, 1, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(num_kernels, channels))
        for kernel in self.weight.data:
            nn.init.kaiming_uniform_(kernel)

    def forward(self, coefficients: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        num_kernels, channels, _, kh, kw = self.weight.shape
        weight = torch.mm(coefficients, self.weight.reshape(num_kernels, -1))
        bias = torch.mm(coefficients, self.bias)
        return weight.reshape(-1, 1, kh, kw), bias.reshape(-1)


class DynamicDepthwiseConv2d(nn.Module):
    """Depthwise kxk convolution whose kernel is chosen per sample (official
    ``DynamicKernelAggregation`` with groups == channels).

    For sample b with input x_b (C, H, W):
        alpha_b = KernelAttention(x_b)                          # (K,)
        W_b = sum_k alpha_b[k] * bank.weight[k]                 # (C, 1, k, k)
        c_b = sum_k alpha_b[k] * bank.bias[k]                   # (C,)
        y_b = depthwise_conv2d(x_b, W_b, c_b, padding=k//2)     # (C, H, W)
    Implemented as one grouped conv over a (1, B*C, H, W) view, so batches of
    any size share a single conv call. Because of the global average pool in
    the attention, y depends on the whole image.
    """

    def __init__(self, channels: int, kernel_size: int, num_kernels: int) -> None:
        super().__init__()
        self.padding = kernel_size // 2
        self.attention = KernelAttention(channels, num_kernels)
        self.aggregation = KernelBank(channels, kernel_size, num_kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        weight, bias = self.aggregation(self.attention(x))
        y = F.conv2d(
            x.reshape(1, batch * channels, height, width),
            weight,
            bias,
            padding=self.padding,
            groups=batch * channels,
        )
        return y.view(batch, channels, height, width)


def _official_dyconv_wrapper(conv: DynamicDepthwiseConv2d) -> nn.Sequential:
    # The official code nests the dynamic conv one level deeper under the name
    # "conv" (``ffn.conv1.conv.attention...``); a one-item Sequential reproduces
    # those key paths without a wrapper class.
    return nn.Sequential(OrderedDict(conv=conv))


class MixFFN(nn.Module):
    """Feed-forward with two dynamic depthwise branches (5x5 and 7x7).

        h = GELU(proj_in(LN(x)))           # C -> 2C, split into halves h1, h2
        g1 = GELU(dyconv5(h1)), g2 = GELU(dyconv7(h2))
        out = x + proj_out([g1_0, g2_0, g1_1, g2_1, ...])    # channels interleaved
    """

    def __init__(self, dim: int, num_kernels: int) -> None:
        super().__init__()
        self.proj_in = nn.Conv2d(dim, 2 * dim, 1)
        small, large = _FFN_KERNEL_SIZES
        self.conv1 = _official_dyconv_wrapper(DynamicDepthwiseConv2d(dim, small, num_kernels))
        self.conv2 = _official_dyconv_wrapper(DynamicDepthwiseConv2d(dim, large, num_kernels))
        self.proj_out = nn.Conv2d(2 * dim, dim, 1)
        self.norm = ChannelLayerNorm(dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1, h2 = self.act(self.proj_in(self.norm(x))).chunk(2, dim=1)
        g1 = self.act(self.conv1(h1))
        g2 = self.act(self.conv2(h2))
        # proj_out was trained on interleaved channels, not on [g1, g2].
        mixed = torch.stack((g1, g2), dim=2).flatten(1, 2)
        return x + self.proj_out(mixed)


class SRConvNetBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_kernels: int) -> None:
        super().__init__()
        self.attention = FourierModulation(dim, num_heads)
        self.ffn = MixFFN(dim, num_kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.attention(x))


class _MeanShiftConstants(nn.Module):
    """The official ``MeanShift`` 1x1 conv, kept as buffers only.

    The official model constructs ``sub_mean``/``add_mean`` but never calls them;
    they are frozen, so they are excluded from its trainable-parameter count, yet
    they are in every checkpoint. Holding them here lets ``strict=True`` loading
    work; nothing ever reads them.
    """

    def __init__(self, sign: float) -> None:
        super().__init__()
        self.register_buffer("weight", torch.eye(3).view(3, 3, 1, 1))
        self.register_buffer("bias", sign * 255.0 * torch.tensor(_DIV2K_RGB_MEAN))


def _make_upsampler(dim: int, scale: int) -> nn.Sequential:
    # x4 is two x2 stages; other scales use a single pixel shuffle. The module
    # indices (0 and 3) are part of the checkpoint keys.
    stages = [2, 2] if scale == 4 else [scale]
    layers: list[nn.Module] = []
    for factor in stages:
        layers += [nn.Conv2d(dim, dim * factor * factor, 1), nn.PixelShuffle(factor), nn.GELU()]
    return nn.Sequential(*layers)


class SRConvNet(nn.Module):
    """SRConvNet. Input and output are RGB in [0, 255], output is ``scale`` times larger.

        f = to_feat(x);  f = blocks(f) + f
        y = tail(upsampling(f)) + bilinear_upsample(x, scale)
    """

    def __init__(
        self,
        scale: int,
        dim: int = 64,
        num_blocks: int = 8,
        num_heads: int = 8,
        num_kernels: int = 16,
        colors: int = 3,
    ) -> None:
        super().__init__()
        if scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        if num_kernels < 2:
            # The official code swaps in an unpadded plain conv here, which shrinks
            # the feature map and then fails at the residual add.
            raise ValueError(f"num_kernels must be >= 2, got {num_kernels}")
        if dim != 3 and dim < _KERNEL_ATTENTION_REDUCTION:
            raise ValueError(f"dim must be 3 or >= {_KERNEL_ATTENTION_REDUCTION}, got {dim}")
        self.scale = scale
        self.sub_mean = _MeanShiftConstants(sign=-1.0)
        self.add_mean = _MeanShiftConstants(sign=1.0)
        self.to_feat = nn.Conv2d(colors, dim, kernel_size=3, padding=1)
        self.blocks = nn.Sequential(
            *(SRConvNetBlock(dim, num_heads, num_kernels) for _ in range(num_blocks))
        )
        self.upsampling = _make_upsampler(dim, scale)
        self.tail = nn.Conv2d(dim, colors, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.to_feat(x)
        features = self.blocks(features) + features
        residual = self.tail(self.upsampling(features))
        # scale_factor (not size) so that the sampling grid matches the official code.
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return residual + base


_DEFAULTS: dict[str, Any] = {
    "dim": 64,
    "num_blocks": 8,
    "num_heads": 8,
    "num_kernels": 16,
    "colors": 3,
}


def build(scale: int, **hparams: Any) -> SRConvNet:
    unknown = sorted(set(hparams) - set(_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown SRConvNet hyperparameter(s): {', '.join(unknown)}")
    return SRConvNet(scale=scale, **{**_DEFAULTS, **hparams})


def detect(state_dict: StateDict) -> dict[str, Any] | None:
    required = (
        "to_feat.weight",
        "blocks.0.attention.layer_scale",
        "blocks.0.attention.a.conv_layer.weight",
        "blocks.0.ffn.conv1.conv.aggregation.weight",
        "upsampling.0.weight",
        "tail.weight",
    )
    if not all(key in state_dict for key in required):
        return None

    dim, colors = state_dict["to_feat.weight"].shape[:2]
    num_blocks = 1 + max(
        int(key.split(".")[1]) for key in state_dict if key.startswith("blocks.")
    )
    num_heads = state_dict["blocks.0.attention.layer_scale"].shape[0]
    num_kernels = state_dict["blocks.0.ffn.conv1.conv.aggregation.weight"].shape[0]

    if "upsampling.3.weight" in state_dict:
        scale = 4
    else:
        expansion = state_dict["upsampling.0.weight"].shape[0] // dim
        scale = round(expansion**0.5)
        if scale * scale * dim != state_dict["upsampling.0.weight"].shape[0]:
            return None

    return {
        "scale": scale,
        "dim": int(dim),
        "num_blocks": num_blocks,
        "num_heads": int(num_heads),
        "num_kernels": int(num_kernels),
        "colors": int(colors),
    }


SPEC = register(
    ArchSpec(
        name="srconvnet",
        paper="SRConvNet: A Transformer-Style ConvNet for Lightweight Image Super-Resolution (IJCV 2025)",
        input_range=255.0,
        scales=(2, 3, 4),
        defaults=dict(_DEFAULTS),
        build=build,
        detect=detect,
        license="no licence file in the official repository",
    )
)
