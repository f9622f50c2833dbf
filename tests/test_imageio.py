from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgesr.errors import EdgeSRError
from edgesr.imageio import LoadedImage, read_image, write_image
from edgesr.png16 import PngWriter, read_png16

rng = np.random.default_rng(0)


def write_png16(path, pixels: np.ndarray) -> None:
    """A whole H x W x C uint16 array as a 16-bit PNG."""
    with open(path, "wb") as handle:
        writer = PngWriter(handle, pixels.shape[0], pixels.shape[1], pixels.shape[2], 16)
        writer.write(pixels)
        writer.close()


def test_png16_round_trip_rgb_and_rgba(tmp_path):
    for channels in (3, 4):
        pixels = rng.integers(0, 65536, size=(7, 9, channels), dtype=np.uint16)
        write_png16(tmp_path / "a.png", pixels)
        assert np.array_equal(read_png16(tmp_path / "a.png"), pixels)


@pytest.mark.parametrize("filter_type", [1, 2, 3, 4])
def test_png16_reads_every_filter(tmp_path, filter_type):
    """Rows written with each PNG filter decode to the original values."""
    import struct
    import zlib

    pixels = rng.integers(0, 65536, size=(5, 6, 3), dtype=np.uint16)
    data = pixels.astype(">u2").reshape(5, -1).view(np.uint8).astype(np.int32)
    bpp, rows = 6, []
    for y in range(5):
        row, up = data[y], data[y - 1] if y else np.zeros_like(data[0])
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        upper_left = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        if filter_type == 1:
            predicted = left
        elif filter_type == 2:
            predicted = up
        elif filter_type == 3:
            predicted = (left + up) // 2
        else:
            p = left + up - upper_left
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
            predicted = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upper_left))
        rows.append(bytes([filter_type]) + ((row - predicted) % 256).astype(np.uint8).tobytes())

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path = tmp_path / "f.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 6, 5, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))
    assert np.array_equal(read_png16(path), pixels)


def test_16bit_rgb_kept_through_read_write(tmp_path):
    pixels = rng.integers(0, 65536, size=(4, 5, 3), dtype=np.uint16)
    write_png16(tmp_path / "in.png", pixels)
    image = read_image(tmp_path / "in.png")
    assert image.bit_depth == 16 and not image.grayscale and image.alpha is None
    write_image(tmp_path / "out.png", image)
    assert np.array_equal(read_png16(tmp_path / "out.png"), pixels)


def test_16bit_grey(tmp_path):
    grey = rng.integers(0, 65536, size=(6, 4), dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert image.grayscale and image.bit_depth == 16
    assert np.allclose(image.rgb[..., 0] * 65535, grey, atol=0.5)
    write_image(tmp_path / "g2.png", image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "g2.png")), grey)


def test_rgba_and_grey_8bit(tmp_path):
    rgba = rng.integers(0, 256, size=(3, 4, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.alpha is not None and np.allclose(image.alpha * 255, rgba[..., 3])
    write_image(tmp_path / "b.png", image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), rgba)
    Image.fromarray(rgba[..., 0], "L").save(tmp_path / "l.png")
    assert read_image(tmp_path / "l.png").grayscale


def test_unreadable_image(tmp_path):
    (tmp_path / "x.png").write_text("not an image")
    with pytest.raises(EdgeSRError, match="not a readable image"):
        read_image(tmp_path / "x.png")
    with pytest.raises(EdgeSRError, match="unknown output image type"):
        write_image(tmp_path / "x.gif", LoadedImage(np.zeros((2, 2, 3), np.float32), None, False, 8))
    assert not list(tmp_path.glob(".*part"))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("depth", [8, 16])
def test_png_writer_bands_round_trip(tmp_path, channels, depth):
    """A PNG written in uneven bands decodes (Pillow for 8 bits, ours for 16) to the pixels."""
    dtype = np.uint16 if depth == 16 else np.uint8
    pixels = rng.integers(0, np.iinfo(dtype).max + 1, size=(11, 6, channels), dtype=dtype)
    with open(tmp_path / "b.png", "wb") as handle:
        writer = PngWriter(handle, 11, 6, channels, depth)
        for top, bottom in [(0, 1), (1, 5), (5, 11)]:
            writer.write(pixels[top:bottom])
        writer.close()
    if depth == 16:
        decoded = read_png16(tmp_path / "b.png")
    else:
        with Image.open(tmp_path / "b.png") as image:
            decoded = np.asarray(image).reshape(11, 6, channels)
    assert np.array_equal(decoded, pixels)


def test_png_writer_refuses_missing_or_extra_rows(tmp_path):
    with open(tmp_path / "c.png", "wb") as handle:
        writer = PngWriter(handle, 4, 3, 3, 8)
        writer.write(np.zeros((3, 3, 3), np.uint8))
        with pytest.raises(ValueError, match="does not fit"):
            writer.write(np.zeros((2, 3, 3), np.uint8))
        with pytest.raises(ValueError, match="3 of its 4 rows"):
            writer.close()


def test_16bit_grey_with_alpha_kept(tmp_path):
    grey = rng.random((6, 5), dtype=np.float32)
    image = LoadedImage(np.repeat(grey[..., None], 3, axis=2), rng.random((6, 5), dtype=np.float32), True, 16)
    write_image(tmp_path / "la.png", image)
    back = read_image(tmp_path / "la.png")
    assert back.grayscale and back.bit_depth == 16 and back.alpha is not None
    assert np.abs(back.rgb[..., 0] - grey).max() <= 0.5 / 65535 + 1e-7
    assert np.abs(back.alpha - image.alpha).max() <= 0.5 / 65535 + 1e-7


def test_failed_band_write_leaves_nothing(tmp_path):
    from edgesr.imageio import ImageWriter

    band = LoadedImage(np.zeros((2, 4, 3), np.float32), None, False, 8)
    with pytest.raises(RuntimeError):
        with ImageWriter(tmp_path / "d.png", 4, 4, False, False, 8) as writer:
            writer.write(band)
            raise RuntimeError("the model failed half-way")
    assert list(tmp_path.iterdir()) == []
