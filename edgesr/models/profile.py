"""Parameter and multiply-accumulate counts of a model at an input size."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from edgesr.errors import EdgeSRError


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass(frozen=True)
class Footprint:
    macs: int
    # Bytes of the largest tensor one forward pass makes, and the estimate of its peak
    # memory: a few tensors of that size are alive at once (input, output, residual).
    largest_tensor_bytes: int

    @property
    def estimated_peak_bytes(self) -> int:
        return LIVE_TENSORS * self.largest_tensor_bytes


LIVE_TENSORS = 4


class _LargestTensor(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in torch.utils._pytree.tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel() * tensor.element_size())
        return out


@torch.inference_mode()
def footprint(model: nn.Module, height: int, width: int, channels: int = 3) -> Footprint:
    """MACs and activation size of one forward pass, run on the meta device: shapes
    only, no memory and no arithmetic, so any size answers at once."""
    meta = copy.deepcopy(model).to("meta")
    counter, largest = FlopCounterMode(display=False), _LargestTensor()
    with counter, largest:
        meta(torch.zeros(1, channels, height, width, device="meta"))
    return Footprint(counter.get_total_flops() // 2, largest.largest)


def count_macs(model: nn.Module, height: int, width: int, channels: int = 3) -> int:
    """MACs of one forward pass (torch's FLOP counter / 2: convs, matmuls, attention).

    FFTs and element-wise ops are not counted, as in the papers' tables.
    """
    return footprint(model, height, width, channels).macs


def check_fits(model: nn.Module, height: int, width: int, what: str = "--input-size") -> Footprint:
    """Refuse, before any work, a size whose activations this machine cannot hold."""
    measured = footprint(model, height, width)
    available = _memory_bytes()
    if available and measured.estimated_peak_bytes > available:
        raise EdgeSRError(
            f"{what} {height}x{width}: one forward pass needs about "
            f"{measured.estimated_peak_bytes / 2**30:.1f} GiB (its largest tensor is "
            f"{measured.largest_tensor_bytes / 2**30:.1f} GiB) and this machine has "
            f"{available / 2**30:.1f} GiB; use a smaller size (or tile the image: edgesr upscale --tile)")
    return measured


def _memory_bytes() -> int | None:
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
