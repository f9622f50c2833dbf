"""PSNR-Y of a fixed-size model on a validation set, and its latency.

A quantized artifact has a fixed input size, so every model compared here (the float
PyTorch network and the artifact) runs the same tiles of that size (edgesr.tiling,
fixed shape: smaller images are reflect-padded and cropped back), and PSNR-Y follows
the BasicSR protocol of ``edgesr.evaluate`` (uint8 output, Y of MATLAB's rgb2ycbcr,
``scale`` border pixels dropped).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgesr.calibration import ValidationSet
from edgesr.hostcpu import vector_extensions

# NCHW float32 [0,1] batch -> NCHW float32 [0,1] batch.
BatchFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class Quality:
    psnr_y: float
    images: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"psnr_y": round(self.psnr_y, 4), "images": {k: round(v, 4) for k, v in self.images.items()}}


def tile_overlap(arch: str | None, tile: tuple[int, int]) -> int:
    """The architecture's tile overlap, reduced so that it fits the (small) tile."""
    from edgesr.tiling import defaults_for

    return max(0, min(defaults_for(arch).overlap, (min(tile) - 1) // 4))


def measure_psnr(run_batch: BatchFn, val: ValidationSet, tile: tuple[int, int],
                 arch: str | None = None) -> Quality:
    from edgesr.metrics import psnr_y, quantize
    from edgesr.tiling import TiledUpscaler

    def run_tile(patch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(patch.transpose(2, 0, 1)[None], dtype=np.float32)
        return np.asarray(run_batch(batch))[0].transpose(1, 2, 0)

    upscaler = TiledUpscaler(run_tile, val.scale, tuple(tile), tile_overlap(arch, tuple(tile)), fixed=True)
    scores = {}
    for pair in val.pairs:
        sr = quantize(upscaler(pair.lr))
        scores[pair.name] = psnr_y(sr, pair.hr_u8, val.scale)
    return Quality(float(np.mean(list(scores.values()))), scores)


def torch_batch_fn(module) -> BatchFn:
    """The float PyTorch reference (already ``with_unit_range``) as a BatchFn."""
    import torch

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(batch)).float().numpy()

    return run


# Runs of each file; the seconds before each timed call, longer than onnxruntime's,
# OpenMP's and XNNPACK's worker pools busy-wait after a run (on 2 cores a spinning pool
# slows whichever file runs next).
LATENCY_REPEATS = 5
LATENCY_PAUSE_S = 0.2


def latency_comparison(float_fn: BatchFn, quantized_fn: BatchFn, shape: tuple[int, ...], precision: str,
                       repeats: int = LATENCY_REPEATS, seed: int = 0) -> dict:
    """Median latency (ms) of the float and the quantized file, timed alternately in this
    process after one warm-up each, so that load on a shared machine moves both alike.
    HiTNet's ``--fused-ops`` int8 file against its float graph: 0.90x timed one after the
    other, 1.09x alternating (onnxruntime sessions without spinning, ``onnx_quant.session_fn``)."""
    batch = np.random.default_rng(seed).random(shape, dtype=np.float32)
    runs = {"fp32": float_fn, precision: quantized_fn}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run(batch)
    for _ in range(max(1, repeats)):
        for name, run in runs.items():
            time.sleep(LATENCY_PAUSE_S)
            started = time.perf_counter()
            run(batch)
            times[name].append((time.perf_counter() - started) * 1e3)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {"fp32": round(medians["fp32"], 2), precision: round(medians[precision], 2),
            "speedup_vs_fp32": round(medians["fp32"] / medians[precision], 3),
            "note": (f"median of {repeats} runs of each, alternating, batch 1 at the export input size, "
                     f"on this machine's CPU ({', '.join(vector_extensions()) or 'no x86 vector extensions'}; "
                     f"shared cores: compare the two, not across machines)")}


def artifact_fn(path, exact: bool = False) -> BatchFn:
    """An NCHW batch function over an exported file in its own runtime (.onnx, .tflite;
    .mlpackage: MLModel.predict on macOS, edgesr's reference evaluator elsewhere).
    ``exact``: the int8 gate's arithmetic, the same on any host (onnxruntime without
    graph optimisations; LiteRT's XNNPACK needs nothing different)."""
    from pathlib import Path

    from edgesr.errors import EdgeSRError

    path = Path(path)
    if path.suffix == ".onnx":
        from edgesr.quantize.onnx_quant import session_fn

        return session_fn(path, exact=exact)
    if path.suffix == ".tflite":
        from edgesr.quantize.tflite_quant import interpreter_fn

        return interpreter_fn(path)  # XNNPACK: int32 accumulation on every host
    if path.suffix == ".mlpackage":
        from edgesr.runtimes.coreml_runner import CoreMLRunner

        return CoreMLRunner(path).run_native
    raise EdgeSRError(f"{path.name}: no runtime for this file type")
