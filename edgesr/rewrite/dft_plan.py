"""The fixed-size 2-D real DFT of SRConvNet's Fourier unit: W halved, H mixed radix.

Forward, for x of shape (B, C, H, W), Wr = W//2 + 1 (``rfft2(x, norm="ortho")``):

1. W axis (real -> half spectrum). W is the innermost axis, and every form that moved
   data across it measured slower than it saved (below); halving does not move any.
   With ``low`` and ``high`` the two contiguous halves of a row of length n (n a
   multiple of 4):

       X[2k]   = DFT_{n/2}(low + high)[k]
       X[2k+1] = sum_{j < n/2} (low - high)[j] exp(-2 pi i (2k+1) j / n)

   so the odd frequencies (up to n/2) are one matmul of the differences, (n/2, n/4) for
   re and for im with the twiddles folded in, and the even ones are the same problem
   on the sums, half as long. ``halvings_for`` repeats that while n is a multiple of 4
   and at least 64; the rest is one plain DFT matmul, ``Ar = x @ cos``, ``Ai = x @ -sin``,
   (rest, rest/2 + 1) each, which holds DC and Nyquist. The spectrum's W order is the
   levels' odd frequencies, then the rest's; the unit's 1x1 conv and GELU act per
   frequency, so the order only has to be the one the inverse reads. The inverse
   mirrors it: the rest's C2R has period rest, each level's odd part is anti-periodic
   over half the level, so a level's signal is ``[y + g, y - g]``. MACs per row: n^2/4 per
   level plus rest * (rest + 2), against W * (W + 2) in one stage: at 256, 22.6 k
   instead of 66 k (3 halvings), at 128, 6.2 k instead of 16.6 k (2). Measured
   (2026-12-06, onnxruntime 1.31, 2 threads, AMD EPYC avx2/avx512f/avx512_vnni): one
   unit's W stages on 64 channels 36.0 -> 29.8 ms at 256x256 and 8.3 -> 6.4 ms at
   128x128; the whole SRConvNet x4 side by side, 1.08x faster at 256x256 (7 rounds) and
   1.02x at 128x128 (9 rounds); exported GFLOP 100.96 -> 78.17 and 20.43 -> 17.70.

   Forms measured before it and not kept (exact, but slower): a Cooley-Tukey second stage
   on the W axis, whose digits need transposes with 8-16-float inner blocks, which
   onnxruntime runs at ~60 M floats/s (16.9 ms for 1 M floats, against 1.3 ms for a
   128x128 transpose): slower than the MACs they save. The other way round was measured
   too (2026-12-04, one unit, C=64, 256x256, 2 threads): the plane transposed once so
   that W is the row axis, W = 16x16 as two left-matmul stages (only the frequencies up
   to W/2 kept per digit), transposed back for the H stages, and mirrored in the inverse.
   Exact, and 4.4x fewer MACs by LiteRT's count (2.71 -> 0.61 G), but slower: onnxruntime
   60-63 -> 61-76 ms, LiteRT 68-72 -> 93-99 ms. The one-stage W matmuls run at 68 GMAC/s
   in onnxruntime (half of the unit's time); the factored stages' small matrices (K=16;
   M=9, K=32 batched 1024 times) at 17-44, plus four plane transposes per unit. A third
   form was measured on 2026-12-05 (exact, not kept): the strided W digit contracted by a
   1 x W1 conv dilated by W2 (no data movement), the groups k1 = 0..W1/2 (the rest by
   conjugate symmetry) through twiddled batched matmuls with the groups as outer
   channels, the inverse ending in a dilated ConvTranspose (onnxruntime) or a matmul and
   one transpose (LiteRT; its TRANSPOSE_CONV has no dilation). 7.8 instead of 21.1 M MACs
   per channel and transform at 256x256 (1.5 vs 2.9 at 128x128), SRConvNet x4's exported
   GFLOP 1.29x / 1.24x PyTorch's instead of 1.76x / 1.43x; but the whole model ran slower
   (one interleaved run each, 2 threads): onnxruntime 1245 -> 1505 ms at 256x256 and 297
   -> 349 ms at 128x128, LiteRT 270 -> 388 ms at 128x128. The groups' spectra are 8-16
   columns wide, so every op after the W stage (the H stages, the 1x1 conv, GELU, their
   layout changes) runs on narrow rows; one unit in isolation had been within 5 % of the
   one-stage form.
2. H axis (complex), H = H1 * H2 (h = H2*h1 + h2, frequency k = k1 + H1*k2), Cooley-Tukey:

       X[k1 + H1*k2] = sum_h2 exp(-2 pi i (k1 + H1*k2) h2 / H) * sum_h1 exp(-2 pi i h1 k1 / H1) x[H2*h1 + h2]

   a size-H1 DFT over h1 (two left matmuls on Ar and Ai, (2*H1, H1) each, rows
   (k1, re/im)), then for each k1 a size-H2 transform over h2 with the twiddle
   exp(-2 pi i k1 h2 / H) folded into its matrix: one batched left matmul with a
   (H1, 2*H2, 2*H2) constant on the (re/im, h2) rows. H*(H1 + H2) complex MACs per
   column instead of H*H. H prime or small: one plain (2H, H) matmul pair.
   Three stages, H = H1*H2*H3, the same way one digit further: stage i runs per group of
   the digits before it (k1, ..., k_{i-1}), whose partial frequency K = k1 + H1*k2 + ...
   sets its folded twiddle exp(-2 pi i (K + P k_i) h_i / (P H_i)), P = H1*...*H_{i-1}; its
   rows (k_i, re/im) are the next stage's groups, so no stage moves data: H*(H1+H2+H3)
   complex MACs. ``choose`` takes three stages from H = 128 on (radices of at least 4),
   where they ran as fast as two with fewer MACs (``_splits``): at 256x256 8x4x8, 8.4 M
   MACs per channel and transform instead of 10.0 M with 16x16.

The spectrum is left in digit order (k1 major): the unit applies a per-frequency 1x1
conv and GELU between the transforms, so any order works as long as the inverse reads
the same one; one transpose with (H_last * Wr)-float blocks (fast) brings re/im next to
the channel. The inverse mirrors the forward: the grouped stages from the last one, then
the k1 stage, then the C2R W matmuls with irfft's column weights (1 for DC and Nyquist,
whose imaginary parts drop out because their sines are 0, and 2 for the rest).

``choose`` picks the H split with the fewest MACs among those ``_splits`` allows;
``Plan.describe`` names it for the report. A graph whose H and W are free (``--dynamic``
ONNX) gets ``run_time_plan``: the same forward and inverse over matrices the graph builds
from its input's size, H in two stages with a radix the graph computes, W in one.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from edgesr.rewrite.layout import matmul_without_broadcast


def _phase(rows: torch.Tensor, cols: torch.Tensor, period: int | torch.Tensor, sign: float,
           dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of sign * 2 pi (r*c mod period) / period for every pair of the last
    axes of ``rows`` and ``cols`` (leading axes broadcast); the integer modulo keeps the
    angles exact. ``period``: an int, or a (1,) int64 tensor for sizes known at run time."""
    product = (rows.to(torch.int64).unsqueeze(-1) * cols.to(torch.int64).unsqueeze(-2)) % period
    step = sign * 2 * math.pi / (period.to(dtype) if isinstance(period, torch.Tensor) else period)
    angle = product.to(dtype) * step
    return torch.cos(angle), torch.sin(angle)


def _complex_rows(re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """A complex (n, m) matrix a (or a batch of them) as the real (2n, 2m) one that maps
    [zr; zi] (rows (re/im, index)) to [Re(a z); Im(a z)]."""
    return torch.cat((torch.cat((re, -im), dim=-1), torch.cat((im, re), dim=-1)), dim=-2)


HALVING_FLOOR = 64  # W is halved while its length is a multiple of 4 and at least this


def halvings_for(width: int) -> int:
    """How many times the W axis is halved (``Plan.halvings``): while the length is a
    multiple of 4 (so that W/2's own Nyquist frequency is even and stays in the rest) and
    at least ``HALVING_FLOOR``; below that a level saves fewer MACs than its extra ops cost
    (one SRConvNet unit's W stages, onnxruntime, 2 threads: 128 -> 2 levels 6.4 ms, 3 levels
    8.4 ms; 256 -> 2, 3, 4 levels 29.9, 29.8, 29.5 ms; one stage 8.3 and 36.0 ms)."""
    levels = 0
    while width % 4 == 0 and width >= HALVING_FLOOR:
        width, levels = width // 2, levels + 1
    return levels


@dataclass(frozen=True)
class Plan:
    """The transform of an H x W map: H = the product of ``radices``, one Cooley-Tukey
    stage per radix ((H,): one plain stage); W halved ``halvings`` times before its last,
    one-stage part (0: W in one stage)."""

    height: int
    width: int
    radices: tuple[int, ...]
    halvings: int = 0

    @property
    def factored(self) -> bool:
        return len(self.radices) > 1

    @property
    def half_width(self) -> int:
        return self.width // 2 + 1

    @property
    def halved_widths(self) -> list[int]:
        """The W length at each halving level, W first."""
        return [self.width >> level for level in range(self.halvings)]

    @property
    def rest_width(self) -> int:
        """The length left for the one-stage W matmul after the halvings."""
        return self.width >> self.halvings

    def w_columns(self) -> list[int]:
        """Frequencies of each W part in spectrum order: every halving level's odd ones,
        then the rest's half spectrum; they sum to ``half_width``."""
        return [n // 4 for n in self.halved_widths] + [self.rest_width // 2 + 1]

    def describe(self) -> str:
        stages = {2: "two", 3: "three"}.get(len(self.radices), str(len(self.radices)))
        split = f"H {self.height}={'x'.join(map(str, self.radices))} in {stages} stages" if self.factored \
            else f"H {self.height} in one stage"
        if not self.halvings:
            return f"{split}, W {self.width} in one stage"
        times = "once" if self.halvings == 1 else f"{self.halvings} times"
        return f"{split}, W {self.width} halved {times} before one stage of {self.rest_width}"

    def transform_macs(self) -> int:
        """Real MACs of the forward transform of one channel (the inverse costs the same)."""
        h, wr, rest = self.height, self.half_width, self.rest_width
        along_h = 4 * h * wr * sum(self.radices)  # a stage of radix n: n complex MACs per output
        # A level of length n: n/2 differences -> n/4 odd frequencies (re and im).
        along_w = sum((n // 2) ** 2 for n in self.halved_widths) + rest * 2 * (rest // 2 + 1)
        return h * along_w + along_h

    def unit_macs(self, channels: int) -> int:
        """MACs of one Fourier unit: both transforms of every channel and the 2C x 2C conv."""
        return 2 * channels * self.transform_macs() + (2 * channels) ** 2 * self.height * self.half_width

    # -- constants (float64; the unit stores them as float32) -------------------------
    def matrices(self) -> dict[str, torch.Tensor]:
        h = self.height
        rh, rw = 1.0 / math.sqrt(h), 1.0 / math.sqrt(self.width)
        mats = {}
        for level, n in enumerate(self.halved_widths):
            odd = torch.arange(1, n // 2, 2)
            cos_o, sin_o = _phase(torch.arange(n // 2), odd, n, -1.0)  # (n/2, n/4)
            mats[f"fwd_w{level}_re"], mats[f"fwd_w{level}_im"] = cos_o * rw, sin_o * rw
            # every odd frequency has a conjugate partner: weight 2
            mats[f"inv_w{level}_re"], mats[f"inv_w{level}_im"] = cos_o.T * 2 * rw, sin_o.T * 2 * rw
        mats.update(_one_stage_w(torch.arange(self.rest_width), self.rest_width // 2 + 1, self.rest_width, rw))
        if not self.factored:
            cos_h, sin_h = _phase(torch.arange(h), torch.arange(h), h, -1.0)
            mats["fwd_h_re"] = torch.cat((cos_h, sin_h), dim=0) * rh  # rows (re/im, k), on Ar
            mats["fwd_h_im"] = torch.cat((-sin_h, cos_h), dim=0) * rh  # on Ai
            mats["inv_h"] = _complex_rows(cos_h, -sin_h) * rh  # exp(+i theta), (2H, 2H)
            return mats
        h1 = self.radices[0]
        mats.update(_first_h_stage(torch.arange(h1), h1, rh))
        for stage in range(2, len(self.radices) + 1):
            mats[f"fwd_h{stage}"], mats[f"inv_h{stage}"] = self._stage_matrices(stage)
        return mats

    def _stage_matrices(self, stage: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and inverse matrices of H stage ``stage`` >= 2 (``_later_h_stage``), for
        the groups of the digits before it, k1 the most significant in the layout."""
        n, earlier = self.radices[stage - 1], self.radices[:stage - 1]
        places = [math.prod(earlier[:position]) for position in range(len(earlier))]  # of k1, k2, ...
        partial = torch.tensor([sum(digit * place for digit, place in zip(group, places))
                                for group in itertools.product(*map(range, earlier))])
        return _later_h_stage(partial, torch.arange(n), math.prod(earlier), math.prod(earlier) * n,
                              last=stage == len(self.radices))


def _one_stage_w(positions: torch.Tensor, columns: int, period: int | torch.Tensor, scale,
                 dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """The one-stage real DFT along W (``positions`` = arange(n), n = ``period``) to
    ``columns`` = n//2 + 1 frequencies, and its C2R."""
    frequencies = torch.arange(columns, device=positions.device)
    cos_w, sin_w = _phase(positions, frequencies, period, -1.0, dtype)  # (n, n/2 + 1)
    single = (frequencies == 0) | (2 * frequencies == period)  # DC and Nyquist: no conjugate partner
    weight = (2 - single.to(dtype))[:, None]
    return {
        "fwd_w_re": cos_w * scale, "fwd_w_im": sin_w * scale,
        # C2R: y = Re(Q exp(+i theta)) = Qr @ (c cos theta) + Qi @ (c sin(-theta))
        "inv_w_re": cos_w.T * weight * scale, "inv_w_im": sin_w.T * weight * scale,
    }


def _first_h_stage(digits: torch.Tensor, radix: int | torch.Tensor, scale,
                   dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """The size-``radix`` DFT over h1 (``digits`` = arange(radix)): forward rows (k1, re/im)
    on Ar and on Ai; the inverse's rows (re/im, h1), columns (k1, re/im)."""
    h1 = digits.shape[0]
    cos1, sin1 = _phase(digits, digits, radix, -1.0, dtype)  # (k1, h1)
    cos_back, sin_back = _phase(digits, digits, radix, 1.0, dtype)  # (h1, k1)
    top = torch.stack((cos_back, -sin_back), dim=2).reshape(h1, 2 * h1)
    bottom = torch.stack((sin_back, cos_back), dim=2).reshape(h1, 2 * h1)
    return {
        # Re = c Ar - s Ai, Im = s Ar + c Ai
        "fwd_h1_re": torch.stack((cos1, sin1), dim=1).reshape(2 * h1, h1) * scale,
        "fwd_h1_im": torch.stack((-sin1, cos1), dim=1).reshape(2 * h1, h1) * scale,
        "inv_h1": torch.cat((top, bottom), dim=0) * scale,
    }


def _later_h_stage(partial: torch.Tensor, digits: torch.Tensor, groups, period: int | torch.Tensor,
                   last: bool, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and inverse matrices of a later H stage, (G, 2n, 2n) for the G groups of
    the digits before it, whose partial frequencies K = k1 + n1 k2 + ... are ``partial``;
    ``digits`` = arange(n), ``groups`` the product P of the radices before it. A group's
    stage maps digit h_i to k_i with exp(-+2 pi i (K + P k_i) h_i / (P n)), the twiddle
    folded in. Rows of the forward matrix (k_i, re/im), where the next stage reads them as
    groups, or (re/im, k_i) in the ``last`` stage; the inverse reads its columns in the
    same order."""
    n = digits.shape[0]
    frequency = partial[:, None] + groups * digits[None, :]  # (G, n)
    fwd = _complex_rows(*_phase(frequency, digits, period, -1.0, dtype))  # rows (re/im, k), cols (re/im, h)
    inv = _complex_rows(*_phase(digits, frequency, period, 1.0, dtype))  # rows (re/im, h), cols (re/im, k)
    if not last:
        fwd = fwd.reshape(-1, 2, n, 2 * n).transpose(1, 2).reshape(-1, 2 * n, 2 * n)  # rows (k, re/im)
        inv = inv.reshape(-1, 2 * n, 2, n).transpose(2, 3).reshape(-1, 2 * n, 2 * n)  # cols (k, re/im)
    return fwd, inv


def _per_digit(matrices: torch.Tensor, x: torch.Tensor, broadcast_free: bool) -> torch.Tensor:
    """``matrices`` (G, R, K) applied per digit g to ``x`` (B, C, G, K, Wr): (B, C, G, R, Wr);
    ``broadcast_free`` for converters that lower the broadcast over (B, C) with a
    BROADCAST_TO of the constant (``layout.matmul_without_broadcast``)."""
    return matmul_without_broadcast(matrices, x) if broadcast_free else torch.matmul(matrices, x)


def forward(x: torch.Tensor, plan: Plan, m: dict[str, torch.Tensor], broadcast_free: bool = False) -> torch.Tensor:
    """rfft2(x, norm="ortho") as (B, 2C, F, Wr): channel 2c = Re X_c, 2c+1 = Im X_c,
    the H frequencies in the plan's digit order."""
    batch, channels, height, _ = x.shape
    wr = plan.half_width
    ar, ai = _forward_w(x, plan, m)  # (B, C, H, Wr)
    if not plan.factored:
        spectrum = torch.matmul(m["fwd_h_re"], ar) + torch.matmul(m["fwd_h_im"], ai)  # (B, C, 2H, Wr)
        return spectrum.reshape(batch, 2 * channels, height, wr)
    radices = plan.radices
    ar = ar.reshape(batch, channels, radices[0], -1)
    ai = ai.reshape(batch, channels, radices[0], -1)
    stage_out = torch.matmul(m["fwd_h1_re"], ar) + torch.matmul(m["fwd_h1_im"], ai)  # rows (k1, re/im)
    groups, columns = radices[0], height // radices[0] * wr
    for stage, radix in enumerate(radices[1:], start=2):
        columns //= radix
        stage_out = _per_digit(m[f"fwd_h{stage}"], stage_out.reshape(batch, channels, groups, 2 * radix, columns),
                               broadcast_free)
        groups *= radix
    # the last stage's rows: (re/im, k_last); one transpose puts re/im next to the channel
    spectrum = stage_out.reshape(batch, channels, -1, 2, radices[-1] * wr).transpose(2, 3)
    return spectrum.reshape(batch, 2 * channels, height, wr)


def inverse(z: torch.Tensor, plan: Plan, m: dict[str, torch.Tensor], broadcast_free: bool = False) -> torch.Tensor:
    """irfft2(., s=(H, W), norm="ortho") of a spectrum laid out as ``forward`` returns it."""
    batch, channels2, height, wr = z.shape
    channels = channels2 // 2
    if plan.factored:
        radices = plan.radices
        groups, columns = height // radices[-1], wr
        stage_out = z.reshape(batch, channels, 2, groups, radices[-1] * wr).transpose(2, 3)  # (.., re/im, (k, Wr))
        for stage in range(len(radices), 1, -1):
            radix = radices[stage - 1]
            stage_out = _per_digit(m[f"inv_h{stage}"], stage_out.reshape(batch, channels, groups, 2 * radix, columns),
                                   broadcast_free)  # rows (re/im, h_stage)
            columns *= radix
            groups //= radices[stage - 2]
        q = torch.matmul(m["inv_h1"], stage_out.reshape(batch, channels, 2 * radices[0], columns))  # rows (re/im, h1)
    else:
        q = torch.matmul(m["inv_h"], z.reshape(batch, channels, 2 * height, wr))
    q = q.reshape(batch, channels, 2 * height, wr)  # slices, not an index: CoreML's EP has no Gather
    return _inverse_w(q[:, :, :height], q[:, :, height:], plan, m)


def _forward_w(x: torch.Tensor, plan: Plan, m: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Re and Im of the half spectrum along W, the frequencies in ``Plan.w_columns`` order.

    A level of length n: X[2k] is the DFT of length n/2 of ``low + high`` (the two
    contiguous halves, which the next level takes), X[2k+1] one matmul of ``low - high``
    with the twiddles folded in; the rest gets the plain real DFT matmul. Only slices of
    the innermost axis and elementwise ops: no layout change."""
    re, im = [], []
    for level in range(plan.halvings):
        low, high = x.chunk(2, dim=-1)
        difference = low - high
        re.append(torch.matmul(difference, m[f"fwd_w{level}_re"]))
        im.append(torch.matmul(difference, m[f"fwd_w{level}_im"]))
        x = low + high
    re.append(torch.matmul(x, m["fwd_w_re"]))
    im.append(torch.matmul(x, m["fwd_w_im"]))
    return (torch.cat(re, dim=-1), torch.cat(im, dim=-1)) if plan.halvings else (re[0], im[0])


def _inverse_w(qr: torch.Tensor, qi: torch.Tensor, plan: Plan, m: dict[str, torch.Tensor]) -> torch.Tensor:
    """C2R along W of a half spectrum in ``Plan.w_columns`` order: the rest's part has
    period rest_width; each level's odd part g is anti-periodic over its half, so the
    level's signal is [y + g, y - g]."""
    if not plan.halvings:
        return torch.matmul(qr, m["inv_w_re"]) + torch.matmul(qi, m["inv_w_im"])
    columns = plan.w_columns()
    re, im = qr.split(columns, dim=-1), qi.split(columns, dim=-1)
    y = torch.matmul(re[-1], m["inv_w_re"]) + torch.matmul(im[-1], m["inv_w_im"])
    for level in reversed(range(plan.halvings)):
        odd = torch.matmul(re[level], m[f"inv_w{level}_re"]) + torch.matmul(im[level], m[f"inv_w{level}_im"])
        y = torch.cat((y + odd, y - odd), dim=-1)
    return y


THREE_STAGE_FLOOR = 128  # H is split into three stages only from this height (``_splits``)
MIN_THREE_STAGE_RADIX = 4  # nor into a stage of a smaller radix: its tiny matmuls cost more than its MACs save


def _splits(height: int) -> list[tuple[int, ...]]:
    """The H splits ``choose`` weighs: one stage, every two-stage split, and the
    three-stage splits from ``THREE_STAGE_FLOOR`` on. Measured (2026-12-06, onnxruntime 1.31,
    2 threads, AMD EPYC avx2/avx512f/avx512_vnni, the forward H stages of 64 channels):
    256 = 16x16 6.7 ms, 8x4x8 6.4-6.5, 4x8x8 6.7-7.1, 4x4x4x4 7.3-7.7; 128 = 8x16 1.7,
    4x4x8 1.6; 120 = 10x12 1.3, 4x5x6 1.5; 64 = 8x8 0.5, 4x4x4 0.75."""
    splits = [(height,)] + [(outer, height // outer) for outer in range(2, height) if height % outer == 0]
    if height >= THREE_STAGE_FLOOR:
        splits += [(first, second, height // (first * second))
                   for first in range(MIN_THREE_STAGE_RADIX, height) if height % first == 0
                   for second in range(MIN_THREE_STAGE_RADIX, height // first) if height // first % second == 0
                   and height // (first * second) >= MIN_THREE_STAGE_RADIX]
    return splits


@lru_cache(maxsize=None)
def choose(height: int, width: int) -> Plan:
    """The H split with the fewest MACs (one stage for small or prime H; among equal
    MACs the fewest stages, then the largest last radix, whose stage has the fewest
    groups), W halved ``halvings_for(width)`` times."""
    halvings = halvings_for(width)
    plans = [Plan(height, width, radices, halvings) for radices in _splits(height)]
    return min(plans, key=lambda plan: (plan.transform_macs(), len(plan.radices), -plan.radices[-1],
                                        -plan.radices[0]))


MAX_RUN_TIME_RADIX = 64  # the largest first radix of a run-time plan: sizes up to 4096 get two balanced stages


def run_time_plan(x: torch.Tensor) -> tuple[Plan, dict[str, torch.Tensor]]:
    """The plan for x's own H x W and its matrices, built in the graph from the sizes, for
    a graph whose H and W are known only at run time (``--dynamic`` ONNX).

    H in two stages, the first radix h1 the largest divisor of H up to sqrt(H) (and
    ``MAX_RUN_TIME_RADIX``), computed in the graph and read back as a size: the reshapes
    follow it, so the graph's structure does not depend on H. A prime H gets h1 = 1,
    which is one plain stage in effect. W in one stage: halving it needs a W that is a
    multiple of 4, a choice the graph cannot make at run time. At 256x256, 21 M MACs per
    channel and transform instead of 51 M in one stage (8.4 M with a fixed size)."""
    height, width = x.shape[-2:]
    device, dtype = x.device, x.dtype
    # The sizes as (1,) tensors (the last index + 1): a symbolic int that meets a tensor
    # op as a scalar fails in the ONNX exporter.
    rows, positions = torch.arange(height, device=device), torch.arange(width, device=device)
    h_size, w_size = rows[-1:] + 1, positions[-1:] + 1
    candidates = torch.arange(2, MAX_RUN_TIME_RADIX + 1, device=device)
    fits = (h_size % candidates == 0) & (candidates * candidates <= h_size)
    radix_size = torch.where(fits, candidates, 1).amax(dim=0, keepdim=True)
    radix = radix_size.item()
    torch._check(radix >= 1)
    torch._check(radix <= MAX_RUN_TIME_RADIX)
    torch._check(height % radix == 0)
    plan = Plan(height, width, (radix, height // radix))
    matrices = _one_stage_w(positions, width // 2 + 1, w_size, torch.rsqrt(w_size.to(dtype)), dtype)
    first_digits = torch.arange(radix, device=device)
    matrices.update(_first_h_stage(first_digits, radix_size, torch.rsqrt(h_size.to(dtype)), dtype))
    matrices["fwd_h2"], matrices["inv_h2"] = _later_h_stage(
        first_digits, torch.arange(height // radix, device=device), radix_size, h_size, last=True, dtype=dtype)
    return plan, matrices


def plain(height: int, width: int) -> Plan:
    return Plan(height, width, (height,))


def fft_flops(height: int, width: int) -> float:
    """Real flops of rfft2 of one channel, counted as 5 N log2 N per complex transform of
    size N (the usual FFT convention) and half that for the real transform along W."""
    wr = width // 2 + 1
    return 2.5 * width * math.log2(max(width, 2)) * height + 5 * height * math.log2(max(height, 2)) * wr
