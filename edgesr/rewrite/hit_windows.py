"""HiT-SR blocks in an export-friendly form: padding and windows resolved, bias folded.

What the original blocks do that exporters handle badly:

* ``reflect_pad_to_multiple`` loops in Python over the runtime shape (stepwise
  reflection); with a free H/W that loop cannot be traced.
* ``window_partition``/``window_merge`` and the key-cell pooling go through rank-6 and
  rank-7 views and permutes; CoreML takes rank <= 5.
* ``WindowPositionBias`` recomputes an MLP over an arange/meshgrid offset table and
  gathers an ``(area, cells)`` bias per head with an ``(area, cells)`` int64 index:
  exported as is, that is 28 MB of tables for 3.5 MB of weights (see ``hit_bias``).

Rewritten block (same maths, state-dict keys unchanged, all tensors rank <= 5):

* padding: for a fixed size the reflection steps are computed once at rewrite time
  (``reflect_pad_plan``) and applied as constant ``Pad(mode=reflect)`` ops; for any
  size the padded map is a gather with an in-graph index (stepwise reflection is a
  triangle wave of period ``2*(n-1)``, see ``reflect_index``).
* windows: ``(B, C, H, W) -> (B*C, nh, nw, wh, ww) -> (n, C, area)`` and back, channels
  first, so that a head's q or P is a free reshape ``(heads, d, area)`` and every permute
  moves whole window rows; the crop to H x W happens before ``proj`` (a per-pixel
  linear). The ``(n, area, C)`` layout needed transposes whose innermost run was d
  floats (d = 5 in HiTNet) or a key-grid row, which onnxruntime copies at a fraction of
  its speed: HiTNet x4 at 128x128, default fp32 graph, 751 -> 657 ms in onnxruntime
  (interleaved, 2 threads, AMD EPYC), LiteRT 408 -> 400 ms, still one XNNPACK partition.
  The position-bias product is one matmul per head with the windows in its rows (no
  broadcast of the shared bias, which litert-torch lowers with BROADCAST_TO).
* key-cell pooling (``spatial_linear``, a learned weighted sum over each cell): a
  strided ``ch x cw`` conv over the value half of the map, then the same rank-5
  partition on the key grid; HiT-SNG's window context, added to every pixel of a
  window, adds ``context * sum(weights)`` to the pooled values.
* spatial correlation, which has no softmax, reassociated:
  ``(q @ P^T / d + bias) @ P = q @ (P^T @ P) / d + bias @ P`` -- a ``d x d`` Gram matrix
  per window and head instead of the ``area x cells`` correlation (64x less work on
  the q side for a 64x64 window); only the bias term still meets the ``area x cells``
  matrix.
* position bias: ``hit_bias.FoldedWindowBias`` (compact box-filtered table, two small
  gathers), HiT-SNG's n-gram attention bias as a ``(heads, 4, 4)`` constant.
* range: the correlation is cubic in the block's features (1e12 on the trained HiTNet
  where features are ~100), past float16's 65504 and ruinous for int8 ranges. Each
  pixel's own factor is divided by its RMS and each window's matrices by the window's
  largest value, so the block output is ~unit size; the LayerNorm after it is
  scale-free, and gets proj's bias and its eps scaled to match (``rescaled_norm``).
  fp32 results are unchanged (5e-7); fp16 HiT-SRF runs at 73 dB of fp32, where the
  plain graph gives NaN. Float32-only graphs (fp32 ``--fused-ops`` ONNX) leave it out
  (``correlation_range_unscaled``): on HiTNet x4 at 128x128 that file ran 1.26x faster in
  onnxruntime than with the scaling (2 threads, interleaved, AVX2 host).
  What the scaling costs elsewhere is cut where a file allows: in float files proj's
  bias, times 1/k, is one more column of proj's weight against the merged map's 1/k
  channel (``correlation_bias_in_projection``: no slice of the map, no bias product and
  sum; int8 files keep the slice, as the quantizer would give 1/k the correlations'
  scale), and files that no delegate runs take |x| as one Abs (``magnitude_as_abs``).
  HiTNet x4, default fp32 ONNX, onnxruntime, 2 threads, interleaved, AMD EPYC
  (avx2/avx512f/avx512_vnni), 2026-12-06: 0.91x the time before at 128x128 (9 rounds),
  0.93x at 256x256 (7 rounds); 1.10x the ``--fused-ops`` file's time at 256x256, from
  1.22x. LiteRT fp32 at 128x128: the same time (330 vs 328 ms), one XNNPACK partition.

Measured (HiT-SRF x4, HiTNet.pth, 1x3x128x128, ORT fp32 CPU, 2 shared cores,
benchmarks/export_speed.py, median of 7 interleaved runs): ONNX 6.51 MB for 3.47 MB of
weights (1.88x; 28-55 MB before), session creation 1.2-1.4 s, ORT 1986 ms (mobile
graph) and 1438 ms (``--fused-ops``) vs eager 2060 ms: 1.04x and 1.43x (the 2.5x target
is not met; window transposes and the range scaling's elementwise ops dominate).
TFLite and CoreML (torch.export + coremltools 9) convert at 64x64.
Dynamic-shape ONNX (``hit_windows_any_size``, exported with a batch-2 example and
``Dim.DYNAMIC`` ranges) matches PyTorch at sizes and batches other than the example's.

``fold_hit_windows(model, (H, W))`` is the fixed-size form (no Range/arange ops, no
shape-dependent Python control flow); ``hit_windows_any_size(model)`` derives padding
and window counts in the graph for dynamic-shape ONNX.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgesr.models.hit_common import (
    HierarchicalTransformerBlock,
    SpatialChannelCorrelation,
    WindowSize,
    padding_to_multiple,
)
from edgesr.rewrite.hit_bias import FoldedWindowBias, runtime_zero
from edgesr.rewrite.plan import ExportContext, Rewrite, by_input_size, register_rewrite, replace_modules

# --------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------


def reflect_pad_plan(size: Sequence[int], multiple: WindowSize) -> list[tuple[int, int]]:
    """The (rows, columns) of each reflection step ``reflect_pad_to_multiple`` takes for
    an ``H x W`` map: the same steps, decided once instead of at run time."""
    height, width = int(size[0]), int(size[1])
    pad_h, pad_w = padding_to_multiple(height, multiple[0]), padding_to_multiple(width, multiple[1])
    steps = []
    while pad_h or pad_w:
        step_h, step_w = min(pad_h, height - 1), min(pad_w, width - 1)
        if (pad_h and not step_h) or (pad_w and not step_w):
            raise ValueError(f"cannot reflect-pad a map of size {(height, width)}")
        steps.append((step_h, step_w))
        height, width = height + step_h, width + step_w
        pad_h, pad_w = pad_h - step_h, pad_w - step_w
    return steps


def reflect_index(length: torch.Tensor, padded: int | torch.SymInt, device: torch.device,
                  start: int | torch.SymInt = 0) -> torch.Tensor:
    """Source index of positions ``start`` to ``padded`` of a stepwise reflect-padded axis.

    Reflecting again and again (each step around the last row of the map padded so far)
    walks back and forth: a triangle wave of period ``2*(n-1)``. ``length`` is ``n`` as
    a ``(1,)`` int64 tensor (a tensor rather than a SymInt, which the ONNX exporter
    cannot meet in tensor arithmetic)."""
    last = length - 1
    phase = torch.remainder(torch.arange(start, padded, device=device), 2 * last)
    return last - (last - phase).abs()


def _axis_length(x: torch.Tensor, dim: int) -> torch.Tensor:
    # The size of a (possibly symbolic) axis as a (1,) int64 tensor.
    return torch.arange(x.shape[dim], device=x.device)[-1:] + 1


def reflect_pad_any_size(x: torch.Tensor, multiple: WindowSize) -> torch.Tensor:
    """``reflect_pad_to_multiple`` for a free H and W: per axis the border gathered (index
    in-graph) and appended to the map. Gathering the whole padded map instead (the index
    covering the map itself too) took 98 of 618 ms of onnxruntime's kernel time for HiT-SRF
    x4 at 128x128, where most blocks pad nothing; a Concat copies the map in whole rows."""
    height, width = x.shape[-2:]
    padded_h = (height + multiple[0] - 1) // multiple[0] * multiple[0]
    padded_w = (width + multiple[1] - 1) // multiple[1] * multiple[1]
    below = x.index_select(2, reflect_index(_axis_length(x, 2), padded_h, x.device, start=height))
    x = torch.cat([x, below], dim=2)
    right = x.index_select(3, reflect_index(_axis_length(x, 3), padded_w, x.device, start=width))
    return torch.cat([x, right], dim=3)


def partition_channels_first(x: torch.Tensor, window: WindowSize) -> torch.Tensor:
    """``(B, C, H, W) -> (B * windows, C, area)``: ``window_partition``'s windows and pixel
    order with the channels first, rank <= 5. Each permute moves whole window rows (``ww``
    floats) or whole windows, never single channels: onnxruntime runs transposes whose
    innermost run is a few floats long at a fraction of its copy speed."""
    batch, channels, height, width = x.shape
    win_h, win_w = window
    rows, cols = height // win_h, width // win_w
    x = x.reshape(batch * channels, rows, win_h, cols, win_w).permute(0, 1, 3, 2, 4)  # (B*C, nh, nw, wh, ww)
    x = x.reshape(batch, channels, rows * cols, win_h * win_w).permute(0, 2, 1, 3)  # (B, windows, C, area)
    return x.reshape(-1, channels, win_h * win_w)


def merge_channels_first(windows: torch.Tensor, window: WindowSize, batch, height, width) -> torch.Tensor:
    """Inverse of ``partition_channels_first``: ``(B * windows, C, area) -> (B, C, H, W)``,
    rank <= 5, moving whole window rows and whole rows of the map."""
    win_h, win_w = window
    channels = windows.shape[1]
    rows, cols = height // win_h, width // win_w
    x = windows.reshape(batch * rows, cols, channels, win_h, win_w).permute(0, 2, 3, 1, 4)  # (B*nh, C, wh, nw, ww)
    x = x.reshape(batch, rows, channels, win_h * width).permute(0, 2, 1, 3)  # (B, C, nh, wh*W)
    return x.reshape(batch, channels, height, width)


# --------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------


class FoldedNGramAttention(nn.Module):
    """HiT-SNG's ``NGramWindowAttention`` with its (heads, 4, 4) bias as a constant."""

    plain_abs = False  # set by ``magnitude_as_abs``

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.num_heads = attn.num_heads
        self.scale = attn.scale
        # Kept so that the state dict keeps the official keys; not used in forward.
        self.relative_position_bias_table = attn.relative_position_bias_table
        self.register_buffer("relative_position_index", attn.relative_position_index)
        self.qkv = attn.qkv
        self.proj = attn.proj
        with torch.no_grad():
            bias = attn.relative_position_bias_table[attn.relative_position_index].permute(2, 0, 1)
        self.register_buffer("bias", bias.contiguous(), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n, length, channels = tokens.shape
        q, k, v = self.qkv(tokens).view(n, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        # Range: with some weights q and k reach ~1e3 and the logits 1e6, past float16's
        # 65504 (and softmax of inf is NaN). So the logits are formed from q and k divided
        # by their peaks (floored at 1: small ones are left alone), their row maximum is
        # subtracted, and only then is the scale undone: values near the maximum come out
        # right, far ones overflow to -inf, whose exp is the 0 they round to anyway.
        q_peak = magnitude_peak(q, (1, q.shape[-1]), self.plain_abs).clamp_min(1.0)  # (n, heads, length, 1)
        k_peak = magnitude_peak(k, tuple(k.shape[-2:]), self.plain_abs).clamp_min(1.0)  # (n, heads, 1, 1)
        logits = (q / q_peak * self.scale) @ (k / k_peak).transpose(-2, -1) + self.bias / q_peak / k_peak
        logits = logits - F.max_pool2d(logits, (1, length), (1, length))
        attn = (logits * q_peak * k_peak).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(n, length, channels))


def magnitude(x: torch.Tensor, plain_abs: bool = False) -> torch.Tensor:
    """|x|: one Abs where every runtime of the file has it (``plain_abs``, see
    ``magnitude_as_abs``), else relu(x) + relu(-x), as onnxruntime's CoreML ML program EP
    has no Abs."""
    return x.abs() if plain_abs else F.relu(x) + F.relu(x * -1.0)


def magnitude_peak(x: torch.Tensor, window: tuple[int, int], plain_abs: bool = False) -> torch.Tensor:
    """Largest |x| over each ``window`` of the last two axes, by max pooling: NNAPI has
    no ReduceMax."""
    # stride given: coremltools' frontend wants it as an explicit argument
    return F.max_pool2d(magnitude(x, plain_abs), window, window)


class FoldedCorrelation(nn.Module):
    """``SpatialChannelCorrelation`` (and HiT-SNG's n-gram subclass) without rank > 5
    tensors, with the position bias folded and the spatial product reassociated.

    ``forward(x, height, width, anchor, crop)``: padded NCHW map in; out the NHWC output
    cropped to ``height x width`` (``crop=False`` when nothing was padded) divided by a
    per-pixel k, and ``1/k`` (see the range comment in ``forward``; the output itself and
    None when ``range_scaled`` is off); ``anchor`` is a zero tied to the input
    (``runtime_zero``).
    """

    plain_abs = False  # set by ``magnitude_as_abs``

    def __init__(self, correlation: SpatialChannelCorrelation) -> None:
        super().__init__()
        self.num_heads = correlation.num_heads
        self.window_size = tuple(correlation.window_size)
        self.key_grid = tuple(correlation.key_grid)
        self.cell_size = (self.window_size[0] // self.key_grid[0], self.window_size[1] // self.key_grid[1])
        self.head_dim = correlation.head_dim
        self.qv = correlation.qv
        self.proj = correlation.proj
        self.spatial_linear = correlation.spatial_linear
        self.pos = correlation.pos  # parameters only (official keys); folded below
        self.folded_pos = FoldedWindowBias(correlation.pos)
        self.register_buffer("one", torch.ones(()), persistent=False)
        # Cleared by ``correlation_range_unscaled`` for float32-only graphs.
        self.range_scaled = True
        # Set by ``correlation_bias_in_projection`` in float files.
        self.bias_in_projection = False
        self.ngram = hasattr(correlation, "ngram_window_partition")
        if self.ngram:
            self.ngram_window_partition = correlation.ngram_window_partition
            context = self.ngram_window_partition.ngram_context
            context.ngram_attn = FoldedNGramAttention(context.ngram_attn)

    def pool(self, qv: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Learned pooling of the values ``v`` (n, C/2, area) over each key cell: ``(n, C/2, cells)``."""
        weight, bias = self.spatial_linear.weight, self.spatial_linear.bias
        if self.cell_size == (1, 1):
            return v * weight.reshape(()) + bias  # one pixel per cell: a scale and shift
        batch, channels, height, width = qv.shape
        half = channels // 2
        values = qv[:, half:].reshape(batch * half, 1, height, width)
        pooled = F.conv2d(values, weight.reshape(1, 1, *self.cell_size), bias, stride=self.cell_size)
        grid = pooled.reshape(batch, half, height // self.cell_size[0], width // self.cell_size[1])
        return partition_channels_first(grid, self.key_grid)

    def forward(self, x: torch.Tensor, height, width, anchor: torch.Tensor, crop: bool = True) -> torch.Tensor:
        # Every window is (channels, area): a head's q or P is then a free reshape
        # (heads, d, area), where the (area, channels) layout needs transposes whose
        # innermost run is d floats (d = 5 in HiTNet), which onnxruntime copies slowly.
        batch, _, padded_h, padded_w = x.shape
        qv = self.qv(x)
        channels = qv.shape[1]
        half = channels // 2
        windows = partition_channels_first(qv, self.window_size)  # (n, C, area)
        if self.ngram:
            context = self.ngram_window_partition.ngram_context(qv)  # (B, C, nh, nw)
            context = context.permute(0, 2, 3, 1).reshape(-1, channels, 1)
            windows = windows + context
        q, v = windows[:, :half], windows[:, half:]
        pooled = self.pool(qv, v)  # (n, C/2, cells)
        if self.ngram and self.cell_size != (1, 1):
            pooled = pooled + context[:, half:] * self.spatial_linear.weight.sum()
        n, _, area = windows.shape
        # Range: per pixel the correlation is q_i.(P^T.P) and v_i.(q^T.v): linear in the
        # pixel's own qv, quadratic in its window's. On the real HiTNet weights it reaches
        # 1e12, which overflows float16 (max 65504) in fp16 artifacts and wrecks int8
        # ranges. So the pixel's own factor is divided by the RMS r of its qv, and the
        # window's matrices by the window's largest |qv| s (its RMS loses 30 dB to float16
        # rounding: a few pixels dominate a window). The output comes out divided by
        # k = r*s^2, about unit size, and norm1 (a LayerNorm) undoes k exactly when proj's
        # bias and the LayerNorm's eps are scaled with it (``rescaled_norm``). A float32-only
        # graph skips it (``range_scaled``): 1e12 is far inside float32, and the scaling's
        # elementwise ops cost a fifth of onnxruntime's time.
        if self.range_scaled:
            inv_s = self.inverse(self.window_peak(qv))  # (n, 1, 1)
            inv_r = self.inverse(rms(windows, (1,)))  # (n, 1, area)
        else:
            inv_s = inv_r = None

        heads, head_dim = self.num_heads, self.head_dim
        q_own = _scaled(q, inv_r).reshape(n, heads, head_dim, area)
        p_h = _scaled(pooled, inv_s).reshape(n, heads, head_dim, -1)  # (n, heads, d, cells)
        gram = p_h @ p_h.transpose(-2, -1)  # (n, heads, d, d), symmetric: (q P^T P)^T = gram q^T
        # The bias term is linear in P: it lacks the pixel's factor and one factor of s.
        # One product per head with the windows in its rows: no broadcast of the shared bias
        # (litert-torch lowers one with BROADCAST_TO, which XNNPACK does not take).
        bias = self.folded_pos(anchor)  # (heads, cells, area), shared by every window
        cells = bias.shape[1]
        bias_term = p_h.transpose(0, 1).reshape(heads, -1, cells) @ bias  # (heads, n*d, area)
        # Split to (heads, n, d*area), not (heads, n, d, area): onnxscript's (0.7.2)
        # one_reshape_matmul_reshape rule turns Reshape -> MatMul -> Reshape to the latter
        # into one broadcast MatMul whenever n == heads, which pairs window i with head i's bias.
        bias_term = bias_term.reshape(heads, n, head_dim * area).transpose(0, 1).reshape(n, half, area)
        if self.range_scaled:
            bias_term = bias_term * (inv_r * inv_s)
        spatial = (gram @ q_own).reshape(n, half, area) / head_dim + bias_term
        q_win, v_win = _scaled(q, inv_s), _scaled(v, inv_s)
        channel = (q_win @ v_win.transpose(-2, -1) / area) @ _scaled(v, inv_r)  # (n, C/2, area)
        parts = [spatial, channel]
        if self.range_scaled:  # 1/k travels with the windows to the merged map
            parts.append(inv_r * inv_s * inv_s)
        merged = merge_channels_first(torch.cat(parts, dim=1), self.window_size, batch, padded_h, padded_w)
        if crop:  # a no-op crop exports as aten.alias, which coremltools rejects
            merged = merged[:, :, :height, :width]
        merged = merged.permute(0, 2, 3, 1)  # NHWC (C [+ 1] last): one axis moved, a fast transpose
        if not self.range_scaled:
            return self.proj(merged), None
        inv_k = merged[..., -1:]
        if self.bias_in_projection:  # 1/k is the last channel: W @ y + b / k in one matmul
            return F.linear(merged, torch.cat([self.proj.weight, self.proj.bias[:, None]], 1)), inv_k
        return F.linear(merged[..., :-1], self.proj.weight) + self.proj.bias * inv_k, inv_k

    def window_peak(self, qv: torch.Tensor) -> torch.Tensor:
        """Largest |qv| of each window, ``(n, 1, 1)`` in ``partition``'s window order."""
        per_channel = magnitude_peak(qv, self.window_size, self.plain_abs)  # (B, C, nh, nw)
        batch, channels, rows, cols = per_channel.shape
        peak = F.max_pool2d(per_channel.reshape(batch, 1, channels, rows * cols), (channels, 1), (channels, 1))
        return peak.reshape(-1, 1, 1)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        # Div by a constant tensor, not 1/x: NNAPI takes Div but not Reciprocal. The floor
        # keeps 1/x finite in float16 for an all-zero window or pixel.
        return torch.div(self.one, x.clamp_min(2.0**-10))


def _scaled(x: torch.Tensor, factor: torch.Tensor | None) -> torch.Tensor:
    return x if factor is None else x * factor


def rms(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Root mean square over ``dims`` (kept); squares of x/64, which stay in float16's range
    for |x| up to 16000, where x*x would overflow past 255. ReduceMean, not ReduceMax: NNAPI
    has no ReduceMax."""
    scaled = x * (1.0 / 64.0)
    return torch.sqrt((scaled * scaled).mean(dim=dims, keepdim=True)) * 64.0


def rescaled_norm(norm: nn.Module, y: torch.Tensor, inv_k: torch.Tensor, plain_abs: bool = False) -> torch.Tensor:
    """``norm(y / inv_k)`` computed from ``y`` (already divided by k): LayerNorm over the
    last axis is scale-free except for eps, which is scaled by ``inv_k**2`` here.
    ``norm`` is an ``nn.LayerNorm`` or anything with its ``weight``, ``bias`` and ``eps``.

    The rescaling keeps y near unit size but not always there: with some weights a
    row reaches a few hundred (whose squares overflow float16), in others its deviations
    are ~1e-3 (whose squares underflow). So the deviations are divided by their own mean
    magnitude first; the squares of that lie in [0, C**2] for C channels whatever y's scale.
    """
    centred = y - y.mean(dim=-1, keepdim=True)
    # 2**-24, the least float16 > 0: a row with no deviation at all gives 0, not 0/0.
    spread = magnitude(centred, plain_abs).mean(dim=-1, keepdim=True).clamp_min(2.0**-24)
    unit = centred / spread
    # eps, in units of the spread; inf when the spread is negligible against eps, and then
    # the output is 0, which is what the exact value rounds to.
    eps_root = (norm.eps**0.5) * inv_k / spread
    # The squares as Muls, not Pows, as in ``delegate_ops.ElementaryLayerNorm``.
    variance = (unit * unit).mean(dim=-1, keepdim=True) + eps_root * eps_root
    return unit / torch.sqrt(variance.clamp_min(2.0**-24)) * norm.weight + norm.bias


class _FoldedBlock(nn.Module):
    def __init__(self, block: HierarchicalTransformerBlock) -> None:
        super().__init__()
        self.pad_multiple = tuple(block.pad_multiple)
        self.norm1 = block.norm1
        self.correlation = FoldedCorrelation(block.correlation)
        self.norm2 = block.norm2
        self.mlp = block.mlp

    # Whether the correlation's output must be cropped back (always, for any size).
    crop = True
    plain_abs = False  # set by ``magnitude_as_abs``

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[1:3]
        padded = self.pad(x.permute(0, 3, 1, 2))
        correlated, inv_k = self.correlation(padded, height, width, runtime_zero(x), self.crop)
        x = x + (self.norm1(correlated) if inv_k is None
                 else rescaled_norm(self.norm1, correlated, inv_k, self.plain_abs))
        return x + self.norm2(self.mlp(x))


class FixedSizeBlock(_FoldedBlock):
    """A HiT-SR block for one ``H x W``: reflection steps decided at rewrite time."""

    def __init__(self, block: HierarchicalTransformerBlock, size: tuple[int, int]) -> None:
        super().__init__(block)
        self.size = (int(size[0]), int(size[1]))
        self.pad_steps = reflect_pad_plan(self.size, self.pad_multiple)
        self.crop = bool(self.pad_steps)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            raise ValueError(
                f"this HiT-SR block was rewritten for {self.size[0]}x{self.size[1]} inputs, got "
                f"{x.shape[-2]}x{x.shape[-1]}; rewrite again for that size or use hit_windows_any_size"
            )
        for step_h, step_w in self.pad_steps:
            x = F.pad(x, (0, step_w, 0, step_h), mode="reflect")
        return x

    def extra_repr(self) -> str:
        return f"size={self.size}, pad_steps={self.pad_steps}"


class AnySizeBlock(_FoldedBlock):
    """A HiT-SR block for any ``H x W``: padding is a gather with an in-graph index."""

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        return reflect_pad_any_size(x, self.pad_multiple)


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------


def fold_hit_windows(model: nn.Module, input_size: tuple[int, int]) -> nn.Module:
    """A copy of a HiT-SR ``model`` with every block folded for ``input_size`` (the LR
    H, W: HiT-SR's blocks all run at the input resolution)."""
    size = (int(input_size[0]), int(input_size[1]))
    return replace_modules(model, _is_hit_block, lambda block: FixedSizeBlock(block, size))


def hit_windows_any_size(model: nn.Module) -> nn.Module:
    """A copy of a HiT-SR ``model`` whose blocks pad and partition for any input size."""
    return replace_modules(model, _is_hit_block, AnySizeBlock)


def _is_hit_block(module: nn.Module) -> bool:
    return isinstance(module, HierarchicalTransformerBlock)


def has_hit_blocks(model: nn.Module) -> bool:
    return any(map(_is_hit_block, model.modules()))


def _explain(model: nn.Module, context: ExportContext) -> str:
    common = ("position bias as a compact box-filtered table per window size expanded by two "
              "small gathers; rank<=5 window partition; cell pooling as a strided conv; "
              "q@(P^T P) reassociation")
    if context.input_size is None:
        return f"HiT-SR blocks: reflect padding as in-graph gathers (any size); {common}"
    h, w = context.input_size
    return f"HiT-SR blocks: reflect padding resolved for {h}x{w}; {common}"


HIT_WINDOWS = register_rewrite(
    Rewrite(
        name="hit_windows",
        description="HiT-SR: padding/windows resolved, rank<=5 tensors, position bias folded",
        # Every target: CoreML needs rank <= 5, and every file wants the folded bias.
        applies=lambda model, context: has_hit_blocks(model),
        apply=by_input_size(fold_hit_windows, hit_windows_any_size),
        explain=_explain,
    )
)


def correlation_range_unscaled(model: nn.Module) -> nn.Module:
    """A copy of a folded HiT-SR ``model`` whose correlations skip the float16/int8 range
    scaling: the same values in float32 without a fifth of the graph's elementwise ops,
    and a plain ``norm1`` that onnxruntime fuses into one LayerNormalization."""
    return _with_flag(model, lambda module: isinstance(module, FoldedCorrelation), "range_scaled", False)


def _with_flag(model: nn.Module, match: Callable[[nn.Module], bool], flag: str, value: bool) -> nn.Module:
    """A copy of ``model`` with ``flag`` set to ``value`` on every submodule that ``match``es."""

    def make(module: nn.Module) -> nn.Module:
        setattr(module, flag, value)  # on replace_modules' copy
        return module

    return replace_modules(model, match, make)


CORRELATION_RANGE_UNSCALED = register_rewrite(
    Rewrite(
        name="correlation_range_unscaled",
        description="HiT-SR correlation without the float16/int8 range scaling (float32-only graph)",
        applies=lambda model, context: context.float32_only
        and any(isinstance(module, FoldedCorrelation) for module in model.modules()),
        apply=lambda model, context: correlation_range_unscaled(model),
        explain=lambda model, context: (
            "HiT-SR correlation without the float16/int8 range scaling: this fp32 --fused-ops "
            "file computes in float32, where the unscaled values (up to ~1e12) fit; not for "
            "float16 runtimes such as TensorRT with --trt-fp16"),
    )
)


def correlation_bias_in_projection(model: nn.Module) -> nn.Module:
    """A copy of a folded HiT-SR ``model`` whose range-scaled correlations apply proj's
    bias, scaled by 1/k, as one more column of proj's weight against the merged map's 1/k
    channel: no slice of the map, no bias product and sum."""
    return _with_flag(model, _is_range_scaled, "bias_in_projection", True)


def _is_range_scaled(module: nn.Module) -> bool:
    return isinstance(module, FoldedCorrelation) and module.range_scaled


CORRELATION_BIAS_IN_PROJECTION = register_rewrite(
    Rewrite(
        name="correlation_bias_in_projection",
        description="HiT-SR correlation: proj's bias times 1/k as a column of proj's weight (float files)",
        # Not in int8 files: the quantizer would give 1/k the scale of the correlations.
        applies=lambda model, context: context.float_precision and any(map(_is_range_scaled, model.modules())),
        apply=lambda model, context: correlation_bias_in_projection(model),
    )
)


def magnitude_as_abs(model: nn.Module) -> nn.Module:
    """A copy of a folded HiT-SR ``model`` whose |x| (range peaks, ``rescaled_norm``'s
    spread) is one Abs instead of two Relus, a Mul and an Add."""
    return _with_flag(model, _takes_magnitude, "plain_abs", True)


def _takes_magnitude(module: nn.Module) -> bool:
    return isinstance(module, (FoldedNGramAttention, FoldedCorrelation, _FoldedBlock))


MAGNITUDE_AS_ABS = register_rewrite(
    Rewrite(
        name="magnitude_as_abs",
        description="HiT-SR: |x| as Abs (files that no delegate runs)",
        # Delegate forms keep relu(x) + relu(-x): onnxruntime's CoreML EP has no Abs.
        applies=lambda model, context: not context.delegate_forms and any(map(_takes_magnitude, model.modules())),
        apply=lambda model, context: magnitude_as_abs(model),
    )
)
