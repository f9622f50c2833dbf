"""16-bit RGB/RGBA PNG reading and writing, which Pillow truncates to 8 bits.

Only what SR images need: non-interlaced, colour types 2 (RGB) and 6 (RGBA), 16 bits.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_CHANNELS = {2: 3, 6: 4}


def _chunks(data: bytes):
    pos = len(SIGNATURE)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        yield kind, data[pos + 8:pos + 8 + length]
        pos += 12 + length


def header(path: str | Path) -> tuple[int, int] | None:
    """(bit depth, colour type) of a PNG, or None for other files."""
    with open(path, "rb") as handle:
        head = handle.read(33)
    if not head.startswith(SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def read_png16(path: str | Path) -> np.ndarray:
    """H x W x C uint16 array of a 16-bit RGB or RGBA PNG."""
    data = Path(path).read_bytes()
    idat = bytearray()
    for kind, body in _chunks(data):
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    if depth != 16 or color not in _COLOR_CHANNELS:
        raise ValueError(f"not a 16-bit RGB/RGBA PNG (depth {depth}, colour type {color})")
    if interlace:
        raise ValueError("interlaced 16-bit PNG is not supported; re-save it without interlacing")
    channels = _COLOR_CHANNELS[color]
    bpp = 2 * channels
    stride = width * bpp
    raw = np.frombuffer(zlib.decompress(bytes(idat)), dtype=np.uint8).reshape(height, stride + 1)
    pixels = np.zeros((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        pixels[y] = _unfilter(raw[y, 0], raw[y, 1:], previous, bpp)
        previous = pixels[y]
    return pixels.view(">u2").reshape(height, width, channels).astype(np.uint16)


def _unfilter(kind: int, row: np.ndarray, up: np.ndarray, bpp: int) -> np.ndarray:
    if kind == 0:
        return row
    if kind == 2:
        return row + up
    if kind == 1:
        # Sub is a running sum over pixels, per byte lane.
        lanes = row.reshape(-1, bpp).astype(np.uint32).cumsum(axis=0)
        return (lanes % 256).astype(np.uint8).reshape(-1)
    out = np.zeros_like(row)
    left = np.zeros(bpp, dtype=np.int32)
    upper_left = np.zeros(bpp, dtype=np.int32)
    for x in range(0, row.size, bpp):
        above = up[x:x + bpp].astype(np.int32)
        if kind == 3:
            predicted = (left + above) // 2
        elif kind == 4:
            predicted = _paeth(left, above, upper_left)
        else:
            raise ValueError(f"unknown PNG filter type {kind}")
        left = (row[x:x + bpp].astype(np.int32) + predicted) % 256
        out[x:x + bpp] = left
        upper_left = above
    return out


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def write_png16(path: str | Path, pixels: np.ndarray) -> None:
    """Write H x W x 3|4 uint16 as a 16-bit PNG (filter 0 on every row)."""
    height, width, channels = pixels.shape
    color = {3: 2, 4: 6}[channels]
    rows = pixels.astype(">u2").reshape(height, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, color, 0, 0, 0)
    Path(path).write_bytes(
        SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    )
