"""SRConvNet's upsampling stages and tail conv at the low resolution, per sub-pixel phase.

SRConvNet ends with ``[conv1x1 (C -> C r^2) -> PixelShuffle(r) -> GELU] x stages ->
conv3x3 (C -> 3)`` (x4: two x2 stages). At x4 the last stage's 4C-channel map and its
shuffled copy are the largest tensors of the model (256x256 input: 64 channels at
1024x1024, 268 MB each), and the first stage's shuffled map (64 channels at 512x512) is
the costliest DepthToSpace of the file. Every op of the stages is per pixel (the 1x1
convs, GELU) and the tail is a 3x3 window, so all of it can run on the R x R phases of
the output grid at the input's resolution, R the product of the stages' factors:

    stage phase (a, b):  S[c, r*i + a, r*j + b] = GELU(W_ab x + b_ab)[c, i, j]
    (W_ab: the rows c*r^2 + a*r + b of the stage's 1x1 conv, the order PixelShuffle reads)

and a phase of the next stage reads a phase map of this one, so the output's phase
(A, B) = (a1*r2 + a2, b1*r2 + b2) is GELU(W2_{a2b2} GELU(W1_{a1b1} x)) (depth first: one
map per stage is alive at a time). The tail's output pixel (R*i + a_o, R*j + b_o) reads
S at (R*i + a_o + dy, ...), dy in {-1, 0, 1}, which is phase A = (a_o + dy) mod R at
low-res row i + q, q = floor((a_o + dy) / R). Phase 0 is read at q in {0, 1}, phase
R - 1 at {-1, 0}, the phases between at q = 0 only; every tap (dy, dx) of the tail reads
each phase from exactly one output phase. So each phase map goes through the tail's 9
taps as one 1x1 conv (C -> 9 * 3 channels, one per tap and colour: the tail's own MACs,
at the low resolution), and a one-hot conv grouped by colour (2x2, 2x1, 1x2 or 1x1,
zero-padded on the side its offsets reach) moves each tap's channel to its output phase
at its offset q, with 3 R^2 output channels (colour, output phase); the R^2 results are
summed, and one DepthToSpace of 3 R^2 channels makes the full-size image. Zero padding
of the full-size map is zero padding of the phases, so borders are exact.

MACs: the 1x1 convs and the tail's taps as in PyTorch; the one-hot placement adds
x 0.25 of the tail's at R = 2 (x2), x 0.39 at R = 3 (x3) and x 0.56 at R = 4 (x4), with
C = 64. Measured (2026-12-05, ORT CPU EP, 2 threads, the x4 upsampler and tail alone on a
64x256x256 feature map, busy host): the first form, the last stage per phase at 512x512,
took the peak RSS of one run from 1085 to 425 MB and the time from 1953 to 1310 ms. It
ran the tail's taps densely over the output phases each phase serves (the tail's MACs
x 1.78: 6.4 instead of 3.6 GFLOP at x4 256x256). Against it (2026-12-06, AMD EPYC
avx2/avx512f/avx512_vnni, 2 threads, the same piece, interleaved rounds): both stages per
phase with the per-tap tail (5.6 GFLOP), onnxruntime 214 -> 169 ms, LiteRT (XNNPACK) 196
-> 159 ms; the last stage alone with the per-tap tail, 188-216 -> 196-216 ms and 163-196 ->
182-207 ms; one conv per phase and output row (the rows each output reads, all columns),
205-212 and 202 ms: each conv reads the C-channel phase map.
"""
from __future__ import annotations

import copy
import math

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
    """SRConvNet's ``upsampling`` with the tail conv folded in: every stage
    (``conv1x1 -> PixelShuffle(factor) -> act``) and the tail (``conv3x3``, padding 1) run
    per phase at the input's resolution, then one pixel shuffle of the tail's output. The
    same children as the original (the official state-dict keys); the phase weights are
    non-persistent buffers derived from them when the rewrite runs (load weights before
    rewriting, as every export does)."""

    def __init__(self, upsampling: nn.Sequential, tail: nn.Conv2d) -> None:
        super().__init__(*upsampling)
        channels, outputs, stages = tail.in_channels, tail.out_channels, _stages(upsampling)
        self.factors = [shuffle.upscale_factor for _, shuffle, _ in stages]
        factor = math.prod(self.factors)
        self.factor, self.outputs, self.pads = factor, outputs, []
        for stage, (expand, shuffle, _) in enumerate(stages):
            phases = shuffle.upscale_factor ** 2
            weight = expand.weight.detach().reshape(channels, phases, expand.in_channels)
            bias = (expand.bias.detach() if expand.bias is not None
                    else weight.new_zeros(channels * phases)).reshape(channels, phases)
            for phase in range(phases):
                self.register_buffer(f"stage{stage}_phase{phase}_weight", weight[:, phase, :, None, None].clone(),
                                     persistent=False)
                self.register_buffer(f"stage{stage}_phase{phase}_bias", bias[:, phase].clone(), persistent=False)
        taps = tail.weight.detach()  # (outputs, channels, 3, 3)
        # channel (colour, dy, dx): one tap of the tail, applied at the low resolution
        self.register_buffer("tap_weight", taps.permute(0, 2, 3, 1).reshape(outputs * 9, channels, 1, 1).clone(),
                             persistent=False)
        for phase in range(factor * factor):
            row, col = divmod(phase, factor)
            rows, cols = _offsets(row, factor), _offsets(col, factor)
            # (colour, output phase) <- (colour, tap) at low-res offset (q, s): one-hot, grouped by colour
            placement = taps.new_zeros(outputs, factor, factor, 9, len(rows), len(cols))
            for out_row in range(factor):
                for out_col in range(factor):
                    for i, q in enumerate(rows):
                        for j, s in enumerate(cols):
                            dy, dx = factor * q + row - out_row, factor * s + col - out_col
                            if abs(dy) <= 1 and abs(dx) <= 1:
                                placement[:, out_row, out_col, (dy + 1) * 3 + dx + 1, i, j] = 1
            self.register_buffer(f"phase{phase}_placement",
                                 placement.reshape(outputs * factor * factor, 9, len(rows), len(cols)),
                                 persistent=False)
            self.pads.append((-cols[0], cols[-1], -rows[0], rows[-1]))  # F.pad: left, right, top, bottom
        tail_bias = tail.bias.detach() if tail.bias is not None else taps.new_zeros(outputs)
        self.register_buffer("tail_bias", tail_bias.repeat_interleave(factor * factor).reshape(1, -1, 1, 1).clone(),
                             persistent=False)

    def _phase_maps(self, x: torch.Tensor, stage: int = 0, row: int = 0, col: int = 0):
        """(output row phase, output column phase, map) for every phase of the stages from
        ``stage`` on; depth first, so that one map per stage is alive at a time."""
        if stage == len(self.factors):
            yield row, col, x
            return
        factor, act = self.factors[stage], self[3 * stage + 2]
        for phase in range(factor * factor):
            mapped = act(F.conv2d(x, getattr(self, f"stage{stage}_phase{phase}_weight"),
                                  getattr(self, f"stage{stage}_phase{phase}_bias")))
            a, b = divmod(phase, factor)
            yield from self._phase_maps(mapped, stage + 1, row * factor + a, col * factor + b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.tail_bias
        for row, col, mapped in self._phase_maps(x):
            phase = row * self.factor + col
            pad = self.pads[phase]
            per_tap = F.conv2d(mapped, self.tap_weight)
            out = out + F.conv2d(F.pad(per_tap, pad) if any(pad) else per_tap,
                                 getattr(self, f"phase{phase}_placement"), groups=self.outputs)
        return F.pixel_shuffle(out, self.factor)

    def extra_repr(self) -> str:
        return f"stages and tail per sub-pixel phase: factor={self.factor}, phases={len(self.pads)}"


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


def _stages(upsampling: nn.Module) -> list[tuple[nn.Conv2d, nn.PixelShuffle, nn.Module]]:
    """The (conv1x1, PixelShuffle, act) triples of ``upsampling``, or [] where it is not
    made of them only (once rewritten it is a ``SubPixelUpsampling``: no match)."""
    children = list(upsampling) if isinstance(upsampling, nn.Sequential) and \
        not isinstance(upsampling, SubPixelUpsampling) else []
    if not children or len(children) % 3:
        return []
    triples = [tuple(children[i:i + 3]) for i in range(0, len(children), 3)]
    if not all(isinstance(expand, nn.Conv2d) and expand.kernel_size == (1, 1) and expand.groups == 1
               and isinstance(shuffle, nn.PixelShuffle)
               and expand.out_channels == expand.in_channels * shuffle.upscale_factor ** 2
               for expand, shuffle, _ in triples):
        return []
    return triples


def _foldable(model: SRConvNet) -> bool:
    tail = model.tail
    return bool(_stages(model.upsampling)) and isinstance(tail, nn.Conv2d) and tail.kernel_size == (3, 3) \
        and tail.padding == (1, 1) and tail.stride == (1, 1) and tail.dilation == (1, 1) and tail.groups == 1 \
        and tail.padding_mode == "zeros" and tail.in_channels == model.upsampling[-3].in_channels


def _networks(model: nn.Module) -> list[SRConvNet]:
    return [module for module in model.modules() if isinstance(module, SRConvNet) and _foldable(module)]


def subpixel_tail(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose SRConvNet networks run their upsampling stages and tail
    conv per sub-pixel phase (``SubPixelUpsampling``); the input is left untouched."""
    new = copy.deepcopy(model)
    for network in _networks(new):
        network.upsampling = SubPixelUpsampling(network.upsampling, network.tail)
        network.tail = FoldedTail(network.tail)
    return keep_descriptor(model, new)


def _explain(model: nn.Module, context: ExportContext) -> str:
    network = _networks(model)[0]
    factors = [shuffle.upscale_factor for _, shuffle, _ in _stages(network.upsampling)]
    factor = math.prod(factors)
    return (f"SRConvNet's x{factor} upsampling ({len(factors)} stage{'s' if len(factors) > 1 else ''}) and tail "
            f"conv per sub-pixel phase at the input's resolution ({factor * factor} phase maps of C channels, one "
            f"per stage alive at a time, each through the tail's 9 taps as one 1x1 conv and a one-hot conv that "
            f"places them, and one DepthToSpace of {network.tail.out_channels * factor * factor} channels) "
            f"instead of the shuffled C-channel maps: the largest tensors of the model")


SUBPIXEL_TAIL = register_rewrite(
    Rewrite(
        name="subpixel_tail",
        description="SRConvNet's upsampling stages and tail conv per sub-pixel phase at low resolution",
        # Every target, fixed or any size: the form is exact and has no size-dependent constant.
        applies=lambda model, context: bool(_networks(model)),
        apply=lambda model, context: subpixel_tail(model),
        explain=_explain,
    )
)
