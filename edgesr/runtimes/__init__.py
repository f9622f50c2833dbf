"""Runners: one artifact in one runtime behind one small protocol (see ``base.Runner``).

``open_runner(path)`` picks the runtime from the file (.pth/.safetensors -> pytorch,
.onnx -> onnxruntime, .tflite -> litert, .mlpackage -> coreml) and reads scale,
layout, value range and input size from the metadata that export embedded. Each
runtime module is imported only when it is used: benching an .onnx or .tflite file
needs that runtime, numpy and nothing else (no torch).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from edgesr.errors import EdgeSRError
from edgesr.runtimes.base import ArtifactInfo, Runner

# runtime name -> "module:Class"
RUNTIMES: dict[str, str] = {
    "pytorch": "edgesr.runtimes.torch_runner:TorchRunner",
    "onnxruntime": "edgesr.runtimes.onnxruntime_runner:OnnxRuntimeRunner",
    "litert": "edgesr.runtimes.litert_runner:LiteRTRunner",
    "coreml": "edgesr.runtimes.coreml_runner:CoreMLRunner",
}
ALIASES = {"torch": "pytorch", "ort": "onnxruntime", "onnx": "onnxruntime", "tflite": "litert",
           "ai-edge-litert": "litert", "ai_edge_litert": "litert", "mlpackage": "coreml"}
# file suffix -> (format, runtimes that can run it, first is the default)
FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    ".pth": ("pytorch", ("pytorch",)),
    ".pt": ("pytorch", ("pytorch",)),
    ".ckpt": ("pytorch", ("pytorch",)),
    ".bin": ("pytorch", ("pytorch",)),
    ".safetensors": ("pytorch", ("pytorch",)),
    ".onnx": ("onnx", ("onnxruntime",)),
    ".tflite": ("tflite", ("litert",)),
    ".mlpackage": ("coreml", ("coreml",)),
}
ARTIFACT_SUFFIXES = (".onnx", ".tflite", ".mlpackage")

__all__ = ["ArtifactInfo", "Runner", "RUNTIMES", "open_runner", "runtime_name", "format_of",
           "is_artifact", "read_metadata"]


def runtime_name(name: str) -> str:
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in RUNTIMES:
        raise EdgeSRError(f"--runtime {name!r}: unknown; choose from {', '.join(RUNTIMES)}")
    return key


def format_of(path: str | Path) -> tuple[str, tuple[str, ...]]:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        if path.is_dir() and (path / "model.safetensors").exists():
            return FORMATS[".safetensors"]
        raise EdgeSRError(f"{path}: unknown artifact type {suffix or '(no suffix)'!r}; expected "
                          f"{', '.join(FORMATS)}")
    return FORMATS[suffix]


def is_artifact(model: str | Path) -> bool:
    """An exported file (.onnx/.tflite/.mlpackage) rather than a checkpoint or a model name."""
    return Path(str(model)).suffix.lower() in ARTIFACT_SUFFIXES


def chosen_runtime(path: str | Path, runtime: str | None = None) -> str:
    """The runtime that ``open_runner(path, runtime)`` uses: the requested one if it can run
    the file, else the file's own."""
    path = Path(path)
    if not path.exists():
        raise EdgeSRError(f"{path}: no such file")
    fmt, runtimes = format_of(path)
    chosen = runtime_name(runtime) if runtime else runtimes[0]
    if chosen not in runtimes:
        raise EdgeSRError(f"{path.name} is a {fmt} file: --runtime {chosen} cannot run it "
                          f"(use {' or '.join(runtimes)})")
    return chosen


def open_runner(path: str | Path, runtime: str | None = None, **options: Any) -> Runner:
    """Load ``path`` in ``runtime`` (default: the file's own) with runtime ``options``:

    - pytorch: device ("cpu"/"cuda"), threads; also scale/arch for a checkpoint
    - onnxruntime: providers ("cpu", "cuda", "tensorrt", "coreml", "xnnpack", ...), threads
    - litert: delegate ("xnnpack", "none", "gpu"), threads
    - coreml: compute_units ("all", "cpu_only", "cpu_and_gpu", "cpu_and_ne")

    Options left at None are ignored; options a runtime has no use for are an error.
    """
    chosen = chosen_runtime(path, runtime)
    module, cls = RUNTIMES[chosen].split(":")
    return getattr(importlib.import_module(module), cls)(path, **options)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata embedded in an artifact (no session is created where avoidable)."""
    path = Path(path)
    if not path.exists():
        raise EdgeSRError(f"{path}: no such file")
    fmt, _ = format_of(path)
    if fmt == "onnx":
        from edgesr.runtimes.onnxruntime_runner import read_metadata as read
    elif fmt == "tflite":
        from edgesr.runtimes.litert_runner import read_metadata as read
    elif fmt == "coreml":
        from edgesr.runtimes.coreml_runner import read_metadata as read
    else:
        raise EdgeSRError(f"{path}: checkpoints carry no artifact metadata; use `edgesr info`")
    return read(path)
