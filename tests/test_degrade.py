"""MATLAB-compatible bicubic degradation (edgesr.degrade)."""
from __future__ import annotations

import numpy as np
import pytest

from edgesr.degrade import downscale, imresize, resize_matrix
from edgesr.imageio import read_rgb
from tests.conftest import shared_path


def test_resize_matrix_rows_sum_to_one_and_mirror_borders():
    matrix = resize_matrix(10, 5, 0.5)
    assert matrix.shape == (5, 10)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)
    # Antialiased x1/2: 8 taps, symmetric around each output's centre.
    np.testing.assert_allclose(matrix[2, 1:9], matrix[2, 1:9][::-1], atol=1e-12)
    assert np.count_nonzero(matrix[2]) == 8


def test_imresize_sizes_and_constants():
    image = np.full((13, 7, 3), 0.25, dtype=np.float32)
    small = imresize(image, 1 / 3)
    assert small.shape == (5, 3, 3) and small.dtype == np.float32
    np.testing.assert_allclose(small, 0.25, atol=1e-6)
    assert imresize(image[..., 0], 2).shape == (26, 14)


def test_downscale_mod_crops_and_quantizes():
    rng = np.random.default_rng(0)
    hr = rng.random((50, 41, 3)).astype(np.float32)
    lr = downscale(hr, 4)
    assert lr.shape == (12, 10, 3)
    np.testing.assert_array_equal(np.round(lr * 255) / 255, lr)
    assert lr.min() >= 0 and lr.max() <= 1


def test_upscale_then_matches_matlab_interpolation_of_a_linear_ramp():
    # Bicubic (a = -0.5) reproduces linear functions exactly away from the borders.
    ramp = np.tile(np.arange(20, dtype=np.float64)[None, :], (4, 1))
    up = imresize(ramp, 2)
    u = (np.arange(1, 41) / 2 + 0.5 * (1 - 1 / 2)) - 1  # MATLAB's sample positions, 0-based
    np.testing.assert_allclose(up[0, 4:-4], u[4:-4], atol=1e-9)


@pytest.mark.parametrize("dataset", ["Set5", "Set14", pytest.param("B100", marks=pytest.mark.slow)])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_reproduces_the_shipped_lr_files(dataset, scale):
    root = shared_path("data", dataset)
    total = within = 0
    for hr_path in sorted((root / "HR").glob("*.png")):
        lr_path = root / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png"
        shipped = np.round(read_rgb(lr_path) * 255).astype(np.int16)
        ours = np.round(downscale(read_rgb(hr_path), scale) * 255).astype(np.int16)
        assert ours.shape == shipped.shape, hr_path.name
        difference = np.abs(ours - shipped)
        total += difference.size
        within += int((difference <= 1).sum())
    assert within / total >= 0.99, f"{dataset} x{scale}: {100 * within / total:.3f}% within 1 level"
