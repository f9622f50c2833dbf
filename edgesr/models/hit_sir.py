"""HiT-SIR: SwinIR-Light made hierarchical (HiT-SR, ECCV 2024).

The plainest variant: each block is spatial-channel correlation on plain windows
followed by a two-layer MLP.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from edgesr.models.hit_common import (
    DEFAULT_HPARAMS,
    LICENSE,
    PAPER,
    FeedForward,
    HierarchicalTransformerBlock,
    SpatialChannelCorrelation,
    WindowSize,
    build_network,
    read_hparams,
    variant_of,
)
from edgesr.models.registry import ArchSpec, StateDict, register

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


def build(scale: int, **hparams: Any) -> nn.Module:
    return build_network(NAME, make_block, scale, hparams)


def detect(state_dict: StateDict) -> dict[str, Any] | None:
    return read_hparams(state_dict) if variant_of(state_dict) == "sir" else None


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
        aliases=("hit_sir", "hitsir"),
    )
)
