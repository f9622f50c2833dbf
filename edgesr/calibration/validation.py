"""Validation pairs for the PSNR-Y of a quantized export.

Either a benchmark folder in BasicSR layout (``HR/`` + ``LR_bicubic/X<s>/``: the LR
files are used as shipped) or a plain folder / list of images taken as HR, whose LR
is made with MATLAB-style bicubic (``edgesr.degrade.downscale``) as the benchmarks are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgesr.errors import EdgeSRError


@dataclass
class ValidationPair:
    name: str
    lr: np.ndarray  # H x W x 3 float32 [0, 1]
    hr_u8: np.ndarray  # (sH) x (sW) x 3 uint8


@dataclass
class ValidationSet:
    source: str
    kind: str
    scale: int
    pairs: list[ValidationPair] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "images": [p.name for p in self.pairs],
                "skipped": self.skipped}


def _from_hr(paths: Sequence[Path], scale: int, source: str, kind: str,
             max_images: int | None) -> ValidationSet:
    from edgesr.degrade import downscale, mod_crop
    from edgesr.imageio import read_rgb
    from edgesr.metrics import quantize

    result = ValidationSet(source, kind, scale)
    for path in paths:
        if max_images is not None and len(result.pairs) >= max_images:
            break
        try:
            hr = mod_crop(read_rgb(path), scale)
        except EdgeSRError:
            result.skipped.append(f"{Path(path).name} (unreadable)")
            continue
        if min(hr.shape[:2]) < 4 * scale:
            result.skipped.append(f"{Path(path).name} (too small)")
            continue
        result.pairs.append(ValidationPair(Path(path).stem, downscale(hr, scale), quantize(hr)))
    return result


def validation_set(scale: int, val_dir: str | Path | None = None,
                   held_out: Sequence[Path] = (), max_images: int | None = None) -> ValidationSet:
    """The validation pairs: ``val_dir`` when given, else the held-out calibration images."""
    from edgesr.imageio import list_images

    if val_dir is not None:
        root = Path(val_dir)
        if not root.exists():
            raise EdgeSRError(f"--val {root}: no such folder")
        if (root / "HR").is_dir():
            from edgesr.evaluate import find_pairs, read_pair

            result = ValidationSet(str(root), f"benchmark (HR + LR_bicubic/X{scale})", scale)
            for lr_path, hr_path in find_pairs(root, scale)[:max_images]:
                lr, hr = read_pair(lr_path, hr_path, scale)
                result.pairs.append(ValidationPair(hr_path.stem, lr, hr))
        else:
            result = _from_hr(list_images(root), scale, str(root),
                              "HR images, LR by MATLAB bicubic", max_images)
    else:
        if not held_out:
            raise EdgeSRError("no validation images: give --val DIR (the calibration folder has too "
                              "few images to hold some out for validation)")
        result = _from_hr(list(held_out), scale, "held-out calibration images",
                          "HR images held out of calibration, LR by MATLAB bicubic", max_images)
    if not result.pairs:
        raise EdgeSRError(f"validation set {result.source}: no usable image "
                          f"({'; '.join(result.skipped) or 'none found'})")
    return result
