"""Calibration patches: LR patches of the export input size cut from a folder of images.

Rules (all deterministic for a seed):

- Every image under the folder (subfolders included, sorted by path) is a candidate;
  RGB, grey (repeated to R=G=B), RGBA (alpha dropped) and 16-bit files are read with
  ``edgesr.imageio.read_image``. Unreadable files are skipped and listed.
- The folder is first split: a few images (10 %, at most 8, none when fewer than 2)
  are held out for validation and never calibrated on (``held_out``).
- Patches are cut from the images as they are (a photo the model will be fed is a
  photo at its own resolution), at a random position per patch. With fewer usable
  images than patches, images are reused in turn at other positions.
- An image smaller than the patch is reflect-padded at the bottom/right when each of
  its sides is at least half the patch side; smaller ones are rejected (a patch that
  is mostly padding would calibrate on made-up content). Both are listed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgesr.errors import EdgeSRError

DEFAULT_COUNT = 64
DEFAULT_SEED = 0
HOLDOUT_FRACTION = 0.1
MAX_HOLDOUT = 8
# An image is padded up to the patch when each side is at least this fraction of it.
MIN_SIDE_FRACTION = 0.5


@dataclass
class CalibrationSet:
    source: str
    input_size: tuple[int, int]
    seed: int
    patches: np.ndarray  # N x 3 x H x W float32 in [0, 1]
    images_used: list[str] = field(default_factory=list)
    padded: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    held_out: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.patches.shape[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "patches": len(self), "patch_size": list(self.input_size),
            "seed": self.seed, "images_used": len(self.images_used),
            "padded": self.padded, "rejected_too_small": self.rejected, "unreadable": self.unreadable,
            "held_out_for_validation": [p.name for p in self.held_out],
            "small_images": (f"reflect-padded when each side is >= {MIN_SIDE_FRACTION:g} x the patch "
                             f"side, rejected otherwise"),
            "notes": self.notes,
        }


def split_images(paths: Sequence[Path], seed: int = DEFAULT_SEED,
                 holdout: int | None = None) -> tuple[list[Path], list[Path]]:
    """(calibration, held out) from one list of image paths; deterministic for ``seed``."""
    paths = sorted(Path(p) for p in paths)
    if holdout is None:
        holdout = 0 if len(paths) < 2 else min(MAX_HOLDOUT, max(1, round(HOLDOUT_FRACTION * len(paths))))
    holdout = max(0, min(int(holdout), len(paths) - 1))
    order = np.random.default_rng([seed, 1]).permutation(len(paths))
    held = sorted(paths[i] for i in order[:holdout])
    kept = [p for p in paths if p not in set(held)]
    return kept, held


def _name(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def load_calibration(root: str | Path, input_size: tuple[int, int], count: int = DEFAULT_COUNT,
                     seed: int = DEFAULT_SEED, holdout: int | None = None) -> CalibrationSet:
    """``count`` patches of ``input_size`` (H, W) from the images under ``root``.

    ``holdout``: images kept out for validation (None: 10 %, at most 8; 0: none).
    Raises EdgeSRError when the folder is missing or yields no usable image.
    """
    from edgesr.imageio import IMAGE_SUFFIXES, list_images, read_image

    root = Path(root)
    height, width = int(input_size[0]), int(input_size[1])
    if count < 1:
        raise EdgeSRError(f"--calib-count {count}: give at least 1 calibration patch")
    if not root.exists():
        raise EdgeSRError(f"--calib {root}: no such folder")
    paths = list_images(root)
    if not paths:
        raise EdgeSRError(f"--calib {root}: no images in it ({', '.join(IMAGE_SUFFIXES)}, "
                          f"subfolders included)")
    candidates, held = split_images(paths, seed, holdout)
    rng = np.random.default_rng([seed, 2])
    order = [candidates[i] for i in rng.permutation(len(candidates))]
    result = CalibrationSet(str(root), (height, width), int(seed),
                            np.zeros((0, 3, height, width), np.float32), held_out=held)
    usable: list[tuple[str, np.ndarray]] = []
    # Read only as many images as patches are needed (one patch each); all of them
    # when there are fewer images than patches.
    for path in order:
        if len(usable) >= count:
            break
        try:
            image = read_image(path).rgb
        except EdgeSRError:
            result.unreadable.append(_name(path, root))
            continue
        h, w = image.shape[:2]
        if h < height or w < width:
            if h < MIN_SIDE_FRACTION * height or w < MIN_SIDE_FRACTION * width:
                result.rejected.append(f"{_name(path, root)} ({h}x{w})")
                continue
            image = np.pad(image, ((0, max(0, height - h)), (0, max(0, width - w)), (0, 0)), mode="reflect")
            result.padded.append(f"{_name(path, root)} ({h}x{w})")
        usable.append((_name(path, root), np.clip(image, 0.0, 1.0).astype(np.float32)))
    if not usable:
        why = []
        if result.unreadable:
            why.append(f"{len(result.unreadable)} unreadable")
        if result.rejected:
            why.append(f"{len(result.rejected)} smaller than half the {height}x{width} input")
        if held and not candidates:
            why.append("the only image is held out")
        raise EdgeSRError(f"--calib {root}: no usable calibration image ({', '.join(why) or 'none found'})")
    patches = np.empty((count, 3, height, width), np.float32)
    for index in range(count):
        name, image = usable[index % len(usable)]
        top = int(rng.integers(0, image.shape[0] - height + 1))
        left = int(rng.integers(0, image.shape[1] - width + 1))
        patches[index] = image[top:top + height, left:left + width].transpose(2, 0, 1)
    result.patches = patches
    result.images_used = [name for name, _ in usable]
    if len(usable) < count:
        result.notes.append(f"{len(usable)} usable image(s) for {count} patches: each image gives "
                            f"several patches at different positions")
    if result.padded:
        result.notes.append(f"{len(result.padded)} image(s) smaller than {height}x{width} were "
                            f"reflect-padded at the bottom/right")
    if result.rejected:
        result.notes.append(f"{len(result.rejected)} image(s) smaller than half of {height}x{width} "
                            f"were rejected")
    if result.unreadable:
        result.notes.append(f"{len(result.unreadable)} unreadable file(s) skipped")
    return result
