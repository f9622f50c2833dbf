"""HiT-SRF: SRFormer-Light made hierarchical (HiT-SR, ECCV 2024).

Same correlation as HiT-SIR; the feed-forward network adds a depthwise 5x5 conv
branch (ConvFFN) for local context.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgesr.models.hit_common import (
    DEFAULT_HPARAMS,
    LICENSE,
    PAPER,
    HierarchicalTransformerBlock,
    SpatialChannelCorrelation,
    WindowSize,
    build_network,
    read_hparams,
    variant_of,
)
from edgesr.models.registry import ArchSpec, StateDict, register

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


def build(scale: int, **hparams: Any) -> nn.Module:
    return build_network(NAME, make_block, scale, hparams)


def detect(state_dict: StateDict) -> dict[str, Any] | None:
    return read_hparams(state_dict) if variant_of(state_dict) == "srf" else None


SPEC = register(
    ArchSpec(
        name=NAME,
        paper=PAPER,
        input_range=1.0,
        scales=(2, 3, 4),
        defaults=DEFAULT_HPARAMS,
        build=build,
        detect=detect,
        license=LICENSE,
        aliases=("hit_srf", "hitsrf"),
    )
)
