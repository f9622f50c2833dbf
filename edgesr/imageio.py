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
        if path.suffix.lower() == ".png" and (png16.header(path) or (0,))[0] == 16:
            pixels = png16.read_png16(path).astype(np.float32) / 65535.0
            grayscale = pixels.shape[2] <= 2
            alpha = pixels[..., -1] if pixels.shape[2] in (2, 4) else None
            colour = np.repeat(pixels[..., :1], 3, axis=2) if grayscale else pixels[..., :3]
            return LoadedImage(np.ascontiguousarray(colour), alpha, grayscale, 16)
        with Image.open(path) as image:
            image.load()
            return _from_pil(image)
    except EdgeSRError as exc:
        raise EdgeSRError(f"{path}: {exc}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise EdgeSRError(f"{path}: not a readable image ({exc})") from None


def _from_pil(image: Image.Image) -> LoadedImage:
    if image.mode == "F":
        return _from_float(np.asarray(image, dtype=np.float32))
    if image.mode == "I" and _bits_per_sample(image) > 16:
        raise EdgeSRError(f"{_bits_per_sample(image)}-bit integer samples: edgesr reads "
                          f"8- and 16-bit integer or 0..1 float images; convert it to 16-bit first")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale PNGs open as I;16 or I (int holding 0..65535).
        grey = np.asarray(image, dtype=np.float32) / 65535.0
        return LoadedImage(np.repeat(grey[..., None], 3, axis=2), None, True, 16)
    grayscale = image.mode in ("L", "LA", "1")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    alpha = np.ascontiguousarray(rgba[..., 3]) if has_alpha else None
    return LoadedImage(np.ascontiguousarray(rgba[..., :3]), alpha, grayscale, 8)


def _bits_per_sample(image: Image.Image) -> int:
    """Bits per sample of a TIFF (tag 258); 16 for the other 'I' images (16-bit PNGs)."""
    tags = getattr(image, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None
    if isinstance(bits, tuple):
        bits = max(bits)
    return int(bits) if bits else 16


def _from_float(grey: np.ndarray) -> LoadedImage:
    """A float image (TIFF mode F) is read as 0..1 intensities, as float images are stored."""
    finite = grey[np.isfinite(grey)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if finite.size != grey.size or low < -1e-3 or high > 1.0 + 1e-3:
        raise EdgeSRError(f"float samples {low:g}..{high:g}{' and NaN/Inf' if finite.size != grey.size else ''}: "
                          f"edgesr reads float images as 0..1 intensities; scale it to 0..1 first")
    grey = np.clip(grey, 0.0, 1.0)
    return LoadedImage(np.repeat(grey[..., None], 3, axis=2), None, True, 16)


def read_rgb(path: str | Path) -> np.ndarray:
    """Just the colour, H x W x 3 in [0, 1] (greyscale is repeated to R=G=B)."""
    return read_image(path).rgb


# Rows converted at a time: the float temporaries of a whole band (or image) would
# otherwise be several times the size of the integer pixels written.
WRITE_ROWS = 64


def _quantized(image: LoadedImage, top: int, bottom: int, peak: int, dtype) -> np.ndarray:
    """Rows [top, bottom) of ``image`` as the written channels, clipped, scaled and rounded."""
    colour = image.rgb[top:bottom, :, :1] if image.grayscale else image.rgb[top:bottom]
    parts = [colour] if image.alpha is None else [colour, image.alpha[top:bottom, :, None]]
    data = np.concatenate(parts, axis=2)  # a copy of the rows: the steps below work in place
    np.clip(data, 0.0, 1.0, out=data)
    data *= peak
    return np.round(data, out=data).astype(dtype)


class ImageWriter:
    """Writes an image of a known size band by band, in the kind of the input (grey/RGB,
    alpha, 8/16-bit), atomically: a temporary name, renamed on ``close``; ``abort`` (or an
    exception inside ``with``) removes it.

    PNG is streamed, so only one band is in memory; other formats keep the 8-bit image
    (a quarter of its float size) until ``close``, because Pillow writes them whole.
    """

    def __init__(self, path: str | Path, height: int, width: int, grayscale: bool, alpha: bool, bit_depth: int):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _PIL_FORMATS:
            raise EdgeSRError(f"{self.path}: unknown output image type {suffix!r}; "
                              f"use one of {', '.join(_PIL_FORMATS)}")
        self.channels = (1 if grayscale else 3) + (1 if alpha else 0)
        self.depth = 16 if bit_depth == 16 and suffix == ".png" else 8
        self.tmp = self.path.with_name(f".{self.path.name}.part")
        self._handle = open(self.tmp, "wb")
        if suffix == ".png":
            self._png = png16.PngWriter(self._handle, height, width, self.channels, self.depth)
            self._pixels = None
        else:
            self._png, self._row = None, 0
            self._pixels = np.empty((height, width, self.channels), np.uint8)

    def write(self, band: LoadedImage) -> None:
        channels = (1 if band.grayscale else band.rgb.shape[2]) + (band.alpha is not None)
        if channels != self.channels:
            raise ValueError(f"band has {channels} channels, the image {self.channels}")
        peak, dtype = (65535, np.uint16) if self.depth == 16 else (255, np.uint8)
        for top in range(0, band.rgb.shape[0], WRITE_ROWS):
            pixels = _quantized(band, top, top + WRITE_ROWS, peak, dtype)
            if self._png is not None:
                self._png.write(pixels)
            else:
                self._pixels[self._row:self._row + pixels.shape[0]] = pixels
                self._row += pixels.shape[0]

    def close(self) -> None:
        try:
            if self._png is not None:
                self._png.close()
            else:
                pixels = self._pixels[..., 0] if self.channels == 1 else self._pixels
                Image.fromarray(pixels).save(self._handle, format=_PIL_FORMATS[self.path.suffix.lower()])
            self._handle.close()
            self.tmp.replace(self.path)
        finally:
            self.abort()

    def abort(self) -> None:
        self._handle.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "ImageWriter":
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def write_image(path: str | Path, image: LoadedImage) -> None:
    """Write a whole image (see ``ImageWriter``)."""
    height, width = image.rgb.shape[:2]
    with ImageWriter(path, height, width, image.grayscale, image.alpha is not None, image.bit_depth) as writer:
        writer.write(image)


def list_images(root: str | Path) -> list[Path]:
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
