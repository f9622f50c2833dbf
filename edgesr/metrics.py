"""PSNR and SSIM on the Y channel, following the BasicSR / EDSR protocol.

Both images are uint8-quantised RGB; Y uses MATLAB's rgb2ycbcr (BT.601, 16..235);
``crop`` pixels (the scale) are dropped on every border.
"""
from __future__ import annotations

import numpy as np

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)


def quantize(image01: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] -> the uint8 values an SR output is saved as."""
    return np.round(np.clip(image01, 0.0, 1.0) * 255.0).astype(np.uint8)


def rgb_to_y(image_u8: np.ndarray) -> np.ndarray:
    """MATLAB rgb2ycbcr's Y for uint8 RGB (H x W x 3), as float64 in 16..235."""
    return 16.0 + image_u8.astype(np.float64) @ _Y_WEIGHTS / 255.0


def _crop(image: np.ndarray, crop: int) -> np.ndarray:
    return image[crop:-crop, crop:-crop] if crop > 0 else image


def psnr_y(output_u8: np.ndarray, target_u8: np.ndarray, crop: int) -> float:
    a = _crop(rgb_to_y(output_u8), crop)
    b = _crop(rgb_to_y(target_u8), crop)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """Plain PSNR between two float arrays (used for artifact-vs-PyTorch agreement)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(peak**2 / mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    axis = np.arange(size, dtype=np.float64) - (size - 1) / 2
    kernel = np.exp(-(axis**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _filter_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 2-D correlation keeping only the fully covered ('valid') region."""
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel[::-1], mode="valid"), 1, image)
    return np.apply_along_axis(lambda c: np.convolve(c, kernel[::-1], mode="valid"), 0, rows)


def ssim_y(output_u8: np.ndarray, target_u8: np.ndarray, crop: int) -> float:
    a = _crop(rgb_to_y(output_u8), crop)
    b = _crop(rgb_to_y(target_u8), crop)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    window = _gaussian_window()
    mu_a, mu_b = _filter_valid(a, window), _filter_valid(b, window)
    var_a = _filter_valid(a * a, window) - mu_a**2
    var_b = _filter_valid(b * b, window) - mu_b**2
    cov = _filter_valid(a * b, window) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(ssim_map.mean())
