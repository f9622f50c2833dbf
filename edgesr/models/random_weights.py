"""Random weights that exercise every branch, for conversion checks without a checkpoint."""
from __future__ import annotations

import torch
from torch import nn


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Perturb a freshly built model in place so that it behaves like trained weights:
    fresh models have layer_scale = 1e-6 and zero biases, which makes SRConvNet's
    attention softmax nearly uniform and hides whole branches from a parity check."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("layer_scale"):
                param.fill_(0.5)
            else:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model.eval()
