"""HiT-SNG: SwinIR-NG made hierarchical (HiT-SR, ECCV 2024).

Before the spatial-channel correlation, every window receives an N-gram context: each
window is summarised to one value per channel pair (the "unigram"), a small softmax
attention runs over each 2x2 neighbourhood of unigrams, once looking forward
(right/down) and once backward (left/up), and the merged result is added to all
pixels of the window.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgesr.models.hit_common import (
    FeedForward,
    HierarchicalTransformerBlock,
    SpatialChannelCorrelation,
    WindowSize,
    read_hparams,
    register_variant,
    relative_position_index,
    variant_of,
    window_partition,
)
from edgesr.models.registry import StateDict

NAME = "hit-sng"
# The official correlation hard-codes 2-grams: each window attends to a 2x2 window neighbourhood.
NGRAM = 2
_UNIGRAM_KERNEL = "correlation.ngram_window_partition.ngram_context.unigram_embed.weight"


class NGramWindowAttention(nn.Module):
    """Softmax self-attention among the NGRAM x NGRAM unigrams of one neighbourhood,
    with a learned relative position bias table (Swin style)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * NGRAM - 1) ** 2, num_heads))
        # Persistent because the official checkpoints carry it.
        self.register_buffer("relative_position_index", relative_position_index((NGRAM, NGRAM)))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n, length, channels = tokens.shape
        q, k, v = self.qkv(tokens).view(n, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)
        attn = ((q * self.scale) @ k.transpose(-2, -1) + bias).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(n, length, channels))


class NGramContext(nn.Module):
    """Per-window context vector ``(B, C, windows_h, windows_w)`` from an NCHW map."""

    def __init__(self, dim: int, window_size: WindowSize, num_heads: int):
        super().__init__()
        # One conv shared by all channel pairs keeps the parameter count independent of dim.
        self.unigram_embed = nn.Conv2d(2, 1, kernel_size=window_size, stride=window_size)
        self.ngram_attn = NGramWindowAttention(dim // 2, num_heads)
        self.merge = nn.Conv2d(dim, dim, 1)

    def neighbourhood_context(self, unigrams: torch.Tensor) -> torch.Tensor:
        """Attention over each NGRAM x NGRAM neighbourhood of a padded unigram map,
        averaged over the neighbourhood: ``(B, C, h + 1, w + 1)`` -> ``(B, C, h, w)``."""
        batch, channels, padded_h, padded_w = unigrams.shape
        height, width = padded_h - NGRAM + 1, padded_w - NGRAM + 1
        neighbours = torch.stack(
            [unigrams[:, :, dy : dy + height, dx : dx + width] for dy in range(NGRAM) for dx in range(NGRAM)],
            dim=-1,
        )
        tokens = neighbours.permute(0, 2, 3, 4, 1).reshape(batch * height * width, NGRAM * NGRAM, channels)
        context = self.ngram_attn(tokens).mean(dim=1)
        return context.view(batch, height, width, channels).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        unigrams = self.unigram_embed(x.reshape(batch * channels // 2, 2, height, width))
        unigrams = unigrams.view(batch, channels // 2, *unigrams.shape[-2:])
        # The official "sequential reflection" pad copies NGRAM-1 rows/columns; for 2-grams
        # that is exactly a 1-pixel reflect pad (it needs >= 2 windows per side).
        forward_context = self.neighbourhood_context(F.pad(unigrams, (0, NGRAM - 1, 0, NGRAM - 1), mode="reflect"))
        backward_context = self.neighbourhood_context(F.pad(unigrams, (NGRAM - 1, 0, NGRAM - 1, 0), mode="reflect"))
        return self.merge(torch.cat([forward_context, backward_context], dim=1))


class NGramWindowPartition(nn.Module):
    """Window partition that adds each window's N-gram context to all of its pixels."""

    def __init__(self, dim: int, window_size: WindowSize, num_heads: int):
        super().__init__()
        self.window_size = window_size
        self.ngram_context = NGramContext(dim, window_size, num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.ngram_context(x)  # (B, C, windows_h, windows_w), same window order
        windows = window_partition(x.permute(0, 2, 3, 1), self.window_size)
        return windows + context.permute(0, 2, 3, 1).reshape(-1, 1, context.shape[1])


class NGramSpatialChannelCorrelation(SpatialChannelCorrelation):
    def __init__(self, dim: int, num_heads: int, window_size: WindowSize, base_win_size: WindowSize):
        super().__init__(dim, num_heads, window_size, base_win_size)
        self.ngram_window_partition = NGramWindowPartition(dim, window_size, num_heads)

    def partition(self, qv: torch.Tensor) -> torch.Tensor:
        return self.ngram_window_partition(qv)


def make_block(
    dim: int, num_heads: int, window_size: WindowSize, base_win_size: WindowSize, mlp_ratio: float
) -> nn.Module:
    return HierarchicalTransformerBlock(
        dim,
        NGramSpatialChannelCorrelation(dim, num_heads, window_size, base_win_size),
        FeedForward(dim, int(dim * mlp_ratio)),
        # At least two windows per side, so that the unigram map can be reflect-padded.
        pad_multiple=(2 * window_size[0], 2 * window_size[1]),
    )


def detect(state_dict: StateDict) -> dict[str, Any] | None:
    if variant_of(state_dict) != "sng":
        return None
    # The unigram conv's kernel is the block's window, so the hierarchy is fully readable here.
    # Every group repeats the same hierarchy; the deepest one shows most of it.
    window_sizes: list[WindowSize] = []
    layer = 0
    while f"layers.{layer}.residual_group.blocks.0.{_UNIGRAM_KERNEL}" in state_dict:
        windows = []
        while f"layers.{layer}.residual_group.blocks.{len(windows)}.{_UNIGRAM_KERNEL}" in state_dict:
            kernel = state_dict[f"layers.{layer}.residual_group.blocks.{len(windows)}.{_UNIGRAM_KERNEL}"].shape[-2:]
            windows.append((int(kernel[0]), int(kernel[1])))
        window_sizes = max(window_sizes, windows, key=len)
        layer += 1
    return read_hparams(state_dict, window_sizes)


SPEC = register_variant(NAME, make_block, detect)
