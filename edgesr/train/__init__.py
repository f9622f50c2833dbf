"""Training SRConvNet and HiT-SR: `edgesr train` and its library API.

Importing this package does not import torch (the CLI imports it at start-up);
``train`` imports the loop on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgesr.train.config import TrainConfig, model_defaults

if TYPE_CHECKING:
    from torch import nn


def train(config: TrainConfig) -> "nn.Module":
    """Run (or resume) a training run; returns the trained network (not the EMA copy)."""
    from edgesr.train.loop import run

    return run(config)


__all__ = ["TrainConfig", "model_defaults", "train"]


def __getattr__(name: str) -> Any:  # pragma: no cover - convenience only
    raise AttributeError(name)
