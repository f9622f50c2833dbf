"""Architecture registry: one ``ArchSpec`` per architecture, filled by each arch module.

Detection works spandrel-style: every spec inspects a state dict (keys and tensor
shapes) and either returns the hyperparameters it reads from it or ``None``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class ArchSpec:
    name: str
    paper: str
    # Value range the official network expects on its input (255 for SRConvNet, 1 for HiT-SR).
    input_range: float
    scales: tuple[int, ...]
    defaults: Mapping[str, Any]
    build: Callable[..., nn.Module]  # build(scale=..., **hparams) -> nn.Module
    detect: Callable[[StateDict], dict[str, Any] | None]  # -> {"scale": s, **hparams} or None
    license: str = ""
    aliases: tuple[str, ...] = field(default=())


_REGISTRY: dict[str, ArchSpec] = {}
BUILTIN_MODULES = ("srconvnet", "hit_sir", "hit_sng", "hit_srf")


def register(spec: ArchSpec) -> ArchSpec:
    for key in (spec.name, *spec.aliases):
        _REGISTRY[key.lower()] = spec
    return spec


def _import_builtins() -> None:
    # Importing an architecture module registers it; done on first lookup so that
    # importing one architecture does not pull in the others.
    for module in BUILTIN_MODULES:
        importlib.import_module(f"edgesr.models.{module}")


def get_arch(name: str) -> ArchSpec:
    _import_builtins()
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise KeyError(
            f"unknown architecture {name!r}; known: {', '.join(list_archs())}"
        ) from None


def list_archs() -> list[str]:
    _import_builtins()
    return sorted({spec.name for spec in _REGISTRY.values()})


def all_specs() -> list[ArchSpec]:
    return [get_arch(name) for name in list_archs()]
