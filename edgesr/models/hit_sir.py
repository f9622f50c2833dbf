"""HiT-SIR: SwinIR-Light made hierarchical (HiT-SR, ECCV 2024).

The plainest variant: each block is spatial-channel correlation on plain windows
followed by a two-layer MLP.
"""
from __future__ import annotations


from torch import nn

from edgesr.models.hit_common import (
    FeedForward,
    HierarchicalTransformerBlock,
    SpatialChannelCorrelation,
    WindowSize,
    detector,
    register_variant,
)

NAME = "hit-sir"


def make_block(
    dim: int, num_heads: int, window_size: WindowSize, base_win_size: WindowSize, mlp_ratio: float
) -> nn.Module:
    return HierarchicalTransformerBlock(
        dim,
        SpatialChannelCorrelation(dim, num_heads, window_size, base_win_size),
        FeedForward(dim, int(dim * mlp_ratio)),
        pad_multiple=window_size,
    )


SPEC = register_variant(NAME, make_block, detector("sir"))
