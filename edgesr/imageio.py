"""Image files <-> float arrays, keeping what the user's file had (bit depth, alpha, grey)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edgesr import png16
from edgesr.errors import EdgeSRError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF",
                ".tiff": "TIFF", ".webp": "WEBP"}


@dataclass
class LoadedImage:
    rgb: np.ndarray  # H x W x 3 float32 in [0, 1]
    alpha: np.ndarray | None  # H x W float32 in [0, 1]
    grayscale: bool
    bit_depth: int  # 8 or 16

    @property
    def mode(self) -> str:
        kind = ("grey" if self.grayscale else "RGB") + ("+alpha" if self.alpha is not None else "")
        return f"{kind}, {self.bit_depth}-bit"


def read_image(path: str | Path) -> LoadedImage:
    path = Path(path)
    try:
        if path.suffix.lower() == ".png" and png16.header(path) in ((16, 2), (16, 6)):
            pixels = png16.read_png16(path).astype(np.float32) / 65535.0
            alpha = pixels[..., 3] if pixels.shape[2] == 4 else None
            return LoadedImage(np.ascontiguousarray(pixels[..., :3]), alpha, False, 16)
        with Image.open(path) as image:
            image.load()
            return _from_pil(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise EdgeSRError(f"{path}: not a readable image ({exc})") from None


def _from_pil(image: Image.Image) -> LoadedImage:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale PNGs open as I;16 or I (int holding 0..65535).
        grey = np.asarray(image, dtype=np.float32) / 65535.0
        return LoadedImage(np.repeat(grey[..., None], 3, axis=2), None, True, 16)
    grayscale = image.mode in ("L", "LA", "1")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    alpha = np.ascontiguousarray(rgba[..., 3]) if has_alpha else None
    return LoadedImage(np.ascontiguousarray(rgba[..., :3]), alpha, grayscale, 8)


def read_rgb(path: str | Path) -> np.ndarray:
    """Just the colour, H x W x 3 in [0, 1] (greyscale is repeated to R=G=B)."""
    return read_image(path).rgb


def _channels(image: LoadedImage) -> np.ndarray:
    colour = image.rgb[..., :1] if image.grayscale else image.rgb
    parts = [colour] if image.alpha is None else [colour, image.alpha[..., None]]
    return np.clip(np.concatenate(parts, axis=2), 0.0, 1.0)


def write_image(path: str | Path, image: LoadedImage) -> None:
    """Write in the input's own kind (grey/RGB, alpha, 8/16-bit), atomically: temp file, then rename."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _PIL_FORMATS:
        raise EdgeSRError(f"{path}: unknown output image type {suffix!r}; use one of {', '.join(_PIL_FORMATS)}")
    data = _channels(image)
    tmp = path.with_name(f".{path.name}.part")
    try:
        if image.bit_depth == 16 and suffix == ".png" and not image.grayscale:
            png16.write_png16(tmp, np.round(data * 65535).astype(np.uint16))
        elif image.bit_depth == 16 and suffix == ".png" and image.alpha is None:
            Image.fromarray(np.round(data[..., 0] * 65535).astype(np.uint16)).save(tmp, format="PNG")
        else:
            # 16-bit grey+alpha has no PIL mode; it and non-PNG outputs are written as 8-bit.
            pixels = np.round(data * 255).astype(np.uint8)
            Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(
                tmp, format=_PIL_FORMATS[suffix])
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def list_images(root: str | Path) -> list[Path]:
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
