"""SRConvNet's Fourier unit without FFT ops: the 2-D real DFT as real matmuls.

``FourierUnit`` computes ``irfft2(GELU(conv1x1(rfft2(x))))`` with ``norm="ortho"``.
No mobile backend converts rfft2/irfft2 (LiteRT: "FFT normalization != 0 is not yet
implemented"; CoreML: fft_rfft2 unsupported; ORT mobile EPs have no DFT kernel), so
both transforms are written as matmuls with DFT bases. Everything stays real.

Forward (R2C), for x of shape (B, C, H, W), Wr = W//2 + 1, angles 2*pi*k*n/N::

    [Ar | Ai] = x @ [cos_W | -sin_W] / sqrt(W)              # (W, 2*Wr): one matmul on W
    [Re; Im]  = [cos_H; -sin_H] @ Ar + [sin_H; cos_H] @ Ai  # (2H, H) each: the H axis
                                                            # is a full complex DFT
The result (B, C, 2H, Wr) with the real parts on the first H rows *is* the layout
the 1x1 conv wants: viewing it as (B, 2C, H, Wr) puts Re X_c at channel 2c and
Im X_c at 2c+1 (the official interleaved order), so no transpose is needed.

Inverse (C2R, ``irfft2(Z, s=(H, W))``): complex inverse DFT on H, then the
Hermitian C2R on W::

    [Qr; Qi] = [[cos_H, -sin_H], [sin_H, cos_H]] @ [Zr; Zi] / sqrt(H)   # one (2H, 2H) matmul
    y = Qr @ (c * cos_W) / sqrt(W) + Qi @ (-c * sin_W) / sqrt(W)         # (Wr, W) each
with c_v = 2 for the columns that stand for a conjugate pair and c_v = 1 for the DC
column and (even W) the Nyquist column. The sine rows of those two columns are
exactly zero, so the imaginary parts of DC/Nyquist are ignored as C2R does (for
odd W there is no Nyquist column; the last column is doubled).

Cost per channel: H*W*Wr*2 + 2*2H*H*Wr MACs forward, 2H*2H*Wr + 2*H*Wr*W inverse,
i.e. about (2H + W) * H * W each way; the H-stage is applied to the half spectrum
(Wr columns), which is why the W axis goes first forward and last inverse.
Bases are float32 non-persistent buffers (state dicts keep the official keys);
for 256x256 they total about 1.3 MB per unit.

Two forms:
  * ``fourier_as_dft(model, (H, W))``: constant matrices for one feature-map size
    (SRConvNet's blocks run at the LR input size), for fixed-size exports; the W axis
    halved into sums and differences of contiguous halves and the H axis as
    mixed-radix stages (``edgesr.rewrite.dft_plan``) where that takes fewer MACs: at
    128x128 each transform takes 1.3 M MACs per channel instead of 6.4 M, at 256x256
    8.4 M instead of 51 M.
  * ``fourier_any_size(model)``: for dynamic-shape ONNX, the plan and its bases are
    built in the graph from the runtime H, W (``dft_plan.run_time_plan``: cos/sin of
    (k*n mod N) * 2*pi/N over aranges). H in two stages whose radix the graph computes
    from H, W in one: at 256x256, 21 M MACs per channel and transform instead of 51 M.
"""
from __future__ import annotations

import torch
from torch import nn

from edgesr.models.srconvnet import FourierUnit
from edgesr.rewrite import dft_plan
from edgesr.rewrite.plan import ExportContext, Rewrite, register_rewrite, replace_modules


class DFTFourierUnit(nn.Module):
    """``FourierUnit`` for one fixed H x W, with constant DFT matrices; the H axis in
    mixed-radix stages where that takes fewer MACs (``edgesr.rewrite.dft_plan``).

    Keeps ``conv_layer``/``act`` so the state-dict keys are the official ones.
    """

    def __init__(self, unit: FourierUnit, size: tuple[int, int], plan: dft_plan.Plan | None = None,
                 broadcast_free: bool = False) -> None:
        super().__init__()
        self.broadcast_free = broadcast_free  # see dft_plan._per_digit
        self.conv_layer = unit.conv_layer
        self.act = unit.act
        self.size = (int(size[0]), int(size[1]))
        self.plan = plan or dft_plan.choose(*self.size)
        device = unit.conv_layer.weight.device
        for name, value in self.plan.matrices().items():
            self.register_buffer(name, value.to(torch.float32).contiguous().to(device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            raise ValueError(
                f"this Fourier unit was rewritten for {self.size[0]}x{self.size[1]} feature maps, "
                f"got {x.shape[-2]}x{x.shape[-1]}; rewrite again for that size or use fourier_any_size"
            )
        matrices = dict(self.named_buffers())
        spectrum = dft_plan.forward(x, self.plan, matrices, self.broadcast_free)
        return dft_plan.inverse(self.act(self.conv_layer(spectrum)), self.plan, matrices, self.broadcast_free)

    def extra_repr(self) -> str:
        return f"size={self.size}, {self.plan.describe()}"


class AnySizeFourierUnit(nn.Module):
    """``FourierUnit`` with its DFT plan and bases built in the graph from the runtime H
    and W (``dft_plan.run_time_plan``): H in two stages, W in one; a dynamic-shape ONNX
    graph works at any size.
    """

    def __init__(self, unit: FourierUnit) -> None:
        super().__init__()
        self.conv_layer = unit.conv_layer
        self.act = unit.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan, matrices = dft_plan.run_time_plan(x)
        spectrum = dft_plan.forward(x, plan, matrices)
        return dft_plan.inverse(self.act(self.conv_layer(spectrum)), plan, matrices)


def fourier_as_dft(model: nn.Module, input_size: tuple[int, int], mixed_radix: bool = True,
                   broadcast_free: bool = False) -> nn.Module:
    """A copy of ``model`` with every ``FourierUnit`` as DFT matmuls for ``input_size`` maps.

    ``input_size`` is the (H, W) of the feature maps the units see; for SRConvNet
    that is the LR input size. With ``mixed_radix`` each unit takes the form with the
    fewest MACs (``dft_plan.choose``); without, one plain DFT matmul per axis.
    ``broadcast_free``: the later H stages without a broadcast matmul (``dft_plan._per_digit``).
    """
    size = (int(input_size[0]), int(input_size[1]))
    plan = dft_plan.choose(*size) if mixed_radix else dft_plan.plain(*size)
    return replace_modules(model, _is_fourier_unit, lambda unit: DFTFourierUnit(unit, size, plan, broadcast_free))


def _broadcast_free_for(context: ExportContext) -> bool:
    """litert-torch lowers the batched constant matmul of a later H stage with a
    BROADCAST_TO of the constant to the batch shape, which XNNPACK does not take: TFLite
    files get the stage as one matmul per digit over all channels. Measured in LiteRT
    (XNNPACK, 2 threads), one SRConvNet Fourier unit: 8.0 vs 10.6 ms for the one-stage form
    at 128x128, 45 vs 72 ms at 256x256."""
    return context.target == "tflite"


def _apply(model: nn.Module, context: ExportContext) -> nn.Module:
    if context.input_size is None:
        return fourier_any_size(model)
    return fourier_as_dft(model, context.input_size, broadcast_free=_broadcast_free_for(context))


def fourier_any_size(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``FourierUnit`` as DFT matmuls built at run time."""
    return replace_modules(model, _is_fourier_unit, AnySizeFourierUnit)


def _is_fourier_unit(module: nn.Module) -> bool:
    return isinstance(module, FourierUnit)


def has_fourier_units(model: nn.Module) -> bool:
    return any(map(_is_fourier_unit, model.modules()))


def _explain(model: nn.Module, context: ExportContext) -> str:
    if context.input_size is None:
        return ("Fourier unit: rfft2/irfft2 as real matmuls built in the graph from the runtime H, W "
                "(any input size): H in two Cooley-Tukey stages, the first radix the largest divisor of H "
                f"up to sqrt(H) and {dft_plan.MAX_RUN_TIME_RADIX} (one stage for prime H), chosen in the graph; "
                "W in one stage (halving it needs a W known to be a multiple of 4)")
    h, w = context.input_size
    single, best = dft_plan.plain(h, w), dft_plan.choose(h, w)
    costs = (f"{best.transform_macs() / 1e6:.2f} M MACs per channel and transform for "
             f"{best.describe()} vs {single.transform_macs() / 1e6:.2f} M in one stage")
    if not best.factored and not best.halvings:
        form = f"one plain DFT matmul per axis (the fewest MACs at this size: {costs})"
    else:
        parts = ["W halved into sums and differences of contiguous halves"] if best.halvings else []
        parts += ["H as mixed-radix matmuls, twiddles folded into the later stages"] if best.factored else []
        form = f"{' and '.join(parts)} (chosen by MACs: {costs})"
        if best.factored and _broadcast_free_for(context):
            form += "; the later H stages as one matmul per digit (no BROADCAST_TO, which XNNPACK does not take)"
    return (f"Fourier unit: rfft2/irfft2 at {h}x{w}: {form}; exact C2R (DC/Nyquist imaginary "
            f"parts ignored, Hermitian doubling)")


FOURIER_AS_MATMUL = register_rewrite(
    Rewrite(
        name="fourier_as_dft",
        description="SRConvNet Fourier unit: rfft2/irfft2 as real DFT matmuls",
        # Every target needs it: no mobile backend (nor ORT mobile EPs) runs FFT ops.
        applies=lambda model, context: has_fourier_units(model),
        apply=_apply,
        explain=_explain,
    )
)
