"""Training pairs: random HR crops, flips and 90-degree rotations, LR made on the fly.

Every sample is a pure function of (seed, global sample index): the iteration, the
rank and the position in the batch fix the index, so the data order does not depend
on the number of worker processes, and a resumed run sees exactly the samples an
uninterrupted one would. Decoded images are held in memory once (as uint8) and
shared with the forked workers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from edgesr.degrade import downscale
from edgesr.errors import EdgeSRError
from edgesr.imageio import list_images, read_rgb


@dataclass
class ImageCache:
    images: list[np.ndarray]  # H x W x 3 uint8
    names: list[str]
    too_small: list[str]
    unreadable: list[str]

    def summary(self) -> str:
        parts = [f"{len(self.images)} training images"]
        if self.too_small:
            parts.append(f"{len(self.too_small)} skipped as smaller than the patch")
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} skipped as unreadable")
        return ", ".join(parts)


def load_images(data_dir: str | Path, hr_patch: int) -> ImageCache:
    """Decode every image under ``data_dir`` once; skip (and count) unusable ones."""
    root = Path(data_dir)
    if not root.exists():
        raise EdgeSRError(f"--data {root}: no such folder")
    paths = list_images(root)
    if not paths:
        raise EdgeSRError(f"--data {root}: no images found (looked for png, jpg, bmp, tif, webp)")
    images, names, small, bad = [], [], [], []
    for path in paths:
        try:
            rgb = read_rgb(path)
        except EdgeSRError:
            bad.append(str(path))
            continue
        if rgb.shape[0] < hr_patch or rgb.shape[1] < hr_patch:
            small.append(str(path))
            continue
        images.append(np.round(rgb * 255.0).astype(np.uint8))
        names.append(path.name)
    if not images:
        reasons = []
        if small:
            reasons.append(f"{len(small)} smaller than the {hr_patch}x{hr_patch} HR patch")
        if bad:
            reasons.append(f"{len(bad)} unreadable")
        raise EdgeSRError(
            f"--data {root}: no usable training images ({', '.join(reasons)}); "
            f"use larger images or a smaller --patch"
        )
    return ImageCache(images, names, small, bad)


def augment(patch: np.ndarray, code: int) -> np.ndarray:
    """One of the 8 flips/rotations of a square patch (code in 0..7)."""
    if code & 1:
        patch = patch[:, ::-1]
    if code & 2:
        patch = patch[::-1, :]
    if code & 4:
        patch = patch.transpose(1, 0, 2)
    return patch


class PatchPairs(Dataset):
    """Sample ``index`` -> (LR, HR) float32 CHW tensors in [0, 1]."""

    def __init__(self, cache: ImageCache, scale: int, patch: int, seed: int) -> None:
        self.images = cache.images
        self.scale = scale
        self.hr_patch = patch * scale
        self.seed = seed

    def __len__(self) -> int:  # indices are unbounded; the sampler decides
        return 2**62

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(index)])
        image = self.images[int(rng.integers(len(self.images)))]
        size = self.hr_patch
        top = int(rng.integers(image.shape[0] - size + 1))
        left = int(rng.integers(image.shape[1] - size + 1))
        hr = augment(image[top:top + size, left:left + size], int(rng.integers(8)))
        hr = np.ascontiguousarray(hr, dtype=np.float32) / 255.0
        lr = downscale(hr, self.scale)
        return (torch.from_numpy(lr.transpose(2, 0, 1).copy()),
                torch.from_numpy(hr.transpose(2, 0, 1).copy()))


class IterationSampler(Sampler[int]):
    """Global sample indices for iterations [start, stop) of one rank.

    Iteration i on rank r of w uses indices (i * w + r) * batch + k, k < batch.
    """

    def __init__(self, start: int, stop: int, batch: int, rank: int = 0, world: int = 1) -> None:
        self.start, self.stop, self.batch, self.rank, self.world = start, stop, batch, rank, world

    def __iter__(self) -> Iterator[int]:
        for iteration in range(self.start, self.stop):
            first = (iteration * self.world + self.rank) * self.batch
            yield from range(first, first + self.batch)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.batch


def make_loader(cache: ImageCache, scale: int, patch: int, batch: int, seed: int, start: int,
                stop: int, workers: int, rank: int = 0, world: int = 1, pin: bool = False) -> DataLoader:
    dataset = PatchPairs(cache, scale, patch, seed)
    sampler = IterationSampler(start, stop, batch, rank, world)
    return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                      pin_memory=pin, drop_last=False,
                      prefetch_factor=4 if workers > 0 else None,
                      persistent_workers=False)
