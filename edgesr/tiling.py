"""Tiled upscaling: a planner and a blender, numpy only. The one source of truth for tiles.

Every constant and every piece of arithmetic about tiles lives here (a later issue
emits the same numbers into Swift/Kotlin snippets: see ``tiling_spec``).

Plan, per axis, for an image side L, tile side T and overlap M (LR pixels):

- ``M`` is the context a tile carries past the part of it that is kept on each side
  that touches another tile, so neighbouring tiles share at least ``2*M`` pixels and
  a tile must be larger than ``2*M``.
- n = 1 if L <= T, else ceil((L - T) / (T - 2M)) + 1 tiles; tile k starts at
  round(k * (L - T) / (n - 1)): evenly spread, first flush with the top/left border,
  last flush with the bottom/right border, steps never larger than T - 2M.
- A tile never crosses the image border: at the border the network sees the image
  edge exactly as it does on the whole image. Only an image side shorter than a
  fixed-shape tile is padded, by reflection at its bottom/right, and the output is
  cropped back.
- Blend window (per axis, in output pixels, separable, product of the two axes):
  on a side that touches another tile the weight is 0 for the first Z = floor(M/2)
  LR pixels (x scale), then rises as a raised cosine 0.5 - 0.5*cos(pi*(p + 0.5)/R)
  over R = (2M - 2Z) * scale output pixels, then is 1. On a side at the image border
  the weight is 1. Overlapping tiles are averaged with these weights (weighted sum /
  sum of weights), so seams fade over ~M pixels instead of showing.
- Exactness: a pixel gets weight only from tiles in which it lies >= Z pixels from
  every inner tile edge, so for a network whose receptive field is smaller than M
  (radius <= Z) the tiled output equals the untiled one.

Memory: tiles are run one at a time and blended into a band one tile-row tall whose
rows are handed out, ``YIELD_ROWS`` at a time, as they become final (``tiled_bands``); a
caller that writes them out at once (``edgesr upscale`` to PNG) holds the LR input and
one tile-row of floats, never the output image.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import numpy as np

from edgesr.errors import EdgeSRError, stop_if_interrupted


@dataclass(frozen=True)
class TileDefaults:
    tile: int  # LR tile side used when the model takes any input size
    overlap: int  # LR pixels of context per inner side
    min_tile: int  # smallest tile the model accepts
    why: str = ""


# Per architecture. A static artifact's tile is its input size; its overlap comes from here.
TILE_DEFAULTS: dict[str, TileDefaults] = {
    "srconvnet": TileDefaults(256, 16, 4, "convolutional up to 7x7 dynamic kernels plus a global "
                                          "Fourier modulation: 16 px of context covers the local "
                                          "receptive field"),
    "hit-srf": TileDefaults(256, 32, 16, "hierarchical windows up to 64 px (base 8 x ratio 8): "
                                         "256 is a multiple of every window, 32 px of context each side"),
    "hit-sir": TileDefaults(256, 32, 16, "as hit-srf"),
    "hit-sng": TileDefaults(256, 32, 16, "as hit-srf"),
}
FALLBACK_DEFAULTS = TileDefaults(256, 16, 4, "unknown architecture")
BLEND_WINDOW = "raised-cosine"
# The zero-weight zone next to an inner tile edge is ZERO_ZONE_NUM / ZERO_ZONE_DEN of the overlap.
ZERO_ZONE_NUM, ZERO_ZONE_DEN = 1, 2


def defaults_for(arch: str | None) -> TileDefaults:
    return TILE_DEFAULTS.get((arch or "").lower(), FALLBACK_DEFAULTS)


def tiling_spec() -> dict:
    """Every constant of the scheme, for documentation and code generation."""
    return {
        "blend_window": BLEND_WINDOW,
        "window_formula": "w(p) = 0.5 - 0.5*cos(pi*(p - Z*s + 0.5)/R) for Z*s <= p < Z*s + R",
        "zero_zone": f"Z = floor(overlap * {ZERO_ZONE_NUM} / {ZERO_ZONE_DEN})",
        "ramp_length": "R = (2*overlap - 2*Z) * scale",
        "tile_count": "n = 1 if L <= T else ceil((L - T) / (T - 2*overlap)) + 1",
        "tile_start": "start_k = round(k * (L - T) / (n - 1))  (round half to even)",
        "border": "no padding at image borders; sides shorter than a fixed tile are reflect-padded "
                  "at bottom/right",
        "defaults": {name: asdict(d) for name, d in TILE_DEFAULTS.items()},
        "fallback": asdict(FALLBACK_DEFAULTS),
    }


def zero_zone(overlap: int) -> int:
    return overlap * ZERO_ZONE_NUM // ZERO_ZONE_DEN


def check_tiling(tile: int | tuple[int, int], overlap: int, min_tile: int = 1) -> None:
    """One-line errors for a tile that cannot work."""
    sides = (tile, tile) if isinstance(tile, int) else tuple(tile)
    for side in sides:  # first: a bad tile also makes the default overlap (derived from it) bad
        if side < 1:
            raise EdgeSRError(f"--tile {side}: give a tile side of 1 or more LR pixels (0: no tiling)")
    if overlap < 0:
        raise EdgeSRError(f"--overlap {overlap}: must be 0 or more")
    for side in sides:
        if side < min_tile:
            raise EdgeSRError(f"--tile {side}: below the model's minimum tile of {min_tile}")
        if side <= 2 * overlap:
            raise EdgeSRError(f"--tile {side} with --overlap {overlap}: a tile must be larger than "
                              f"2 x overlap ({2 * overlap}); use a larger tile or a smaller overlap")


def axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start of every tile along one axis (see the module docstring)."""
    if length <= tile:
        return [0]
    step = tile - 2 * overlap
    if step < 1:
        raise EdgeSRError(f"tile {tile} must be larger than 2 x overlap ({2 * overlap})")
    count = math.ceil((length - tile) / step) + 1
    return [int(round(k * (length - tile) / (count - 1))) for k in range(count)]


def ramp(overlap: int, scale: int) -> np.ndarray:
    """Weights from an inner tile edge inwards, in output pixels: zeros, raised cosine (ends before 1)."""
    zero = zero_zone(overlap) * scale
    length = (2 * overlap - 2 * zero_zone(overlap)) * scale
    if length <= 0:
        return np.zeros(0, np.float32)
    rising = 0.5 - 0.5 * np.cos(np.pi * (np.arange(length) + 0.5) / length)
    return np.concatenate([np.zeros(zero), rising]).astype(np.float32)


def axis_weights(size: int, overlap: int, scale: int, inner_before: bool, inner_after: bool) -> np.ndarray:
    """1-D blend weights of one tile of ``size`` output pixels."""
    weights = np.ones(size, np.float32)
    edge = ramp(overlap, scale)[:size]
    if inner_before:
        weights[:edge.size] *= edge
    if inner_after:
        weights[size - edge.size:] *= edge[::-1]
    return weights


@dataclass(frozen=True)
class Tile:
    y: int  # LR position in the (possibly padded) image
    x: int
    height: int
    width: int
    inner: tuple[bool, bool, bool, bool]  # top, bottom, left, right touch another tile


@dataclass(frozen=True)
class TilePlan:
    height: int  # LR image size
    width: int
    tile: tuple[int, int]  # LR tile (th, tw) actually run
    overlap: int
    scale: int
    padded: tuple[int, int]  # LR size after reflect padding (== image size if none)
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)

    def tiles(self) -> Iterator[Tile]:
        th, tw = self.tile
        for i, y in enumerate(self.rows):
            for j, x in enumerate(self.cols):
                yield Tile(y, x, th, tw, (i > 0, i < len(self.rows) - 1, j > 0, j < len(self.cols) - 1))


def plan_tiles(height: int, width: int, scale: int, tile: int | tuple[int, int], overlap: int,
               fixed: bool, min_tile: int = 1) -> TilePlan:
    """Tiles for an LR image. ``fixed``: every tile must be exactly ``tile`` (a static
    artifact), so short sides are padded; otherwise the tile shrinks to the image."""
    th, tw = (tile, tile) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))
    check_tiling((th, tw), overlap, min_tile)
    if height < 1 or width < 1:
        raise EdgeSRError(f"image of size {height}x{width} is empty")
    if not fixed:
        th, tw = min(th, height), min(tw, width)
    padded = (max(height, th), max(width, tw))
    rows = axis_starts(padded[0], th, overlap) if th > 2 * overlap else [0]
    cols = axis_starts(padded[1], tw, overlap) if tw > 2 * overlap else [0]
    return TilePlan(height, width, (th, tw), overlap, scale, padded, tuple(rows), tuple(cols))


def reflect_pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reflect-pad an H x W x C image at the bottom/right up to height x width (repeatedly
    reflecting when the pad is longer than the image; a 1-pixel side is repeated)."""
    pad_h, pad_w = height - image.shape[0], width - image.shape[1]
    if pad_h <= 0 and pad_w <= 0:
        return image
    return np.pad(image, ((0, max(pad_h, 0)), (0, max(pad_w, 0)), (0, 0)), mode="reflect")


TileRunner = Callable[[np.ndarray], np.ndarray]  # h x w x 3 -> (sh) x (sw) x 3
# Final rows are handed out this many at a time: a whole tile-row of a wide image (1024 x 8160
# x 3 floats for 2040 px wide at x4) is 100 MB, and its consumer's conversions (clip, scale,
# round, PNG filter) would hold several copies of it at once.
YIELD_ROWS = 64


def tiled_bands(run_tile: TileRunner, image: np.ndarray, plan: TilePlan,
                on_tile: Callable[[], None] | None = None) -> Iterator[np.ndarray]:
    """Upscale ``image`` (H x W x C float32) tile by tile following ``plan``, yielding the
    output top to bottom in bands of at most ``YIELD_ROWS`` final rows (together exactly
    sH x sW x C)."""
    if image.shape[:2] != (plan.height, plan.width):
        raise ValueError(f"plan is for {plan.height}x{plan.width}, image is {image.shape[:2]}")
    s = plan.scale
    th, tw = plan.tile
    source = reflect_pad(np.asarray(image, np.float32), *plan.padded)
    out_h, out_w = plan.height * s, plan.width * s
    channels = image.shape[2]
    band_h, band_w = th * s, plan.padded[1] * s
    acc = np.zeros((band_h, band_w, channels), np.float32)
    # Weights are separable and every tile-row has the same columns, so the sum of
    # weights is (sum over tile-rows of wy) x (sum over tiles of wx): two vectors.
    column_weights = [axis_weights(tw * s, plan.overlap, s, j > 0, j < len(plan.cols) - 1)
                      for j in range(len(plan.cols))]
    wx_sum = np.zeros(band_w, np.float32)
    for x, wx in zip(plan.cols, column_weights):
        wx_sum[x * s:(x + tw) * s] += wx
    wy_sum = np.zeros(band_h, np.float32)
    for i, y in enumerate(plan.rows):
        last = i == len(plan.rows) - 1
        wy = axis_weights(band_h, plan.overlap, s, i > 0, not last)
        wy_sum += wy
        for x, wx in zip(plan.cols, column_weights):
            patch = np.ascontiguousarray(source[y:y + th, x:x + tw])
            result = run_tile(patch)
            if result.shape != (band_h, tw * s, channels):
                raise EdgeSRError(f"the model returned {result.shape[:2]} for a {th}x{tw} tile; "
                                  f"expected x{s}: {(band_h, tw * s)}")
            acc[:, x * s:(x + tw) * s] += result * (wy[:, None] * wx[None, :])[..., None]
            if on_tile:
                on_tile()
            stop_if_interrupted()
        # Rows above the next tile-row's start are final: hand them out, shift the band.
        done = band_h if last else (plan.rows[i + 1] - y) * s
        keep = max(0, min(done, out_h - y * s))
        for top in range(0, keep, YIELD_ROWS):
            bottom = min(keep, top + YIELD_ROWS)
            yield acc[top:bottom, :out_w] / (wy_sum[top:bottom, None, None] * wx_sum[None, :out_w, None])
        if not last:
            acc[:band_h - done] = acc[done:]
            acc[band_h - done:] = 0.0
            wy_sum[:band_h - done] = wy_sum[done:]
            wy_sum[band_h - done:] = 0.0


def tiled_upscale(run_tile: TileRunner, image: np.ndarray, plan: TilePlan,
                  on_tile: Callable[[], None] | None = None) -> np.ndarray:
    """The whole output of ``tiled_bands`` as one array."""
    return np.concatenate(list(tiled_bands(run_tile, image, plan, on_tile)), axis=0)


class TiledUpscaler:
    """An ``Upscaler`` (H x W x 3 -> sH x sW x 3) that runs ``upscaler`` on tiles.

    ``fixed``: the upscaler takes only ``tile``-sized inputs (static artifact).
    """

    def __init__(self, upscaler: TileRunner, scale: int, tile: int | tuple[int, int], overlap: int,
                 fixed: bool = False, min_tile: int = 1, on_tile: Callable[[], None] | None = None):
        sides = (tile, tile) if isinstance(tile, int) else tuple(tile)
        check_tiling(sides, overlap, min_tile)
        self.upscaler, self.scale, self.tile, self.overlap = upscaler, int(scale), sides, int(overlap)
        self.fixed, self.min_tile, self.on_tile = fixed, min_tile, on_tile

    def plan(self, height: int, width: int) -> TilePlan:
        return plan_tiles(height, width, self.scale, self.tile, self.overlap, self.fixed, self.min_tile)

    def bands(self, image: np.ndarray) -> Iterator[np.ndarray]:
        """The output top to bottom, in bands of rows (see ``tiled_bands``)."""
        plan = self.plan(image.shape[0], image.shape[1])
        if plan.count == 1 and not self.fixed:
            yield self.upscaler(np.ascontiguousarray(image, np.float32))
        else:
            yield from tiled_bands(self.upscaler, image, plan, self.on_tile)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return np.concatenate(list(self.bands(image)), axis=0)

    def describe(self) -> dict:
        return {"tile": list(self.tile), "overlap": self.overlap, "fixed": self.fixed,
                "blend_window": BLEND_WINDOW}
