"""HiT-SRF: SRFormer-Light made hierarchical (HiT-SR, ECCV 2024).

Same correlation as HiT-SIR; the feed-forward network adds a depthwise 5x5 conv
branch (ConvFFN) for local context.
"""
from __future__ import annotations


import torch
from torch import nn

from edgesr.models.hit_common import (
    HierarchicalTransformerBlock,
    SpatialChannelCorrelation,
    WindowSize,
    detector,
    register_variant,
)

NAME = "hit-srf"


class DepthwiseConv(nn.Module):
    """Depthwise 5x5 conv + GELU on channels-last features."""

    def __init__(self, channels: int):
        super().__init__()
        self.depthwise_conv = nn.Sequential(nn.Conv2d(channels, channels, 5, padding=2, groups=channels), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.depthwise_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class ConvFeedForward(nn.Module):
    """fc1 -> GELU -> (+ depthwise conv branch) -> fc2."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.dwconv = DepthwiseConv(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.act(self.fc1(x))
        return self.fc2(hidden + self.dwconv(hidden))


def make_block(
    dim: int, num_heads: int, window_size: WindowSize, base_win_size: WindowSize, mlp_ratio: float
) -> nn.Module:
    return HierarchicalTransformerBlock(
        dim,
        SpatialChannelCorrelation(dim, num_heads, window_size, base_win_size),
        ConvFeedForward(dim, int(dim * mlp_ratio)),
        pad_multiple=window_size,
    )


SPEC = register_variant(NAME, make_block, detector("srf"))
