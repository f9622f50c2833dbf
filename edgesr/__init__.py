"""edgesr: lightweight super-resolution networks from PyTorch weights to edge runtimes.

The top-level names are imported lazily so that runtime-only paths (benchmarking an
.onnx or .tflite file) never import torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "load": "edgesr.models.loading",
    "create": "edgesr.models.loading",
    "describe": "edgesr.models.descriptor",
    "ModelInfo": "edgesr.models.descriptor",
    "list_archs": "edgesr.models.registry",
    "evaluate": "edgesr.evaluate",
    "upscale_image": "edgesr.upscale",
    "EdgeSRError": "edgesr.errors",
}
# Subpackages reachable as attributes; ``edgesr.export`` is also callable: export(model, target, ...).
_SUBPACKAGES = ("export", "rewrite", "runtimes", "calibration", "models")

__all__ = ["__version__", *_LAZY, "export"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"edgesr.{name}")
    raise AttributeError(f"module 'edgesr' has no attribute {name!r}")
