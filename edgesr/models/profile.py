"""Parameter and multiply-accumulate counts of a model at an input size."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.inference_mode()
def count_macs(model: nn.Module, height: int, width: int, channels: int = 3) -> int:
    """MACs of one forward pass (torch's FLOP counter / 2: convs, matmuls, attention).

    FFTs and element-wise ops are not counted, as in the papers' tables.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, channels, height, width))
    return counter.get_total_flops() // 2
