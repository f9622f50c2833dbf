"""HiT-SRF's convolutional feed-forward network channels first, for onnxruntime.

``ConvFeedForward`` runs fc1 and fc2 on channels-last tokens and its depthwise 5x5 conv
on the NCHW map between them. onnxruntime's CPU runs that conv in its blocked NCHWc
layout, so every block reorders the hidden map (120 channels in HiTNet, twice the
block's width) into NCHWc and back (ReorderInput / ReorderOutput). With fc1 and fc2 as
1x1 convs on the NCHW map the whole network stays in NCHWc: the layout changes move to
its 60-channel input and output, and the 1x1 convs run on onnxruntime's NCHWc kernels.

Measured (2026-12-06, HiTNet x4, AMD EPYC avx2/avx512f/avx512_vnni, onnxruntime 1.31
CPU, 2 threads, old and new file interleaved): the ``--fused-ops`` file 1.10x faster at
128x128 (9 rounds) and 1.16-1.17x at 256x256 (7 and 11 rounds), the default file 1.17x
and 1.10-1.11x; kernel time in Reorder ops at 128x128 66 -> 37 ms and 55 -> 35 ms (see
docs/performance.md). Desktop ONNX float files only. Not delegate forms
(``--delegate-ready``, fp16 files without ``--fused-ops``): their GELU is elementary ops
(``delegate_ops``) that the NCHWc layout does not pass through, so onnxruntime's CPU
reorders around each of them (0.96x the time before at 128x128; the NNAPI / CoreML
verdicts were the same either way). Not TFLite, whose convs are channels last: there the
tokens' matmuls are the form without transposes. Not CoreML (not measured). Not int8: a
plain int8 ``--fused-ops`` file with fc1/fc2 as QLinearConv ran 0.93x its own fp32 graph,
1.31x with the Gemms.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgesr.models.hit_srf import ConvFeedForward
from edgesr.rewrite.plan import ExportContext, Rewrite, register_rewrite, replace_modules


class ChannelsFirstConvFeedForward(nn.Module):
    """``ConvFeedForward`` with fc1 and fc2 as 1x1 convs on the NCHW map; the same
    submodules, so state-dict keys and shapes stay the official ones."""

    def __init__(self, ffn: ConvFeedForward) -> None:
        super().__init__()
        self.fc1, self.act, self.dwconv, self.fc2 = ffn.fc1, ffn.act, ffn.dwconv, ffn.fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        planes = x.permute(0, 3, 1, 2)
        hidden = self.act(F.conv2d(planes, self.fc1.weight[:, :, None, None], self.fc1.bias))
        mixed = hidden + self.dwconv.depthwise_conv(hidden)
        return F.conv2d(mixed, self.fc2.weight[:, :, None, None], self.fc2.bias).permute(0, 2, 3, 1)


def _is_conv_ffn(module: nn.Module) -> bool:
    return isinstance(module, ConvFeedForward)


def conv_ffn_channels_first(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose HiT-SRF feed-forward networks run channels first."""
    return replace_modules(model, _is_conv_ffn, ChannelsFirstConvFeedForward)


def _applies(model: nn.Module, context: ExportContext) -> bool:
    return (context.target == "onnx" and context.float_precision and not context.delegate_forms
            and any(map(_is_conv_ffn, model.modules())))


CONV_FFN_CHANNELS_FIRST = register_rewrite(Rewrite(
    name="conv_ffn_channels_first",
    description=("HiT-SRF feed-forward: fc1/fc2 as 1x1 convs on the NCHW map, so that onnxruntime "
                 "keeps the whole network in its NCHWc layout (no reorder of the hidden map)"),
    applies=_applies,
    apply=lambda model, context: conv_ffn_channels_first(model),
))
