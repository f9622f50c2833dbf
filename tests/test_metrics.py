from __future__ import annotations

import numpy as np

from edgesr.evaluate import bicubic_upscale, evaluate
from edgesr.metrics import psnr_y, rgb_to_y, ssim_y
from tests.conftest import shared_path


def test_y_matches_matlab_rgb2ycbcr():
    assert np.isclose(rgb_to_y(np.array([[[0, 0, 0]]], np.uint8))[0, 0], 16.0)
    assert np.isclose(rgb_to_y(np.array([[[255, 255, 255]]], np.uint8))[0, 0], 235.0)


def test_psnr_and_ssim_basic_properties():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert psnr_y(image, image, 4) == float("inf")
    assert np.isclose(ssim_y(image, image, 4), 1.0)
    noisy = np.clip(image.astype(int) + rng.integers(-3, 4, image.shape), 0, 255).astype(np.uint8)
    assert 35 < psnr_y(noisy, image, 4) < 60
    assert ssim_y(noisy, image, 4) < 1.0


def test_bicubic_baseline_on_set5_x4():
    """The protocol's sanity figure from ../shared/README.md: Set5 x4 bicubic = 28.43 dB."""
    data = shared_path("data", "Set5")
    result = evaluate(lambda lr: bicubic_upscale(lr, 4), data, 4, show_progress=False)
    assert abs(result.mean("psnr_y") - 28.43) < 0.01
    assert result.mean("psnr_y") == result.mean("bicubic_psnr_y")


def test_hr_only_folder_uses_matlab_bicubic(tmp_path):
    """A folder with only HR images is evaluated on LR made by MATLAB bicubic, which
    reproduces the shipped LR files, so the bicubic baseline comes out the same."""
    import shutil

    data = shared_path("data", "Set5")
    shutil.copytree(data / "HR", tmp_path / "HR")
    result = evaluate(lambda lr: bicubic_upscale(lr, 4), tmp_path, 4, show_progress=False)
    assert abs(result.mean("psnr_y") - 28.43) < 0.02
