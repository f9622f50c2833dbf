"""Running a PyTorch model on numpy images under edgesr's [0, 1] contract."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgesr.models.contract import with_unit_range


class TorchUpscaler:
    """H x W x 3 float32 in [0, 1] -> (sH) x (sW) x 3, on the given device."""

    def __init__(self, model: nn.Module, device: str = "cpu"):
        if device.startswith("cuda") and not torch.cuda.is_available():
            from edgesr.errors import EdgeSRError

            raise EdgeSRError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
        self.device = torch.device(device)
        self.model = with_unit_range(model).to(self.device)

    @torch.inference_mode()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(self.device)
        output = self.model(batch.float())
        return output[0].permute(1, 2, 0).cpu().numpy()
