"""Does the exported file compute what the PyTorch model computes?

The artifact runs in its own runtime on (a) a seeded random input and (b) a crop of a
deterministic, natural-looking test image (and, for a dynamic graph, a second batch
at another size); each output is compared with the original PyTorch model under the
same [0,1] contract, on CPU and, when asked for and present, on CUDA.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from edgesr.export.base import ExportOptions, ParityUnavailable, Target, first_line
from edgesr.metrics import psnr

# Agreement the artifact must reach with PyTorch (outputs in [0,1], peak 1).
FP32_MAX_ABS = 1e-4
FP16_MIN_PSNR = 45.0
# An ImageType output is rounded to 8 bits, so fp32 agreement is at best half a level.
IMAGE_IO_MAX_ABS = 1.0 / 255.0 + FP32_MAX_ABS

PASSED, FAILED, NOT_RUN = "passed", "failed", "not run"


@dataclass(frozen=True)
class Tolerance:
    max_abs: float | None = None
    min_psnr: float | None = None
    # Said instead of the limits when there are none (int8/w8: judged by PSNR-Y elsewhere).
    note: str | None = None

    def accepts(self, max_abs: float, value_psnr: float) -> bool:
        if self.max_abs is not None and not max_abs <= self.max_abs:
            return False
        if self.min_psnr is not None and not value_psnr >= self.min_psnr:
            return False
        return True

    def describe(self) -> str:
        parts = []
        if self.max_abs is not None:
            parts.append(f"max abs <= {self.max_abs:g}")
        if self.min_psnr is not None:
            parts.append(f"PSNR >= {self.min_psnr:g} dB")
        return " and ".join(parts) or (self.note or "none")


def tolerance_for(options: ExportOptions) -> Tolerance:
    if options.precision in ("int8", "w8"):
        # An fp32 max-abs limit makes no sense for 8-bit weights/activations: the figures
        # below are recorded, and quality is judged by PSNR-Y against the float model on
        # the validation set (the report's quantization section, --max-psnr-drop).
        return Tolerance(note=f"none for {options.precision}: judged by PSNR-Y against the float "
                              f"model on the validation set (see quantization)")
    if options.precision == "fp16":
        return Tolerance(min_psnr=FP16_MIN_PSNR)
    if options.image_io:
        return Tolerance(max_abs=IMAGE_IO_MAX_ABS)
    return Tolerance(max_abs=FP32_MAX_ABS)


@dataclass
class ParityCheck:
    input: str  # "random 1x3x64x64", "image crop 1x3x64x64", ...
    reference: str  # "pytorch cpu" | "pytorch cuda"
    runtime: str
    status: str  # passed | failed | not run
    max_abs: float | None = None
    mean_abs: float | None = None
    psnr: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["psnr"] is not None and not np.isfinite(data["psnr"]):
            data["psnr"] = "inf"
        return data


@dataclass
class ParityResult:
    tolerance: str
    checks: list[ParityCheck] = field(default_factory=list)

    @property
    def status(self) -> str:
        statuses = {check.status for check in self.checks}
        if FAILED in statuses:
            return FAILED
        if PASSED in statuses:
            return PASSED
        return NOT_RUN

    @property
    def failures(self) -> list[ParityCheck]:
        return [check for check in self.checks if check.status == FAILED]

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "tolerance": self.tolerance,
                "checks": [check.to_dict() for check in self.checks]}


def natural_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic RGB image (3 x H x W, float32 in [0,1]) with what photos have:
    smooth shading, hard edges at several angles, fine texture and a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    y /= max(height - 1, 1)
    x /= max(width - 1, 1)
    channels = [
        0.5 + 0.35 * np.sin(2.1 * np.pi * x + 0.7) * np.cos(1.3 * np.pi * y),
        0.45 + 0.3 * (x * 0.6 + y * 0.4),
        0.55 + 0.3 * np.cos(1.7 * np.pi * (x - y)),
    ]
    image = np.stack(channels)
    # A disc, a rotated bar and a stripe patch: edges in several directions.
    disc = (x - 0.35) ** 2 + (y - 0.4) ** 2 < 0.06
    bar = np.abs((x - 0.6) * 0.8 + (y - 0.55) * 0.6) < 0.06
    stripes = (np.sin(60 * x + 25 * y) > 0) & (x > 0.65) & (y < 0.35)
    image[:, disc] = image[:, disc] * 0.3 + np.array([[0.9], [0.2], [0.15]]) * 0.7
    image[:, bar] = np.array([[0.1], [0.15], [0.3]])
    image[:, stripes] = image[:, stripes] * 0.4 + 0.55
    image += rng.normal(0.0, 0.02, size=image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def inputs_for(options: ExportOptions) -> list[tuple[str, np.ndarray]]:
    """The named NCHW float32 batches every export is checked on."""
    height, width = options.input_size
    rng = np.random.default_rng(0)
    batches = [
        ("random", rng.random((1, 3, height, width), dtype=np.float32)),
        # The crop comes from a larger image so that it starts mid-scene, like a tile.
        ("image crop", natural_image(2 * height, 2 * width)[:, height // 2:height // 2 + height,
                                                         width // 3:width // 3 + width][None]),
    ]
    if options.dynamic:
        other = (max(options.min_side, height // 2 + 1), max(options.min_side, width // 2 + 3))
        batches.append(("random, dynamic batch and size", rng.random((2, 3, *other), dtype=np.float32)))
    if options.image_io:
        batches = [(name, np.round(batch * 255.0) / 255.0) for name, batch in batches]
    return [(f"{name} {'x'.join(map(str, batch.shape))}", np.ascontiguousarray(batch, np.float32))
            for name, batch in batches]


@contextlib.contextmanager
def exact_cuda() -> Iterator[None]:
    """No TF32 while computing the CUDA reference: fp32 agreement means fp32 maths."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@torch.inference_mode()
def _reference(model: nn.Module, batch: np.ndarray, device: str) -> np.ndarray:
    output = model(torch.from_numpy(batch).to(device))
    return output.float().cpu().numpy()


def compare(output: np.ndarray, reference: np.ndarray) -> tuple[float, float, float]:
    if output.shape != reference.shape:
        raise ValueError(f"output shape {output.shape} differs from PyTorch's {reference.shape}")
    difference = np.abs(output.astype(np.float64) - reference.astype(np.float64))
    return float(difference.max()), float(difference.mean()), psnr(output, reference, peak=1.0)


def check_parity(target: Target, path: Path, reference_model: nn.Module,
                 options: ExportOptions) -> ParityResult:
    """Run ``path`` in the target's runtime and compare with ``reference_model``
    (the original network already wrapped with ``with_unit_range``)."""
    tolerance = tolerance_for(options)
    result = ParityResult(tolerance.describe())
    devices = ["cpu"]
    if options.device == "cuda":
        devices.append("cuda")
    cpu_outputs: dict[str, np.ndarray | ParityUnavailable] = {}
    for device in devices:
        if device == "cuda" and not torch.cuda.is_available():
            result.checks.append(ParityCheck("all", "pytorch cuda", "-", NOT_RUN,
                                             note="not run: no CUDA device"))
            continue
        model = reference_model if device == "cpu" else copy.deepcopy(reference_model).to(device)
        for name, batch in inputs_for(options):
            runtime = target.runtime_for("cpu")
            try:
                try:
                    runtime = target.runtime_for(device)
                    output = target.run(path, batch, options, device)
                except ParityUnavailable:
                    if device == "cpu" or not isinstance(cpu_outputs.get(name), np.ndarray):
                        raise
                    # The runtime has no CUDA path: compare its CPU output with PyTorch on CUDA.
                    runtime = target.runtime_for("cpu")
                    output = cpu_outputs[name]
                if device == "cpu":
                    cpu_outputs[name] = output
            except ParityUnavailable as exc:
                cpu_outputs[name] = exc
                result.checks.append(ParityCheck(name, f"pytorch {device}", runtime, NOT_RUN, note=str(exc)))
                continue
            except Exception as exc:  # the runtime refused the file: that is a failed check
                result.checks.append(ParityCheck(name, f"pytorch {device}", runtime, FAILED,
                                                 note=f"the runtime could not run the file: {first_line(exc)}"))
                continue
            with exact_cuda() if device == "cuda" else contextlib.nullcontext():
                reference = _reference(model, batch, device)
            try:
                max_abs, mean_abs, value_psnr = compare(output, reference)
            except ValueError as exc:
                result.checks.append(ParityCheck(name, f"pytorch {device}", runtime, FAILED, note=str(exc)))
                continue
            status = PASSED if tolerance.accepts(max_abs, value_psnr) else FAILED
            result.checks.append(ParityCheck(name, f"pytorch {device}", runtime, status,
                                             max_abs, mean_abs, value_psnr))
    return result
