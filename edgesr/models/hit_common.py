"""Layers shared by the three HiT-SR networks (Zhang, Zhang & Yu, ECCV 2024).

HiT-SIR, HiT-SNG and HiT-SRF share one skeleton: a 3x3 shallow conv, residual groups
of hierarchical transformer blocks whose window grows block by block
(``base_win_size * hier_win_ratios[i]``), and a pixel-shuffle reconstruction. They
differ only inside the block (see ``hit_sir``, ``hit_sng``, ``hit_srf``), so the
skeleton takes a block factory.

Module and parameter names follow the official code so that its checkpoints load
with ``strict=True``. Inside the body features are kept channels-last,
``(B, H, W, C)``, which is what LayerNorm and the linear layers want; the official
code flattens the same memory to ``(B, H*W, C)`` tokens.

Everything that depends on the input size is confined to ``padding_to_multiple``,
``reflect_pad_to_multiple``, ``window_partition`` and ``window_merge``; everything
that depends only on the window size (offset tables, gather indices) is built once
by ``relative_offsets`` / ``pooled_offset_index`` / ``relative_position_index`` and
stored as non-trainable buffers.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgesr.models.registry import ArchSpec, StateDict, register

RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K mean, subtracted inside the network
RECONSTRUCTION_CHANNELS = 64  # hidden width of the 'pixelshuffle' and 'nearest+conv' heads
UPSAMPLERS = ("pixelshuffledirect", "pixelshuffle", "nearest+conv")
PAPER = "HiT-SR: Hierarchical Transformer for Efficient Image Super-Resolution (ECCV 2024)"
LICENSE = ("the official repository states no licence of its own; it builds on BasicSR "
           "(Apache-2.0) - check before redistributing weights")

# Official HiT-SR configuration (options/Test/test_HiT_*.yml), shared by the three variants.
DEFAULT_HPARAMS: dict[str, Any] = {
    "in_chans": 3,
    "embed_dim": 60,
    "depths": [6, 6, 6, 6],
    "num_heads": [6, 6, 6, 6],
    "base_win_size": [8, 8],
    "hier_win_ratios": [0.5, 1, 2, 4, 6, 8],
    "mlp_ratio": 2.0,
    "upsampler": "pixelshuffledirect",
    "resi_connection": "1conv",
    "img_range": 1.0,
    "patch_norm": True,
}

WindowSize = tuple[int, int]
# (dim, num_heads, window_size, base_win_size, mlp_ratio) -> block
BlockFactory = Callable[[int, int, WindowSize, WindowSize, float], nn.Module]


# --------------------------------------------------------------------------------------
# Shape helpers: the only places where window or input sizes turn into tensor shapes.
# --------------------------------------------------------------------------------------


def hierarchical_window_sizes(
    base_win_size: Sequence[int], hier_win_ratios: Sequence[float]
) -> list[WindowSize]:
    """Window of each block position: ``int(base * ratio)`` per side, as the official code."""
    return [(int(base_win_size[0] * r), int(base_win_size[1] * r)) for r in hier_win_ratios]


def key_grid_size(window_size: WindowSize, base_win_size: Sequence[int]) -> WindowSize:
    """Number of pooled keys per side: windows larger than the base window are pooled
    down to the base window, smaller ones keep one key per pixel."""
    return (min(window_size[0], base_win_size[0]), min(window_size[1], base_win_size[1]))


def padding_to_multiple(size: int, multiple: int) -> int:
    return (multiple - size % multiple) % multiple


def reflect_pad_to_multiple(x: torch.Tensor, multiple: WindowSize) -> torch.Tensor:
    """Reflect-pad the bottom and right of an NCHW map up to a multiple of ``multiple``.

    One reflection can add at most ``size - 1`` pixels, so larger pads are done in
    steps, each reflecting the already padded map. Reflection pads are prefixes of each
    other, so this equals the official padding wherever that runs (HiT-SIR's single
    reflection, HiT-SNG/SRF's reflect-by-``size-1``-then-reflect-again) and extends it to
    the small inputs where the official code raises.
    """
    pad_h = padding_to_multiple(x.shape[-2], multiple[0])
    pad_w = padding_to_multiple(x.shape[-1], multiple[1])
    while pad_h or pad_w:
        step_h = min(pad_h, x.shape[-2] - 1)
        step_w = min(pad_w, x.shape[-1] - 1)
        if (pad_h and not step_h) or (pad_w and not step_w):
            raise ValueError(f"cannot reflect-pad a map of size {tuple(x.shape[-2:])}")
        x = F.pad(x, (0, step_w, 0, step_h), mode="reflect")
        pad_h -= step_h
        pad_w -= step_w
    return x


def window_partition(x: torch.Tensor, window_size: WindowSize) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * num_windows, window_area, C)``, windows in row-major order."""
    batch, height, width, channels = x.shape
    win_h, win_w = window_size
    x = x.view(batch, height // win_h, win_h, width // win_w, win_w, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, win_h * win_w, channels)


def window_merge(windows: torch.Tensor, window_size: WindowSize, height: int, width: int) -> torch.Tensor:
    """Inverse of ``window_partition``: ``(B * num_windows, window_area, C)`` -> ``(B, H, W, C)``."""
    win_h, win_w = window_size
    channels = windows.shape[-1]
    x = windows.view(-1, height // win_h, width // win_w, win_h, win_w, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


def relative_offsets(window_size: WindowSize) -> torch.Tensor:
    """Every (dy, dx) between two pixels of a window, ``((2h-1)*(2w-1), 2)`` float, row-major."""
    dy = torch.arange(1 - window_size[0], window_size[0])
    dx = torch.arange(1 - window_size[1], window_size[1])
    return torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).reshape(-1, 2).float()


def relative_position_index(window_size: WindowSize) -> torch.Tensor:
    """``(area, area)`` index into ``relative_offsets`` for each (query, key) pixel pair."""
    ys, xs = torch.meshgrid(torch.arange(window_size[0]), torch.arange(window_size[1]), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + window_size[0] - 1
    dx = xs[:, None] - xs[None, :] + window_size[1] - 1
    return dy * (2 * window_size[1] - 1) + dx


def pooled_offset_index(window_size: WindowSize, key_grid: WindowSize) -> torch.Tensor:
    """``(area, cells)`` index into the box-filtered offset table (see ``WindowPositionBias``).

    A cell of ``cell_h x cell_w`` pixels whose top-left key is (ky, kx) spans offsets
    ``qy - ky - cell_h + 1 .. qy - ky``; the box filter (valid, stride 1) stores their mean
    at its first row, ``qy - ky - cell_h + 1 + (win_h - 1)``, and likewise for columns.
    """
    (win_h, win_w), (grid_h, grid_w) = window_size, key_grid
    cell_h, cell_w = win_h // grid_h, win_w // grid_w
    qy, qx = torch.meshgrid(torch.arange(win_h), torch.arange(win_w), indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(grid_h) * cell_h, torch.arange(grid_w) * cell_w, indexing="ij")
    rows = qy.flatten()[:, None] - ky.flatten()[None, :] + win_h - cell_h
    cols = qx.flatten()[:, None] - kx.flatten()[None, :] + win_w - cell_w
    return rows * (2 * win_w - cell_w) + cols


# --------------------------------------------------------------------------------------
# Spatial-channel correlation (the attention of HiT-SR)
# --------------------------------------------------------------------------------------


class DualFeatureExtraction(nn.Module):
    """DFE: the q/v projection, a gated product of a conv branch and a 1x1 branch (NCHW)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        hidden = dim // 5
        self.conv = nn.Sequential(
            nn.Conv2d(dim, hidden, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(hidden, out_dim, 1),
        )
        self.linear = nn.Conv2d(dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.linear(x)


def _norm_relu_linear(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(in_dim), nn.ReLU(), nn.Linear(in_dim, out_dim))


class WindowPositionBias(nn.Module):
    """Relative position bias between window pixels and pooled key cells.

    An MLP (CrossFormer's dynamic position bias) maps every (dy, dx) offset to one value
    per head, so the bias scales to any window without a per-window table. Keys are
    pooled to ``key_grid`` cells (see ``SpatialChannelCorrelation``) and the bias of a
    query to a cell is the mean of its biases to the cell's pixels. The official code
    gathers the full (area x area) pixel-pair bias and averages it (400 MB for a 64x64
    window); the mean over a cell is a box filter on the offset table, so here the
    table is box-filtered once and only (area x cells) entries are gathered.

    The output depends on the weights only: an export can evaluate it once and keep
    the constant. Returns ``(num_heads, window_area, key_cells)``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: WindowSize, key_grid: WindowSize):
        super().__init__()
        # The official code builds DynamicPosBias(dim // 4), whose width is again // 4.
        hidden = dim // 16
        self.window_size = window_size
        self.cell_size = (window_size[0] // key_grid[0], window_size[1] // key_grid[1])
        self.pos_proj = nn.Linear(2, hidden)
        self.pos1 = _norm_relu_linear(hidden, hidden)
        self.pos2 = _norm_relu_linear(hidden, hidden)
        self.pos3 = _norm_relu_linear(hidden, num_heads)
        self.register_buffer("offsets", relative_offsets(window_size), persistent=False)
        self.register_buffer("cell_index", pooled_offset_index(window_size, key_grid), persistent=False)

    def forward(self) -> torch.Tensor:
        table = self.pos3(self.pos2(self.pos1(self.pos_proj(self.offsets))))
        win_h, win_w = self.window_size
        table = table.T.reshape(1, -1, 2 * win_h - 1, 2 * win_w - 1)
        cell_means = F.avg_pool2d(table, self.cell_size, stride=1).flatten(2)[0]  # (heads, offsets)
        return cell_means[:, self.cell_index]


class SpatialChannelCorrelation(nn.Module):
    """SCC: HiT-SR's linear-cost replacement of window self-attention.

    The DFE output is split into q and v (half the channels each). The spatial branch
    correlates every pixel with the window's values pooled to at most a base-window
    grid (``spatial_linear`` learns the pooling), so cost grows linearly with the window;
    the channel branch correlates channels over the window's pixels. Neither uses a
    softmax: the correlations are normalised by head width and pixel count instead.

    Input: padded NCHW map whose size is a multiple of the window. Output: NHWC.
    Subclasses change how windows are formed by overriding ``partition``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: WindowSize, base_win_size: WindowSize):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.key_grid = key_grid_size(window_size, base_win_size)
        if window_size[0] % self.key_grid[0] or window_size[1] % self.key_grid[1]:
            raise ValueError(
                f"window {window_size} must be smaller than or a multiple of the base window {tuple(base_win_size)}"
            )
        self.head_dim = dim // (2 * num_heads)
        cell_area = (window_size[0] // self.key_grid[0]) * (window_size[1] // self.key_grid[1])
        self.qv = DualFeatureExtraction(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.spatial_linear = nn.Linear(cell_area, 1)
        self.pos = WindowPositionBias(dim, num_heads, window_size, self.key_grid)

    def partition(self, qv: torch.Tensor) -> torch.Tensor:
        """NCHW map -> ``(B * num_windows, window_area, C)``."""
        return window_partition(qv.permute(0, 2, 3, 1), self.window_size)

    def pool_values(self, v: torch.Tensor) -> torch.Tensor:
        """``(N, heads, area, d)`` -> ``(N, heads, cells, d)``: one learned pooling per key cell."""
        n, heads, _, head_dim = v.shape
        (win_h, win_w), (grid_h, grid_w) = self.window_size, self.key_grid
        v = v.view(n, heads, grid_h, win_h // grid_h, grid_w, win_w // grid_w, head_dim)
        v = v.permute(0, 1, 2, 4, 6, 3, 5).reshape(n, heads, grid_h * grid_w, head_dim, -1)
        return self.spatial_linear(v).squeeze(-1)

    def spatial_correlation(self, q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        pooled = self.pool_values(v)
        corr = q @ pooled.transpose(-2, -1) / self.head_dim + self.pos()
        out = corr @ pooled  # (N, heads, area, d)
        return out.transpose(1, 2).flatten(2)

    @staticmethod
    def channel_correlation(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # All heads act as one: the channel map spans the full half width.
        area = q.shape[2]
        q = q.transpose(1, 2).flatten(2)  # (N, area, C/2)
        v = v.transpose(1, 2).flatten(2)
        corr = q.transpose(-2, -1) @ v / area  # (N, C/2, C/2)
        return (corr @ v.transpose(-2, -1)).transpose(-2, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        windows = self.partition(self.qv(x))
        n, area, channels = windows.shape
        q, v = windows.view(n, area, 2, self.num_heads, channels // (2 * self.num_heads)).permute(2, 0, 3, 1, 4)
        mixed = torch.cat([self.spatial_correlation(q, v), self.channel_correlation(q, v)], dim=-1)
        return self.proj(window_merge(mixed, self.window_size, height, width))


# --------------------------------------------------------------------------------------
# Blocks and the network skeleton
# --------------------------------------------------------------------------------------


class FeedForward(nn.Module):
    """Two-layer GELU MLP on channels-last features (HiT-SIR, HiT-SNG)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class HierarchicalTransformerBlock(nn.Module):
    """Post-norm block: ``x + norm1(correlation(x))`` then ``x + norm2(mlp(x))``.

    The correlation runs on the map reflect-padded to a multiple of ``pad_multiple``
    (the window, or more where the variant needs it) and is cropped back afterwards.
    """

    def __init__(self, dim: int, correlation: nn.Module, mlp: nn.Module, pad_multiple: WindowSize):
        super().__init__()
        self.pad_multiple = pad_multiple
        self.norm1 = nn.LayerNorm(dim)
        self.correlation = correlation
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[1:3]
        padded = reflect_pad_to_multiple(x.permute(0, 3, 1, 2), self.pad_multiple)
        x = x + self.norm1(self.correlation(padded)[:, :height, :width])
        return x + self.norm2(self.mlp(x))


class BlockSequence(nn.Module):
    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def residual_conv(dim: int, resi_connection: str) -> nn.Module:
    if resi_connection == "1conv":
        return nn.Conv2d(dim, dim, 3, padding=1)
    if resi_connection == "3conv":  # bottleneck to save parameters
        return nn.Sequential(
            nn.Conv2d(dim, dim // 4, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(dim // 4, dim // 4, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(dim // 4, dim, 3, padding=1),
        )
    raise ValueError(f"resi_connection must be '1conv' or '3conv', not {resi_connection!r}")


class ResidualHierarchicalGroup(nn.Module):
    """RHTB: blocks with growing windows, a conv, and a skip over the whole group."""

    def __init__(self, blocks: list[nn.Module], dim: int, resi_connection: str):
        super().__init__()
        self.residual_group = BlockSequence(blocks)
        self.conv = residual_conv(dim, resi_connection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        body = self.residual_group(x).permute(0, 3, 1, 2)
        return x + self.conv(body).permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """NCHW -> channels-last, with the optional LayerNorm (``patch_norm``)."""

    def __init__(self, dim: int, patch_norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(dim) if patch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1))


def upsample_convs(scale: int, channels: int) -> nn.Sequential:
    """The 'pixelshuffle' head: x2 steps for powers of two, one x3 step otherwise."""
    layers: list[nn.Module] = []
    if scale & (scale - 1) == 0:
        for _ in range(int(math.log2(scale))):
            layers += [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2)]
    elif scale == 3:
        layers += [nn.Conv2d(channels, 9 * channels, 3, padding=1), nn.PixelShuffle(3)]
    else:
        raise ValueError(f"upsampler 'pixelshuffle' supports scales 2^n and 3, not {scale}")
    return nn.Sequential(*layers)


class HiTSR(nn.Module):
    """The HiT-SR network; ``make_block`` decides the variant.

    Takes RGB in [0, 1] (``img_range`` 1); the DIV2K mean is removed inside and added
    back to the output.
    """

    def __init__(
        self,
        make_block: BlockFactory,
        scale: int,
        in_chans: int,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        base_win_size: Sequence[int],
        hier_win_ratios: Sequence[float],
        mlp_ratio: float,
        upsampler: str,
        resi_connection: str,
        img_range: float,
        patch_norm: bool,
    ):
        super().__init__()
        if len(num_heads) != len(depths):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        if max(depths) > len(hier_win_ratios):
            raise ValueError(f"hier_win_ratios {list(hier_win_ratios)} has fewer entries than a group has blocks")
        for heads in num_heads:
            if embed_dim % (2 * heads):
                raise ValueError(f"embed_dim {embed_dim} must be divisible by 2 * num_heads ({2 * heads})")
        if embed_dim < 16:
            raise ValueError("embed_dim must be at least 16 (the position-bias MLP is embed_dim // 16 wide)")
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"upsampler must be one of {UPSAMPLERS}, not {upsampler!r}")
        if upsampler == "nearest+conv" and scale != 4:
            raise ValueError("upsampler 'nearest+conv' exists only for x4")

        self.scale = scale
        self.upsampler = upsampler
        self.img_range = img_range
        mean = torch.tensor(RGB_MEAN) if in_chans == 3 else torch.zeros(1)
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)

        base = (int(base_win_size[0]), int(base_win_size[1]))
        windows = hierarchical_window_sizes(base, hier_win_ratios)
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, padding=1)
        self.patch_embed = PatchEmbed(embed_dim, patch_norm)
        self.layers = nn.ModuleList(
            ResidualHierarchicalGroup(
                [make_block(embed_dim, heads, windows[i], base, mlp_ratio) for i in range(depth)],
                embed_dim,
                resi_connection,
            )
            for depth, heads in zip(depths, num_heads)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = residual_conv(embed_dim, resi_connection)

        feat = RECONSTRUCTION_CHANNELS
        if upsampler == "pixelshuffledirect":  # lightweight SR: one conv + one shuffle
            self.upsample = nn.Sequential(
                nn.Conv2d(embed_dim, scale**2 * in_chans, 3, padding=1), nn.PixelShuffle(scale)
            )
        else:
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, feat, 3, padding=1), nn.LeakyReLU())
            if upsampler == "pixelshuffle":
                self.upsample = upsample_convs(scale, feat)
            else:  # nearest+conv: real-world SR, fewer checkerboard artefacts
                self.conv_up1 = nn.Conv2d(feat, feat, 3, padding=1)
                self.conv_up2 = nn.Conv2d(feat, feat, 3, padding=1)
                self.conv_hr = nn.Conv2d(feat, feat, 3, padding=1)
                self.lrelu = nn.LeakyReLU(0.2)
            self.conv_last = nn.Conv2d(feat, in_chans, 3, padding=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x).permute(0, 3, 1, 2)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsampler == "pixelshuffledirect":
            return self.upsample(x)
        x = self.conv_before_upsample(x)
        if self.upsampler == "pixelshuffle":
            return self.conv_last(self.upsample(x))
        x = self.lrelu(self.conv_up1(F.interpolate(x, scale_factor=2, mode="nearest")))
        x = self.lrelu(self.conv_up2(F.interpolate(x, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) * self.img_range
        shallow = self.conv_first(x)
        deep = self.conv_after_body(self.forward_features(shallow)) + shallow
        return self.reconstruct(deep) / self.img_range + self.mean


def build_network(name: str, make_block: BlockFactory, scale: int, hparams: Mapping[str, Any]) -> HiTSR:
    """Official defaults overridden by ``hparams``; unknown names raise TypeError."""
    unknown = sorted(set(hparams) - set(DEFAULT_HPARAMS))
    if unknown:
        raise TypeError(f"{name}: unknown hyperparameter(s): {', '.join(unknown)}")
    return HiTSR(make_block, scale, **{**DEFAULT_HPARAMS, **hparams})


# --------------------------------------------------------------------------------------
# Detection from a state dict
# --------------------------------------------------------------------------------------

_FIRST_BLOCK = "layers.0.residual_group.blocks.0."
_MARKERS = {
    # Present in every HiT-SR block and in no other architecture we know.
    "hit": _FIRST_BLOCK + "correlation.spatial_linear.weight",
    "sng": _FIRST_BLOCK + "correlation.ngram_window_partition.ngram_context.unigram_embed.weight",
    "srf": _FIRST_BLOCK + "mlp.dwconv.depthwise_conv.0.weight",
}


def variant_of(state_dict: StateDict) -> str | None:
    """'sir', 'sng' or 'srf' for a HiT-SR state dict, else None."""
    if _MARKERS["hit"] not in state_dict or "conv_first.weight" not in state_dict:
        return None
    has_ngram, has_conv_ffn = _MARKERS["sng"] in state_dict, _MARKERS["srf"] in state_dict
    if has_ngram and has_conv_ffn:
        return None
    return "sng" if has_ngram else "srf" if has_conv_ffn else "sir"


def _block_prefix(layer: int, block: int) -> str:
    return f"layers.{layer}.residual_group.blocks.{block}."


def _read_scale_and_upsampler(state_dict: StateDict, in_chans: int) -> tuple[int, str] | None:
    if "conv_up1.weight" in state_dict:
        return 4, "nearest+conv"
    if "conv_before_upsample.0.weight" in state_dict:
        convs = [state_dict[k] for k in state_dict if k.startswith("upsample.") and k.endswith(".weight")]
        if len(convs) == 1 and convs[0].shape[0] == 9 * RECONSTRUCTION_CHANNELS:
            return 3, "pixelshuffle"
        return 2 ** len(convs), "pixelshuffle"
    if "upsample.0.weight" in state_dict:
        return math.isqrt(state_dict["upsample.0.weight"].shape[0] // in_chans), "pixelshuffledirect"
    return None


def _read_mlp_ratio(dim: int, hidden: int) -> float:
    ratio = hidden / dim
    # The network rounds int(dim * ratio) down; make sure the float survives that.
    while int(dim * ratio) < hidden:
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def _read_window_hierarchy(
    state_dict: StateDict, depths: Sequence[int], window_sizes: Sequence[WindowSize] | None
) -> tuple[list[int], list[float]]:
    """``base_win_size`` and ``hier_win_ratios`` as far as shapes reveal them.

    ``spatial_linear`` has (window / base window)^2 inputs, which says nothing about
    windows at or below the base window. So: the official values when the shapes agree
    with them; otherwise ratios are read from the shapes, keeping the official ratio for
    blocks whose shape cannot tell. ``window_sizes`` (HiT-SNG's unigram kernels give the
    exact window of each block) pin the base window down when present.
    """
    default_base = list(DEFAULT_HPARAMS["base_win_size"])
    default_ratios = list(DEFAULT_HPARAMS["hier_win_ratios"])
    layer = max(range(len(depths)), key=lambda i: depths[i])
    cells = [
        state_dict[_block_prefix(layer, b) + "correlation.spatial_linear.weight"].shape[1]
        for b in range(depths[layer])
    ]
    expected_windows = hierarchical_window_sizes(default_base, default_ratios)[: len(cells)]
    expected_cells = [
        (w[0] // key_grid_size(w, default_base)[0]) * (w[1] // key_grid_size(w, default_base)[1])
        for w in expected_windows
    ]
    if cells == expected_cells and (window_sizes is None or list(window_sizes) == expected_windows):
        return default_base, default_ratios
    if window_sizes is not None:
        pooled = [(w, c) for w, c in zip(window_sizes, cells) if c > 1]
        if pooled:
            (win_h, win_w), c = pooled[0]
            side = math.isqrt(c)
            base = [win_h // side, win_w // side]
        else:  # no window exceeds the base window: any base >= the windows computes the same
            base = default_base
        return base, [w[0] / base[0] for w in window_sizes]
    ratios = [
        math.sqrt(c) if c > 1 else (default_ratios[i] if i < len(default_ratios) and default_ratios[i] <= 1 else 1)
        for i, c in enumerate(cells)
    ]
    return default_base, ratios


def read_hparams(
    state_dict: StateDict, window_sizes: Sequence[WindowSize] | None = None
) -> dict[str, Any] | None:
    """``{"scale": s, **hparams}`` read from a HiT-SR state dict's keys and shapes."""
    embed_dim, in_chans = state_dict["conv_first.weight"].shape[:2]
    found = _read_scale_and_upsampler(state_dict, in_chans)
    if found is None:
        return None
    scale, upsampler = found
    depths, num_heads = [], []
    while _block_prefix(len(depths), 0) + "norm1.weight" in state_dict:
        layer = len(depths)
        depth = 0
        while _block_prefix(layer, depth) + "norm1.weight" in state_dict:
            depth += 1
        depths.append(depth)
        num_heads.append(state_dict[_block_prefix(layer, 0) + "correlation.pos.pos3.2.weight"].shape[0])
    hidden = state_dict[_FIRST_BLOCK + "mlp.fc1.weight"].shape[0]
    base_win_size, hier_win_ratios = _read_window_hierarchy(state_dict, depths, window_sizes)
    return {
        "scale": int(scale),
        "in_chans": int(in_chans),
        "embed_dim": int(embed_dim),
        "depths": depths,
        "num_heads": [int(h) for h in num_heads],
        "base_win_size": base_win_size,
        "hier_win_ratios": hier_win_ratios,
        "mlp_ratio": _read_mlp_ratio(int(embed_dim), int(hidden)),
        "upsampler": upsampler,
        "resi_connection": "3conv" if "layers.0.conv.0.weight" in state_dict else "1conv",
        # A scaling constant, not a tensor: official HiT-SR always uses 1.
        "img_range": DEFAULT_HPARAMS["img_range"],
        "patch_norm": "patch_embed.norm.weight" in state_dict,
    }


def detector(variant: str) -> Callable[[StateDict], dict[str, Any] | None]:
    """detect() for a variant whose hyperparameters ``read_hparams`` reads on its own."""

    def detect(state_dict: StateDict) -> dict[str, Any] | None:
        return read_hparams(state_dict) if variant_of(state_dict) == variant else None

    return detect


def register_variant(
    name: str, make_block: BlockFactory, detect: Callable[[StateDict], dict[str, Any] | None]
) -> ArchSpec:
    """Register one HiT-SR variant: the three differ only in their block and detection."""

    def build(scale: int, **hparams: Any) -> nn.Module:
        return build_network(name, make_block, scale, hparams)

    compact = name.replace("-", "")
    return register(ArchSpec(
        name=name, paper=PAPER, input_range=1.0, scales=(2, 3, 4), defaults=DEFAULT_HPARAMS,
        build=build, detect=detect, license=LICENSE,
        aliases=(name.replace("-", "_"), compact),
    ))
