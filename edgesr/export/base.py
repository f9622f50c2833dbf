"""The small protocol every export target implements, and the helpers they share.

A target is one module (``onnx_target``, ``tflite_target``, ``coreml_target``) with one
class that says what it accepts (precisions, options), converts a wrapped module into
a file, writes/reads edgesr's metadata and runs the file in its own runtime for the
parity check. Everything that is the same for all targets lives here or in
``pipeline.py``; a target holds only what is specific to its format.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
import importlib.util
import os
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from edgesr.errors import MissingDependencyError

# int8: weights and activations (calibrated); w8: int8 weights, float activations.
PRECISIONS = ("fp32", "fp16", "int8", "w8")
DEVICES = ("cpu", "cuda")
VALUE_RANGE = "RGB float32 [0,1] in and out, clamped"
METADATA_PREFIX = "edgesr."
# Smallest LR side exported when an architecture states no minimum of its own: below
# this, 3x3 convolutions with padding see mostly padding and the result is meaningless.
DEFAULT_MIN_SIZE = 4

# Every target-specific option: its CLI spelling and what it does. The table of which
# target accepts which option is each Target's ``options`` attribute.
OPTION_FLAGS: Mapping[str, str] = {
    "dynamic": "--dynamic",
    "nhwc": "--nhwc",
    "image_io": "--image-io",
    "shapes": "--shapes",
    "min_ios": "--min-ios",
    "fused_ops": "--fused-ops",
    # Quantization and quality (edgesr.quantize): every target takes them (QUANT_OPTIONS).
    "calib": "--calib",
    "calib_count": "--calib-count",
    "calib_method": "--calib-method",
    "val": "--val",
    "max_psnr_drop": "--max-psnr-drop",
    "keep_float": "--keep-float",
    "reduce_range": "--reduce-range",
    "int_io": "--int-io",
}
QUANT_OPTIONS = frozenset({"calib", "calib_count", "calib_method", "val", "max_psnr_drop", "keep_float"})


class ParityUnavailable(Exception):
    """The artifact cannot be run here; the message says why, in words."""


@dataclass(frozen=True)
class ExportOptions:
    """One export's settings, validated against the target before any work."""

    input_size: tuple[int, int] = (256, 256)
    precision: str = "fp32"
    dynamic: bool = False
    nhwc: bool = False
    image_io: bool = False
    # Extra (H, W) sizes a CoreML model accepts (EnumeratedShapes); input_size is the default.
    shapes: tuple[tuple[int, int], ...] = ()
    min_ios: int | None = None
    # ONNX, fixed size: the forms desktop onnxruntime runs fastest (exact GELU,
    # LayerNormalization, reflect Pad, SRConvNet's runtime-weight dynamic conv) instead of
    # those mobile delegates take (edgesr.rewrite.delegate_ops, dynamic_conv). TFLite:
    # SRConvNet's runtime-weight dynamic conv, for LiteRT's own CPU kernels.
    fused_ops: bool = False
    # Quantization (see edgesr.quantize): calibration images, patch count and range method,
    # validation images, PSNR budget in dB, op groups kept float (replay), 8-bit TFLite I/O.
    calib: str | None = None
    calib_count: int = 64
    calib_method: str = "minmax"
    val: str | None = None
    max_psnr_drop: float | None = None
    keep_float: tuple[str, ...] = ()
    # ONNX int8 for x86 hosts without VNNI: 7-bit weights, so that onnxruntime's U8S8
    # kernels cannot saturate their int16 pair sums (edgesr.hostcpu).
    reduce_range: bool = False
    int_io: bool = False
    device: str = "cpu"
    # Smallest LR side the architecture takes (set by the pipeline, not by the user).
    min_side: int = 1

    def float32_only(self, target: str) -> bool:
        """Whether the file computes in float32 wherever it is meant to run (a fp32 or
        int8 ``--fused-ops`` ONNX file for desktop onnxruntime), so that float16/int8 range
        safety can be left out (``edgesr.rewrite.plan.ExportContext.float32_only``). In
        such an int8 file the layers that see the unscaled range stay float
        (``edgesr.quantize.onnx_quant.OnnxQuantizer.cpu_float_nodes``). A TFLite file may
        meet the GPU delegate, whose Android default allows float16: it keeps HiT-SR's
        range scaling."""
        return target == "onnx" and self.fused_ops and self.precision in ("fp32", "int8")

    def depthwise_multiple(self, target: str) -> int:
        """The channel multiple that the file's int8 depthwise kernel wants: 16 for the int8
        file for onnxruntime's CPU (its fast symmetric depthwise kernel needs a group count
        that is a multiple of 16 on x86, 8 on ARM64; edgesr.rewrite.depthwise_padding), 1
        (no padding) for every other file."""
        from edgesr.quantize.onnx_quant import DEPTHWISE_GROUP_MULTIPLE

        return DEPTHWISE_GROUP_MULTIPLE if self.float32_only(target) and self.precision == "int8" else 1

    @property
    def layout(self) -> str:
        return "NHWC" if self.nhwc else "NCHW"

    def given(self) -> dict[str, Any]:
        """The target-specific options that were actually set (not left at their defaults)."""
        defaults = ExportOptions()
        return {name: getattr(self, name) for name in OPTION_FLAGS
                if getattr(self, name) != getattr(defaults, name)}


class Target(ABC):
    """One export format. Subclasses fill the class attributes and the four methods."""

    name: ClassVar[str]
    suffix: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = PRECISIONS
    # Which of OPTION_FLAGS this target accepts.
    options: ClassVar[frozenset[str]] = frozenset()
    # (importable module, pip package) pairs the conversion needs.
    requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    # Words for the report: the runtime ``run`` uses.
    runtime: ClassVar[str] = ""

    def check_options(self, options: ExportOptions) -> None:
        """Target-specific contradictions beyond the option table (raise EdgeSRError)."""

    def check_dependencies(self) -> None:
        for module, package in self.requires:
            if importlib.util.find_spec(module) is None:
                raise MissingDependencyError(package, f"exporting to {self.name}")

    def example_input(self, options: ExportOptions) -> torch.Tensor:
        """The tensor the conversion traces with (NCHW; ``wrap`` may change the layout)."""
        height, width = options.input_size
        generator = torch.Generator().manual_seed(0)
        # torch.export makes an example dim of size 1 a constant: a free batch needs 2.
        return torch.rand(2 if options.dynamic else 1, 3, height, width, generator=generator)

    def wrap(self, module: nn.Module, options: ExportOptions) -> nn.Module:
        """The module as the file will see it (e.g. NHWC permutes); unchanged by default."""
        return module

    @abstractmethod
    def convert(self, module: nn.Module, example: torch.Tensor, options: ExportOptions,
                destination: Path) -> None:
        """Write the artifact for ``module`` (already wrapped) at ``destination``."""

    @abstractmethod
    def write_metadata(self, path: Path, metadata: Mapping[str, str]) -> None:
        """Embed edgesr's metadata (string keys and values) in the artifact."""

    @abstractmethod
    def read_metadata(self, path: Path) -> dict[str, str]:
        """The metadata written by ``write_metadata``, read back from the file."""

    @abstractmethod
    def run(self, path: Path, image_nchw: np.ndarray, options: ExportOptions,
            device: str = "cpu") -> np.ndarray:
        """Run the artifact on an NCHW float32 [0,1] batch and return NCHW float32.

        Raise ``ParityUnavailable`` with the reason in words when it cannot run here.
        """

    def runtime_for(self, device: str) -> str:
        return self.runtime

    def notes(self, path: Path, options: ExportOptions) -> list[str]:
        """What the report should say about the written file beyond parity and readiness."""
        return []


def minimum_input_size(arch: str, hparams: Mapping[str, Any]) -> int:
    """Smallest LR height/width an architecture can be exported at.

    An ArchSpec may state it (``min_input_size``: an int, or a callable of the
    hyperparameters); otherwise a window size in the hyperparameters is the minimum,
    and DEFAULT_MIN_SIZE is the floor.
    """
    from edgesr.models.registry import get_arch

    try:
        spec = get_arch(arch)
    except (KeyError, ImportError):
        spec = None
    stated = getattr(spec, "min_input_size", None)
    if callable(stated):
        stated = stated(dict(hparams))
    if stated:
        return int(stated)
    window = hparams.get("window_size") or hparams.get("window_sizes")
    if isinstance(window, (list, tuple)):
        window = max((max(w) if isinstance(w, (list, tuple)) else w) for w in window)
    return max(DEFAULT_MIN_SIZE, int(window or 0))


class ChannelsLast(nn.Module):
    """NHWC in, NHWC out around an NCHW network (the permutes become part of the file)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def require(module: str, package: str, purpose: str) -> Any:
    """Import an optional dependency or raise MissingDependencyError naming the pip package."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise MissingDependencyError(package, purpose)
    return importlib.import_module(module)


# Messages of the converters that say nothing about the user's export: torch.onnx
# notes that torchvision (which no SR model uses) is absent, and deprecations inside
# torch/coremltools/litert-torch.
_MUTED_LOGGERS = ("torch.onnx._internal.exporter._registration",)


@contextlib.contextmanager
def _converter_warnings_muted() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _MUTED_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send converters' chatter (Python prints and C++ writes to fd 1) to stderr.

    Keeps stdout clean for --json. The fd-level redirect is skipped when fd 1 or 2 is
    not a real descriptor (e.g. inside some test runners).
    """
    try:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
    except (OSError, ValueError, AttributeError):
        saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr), _converter_warnings_muted():
            yield
    finally:
        if saved is not None:
            try:
                sys.stdout.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 1)
            os.close(saved)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
