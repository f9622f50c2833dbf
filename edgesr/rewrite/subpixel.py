"""SRConvNet's last upsampling stage and tail conv at the low resolution, per sub-pixel phase.

SRConvNet ends with ``conv1x1 (C -> C r^2) -> PixelShuffle(r) -> GELU -> conv3x3 (C -> 3)``.
At x4 the second stage's 4C-channel map and its shuffled copy are the largest tensors
of the model (256x256 input: 64 channels at 1024x1024, 268 MB each), and onnxruntime
reorders them into and out of its blocked conv layout on the way. Every op of that
stage is either per pixel (the 1x1 conv, GELU) or a 3x3 window, so it can run on the
r x r phases of the output grid at the input's resolution:

    phase p = (a, b) of the shuffled map:  S[c, r*i + a, r*j + b] = GELU(W_p x + b_p)[c, i, j]
    (W_p: the rows c*r^2 + a*r + b of the 1x1 conv, the order PixelShuffle reads them in)

and the tail's output pixel (r*i + a_o, r*j + b_o) reads S at (r*i + a_o + dy, ...),
dy in {-1, 0, 1}, which is phase a' = (a_o + dy) mod r at low-res row i + q,
q = floor((a_o + dy) / r). Phase a' = 0 is read at q in {0, 1}, phase r - 1 at
{-1, 0}, the phases between (r >= 3) at q = 0 only. So each phase goes through one
small conv (2x2, 2x1, 1x2 or 1x1, zero-padded on the side its offsets reach) with
3 r^2 output channels (colour, output phase), the r^2 results are summed, and one
DepthToSpace of 3 r^2 channels makes the full-size image. Zero padding of the
full-size map is zero padding of the phases, so borders are exact.

Measured (2026-12-05, ORT CPU EP, 2 threads, the x4 upsampler and tail alone on a
64x256x256 feature map, busy host): peak RSS of one run 1085 -> 425 MB, 1953 -> 1310 ms.
The phase convs take the tail's 9 taps densely over the output phases they serve:
16 taps per phase instead of 9 at r = 2 (the tail's MACs x 1.78; at x4 256x256,
1.8 -> 3.2 GMAC, 5 % of the model).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from edgesr.models.srconvnet import SRConvNet
from edgesr.rewrite.plan import ExportContext, Rewrite, keep_descriptor, register_rewrite


def _offsets(phase: int, factor: int) -> list[int]:
    """The low-res row offsets q at which the tail's 3-tap window reads ``phase``."""
    return sorted({q for q in (-1, 0, 1) for out in range(factor) for dy in (-1, 0, 1)
                   if out + dy == factor * q + phase})


class SubPixelUpsampling(nn.Sequential):
    """SRConvNet's ``upsampling`` with the tail conv folded in: the stages before the last
    run as they are; the last one (``conv1x1 -> PixelShuffle(factor) -> act``) and the
    tail (``conv3x3``, padding 1) run per phase at the input's resolution, then one pixel
    shuffle of the tail's output. The same children as the original (the official
    state-dict keys); the phase weights are non-persistent buffers derived from them when
    the rewrite runs (load weights before rewriting, as every export does)."""

    def __init__(self, upsampling: nn.Sequential, tail: nn.Conv2d) -> None:
        super().__init__(*upsampling)
        expand, shuffle = self[-3], self[-2]
        factor, channels, outputs = shuffle.upscale_factor, tail.in_channels, tail.out_channels
        phases = factor * factor
        self.factor, self.pads = factor, []
        weight = expand.weight.detach().reshape(channels, phases, expand.in_channels)
        bias = (expand.bias.detach() if expand.bias is not None
                else weight.new_zeros(channels * phases)).reshape(channels, phases)
        taps = tail.weight.detach()  # (outputs, channels, 3, 3)
        for phase in range(phases):
            row, col = divmod(phase, factor)
            rows, cols = _offsets(row, factor), _offsets(col, factor)
            kernel = taps.new_zeros(outputs, factor, factor, channels, len(rows), len(cols))
            for out_row in range(factor):
                for out_col in range(factor):
                    for i, q in enumerate(rows):
                        for j, s in enumerate(cols):
                            dy, dx = factor * q + row - out_row, factor * s + col - out_col
                            if abs(dy) <= 1 and abs(dx) <= 1:
                                kernel[:, out_row, out_col, :, i, j] = taps[:, :, dy + 1, dx + 1]
            self.register_buffer(f"phase{phase}_expand_weight", weight[:, phase, :, None, None].clone(),
                                 persistent=False)
            self.register_buffer(f"phase{phase}_expand_bias", bias[:, phase].clone(), persistent=False)
            self.register_buffer(f"phase{phase}_kernel", kernel.reshape(outputs * phases, channels, len(rows),
                                                                        len(cols)), persistent=False)
            self.pads.append((-cols[0], cols[-1], -rows[0], rows[-1]))  # F.pad: left, right, top, bottom
        tail_bias = tail.bias.detach() if tail.bias is not None else taps.new_zeros(outputs)
        self.register_buffer("tail_bias", tail_bias.repeat_interleave(phases).reshape(1, -1, 1, 1).clone(),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in list(self)[:-3]:
            x = stage(x)
        act, out = self[-1], self.tail_bias
        # One phase at a time: only one C-channel phase map is alive at once.
        for phase, pad in enumerate(self.pads):
            mapped = act(F.conv2d(x, getattr(self, f"phase{phase}_expand_weight"),
                                  getattr(self, f"phase{phase}_expand_bias")))
            out = out + F.conv2d(F.pad(mapped, pad) if any(pad) else mapped, getattr(self, f"phase{phase}_kernel"))
        return F.pixel_shuffle(out, self.factor)

    def extra_repr(self) -> str:
        return f"last stage and tail per sub-pixel phase: factor={self.factor}, phases={len(self.pads)}"


class FoldedTail(nn.Module):
    """The tail conv's parameters under their official names; its work is done by
    ``SubPixelUpsampling``, so it passes its input through."""

    def __init__(self, tail: nn.Conv2d) -> None:
        super().__init__()
        self.weight, self.bias = tail.weight, tail.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return "folded into the upsampling's sub-pixel phases"


def _last_stage(model: SRConvNet) -> tuple[nn.Conv2d, nn.PixelShuffle, nn.Module] | None:
    if len(model.upsampling) < 3:  # once rewritten, the tail is a FoldedTail: no match
        return None
    *_, expand, shuffle, act = model.upsampling
    tail = model.tail
    if not (isinstance(expand, nn.Conv2d) and expand.kernel_size == (1, 1) and expand.groups == 1
            and isinstance(shuffle, nn.PixelShuffle) and isinstance(tail, nn.Conv2d)
            and tail.kernel_size == (3, 3) and tail.padding == (1, 1) and tail.stride == (1, 1)
            and tail.dilation == (1, 1) and tail.groups == 1 and tail.padding_mode == "zeros"):
        return None
    return expand, shuffle, act


def _networks(model: nn.Module) -> list[SRConvNet]:
    return [module for module in model.modules() if isinstance(module, SRConvNet) and _last_stage(module)]


def subpixel_tail(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose SRConvNet networks run their last upsampling stage and
    tail conv per sub-pixel phase (``SubPixelUpsampling``); the input is left untouched."""
    new = copy.deepcopy(model)
    for network in _networks(new):
        network.upsampling = SubPixelUpsampling(network.upsampling, network.tail)
        network.tail = FoldedTail(network.tail)
    return keep_descriptor(model, new)


def _explain(model: nn.Module, context: ExportContext) -> str:
    network = _networks(model)[0]
    factor = _last_stage(network)[1].upscale_factor
    return (f"SRConvNet's last x{factor} upsampling stage and tail conv per sub-pixel phase at the "
            f"low resolution ({factor * factor} phase maps of C channels, one at a time, and one "
            f"DepthToSpace of {network.tail.out_channels * factor * factor} channels) instead of the {factor * factor}C-channel "
            f"map and its full-size shuffle: the largest tensors of the model")


SUBPIXEL_TAIL = register_rewrite(
    Rewrite(
        name="subpixel_tail",
        description="SRConvNet's last upsampling stage and tail conv per sub-pixel phase at low resolution",
        # Every target, fixed or any size: the form is exact and has no size-dependent constant.
        applies=lambda model, context: bool(_networks(model)),
        apply=lambda model, context: subpixel_tail(model),
        explain=_explain,
    )
)
