"""Calibration patches and validation pairs (edgesr.calibration): numpy + PIL only, fast."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgesr.calibration import load_calibration, split_images, validation_set
from edgesr.errors import EdgeSRError


def _image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((height, width, 3)) * 255).astype(np.uint8)


@pytest.fixture
def mixed(tmp_path):
    """RGB png, grey jpg in a subfolder, RGBA png, 16-bit grey png, a small and a tiny image, junk."""
    root = tmp_path / "calib"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(_image(64, 48, 1)).save(root / "rgb.png")
    Image.fromarray(_image(50, 70, 2)[..., 0]).save(root / "sub" / "grey.jpg")
    rgba = np.concatenate([_image(40, 40, 3), np.full((40, 40, 1), 128, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(root / "alpha.png")
    Image.fromarray((np.random.default_rng(4).random((36, 36)) * 65535).astype(np.uint16)).save(root / "deep.png")
    Image.fromarray(_image(20, 24, 5)).save(root / "small.png")  # >= half of 32: padded
    Image.fromarray(_image(6, 6, 6)).save(root / "tiny.png")  # < half of 32: rejected
    (root / "broken.png").write_bytes(b"not a png")
    (root / "notes.txt").write_text("ignored")
    return root


def test_mixed_formats_and_small_images(mixed):
    calib = load_calibration(mixed, (32, 32), count=12, seed=0, holdout=0)
    assert calib.patches.shape == (12, 3, 32, 32) and calib.patches.dtype == np.float32
    assert 0.0 <= calib.patches.min() and calib.patches.max() <= 1.0
    assert sorted(calib.images_used) == sorted(["rgb.png", "sub/grey.jpg", "alpha.png", "deep.png", "small.png"])
    assert calib.unreadable == ["broken.png"]
    assert [r.split()[0] for r in calib.rejected] == ["tiny.png"]
    assert [p.split()[0] for p in calib.padded] == ["small.png"]
    # Fewer usable images (5) than patches (12): images are reused and the report says so.
    assert any("5 usable image(s) for 12 patches" in note for note in calib.notes)
    described = calib.to_dict()
    assert described["patches"] == 12 and "reflect-padded" in described["small_images"]


def test_grey_patches_are_grey(tmp_path):
    Image.fromarray(_image(40, 40)[..., 0]).save(tmp_path / "g.png")
    patches = load_calibration(tmp_path, (16, 16), count=3, holdout=0).patches
    assert np.array_equal(patches[:, 0], patches[:, 1]) and np.array_equal(patches[:, 1], patches[:, 2])


def test_deterministic_for_a_seed(mixed):
    a = load_calibration(mixed, (16, 16), count=8, seed=3)
    b = load_calibration(mixed, (16, 16), count=8, seed=3)
    c = load_calibration(mixed, (16, 16), count=8, seed=4)
    assert np.array_equal(a.patches, b.patches) and a.held_out == b.held_out
    assert not np.array_equal(a.patches, c.patches)


def test_held_out_images_are_not_calibrated_on(tmp_path):
    for i in range(20):
        Image.fromarray(_image(40, 40, i)).save(tmp_path / f"{i:02d}.png")
    calib = load_calibration(tmp_path, (16, 16), count=30)
    held = {p.name for p in calib.held_out}
    assert len(held) == 2  # 10 % of 20
    assert not held & set(calib.images_used)
    kept, held_again = split_images(sorted(tmp_path.glob("*.png")), seed=0)
    assert {p.name for p in held_again} == held and len(kept) == 18
    val = validation_set(2, held_out=calib.held_out)
    assert len(val) == 2 and val.pairs[0].lr.shape == (20, 20, 3) and val.pairs[0].hr_u8.shape == (40, 40, 3)


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, "no images"),
    (lambda root: (root / "a.png").write_bytes(b"junk"), "no usable calibration image (1 unreadable)"),
    (lambda root: Image.fromarray(_image(4, 4)).save(root / "a.png"), "smaller than half"),
])
def test_bad_calibration_folders(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(EdgeSRError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_calibration(tmp_path, (32, 32), count=4, holdout=0)


def test_missing_folder(tmp_path):
    with pytest.raises(EdgeSRError, match="no such folder"):
        load_calibration(tmp_path / "absent", (32, 32))


def test_validation_from_benchmark_layout(tmp_path):
    (tmp_path / "HR").mkdir()
    (tmp_path / "LR_bicubic" / "X2").mkdir(parents=True)
    Image.fromarray(_image(40, 42)).save(tmp_path / "HR" / "a.png")
    Image.fromarray(_image(20, 21)).save(tmp_path / "LR_bicubic" / "X2" / "ax2.png")
    val = validation_set(2, tmp_path)
    assert val.kind.startswith("benchmark") and val.pairs[0].hr_u8.shape == (40, 42, 3)
    with pytest.raises(EdgeSRError, match="no validation images"):
        validation_set(2)
