"""edgesr's one I/O contract: RGB float32 in [0, 1] in, the same (clamped) out.

Each network's own convention (SRConvNet works on 0..255, HiT-SR on 0..1) is folded
inside, so every artifact and every caller sees the same interface.
"""
from __future__ import annotations

import torch
from torch import nn

from edgesr.models.descriptor import attach, describe


class UnitRangeSR(nn.Module):
    def __init__(self, network: nn.Module, input_range: float):
        super().__init__()
        self.network = network
        self.input_range = float(input_range)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.input_range == 1.0:
            return self.network(image).clamp(0.0, 1.0)
        return (self.network(image * self.input_range) / self.input_range).clamp(0.0, 1.0)


def with_unit_range(model: nn.Module) -> nn.Module:
    info = describe(model)
    return attach(UnitRangeSR(model, info.input_range).eval(), info)
