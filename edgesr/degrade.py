"""Bicubic downscaling that matches MATLAB's ``imresize`` (the SR benchmarks' degradation).

MATLAB ``imresize(img, 1/s, 'bicubic')`` uses Keys' cubic kernel with a = -0.5,
widened by ``s`` when shrinking (antialiasing), symmetric (mirror) padding at the
borders, and resizes one dimension at a time: the one shrunk most first (rows
first on a tie). Every SR benchmark's ``LR_bicubic`` files were made this way
from HR images cropped to a multiple of the scale; ``downscale`` reproduces them.

Each 1-D pass is a dense (out x in) weight matrix, so an image is resized with
two matrix products per channel; matrices are cached per (length, scale).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

# MATLAB's bicubic kernel support (4 taps at unit scale).
_KERNEL_WIDTH = 4.0


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    absx = np.abs(x)
    absx2, absx3 = absx**2, absx**3
    near = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1)
    far = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1) & (absx <= 2))
    return near + far


@lru_cache(maxsize=256)
def resize_matrix(in_length: int, out_length: int, scale: float, antialias: bool = True) -> np.ndarray:
    """The (out_length x in_length) float64 matrix of one MATLAB imresize pass.

    Follows MATLAB's ``contributions``: output pixel x (1-based) samples the input at
    u = x / scale + 0.5 * (1 - 1 / scale); taps outside the image are mirrored
    (``[1..n, n..1]`` periodically), and each row's weights are normalised to sum to 1.
    """
    width = _KERNEL_WIDTH
    shrink = scale < 1 and antialias
    if shrink:
        width = width / scale
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based
    distance = u[:, None] - indices
    weights = scale * cubic(distance * scale) if shrink else cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Mirror out-of-range taps the way MATLAB does: aux = [1:n, n:-1:1].
    aux = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    mapped = aux[np.mod(indices.astype(np.int64) - 1, aux.size)]
    matrix = np.zeros((out_length, in_length), dtype=np.float64)
    rows = np.repeat(np.arange(out_length), taps)
    np.add.at(matrix, (rows, mapped.ravel()), weights.ravel())
    matrix.setflags(write=False)
    return matrix


def imresize(
    image: np.ndarray, scale_factor: float, antialias: bool = True, uint8_passes: bool = False
) -> np.ndarray:
    """MATLAB ``imresize(image, scale_factor, 'bicubic')`` on a float H x W [x C] array in [0, 1].

    The output has ceil(H * scale_factor) x ceil(W * scale_factor) pixels and the
    input's dtype (float32 stays float32; computed in float64). By default values are
    neither clipped nor rounded (MATLAB on a double image). ``uint8_passes`` reproduces
    MATLAB on a uint8 image instead: each 1-D pass is rounded and clipped to 8-bit levels,
    which is how the benchmarks' LR files were made (see ``downscale``).
    """
    if scale_factor <= 0:
        raise ValueError(f"scale_factor must be positive, got {scale_factor}")
    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise ValueError(f"expected an H x W or H x W x C image, got shape {array.shape}")
    dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.float64
    height, width = array.shape[:2]
    out_height = int(math.ceil(height * scale_factor))
    out_width = int(math.ceil(width * scale_factor))
    result = array.astype(np.float64)
    # MATLAB's order: the dimension with the smaller scale first (both equal here,
    # so rows first); both passes are linear, so the order only matters for rounding.
    rows = resize_matrix(height, out_height, float(scale_factor), antialias)
    cols = resize_matrix(width, out_width, float(scale_factor), antialias)
    result = _levels(np.tensordot(rows, result, axes=(1, 0)), uint8_passes)  # (out_h, W, C)
    result = np.tensordot(cols, result, axes=(1, 1))  # (out_w, out_h, C)
    result = _levels(np.swapaxes(result, 0, 1), uint8_passes)
    return np.ascontiguousarray(result.astype(dtype, copy=False))


def _levels(values: np.ndarray, uint8_passes: bool) -> np.ndarray:
    if not uint8_passes:
        return values
    return np.clip(np.round(values * 255.0), 0.0, 255.0) / 255.0


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop H and W down to multiples of ``scale`` (how benchmark HR images are prepared)."""
    height, width = image.shape[:2]
    return image[: height - height % scale, : width - width % scale]


def downscale(hr: np.ndarray, scale: int, quantize: bool = True) -> np.ndarray:
    """The benchmark LR image of an HR image in [0, 1]: mod-crop, MATLAB bicubic 1/scale.

    With ``quantize`` (default) it behaves like MATLAB on a uint8 image: every pass is
    rounded to 8-bit levels, like the shipped ``LR_bicubic`` PNGs. Without it the result
    is only clipped to [0, 1]. Either way it is float32.
    """
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    scale = int(scale)
    lr = imresize(mod_crop(np.asarray(hr, dtype=np.float32), scale), 1.0 / scale, uint8_passes=quantize)
    return np.clip(lr, 0.0, 1.0).astype(np.float32)
