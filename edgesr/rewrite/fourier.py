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
  * ``fourier_as_dft(model, (H, W))``: constant bases for one feature-map size
    (SRConvNet's blocks run at the LR input size). For fixed-size exports.
  * ``fourier_any_size(model)``: the bases are built in the graph from the runtime
    H, W (cos/sin of (k*n mod N) * 2*pi/N over aranges); for dynamic-shape ONNX.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from edgesr.models.srconvnet import FourierUnit
from edgesr.rewrite.plan import ExportContext, Rewrite, by_input_size, register_rewrite, replace_modules


def _angles(rows: int, cols: int, period: int) -> torch.Tensor:
    """2*pi*(r*c mod period)/period in float64 (the modulo keeps the angles exact)."""
    r = torch.arange(rows, dtype=torch.int64)[:, None]
    c = torch.arange(cols, dtype=torch.int64)[None, :]
    return (r * c % period).to(torch.float64) * (2 * math.pi / period)


def _column_weights(width: int, wr: int) -> tuple[torch.Tensor, torch.Tensor]:
    """C2R column factors (c for the cosine rows, and for the sine rows with DC/Nyquist zeroed)."""
    v = torch.arange(wr)
    single = (v == 0) | (2 * v == width)
    cos_factor = torch.where(single, 1.0, 2.0).to(torch.float64)
    sin_factor = torch.where(single, 0.0, 2.0).to(torch.float64)
    return cos_factor, sin_factor


def dft_bases(height: int, width: int) -> dict[str, torch.Tensor]:
    """The four float32 matrices of :class:`DFTFourierUnit` for an H x W feature map."""
    wr = width // 2 + 1
    ang_w = _angles(width, wr, width)  # (W, Wr)
    cos_w, sin_w = torch.cos(ang_w), torch.sin(ang_w)
    cos_w[:, 0] = 1.0
    sin_w[:, 0] = 0.0
    if width % 2 == 0:
        sin_w[:, -1] = 0.0  # sin(pi*w) is exactly zero
    ang_h = _angles(height, height, height)
    cos_h, sin_h = torch.cos(ang_h), torch.sin(ang_h)
    rh, rw = 1.0 / math.sqrt(height), 1.0 / math.sqrt(width)
    cos_factor, sin_factor = _column_weights(width, wr)
    bases = {
        # forward W stage, (W, 2Wr)
        "fwd_w": torch.cat((cos_w, -sin_w), dim=1) * rw,
        # forward H stage, (2H, H) each: [Re; Im] = fwd_h_re @ Ar + fwd_h_im @ Ai
        "fwd_h_re": torch.cat((cos_h, -sin_h), dim=0) * rh,
        "fwd_h_im": torch.cat((sin_h, cos_h), dim=0) * rh,
        # inverse H stage, (2H, 2H)
        "inv_h": torch.cat(
            (torch.cat((cos_h, -sin_h), dim=1), torch.cat((sin_h, cos_h), dim=1)), dim=0
        ) * rh,
        # inverse W stage (C2R), (Wr, W) each
        "inv_w_re": (cos_w.T * cos_factor[:, None]) * rw,
        "inv_w_im": (-sin_w.T * sin_factor[:, None]) * rw,
    }
    return {name: value.to(torch.float32).contiguous() for name, value in bases.items()}


def _spectral_mix(unit: nn.Module, x: torch.Tensor, b: dict[str, torch.Tensor]) -> torch.Tensor:
    batch, channels, height, width = x.shape
    wr = b["inv_w_re"].shape[0]
    a = torch.matmul(x, b["fwd_w"])  # (B, C, H, 2Wr) = [Ar | Ai]
    spectrum = torch.matmul(b["fwd_h_re"], a[..., :wr]) + torch.matmul(b["fwd_h_im"], a[..., wr:])
    # (B, C, 2H, Wr) -> (B, 2C, H, Wr): channel 2c = Re X_c, 2c+1 = Im X_c.
    z = unit.act(unit.conv_layer(spectrum.reshape(batch, 2 * channels, height, wr)))
    q = torch.matmul(b["inv_h"], z.reshape(batch, channels, 2 * height, wr))  # [Qr; Qi]
    return torch.matmul(q[:, :, :height], b["inv_w_re"]) + torch.matmul(q[:, :, height:], b["inv_w_im"])


class DFTFourierUnit(nn.Module):
    """``FourierUnit`` for one fixed H x W, with precomputed DFT bases (see module doc).

    Keeps ``conv_layer``/``act`` so the state-dict keys are the official ones.
    """

    def __init__(self, unit: FourierUnit, size: tuple[int, int]) -> None:
        super().__init__()
        self.conv_layer = unit.conv_layer
        self.act = unit.act
        self.size = (int(size[0]), int(size[1]))
        for name, value in dft_bases(*self.size).items():
            self.register_buffer(name, value.to(unit.conv_layer.weight.device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            raise ValueError(
                f"this Fourier unit was rewritten for {self.size[0]}x{self.size[1]} feature maps, "
                f"got {x.shape[-2]}x{x.shape[-1]}; rewrite again for that size or use fourier_any_size"
            )
        bases = {name: getattr(self, name) for name in _BASE_NAMES}
        return _spectral_mix(self, x, bases)

    def extra_repr(self) -> str:
        return f"size={self.size}"


_BASE_NAMES = ("fwd_w", "fwd_h_re", "fwd_h_im", "inv_h", "inv_w_re", "inv_w_im")


def _runtime_angles(rows: torch.Tensor, cols: torch.Tensor, period: torch.Tensor) -> torch.Tensor:
    """2*pi*(r*c mod N)/N with N a (1,) int64 tensor: the integer modulo keeps every
    angle in [0, 2*pi), and a tensor period (not a Python/Sym int) exports to ONNX."""
    product = torch.remainder(rows[:, None] * cols[None, :], period)
    return product.to(torch.float32) * (2 * math.pi) / period.to(torch.float32)


class AnySizeFourierUnit(nn.Module):
    """``FourierUnit`` with DFT bases built in the graph from the runtime H and W.

    Same maths and matmul order as :class:`DFTFourierUnit`; exports as
    Range/Mul/Mod/Cos/Sin/MatMul, so a dynamic-shape ONNX graph works at any size.
    """

    def __init__(self, unit: FourierUnit) -> None:
        super().__init__()
        self.conv_layer = unit.conv_layer
        self.act = unit.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        wr = width // 2 + 1
        h_idx = torch.arange(height, device=x.device)
        w_idx = torch.arange(width, device=x.device)
        v_idx = torch.arange(wr, device=x.device)
        # The sizes as (1,) tensors (the last index + 1), so that no symbolic int
        # meets a tensor op as a scalar: those fail in the ONNX exporter.
        n_h = h_idx[-1:] + 1
        n_w = w_idx[-1:] + 1
        ang_w = _runtime_angles(w_idx, v_idx, n_w)  # (W, Wr)
        cos_w, sin_w = torch.cos(ang_w), torch.sin(ang_w)
        ang_h = _runtime_angles(h_idx, h_idx, n_h)
        cos_h, sin_h = torch.cos(ang_h), torch.sin(ang_h)
        rh = torch.rsqrt(n_h.to(x.dtype))
        rw = torch.rsqrt(n_w.to(x.dtype))
        single = ((v_idx == 0) | (2 * v_idx == n_w)).to(x.dtype)[:, None]  # (Wr, 1): DC, Nyquist
        bases = {
            "fwd_w": torch.cat((cos_w, -sin_w), dim=1) * rw,
            "fwd_h_re": torch.cat((cos_h, -sin_h), dim=0) * rh,
            "fwd_h_im": torch.cat((sin_h, cos_h), dim=0) * rh,
            "inv_h": torch.cat(
                (torch.cat((cos_h, -sin_h), dim=1), torch.cat((sin_h, cos_h), dim=1)), dim=0
            ) * rh,
            "inv_w_re": cos_w.T * (2 - single) * rw,
            "inv_w_im": -sin_w.T * (2 - 2 * single) * rw,
        }
        return _spectral_mix(self, x, bases)


def fourier_as_dft(model: nn.Module, input_size: tuple[int, int]) -> nn.Module:
    """A copy of ``model`` with every ``FourierUnit`` as DFT matmuls for ``input_size`` maps.

    ``input_size`` is the (H, W) of the feature maps the units see; for SRConvNet
    that is the LR input size.
    """
    size = (int(input_size[0]), int(input_size[1]))
    return replace_modules(model, _is_fourier_unit, lambda unit: DFTFourierUnit(unit, size))


def fourier_any_size(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``FourierUnit`` as DFT matmuls built at run time."""
    return replace_modules(model, _is_fourier_unit, AnySizeFourierUnit)


def _is_fourier_unit(module: nn.Module) -> bool:
    return isinstance(module, FourierUnit)


def has_fourier_units(model: nn.Module) -> bool:
    return any(map(_is_fourier_unit, model.modules()))


def _explain(model: nn.Module, context: ExportContext) -> str:
    if context.input_size is None:
        return ("Fourier unit: rfft2/irfft2 as real matmuls with DFT bases built in the graph "
                "from the runtime H, W (any input size)")
    h, w = context.input_size
    return (f"Fourier unit: rfft2/irfft2 as real matmuls with constant {h}x{w} DFT bases "
            f"(exact C2R: DC/Nyquist imaginary parts ignored, Hermitian doubling)")


FOURIER_AS_MATMUL = register_rewrite(
    Rewrite(
        name="fourier_as_dft",
        description="SRConvNet Fourier unit: rfft2/irfft2 as real DFT matmuls",
        # Every target needs it: no mobile backend (nor ORT mobile EPs) runs FFT ops.
        applies=lambda model, context: has_fourier_units(model),
        apply=by_input_size(fourier_as_dft, fourier_any_size),
        explain=_explain,
    )
)
