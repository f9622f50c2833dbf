"""SRConvNet's dynamic depthwise conv with constant weights only.

``DynamicDepthwiseConv2d`` mixes a per-sample kernel from a bank (alpha = sigmoid
attention, (B, K)) and runs it as one grouped conv with the batch folded into the
groups: a conv whose weight is computed at run time. LiteRT fails on it
(tfl.batch_matmul rank), the CoreML jit.trace path fails, and ORT mobile EPs
(NNAPI, CoreML EP, XNNPACK) only take convs with constant weights. By linearity

    y = sum_k alpha_k (bank_k * x) + sum_k alpha_k bias_k

and every form below keeps the bank as a constant (the last one adds the original for
batch 1):

  * ``"bank_conv"`` (A): one constant depthwise conv with K*C output channels
    (groups=C, channel c*K+k holds bank_k[c]), then the weighted sum over k as a
    broadcast matmul alpha (B,1,1,K) @ (B,C,K,H*W). K x the conv work and a K x
    larger intermediate, but only three big ops.
  * ``"bank_conv_mulsum"``: as A, with the sum over k as Mul + ReduceSum.
  * ``"shifted_sum"`` (B): no conv at all. The mixed kernel alpha @ bank is a tiny
    (B, C, k*k) tensor; y = bias + sum over the k*k taps of kernel[:, :, tap] times
    the padded input shifted by the tap (Pad + k*k Slice/Mul/Add): k*k MACs per
    output, like the original conv, but as 3*k*k elementwise graph nodes.
    Those nodes each stream the whole map, so maps over ``STRIP_BYTES`` go in row
    strips (a strip's k*k passes then stay in cache), concatenated at the end.
  * ``"row_shifted_sum"`` (B'): B with the shifts split into k column slices of the
    padded input and one row slice per kernel row (2k slices instead of k*k).
  * ``"runtime_weight_at_batch_1"``: for a desktop ``--dynamic`` ONNX file, whose batch is
    free: the original runtime-weight conv for one image, A for a batch (an ONNX ``If``).

Measured on this repo's CPU box (2 cores shared with other jobs, so absolute numbers
are noisy; ORT 1.31 CPU EP with 2 threads, PyTorch 2.13 eager with 2 threads; all
constant-weight forms agree with the original to < 2e-4 on a 0..255 output).

One MixFFN's pair of dynamic convs (C=64, K=16, 5x5 and 7x7) at 128x128, median (min)
of 7 runs, ms::

    form               ORT CPU          PyTorch eager
    original*          128 (66)          390 (237)
    bank_conv          318 (283)        1470 (1302)
    bank_conv_mulsum   371 (273)        1997 (1568)
    shifted_sum        519 (479)        1719 (1101)
    row_shifted_sum    517 (448)        2252 (1808)
  * runtime-weight grouped conv: ORT CPU runs it, mobile EPs/CoreML/LiteRT do not.

Whole SRConvNet x4 (defaults) at 1x3x128x128 with the Fourier DFT rewrite: see
``_MEASURED_FULL`` below. Exporting the shifted-sum forms is also slow (about 15 min
for the full model with the dynamo exporter, vs about 1 min for bank_conv) because
they add ~3*(25+49) nodes per block.

The same pair at 128x128 on a quiet 2-core AVX-512 host (2026-12-03, 2 threads, median of 7):
LiteRT with XNNPACK runs ``bank_conv_mulsum`` in 101 ms, ``shifted_sum`` and
``row_shifted_sum`` in 30 ms (one XNNPACK partition each), the runtime-weight depthwise
conv in 7.4 ms, but outside XNNPACK (3 partitions per pair) and outside the GPU delegate;
onnxruntime runs ``bank_conv`` in 54 ms, ``row_shifted_sum`` 72, ``shifted_sum`` 102,
the runtime-weight original 12 ms.

A form with fewer passes over the map was measured and not kept (2026-12-05, LiteRT
XNNPACK, 2 threads, one dynamic conv on 1x64x256x256, 7 interleaved rounds): the mixed
kernel spread into a block-Toeplitz matrix per channel ((k*(b+k-1), b) for column blocks
of b pixels, a constant 0/1 expansion of the k*k taps) and applied as one batch matmul to
the k row-shifted column windows (exact, ~8-14 map-sized writes instead of 3*k*k, one
XNNPACK partition). 5x5: 34.7 ms (b=16), 39.9 (b=8), 53.0 (b=4) against 22.2 for
``shifted_sum``; 7x7: 47.6 ms (b=32), 58.6 (b=16) against 41.8. XNNPACK's batch matmul with a
runtime right operand and N = b ran at ~12 GMAC/s, too slow for the 2-4x MACs.

Choice: ``bank_conv`` for ONNX and CoreML, the fastest constant-weight form in ORT and in
eager; for CoreML a single constant depthwise conv plus one matmul maps onto the ANE's conv
units, whereas the shifted sum is ~220 small elementwise/slice ops per block (per-op
dispatch cost there). ``shifted_sum`` for TFLite: XNNPACK runs its elementwise taps 3.4x
faster than the bank with its K-fold intermediate, in one partition. The exceptions are
ONNX files for desktop onnxruntime: a fixed-size one keeps the original runtime-weight conv
(``_needs_constant_weights``), a ``--dynamic`` one takes it for batch 1 and A for a batch
(``runtime_weight_at_batch_1``, see ``_WHY_AT_BATCH_1``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgesr.models.srconvnet import DynamicDepthwiseConv2d
from edgesr.rewrite.plan import ExportContext, Rewrite, register_rewrite, replace_modules

FORMS = ("bank_conv", "bank_conv_mulsum", "shifted_sum", "row_shifted_sum", "runtime_weight_at_batch_1")

# Activations per row strip of the shifted sum: a strip's k*k passes (the padded input, the
# product, the running sum) must stay in the last-level cache. SRConvNet x4 at 256x256 (64
# channels, 16 MiB a map) in LiteRT/XNNPACK, 2 threads, AMD EPYC AVX-512 (32 MiB L3),
# 2026-12-06, 11 interleaved rounds: one dynamic conv alone took 40 / 24 / 22 ms (5x5) and
# 62 / 38 / 38 ms (7x7) with 8 / 4 / 2 MiB strips (2 / 4 / 8 per map); the whole model, side
# by side with onnxruntime's default graph in six runs, took 1.06-1.21x onnxruntime's time
# with 4 MiB strips against 1.31-1.37x with 8 MiB, 2 MiB no faster than 4. The price of 4
# MiB: 10255 instead of 6511 nodes (9.8 instead of 7.7 MB of file before the tensor names
# were shortened; 5.4 MB since), an export of about 160 instead of 130 s. At 128x128 (4
# MiB a map) the map stays one strip. On 2026-12-05 in separate processes one piece ran
# 1.48-1.53x, 8 MiB strips 1.19-1.28x. Written channels-last instead (taps broadcast over
# the last axis, the MixFFN kept NHWC to proj_out), the same model was slower: 1.16x /
# 1.42x against 0.97x / 1.30x in one run at 128 / 256.
STRIP_BYTES = 4 * 2**20


class _StaticDynamicConv(nn.Module):
    """Base: keeps ``attention`` and ``aggregation`` so the state-dict keys are official."""

    form = ""

    def __init__(self, conv: DynamicDepthwiseConv2d) -> None:
        super().__init__()
        self.padding = conv.padding
        self.attention = conv.attention
        self.aggregation = conv.aggregation

    def _mixed_bias(self, alpha: torch.Tensor) -> torch.Tensor:
        # (B, K) @ (K, C) -> (B, C, 1, 1)
        return torch.matmul(alpha, self.aggregation.bias)[:, :, None, None]

    def extra_repr(self) -> str:
        return f"form={self.form!r}, kernel_size={self.aggregation.weight.shape[-1]}"


class BankConvDynamicConv(_StaticDynamicConv):
    """Form A: constant (C*K)-output depthwise conv, then the alpha-weighted sum over K."""

    form = "bank_conv"

    def __init__(self, conv: DynamicDepthwiseConv2d, reduce: str = "matmul") -> None:
        super().__init__(conv)
        num_kernels, channels, _, kh, kw = conv.aggregation.weight.shape
        # Output channel c*K + k of a groups=C conv reads input channel c: bank_k[c].
        weight = conv.aggregation.weight.detach().permute(1, 0, 2, 3, 4).reshape(channels * num_kernels, 1, kh, kw)
        self.register_buffer("bank_weight", weight.clone(), persistent=False)
        self.reduce = reduce
        if reduce == "mulsum":
            self.form = "bank_conv_mulsum"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bank(x, self.attention(x))

    def bank(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The bank's responses to ``x`` weighted by ``alpha`` (B, K), plus the mixed bias."""
        batch, channels, height, width = x.shape
        num_kernels = alpha.shape[1]
        responses = F.conv2d(x, self.bank_weight, None, padding=self.padding, groups=channels)
        if self.reduce == "mulsum":
            responses = responses.reshape(batch, channels, num_kernels, height, width)
            y = (responses * alpha[:, None, :, None, None]).sum(dim=2)
        else:
            responses = responses.reshape(batch, channels, num_kernels, height * width)
            y = torch.matmul(alpha[:, None, None, :], responses).reshape(batch, channels, height, width)
        return y + self._mixed_bias(alpha)


class OneSampleRuntimeWeightConv(BankConvDynamicConv):
    """For a graph with a free batch (``--dynamic`` ONNX for desktop onnxruntime): the
    original runtime-weight depthwise conv when the batch is 1, the bank conv otherwise.

    The original folds the batch into the conv's groups (batch x channels), which a graph
    with a free batch cannot hold as the constant ONNX needs. For one sample the groups are
    the channels, a constant: ``torch.cond`` on the batch size (an ONNX ``If``) runs that conv
    on one image, the way an upscaler calls the file, and the bank conv on a batch.
    """

    form = "runtime_weight_at_batch_1"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(x.shape[0] == 1, self.one_sample, self.bank, (x, self.attention(x)))

    def one_sample(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        # The kernel mixed from ``bank_weight``, not from the bank's own weight: the file
        # would otherwise hold the bank twice.
        channels = x.shape[1]
        kh, kw = self.bank_weight.shape[-2:]
        bank = self.bank_weight.reshape(channels, -1, kh * kw)  # (C, K, taps)
        weight = torch.matmul(alpha[:1], bank).reshape(channels, 1, kh, kw)
        bias = self._mixed_bias(alpha[:1]).reshape(channels)
        return F.conv2d(x, weight, bias, padding=self.padding, groups=channels)


class ShiftedSumDynamicConv(_StaticDynamicConv):
    """Form B: y = bias + sum_taps kernel[b, c, tap] * shifted(x); no conv op at all.

    Each tap is a full pass over the map (slice, multiply, add), so the plain form runs
    in row strips of at most ``strip_bytes`` of activations each: the k*k passes of a
    strip then reuse data the cache still holds (see ``STRIP_BYTES``).
    """

    form = "shifted_sum"

    def __init__(self, conv: DynamicDepthwiseConv2d, by_rows: bool = False, strip_bytes: int = STRIP_BYTES) -> None:
        super().__init__(conv)
        self.by_rows = by_rows
        self.strip_bytes = strip_bytes
        if by_rows:
            self.form = "row_shifted_sum"

    def strip_bounds(self, x: torch.Tensor) -> list[int]:
        """First row of each strip, then the height: strips as even as the rows allow."""
        height = x.shape[2]
        strips = min(height, max(1, math.ceil(x.element_size() * x.numel() / self.strip_bytes)))
        return [round(s * height / strips) for s in range(strips + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        alpha = self.attention(x)
        num_kernels, _, _, kh, kw = self.aggregation.weight.shape
        # (B, K) @ (K, C*kh*kw): the per-sample kernels, a tiny tensor.
        kernels = torch.matmul(alpha, self.aggregation.weight.reshape(num_kernels, -1))
        taps = kernels.reshape(batch, channels, kh * kw, 1, 1).unbind(dim=2)
        p = self.padding
        padded = F.pad(x, (p, p, p, p))
        bias = self._mixed_bias(alpha)
        if self.by_rows:
            y = bias
            columns = [padded[:, :, :, j:j + width] for j in range(kw)]
            for i in range(kh):
                row = taps[i * kw] * columns[0]
                for j in range(1, kw):
                    row = row + taps[i * kw + j] * columns[j]
                y = y + row[:, :, i:i + height]
            return y
        bounds = self.strip_bounds(x)
        pieces = []
        for top, bottom in zip(bounds, bounds[1:]):
            y = bias
            for i in range(kh):
                for j in range(kw):
                    y = y + taps[i * kw + j] * padded[:, :, top + i:bottom + i, j:j + width]
            pieces.append(y)
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)


def _make(conv: DynamicDepthwiseConv2d, form: str) -> nn.Module:
    if form == "bank_conv":
        return BankConvDynamicConv(conv)
    if form == "bank_conv_mulsum":
        return BankConvDynamicConv(conv, reduce="mulsum")
    if form == "shifted_sum":
        return ShiftedSumDynamicConv(conv)
    if form == "row_shifted_sum":
        return ShiftedSumDynamicConv(conv, by_rows=True)
    if form == "runtime_weight_at_batch_1":
        return OneSampleRuntimeWeightConv(conv)
    raise ValueError(f"unknown dynamic-conv form {form!r}; choose one of {', '.join(FORMS)}")


def dynamic_conv_static(model: nn.Module, form: str = "bank_conv") -> nn.Module:
    """A copy of ``model`` with every ``DynamicDepthwiseConv2d`` in a constant-weight ``form``."""
    if form not in FORMS:
        raise ValueError(f"unknown dynamic-conv form {form!r}; choose one of {', '.join(FORMS)}")
    return replace_modules(model, lambda m: isinstance(m, DynamicDepthwiseConv2d),
                           lambda conv: _make(conv, form))


def has_dynamic_convs(model: nn.Module) -> bool:
    return any(isinstance(m, DynamicDepthwiseConv2d) for m in model.modules())


# Whole SRConvNet x4 at 1x3x128x128 (Fourier rewritten as DFT matmuls), 5 runs each,
# ms as (ORT median, ORT min, eager median, eager min). The box was heavily loaded
# (load average ~10 on 2 cores), so these spread by 2x; the DFT matmuls and the
# rest of the network dominate, and the ranking is within noise. The per-layer
# table in the module docstring is the cleaner comparison.
_MEASURED_FULL: dict[str, tuple[float, float, float, float]] = {
    "original": (4793, 3265, 15748, 9349),
    "bank_conv": (7036, 4657, 24344, 10992),
    "bank_conv_mulsum": (7735, 3532, 25213, 14641),
    "shifted_sum": (6008, 4384, 29336, 15360),
    # row_shifted_sum: full-model export not finished within the time budget.
}

# From the measurements in the module docstring.
FORM_BY_TARGET = {"onnx": "bank_conv", "tflite": "shifted_sum", "coreml": "bank_conv"}
_WHY = {
    "onnx": "fastest constant-weight form on ORT CPU; mobile EPs need constant conv weights",
    "tflite": "the mixed kernel applied as k*k shifted multiply-adds, all in XNNPACK, in row strips of "
              f"at most {STRIP_BYTES // 2**20} MiB of activations: 30 ms per MixFFN pair at 128x128 vs 101 ms for the bank conv "
              "+ Mul + Sum (a runtime-weight depthwise conv, 7 ms, runs outside XNNPACK and the GPU delegate)",
    "coreml": "one constant depthwise conv + matmul; fastest constant-weight form measured, "
              "ANE-friendly",
}


def form_for(context: ExportContext) -> str:
    if context.target == "onnx" and context.input_size is None and not context.delegate_forms:
        return "runtime_weight_at_batch_1"
    return FORM_BY_TARGET[context.target]


def _apply(model: nn.Module, context: ExportContext) -> nn.Module:
    return dynamic_conv_static(model, form_for(context))


# SRConvNet x4 (official config, random weights), the --dynamic ONNX file with this form and
# with bank_conv side by side, PyTorch eager interleaved (2026-12-06, AMD EPYC avx2/avx512f/
# avx512_vnni, onnxruntime 1.31, 2 threads; 9 rounds at 128x128, 7 at 256x256).
_WHY_AT_BATCH_1 = ("an ONNX If on the batch size: for one image the original runtime-weight depthwise conv "
                   "(groups = channels, a constant), for a batch the constant bank conv; SRConvNet x4 "
                   "--dynamic 233 vs 384 ms at 128x128 and 1382 vs 1976 ms at 256x256 with the bank alone "
                   "(eager 418 / 2244 ms)")


def _explain(model: nn.Module, context: ExportContext) -> str:
    form = form_for(context)
    if form == "runtime_weight_at_batch_1":
        return f"dynamic depthwise conv: form {form!r} ({_WHY_AT_BATCH_1})"
    return f"dynamic depthwise conv: constant-weight form {form!r} ({_WHY[context.target]})"


def _needs_constant_weights(context: ExportContext) -> bool:
    # Every target but a fixed-size ONNX or TFLite graph for a CPU runtime (the default fp32
    # ONNX file, --fused-ops): CoreML, LiteRT's XNNPACK and GPU delegates and ORT's mobile
    # EPs need constant conv weights, and with a free batch the original's groups (batch x
    # channels) are not a constant (a desktop --dynamic file then keeps the runtime weight
    # for batch 1 only: ``OneSampleRuntimeWeightConv``). ORT's CPU and CUDA kernels and LiteRT's own
    # DEPTHWISE_CONV_2D take a runtime weight, and the original is then the fastest form:
    # 128 vs 318 ms per MixFFN pair in ORT (table above); in LiteRT one MixFFN at 256x256
    # took 145 ms against 398 ms for shifted_sum inside XNNPACK (2026-12-04, AMD EPYC,
    # 2 threads, under load), at the cost of 2 extra partitions per MixFFN.
    return context.target == "coreml" or context.input_size is None or context.delegate_forms


DYNAMIC_CONV_STATIC = register_rewrite(
    Rewrite(
        name="dynamic_conv_static",
        description="SRConvNet dynamic depthwise conv with a constant kernel bank (a runtime-weight conv "
                    "only for batch 1 of a desktop --dynamic ONNX file)",
        applies=lambda model, context: has_dynamic_convs(model) and _needs_constant_weights(context),
        apply=_apply,
        explain=_explain,
    )
)
