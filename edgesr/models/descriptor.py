"""The small descriptor attached to every model that edgesr builds or loads."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

_ATTR = "edgesr_info"


@dataclass(frozen=True)
class ModelInfo:
    arch: str
    scale: int
    hparams: dict[str, Any] = field(default_factory=dict)
    # Value range the network itself expects (255 for SRConvNet, 1 for HiT-SR).
    input_range: float = 1.0
    source: str | None = None
    sha256: str | None = None
    # Which part of the checkpoint file the weights came from ("params_ema", "module.", ...).
    layout: str | None = None
    # Random initialisation: the torch seed the weights were drawn with (None: not seeded).
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def attach(model: nn.Module, info: ModelInfo) -> nn.Module:
    # object.__setattr__ keeps nn.Module from treating the descriptor as state.
    object.__setattr__(model, _ATTR, info)
    return model


def describe(model: nn.Module) -> ModelInfo:
    info = getattr(model, _ATTR, None)
    if info is None:
        raise ValueError("this module was not created by edgesr.load/edgesr.create")
    return info
