"""Tiling: exactness for a local model, border cases, fixed-shape tiles, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from edgesr.errors import EdgeSRError
from edgesr.imageio import LoadedImage
from edgesr.tiling import (
    TiledUpscaler,
    axis_starts,
    axis_weights,
    check_tiling,
    plan_tiles,
    ramp,
    tiling_spec,
    zero_zone,
)
from edgesr.upscale import upscale_image

SCALE = 2


def toy_network():
    """Purely convolutional, receptive field 7 (three 3x3 convs), zero padding, x2."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 3 * SCALE * SCALE, 3, padding=1), torch.nn.PixelShuffle(SCALE),
    ).eval()


NET = toy_network()


def toy(image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        batch = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
        return NET(batch)[0].permute(1, 2, 0).numpy()


def fixed_toy(tile):
    def run(image):
        assert image.shape[:2] == tuple(tile), image.shape
        return toy(image)
    return run


@pytest.mark.parametrize("height, width, tile, overlap, fixed", [
    (100, 77, 32, 8, False),
    (100, 77, 32, 8, True),
    (61, 203, 40, 9, False),
    (33, 35, 17, 8, False),
    (64, 64, 24, 8, True),
])
def test_tiled_equals_untiled_for_local_model(height, width, tile, overlap, fixed):
    image = np.random.default_rng(height).random((height, width, 3), dtype=np.float32)
    runner = fixed_toy((tile, tile)) if fixed else toy
    tiled = TiledUpscaler(runner, SCALE, tile, overlap, fixed=fixed)
    assert tiled.plan(height, width).count > 1
    assert np.abs(tiled(image) - toy(image)).max() <= 1e-5


def test_blend_weights_partition_and_smoothness():
    weights = ramp(16, 2)
    assert weights[:zero_zone(16) * 2].max() == 0 and 0 < weights[-1] < 1
    assert np.all(np.diff(weights) >= 0)
    # two neighbours at the nominal step: weights sum to one over the shared strip
    left = axis_weights(64, 16, 1, False, True)
    right = axis_weights(64, 16, 1, True, False)
    step = 64 - 32
    assert np.allclose(left[step:] + right[:64 - step], 1.0)
    spec = tiling_spec()
    assert spec["blend_window"] == "raised-cosine" and "srconvnet" in spec["defaults"]


def test_axis_starts_cover_evenly():
    for length in (1, 31, 32, 33, 100, 1000):
        starts = axis_starts(max(length, 32), 32, 8)
        assert starts[0] == 0 and starts[-1] == max(length, 32) - 32
        assert all(0 < b - a <= 32 - 16 for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("height, width", [(5, 9), (1, 40), (40, 1), (1, 1), (17, 3)])
def test_small_and_thin_images_with_fixed_tiles(height, width):
    """An image smaller than the tile (or 1 px wide) is reflect-padded into one tile and cropped."""
    tile = 16
    image = np.random.default_rng(1).random((height, width, 3), dtype=np.float32)
    tiled = TiledUpscaler(fixed_toy((tile, tile)), SCALE, tile, 4, fixed=True)
    result = tiled(image)
    assert result.shape == (height * SCALE, width * SCALE, 3)
    assert np.isfinite(result).all()


def test_dynamic_runner_small_image_is_whole_image():
    image = np.random.default_rng(2).random((7, 5, 3), dtype=np.float32)
    tiled = TiledUpscaler(toy, SCALE, 64, 8)
    assert np.array_equal(tiled(image), toy(image))


@pytest.mark.parametrize("mode, channels, bit_depth", [("L", 1, 8), ("RGBA", 4, 8), ("RGB", 3, 16)])
def test_grey_rgba_16bit_through_tiling(mode, channels, bit_depth):
    rng = np.random.default_rng(3)
    rgb = rng.random((45, 38, 3), dtype=np.float32)
    if mode == "L":
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
    alpha = rng.random((45, 38), dtype=np.float32) if mode == "RGBA" else None
    image = LoadedImage(rgb, alpha, mode == "L", bit_depth)
    tiled = TiledUpscaler(fixed_toy((16, 16)), SCALE, 16, 4, fixed=True)
    for alpha_mode in ("bicubic", "model"):
        result = upscale_image(tiled, image, SCALE, alpha_mode)
        assert result.rgb.shape == (90, 76, 3) and result.bit_depth == bit_depth
        assert (result.alpha is None) == (alpha is None)
        if alpha is not None:
            assert result.alpha.shape == (90, 76)


@pytest.mark.parametrize("tile, overlap, message", [
    (16, 8, "larger than 2 x overlap"),
    (10, 6, "larger than 2 x overlap"),
    (3, 0, "below the model's minimum"),
    (32, -1, "0 or more"),
])
def test_bad_tiling_is_one_line_error(tile, overlap, message):
    with pytest.raises(EdgeSRError, match=message):
        check_tiling(tile, overlap, min_tile=4)


def test_plan_for_non_divisible_sizes():
    plan = plan_tiles(1356, 2040, 4, 256, 32, fixed=True)
    assert plan.rows[-1] + 256 == 1356 and plan.cols[-1] + 256 == 2040
    assert plan.count == len(plan.rows) * len(plan.cols)


# --- the CLI with a checkpoint (tiled PyTorch) -------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from edgesr.models.loading import create, save_checkpoint

    model = create("srconvnet", 2, dim=16, num_blocks=1, num_heads=2, num_kernels=4)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "small.safetensors")


def test_cli_upscale_tiled_batch_and_errors(tmp_path, checkpoint):
    from edgesr.cli import app

    runner = CliRunner()
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (1, 30), dtype=np.uint8), "L").save(folder / "thin.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["upscale", str(folder), "--model", str(checkpoint), "-o", str(out),
                                 "--tile", "32", "--overlap", "8", "--json"])
    assert result.exit_code == 0, result.output
    assert Image.open(out / "a.png").size == (100, 140)
    assert Image.open(out / "thin.png").size == (60, 2)
    bad = runner.invoke(app, ["upscale", str(folder), "--model", str(checkpoint), "-o", str(out),
                              "--tile", "16", "--overlap", "8"])
    assert bad.exit_code == 2 and "larger than 2 x overlap" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    (folder / "z_broken.png").write_bytes(b"not a png")
    broken = runner.invoke(app, ["upscale", str(folder), "--model", str(checkpoint), "-o", str(tmp_path / "o2"),
                                 "--tile", "32", "--overlap", "8"])
    assert broken.exit_code == 2 and "not a readable image" in broken.stderr
    assert not list((tmp_path / "o2").rglob(".*part*"))


def test_bands_cover_output_and_alpha_bands_equal_whole_resize():
    """Streamed bands concatenate to the tiled output, and band-wise bicubic alpha is the
    whole-plane bicubic resize (to float rounding)."""
    from edgesr.upscale import _bicubic_rows, upscale_bands

    rng = np.random.default_rng(4)
    image = LoadedImage(rng.random((70, 33, 3), dtype=np.float32), rng.random((70, 33), dtype=np.float32),
                        False, 8)
    tiled = TiledUpscaler(fixed_toy((16, 16)), SCALE, 16, 4, fixed=True)
    bands = list(upscale_bands(tiled, image, SCALE))
    assert len(bands) > 2
    assert np.array_equal(np.concatenate([b.rgb for b in bands]), tiled(image.rgb))
    plane = Image.fromarray(image.alpha, mode="F")
    whole = _bicubic_rows(plane, SCALE, 0, 140)
    assert np.abs(np.concatenate([b.alpha for b in bands]) - whole).max() < 1e-6


def _peak_traced_bytes(tmp_path, height: int, width: int = 48) -> int:
    """Peak Python/numpy allocation of upscaling an LR image of height x width to PNG, x4."""
    import tracemalloc

    from edgesr.upscale import OpenedUpscaler, upscale_files

    def nearest_x4(tile):
        return np.repeat(np.repeat(tile, 4, axis=0), 4, axis=1)

    source = tmp_path / f"lr{height}x{width}.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(source)

    upscaler = OpenedUpscaler(nearest_x4, 4, None, TiledUpscaler(nearest_x4, 4, 32, 4, fixed=True))
    tracemalloc.start()
    try:
        upscale_files(upscaler, [(source, tmp_path / "out" / source.name)], tmp_path / "out")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_png_upscale_memory_does_not_grow_with_image_height(tmp_path):
    """Going from 256 to 2048 LR rows may grow memory by the LR input (float RGB, RGBA
    while reading), not by the x4 output: 16x the input as float, 4x as uint8."""
    short, tall = _peak_traced_bytes(tmp_path, 256), _peak_traced_bytes(tmp_path, 2048)
    input_growth = (2048 - 256) * 48 * 3 * 4
    assert tall - short < 3 * input_growth, (short, tall)
    assert tall < 2048 * 4 * 48 * 4 * 3 * 4 / 4, (short, tall)


def test_png_upscale_of_a_wide_image_holds_one_tile_row_of_floats(tmp_path):
    """A tile-row of a wide image is the one large buffer: its rows go out and are
    converted a few at a time, not as whole-band copies (clip, scale, round, filter)."""
    from edgesr.tiling import YIELD_ROWS

    row_bytes = 2048 * 4 * 3 * 4  # one row of x4 output, float RGB
    band_bytes, chunk_bytes = 32 * 4 * row_bytes, YIELD_ROWS * row_bytes
    peak = _peak_traced_bytes(tmp_path, 32, width=2048)
    # The band, the rows handed out and their conversion; whole-band copies made it 5 bands.
    assert peak < band_bytes + 3 * chunk_bytes, (peak, band_bytes, chunk_bytes)
