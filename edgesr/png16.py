"""The PNG pieces Pillow lacks: 16-bit RGB/RGBA (Pillow truncates them to 8 bits) and
writing row bands as they are produced (Pillow needs the whole image).

Reading: non-interlaced 16-bit grey, grey+alpha, RGB, RGBA. Writing: the same at 8 or 16 bits.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_CHANNELS = {0: 1, 4: 2, 2: 3, 6: 4}  # grey, grey+alpha, RGB, RGBA


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
    """H x W x C uint16 array of a 16-bit PNG (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA)."""
    data = Path(path).read_bytes()
    idat = bytearray()
    for kind, body in _chunks(data):
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    if depth != 16 or color not in _COLOR_CHANNELS:
        raise ValueError(f"not a 16-bit grey/RGB PNG (depth {depth}, colour type {color})")
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


class PngWriter:
    """Writes a PNG band by band, so an image never has to be whole in memory.

    ``pixels`` bands are H' x W x C arrays (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) of
    uint8 or uint16; rows are "Up"-filtered, which compresses smooth SR output well and
    needs only the previous row.
    """

    def __init__(self, handle, height: int, width: int, channels: int, depth: int):
        if depth not in (8, 16) or channels not in _CHANNEL_COLORS:
            raise ValueError(f"PngWriter: {channels} channels at {depth} bits is not supported")
        self.handle, self.height, self.width, self.channels, self.depth = handle, height, width, channels, depth
        self.rows_written = 0
        self._previous = np.zeros(width * channels * depth // 8, np.uint8)
        self._compressor = zlib.compressobj(6)
        ihdr = struct.pack(">IIBBBBB", width, height, depth, _CHANNEL_COLORS[channels], 0, 0, 0)
        handle.write(SIGNATURE + _chunk(b"IHDR", ihdr))

    def write(self, pixels: np.ndarray) -> None:
        rows, width, channels = pixels.shape
        if (width, channels) != (self.width, self.channels) or self.rows_written + rows > self.height:
            raise ValueError(f"band of {pixels.shape} does not fit a {self.height}x{self.width}x{self.channels} PNG")
        dtype = ">u2" if self.depth == 16 else np.uint8
        raw = np.ascontiguousarray(pixels.astype(dtype)).reshape(rows, -1).view(np.uint8)
        above = np.concatenate([self._previous[None], raw[:-1]])
        filtered = np.empty((rows, raw.shape[1] + 1), np.uint8)
        filtered[:, 0] = 2  # Up
        np.subtract(raw, above, out=filtered[:, 1:])
        self._previous = raw[-1].copy()
        self.rows_written += rows
        self._emit(self._compressor.compress(filtered.tobytes()))

    def close(self) -> None:
        if self.rows_written != self.height:
            raise ValueError(f"PNG has {self.rows_written} of its {self.height} rows")
        self._emit(self._compressor.flush())
        self.handle.write(_chunk(b"IEND", b""))

    def _emit(self, data: bytes) -> None:
        if data:
            self.handle.write(_chunk(b"IDAT", data))


_CHANNEL_COLORS = {c: t for t, c in _COLOR_CHANNELS.items()}


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
