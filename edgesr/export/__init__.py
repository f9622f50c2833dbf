"""Export to ONNX, TFLite and CoreML files that keep edgesr's [0,1] RGB contract.

``export(model, "onnx" | "tflite" | "coreml", ...)`` runs the whole pipeline and
returns an ``ExportReport``; each target lives in its own module behind the small
``Target`` protocol of ``base.py``. Names are imported lazily so that the CLI can
import ``edgesr.export.command`` without importing torch.
"""
from __future__ import annotations

import importlib
import sys
import types

_LAZY = {
    "export": "edgesr.export.pipeline",
    "ExportReport": "edgesr.export.pipeline",
    "TARGETS": "edgesr.export.pipeline",
    "get_target": "edgesr.export.pipeline",
    "target_table": "edgesr.export.pipeline",
    "ExportOptions": "edgesr.export.base",
    "ParityUnavailable": "edgesr.export.base",
    "Target": "edgesr.export.base",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgesr.export' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    """Lets ``edgesr.export(model, "onnx", ...)`` call the pipeline: the subpackage and
    the library function share the name the guide promises users."""

    def __call__(self, *args, **kwargs):
        return importlib.import_module("edgesr.export.pipeline").export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
