"""Validation PSNR-Y during training (BasicSR protocol, as ``edgesr eval``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgesr.degrade import downscale, mod_crop
from edgesr.errors import EdgeSRError
from edgesr.imageio import IMAGE_SUFFIXES, list_images, read_rgb
from edgesr.metrics import psnr_y, quantize


@dataclass
class ValPair:
    name: str
    lr: np.ndarray  # H x W x 3 float32 in [0, 1]
    hr: np.ndarray  # (sH) x (sW) x 3 uint8


def load_val_set(root: str | Path, scale: int) -> list[ValPair]:
    """A benchmark folder (HR/ + LR_bicubic/X<s>/), an HR/-only folder or a flat folder
    of HR images; missing LR images are made with the MATLAB bicubic degradation."""
    root = Path(root)
    if not root.is_dir():
        raise EdgeSRError(f"--val {root}: no such folder")
    hr_dir = root / "HR" if (root / "HR").is_dir() else root
    lr_dir = root / "LR_bicubic" / f"X{scale}"
    pairs = []
    for hr_path in sorted(p for p in list_images(hr_dir) if p.suffix.lower() in IMAGE_SUFFIXES):
        if lr_dir in hr_path.parents:
            continue
        hr = mod_crop(read_rgb(hr_path), scale)
        lr_path = lr_dir / f"{hr_path.stem}x{scale}{hr_path.suffix}"
        lr = read_rgb(lr_path) if lr_path.exists() else downscale(hr, scale)
        hr_u8 = quantize(hr)[: lr.shape[0] * scale, : lr.shape[1] * scale]
        pairs.append(ValPair(hr_path.stem, lr, hr_u8))
    if not pairs:
        raise EdgeSRError(f"--val {root}: no images found")
    return pairs


@torch.no_grad()
def validate(network: nn.Module, pairs: list[ValPair], scale: int, input_range: float,
             device: torch.device) -> float:
    """Mean PSNR-Y of ``network`` (in its own input range) over ``pairs``."""
    was_training = network.training
    network.eval()
    scores = []
    try:
        for pair in pairs:
            lr = torch.from_numpy(pair.lr.transpose(2, 0, 1).copy())[None].to(device)
            sr = network(lr * input_range) / input_range
            sr = sr[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            scores.append(psnr_y(quantize(sr), pair.hr, scale))
    finally:
        network.train(was_training)
    return float(np.mean(scores))
