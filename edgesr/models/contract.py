"""edgesr's one I/O contract: RGB float32 in [0, 1] in, the same (clamped) out.

Each network's own convention (SRConvNet works on 0..255, HiT-SR on 0..1) is folded
inside, so every artifact and every caller sees the same interface.
"""
from __future__ import annotations

import torch
from torch import nn

from edgesr.models.descriptor import attach, describe


class UnitRangeSR(nn.Module):
    def __init__(self, network: nn.Module, input_range: float, clamp_as_hardtanh: bool = False):
        super().__init__()
        self.network = network
        self.input_range = float(input_range)
        # litert-torch turns clamp(0, 1) into RELU_0_TO_1, which XNNPACK does not take (a
        # partition boundary at the output); hardtanh of 2y - 1 is the same clamp (to
        # float rounding) and folds into the op before it as RELU_N1_TO_1.
        self.clamp_as_hardtanh = clamp_as_hardtanh

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.input_range == 1.0:
            return self._clamp(self.network(image))
        return self._clamp(self.network(image * self.input_range) / self.input_range)

    def _clamp(self, y: torch.Tensor) -> torch.Tensor:
        if self.clamp_as_hardtanh:
            return (nn.functional.hardtanh(2.0 * y - 1.0) + 1.0) * 0.5
        return y.clamp(0.0, 1.0)


def with_unit_range(model: nn.Module, clamp_as_hardtanh: bool = False) -> nn.Module:
    info = describe(model)
    return attach(UnitRangeSR(model, info.input_range, clamp_as_hardtanh).eval(), info)


def with_xnnpack_clamp(module: nn.Module) -> nn.Module:
    """``module`` (a ``with_unit_range`` model) with its output clamp in the form XNNPACK takes."""
    if not isinstance(module, UnitRangeSR):
        return module
    return attach(UnitRangeSR(module.network, module.input_range, clamp_as_hardtanh=True).eval(), describe(module))
