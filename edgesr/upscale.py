"""Upscaling image files with any upscaler (PyTorch model now; artifacts through runtimes)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from edgesr.evaluate import Upscaler
from edgesr.imageio import LoadedImage

AlphaMode = Literal["bicubic", "model"]


def _bicubic_plane(plane: np.ndarray, scale: int) -> np.ndarray:
    height, width = plane.shape
    resized = Image.fromarray(plane.astype(np.float32), mode="F").resize(
        (width * scale, height * scale), Image.BICUBIC)
    return np.clip(np.asarray(resized), 0.0, 1.0)


def upscale_image(upscale: Upscaler, image: LoadedImage, scale: int,
                  alpha: AlphaMode = "bicubic") -> LoadedImage:
    """Colour through the network; alpha by bicubic (default) or through the network as grey."""
    rgb = upscale(image.rgb)
    upscaled_alpha = None
    if image.alpha is not None:
        if alpha == "model":
            upscaled_alpha = upscale(np.repeat(image.alpha[..., None], 3, axis=2)).mean(axis=2)
        else:
            upscaled_alpha = _bicubic_plane(image.alpha, scale)
    if image.grayscale:
        grey = rgb.mean(axis=2, keepdims=True)
        rgb = np.repeat(grey, 3, axis=2)
    return LoadedImage(rgb.astype(np.float32), upscaled_alpha, image.grayscale, image.bit_depth)


def output_path(source: Path, input_root: Path, out_dir: Path, suffix: str | None) -> Path:
    """Mirror the input's place under its folder into OUT, keeping the name."""
    relative = source.relative_to(input_root) if input_root.is_dir() else Path(source.name)
    target = out_dir / relative
    return target.with_suffix(suffix) if suffix else target
