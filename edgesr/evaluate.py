"""PSNR/SSIM-Y of an upscaler on a benchmark folder in BasicSR layout."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from edgesr.errors import EdgeSRError
from edgesr.imageio import IMAGE_SUFFIXES, read_rgb
from edgesr.metrics import psnr_y, quantize, ssim_y
from edgesr.progress import progress

# An upscaler maps an H x W x 3 float32 RGB image in [0, 1] to (sH) x (sW) x 3.
Upscaler = Callable[[np.ndarray], np.ndarray]


@dataclass
class ImageScore:
    name: str
    psnr_y: float
    ssim_y: float
    bicubic_psnr_y: float
    bicubic_ssim_y: float


@dataclass
class EvalResult:
    data: str
    scale: int
    images: list[ImageScore] = field(default_factory=list)

    def mean(self, metric: str) -> float:
        return float(np.mean([getattr(s, metric) for s in self.images]))

    def to_dict(self) -> dict:
        means = {m: self.mean(m) for m in ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y")}
        return {"data": self.data, "scale": self.scale, "mean": means,
                "images": [asdict(s) for s in self.images]}


def find_pairs(data_dir: str | Path, scale: int) -> list[tuple[Path | None, Path]]:
    """(LR, HR) pairs: HR/<name>.png with LR_bicubic/X<s>/<name>x<s>.png.

    Without LR_bicubic/X<s>/ (or for a plain folder of images) LR is None: ``read_pair``
    then makes it with MATLAB bicubic, as the benchmarks' LR files were made.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise EdgeSRError(f"{root}: no such folder")
    hr_dir = root / "HR" if (root / "HR").is_dir() else root
    lr_dir = root / "LR_bicubic" / f"X{scale}"
    pairs: list[tuple[Path | None, Path]] = []
    for hr in sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        if not lr_dir.is_dir():
            pairs.append((None, hr))
            continue
        lr = lr_dir / f"{hr.stem}x{scale}{hr.suffix}"
        if not lr.exists():
            raise EdgeSRError(f"{hr}: no matching LR file {lr}")
        pairs.append((lr, hr))
    if not pairs:
        raise EdgeSRError(f"{hr_dir}: no images (expected HR/ with LR_bicubic/X{scale}/, or a folder of HR images)")
    return pairs


def read_pair(lr_path: Path | None, hr_path: Path, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """The LR image (float, [0,1]) and the uint8 HR cropped to LR size x scale."""
    from edgesr.degrade import downscale

    hr = read_rgb(hr_path)
    smallest = 2 * scale + 1  # PSNR/SSIM drop a border of `scale` pixels on each side
    if lr_path is None and min(hr.shape[:2]) < smallest * scale:
        raise EdgeSRError(f"{hr_path}: {hr.shape[1]}x{hr.shape[0]} is too small to evaluate at x{scale} (its LR "
                          f"would be under {smallest} pixels, less than the border the metrics drop); "
                          f"use HR images of at least {smallest * scale}x{smallest * scale}")
    lr = read_rgb(lr_path) if lr_path is not None else downscale(hr, scale)
    return lr, quantize(hr)[: lr.shape[0] * scale, : lr.shape[1] * scale]


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """PIL bicubic on the uint8 image, the baseline the SR literature quotes."""
    height, width = lr.shape[:2]
    image = Image.fromarray(quantize(lr)).resize((width * scale, height * scale), Image.BICUBIC)
    return np.asarray(image, dtype=np.float32) / 255.0


def evaluate(upscale: Upscaler, data_dir: str | Path, scale: int, show_progress: bool = True) -> EvalResult:
    result = EvalResult(str(data_dir), scale)
    pairs = find_pairs(data_dir, scale)
    for lr_path, hr_path in progress(pairs, desc=f"eval x{scale}", enabled=show_progress):
        lr, hr_u8 = read_pair(lr_path, hr_path, scale)
        sr_u8 = quantize(upscale(lr))
        if sr_u8.shape != hr_u8.shape:
            raise EdgeSRError(f"{hr_path}: upscaler returned {sr_u8.shape}, expected {hr_u8.shape}")
        bicubic_u8 = quantize(bicubic_upscale(lr, scale))
        result.images.append(ImageScore(
            hr_path.stem,
            psnr_y(sr_u8, hr_u8, scale), ssim_y(sr_u8, hr_u8, scale),
            psnr_y(bicubic_u8, hr_u8, scale), ssim_y(bicubic_u8, hr_u8, scale),
        ))
    return result
