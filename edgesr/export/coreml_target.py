"""CoreML: coremltools from a torch.export ExportedProgram to an ML Program (.mlpackage).

``MLModel.predict`` exists only on macOS. On other systems ``run`` asks the reference
evaluators registered with ``register_reference_evaluator``: edgesr.coreml_eval (a
numpy evaluation of the ML program, registered at import; the report calls it
"reference evaluation of the ML program (not Apple's runtime)"), and otherwise raises
ParityUnavailable, so the report says in words that the check did not run. On macOS
``MLModel.predict`` is the runtime and the reference evaluators are compared with it.
"""
from __future__ import annotations

import importlib.util
import json
import os
import platform
import uuid
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from edgesr.errors import EdgeSRError
from edgesr.runtimes.coreml_runner import SPEC_PATH, read_metadata, read_spec
from edgesr.export.base import (
    QUANT_OPTIONS,
    ExportOptions,
    ParityUnavailable,
    Target,
    first_line,
    require,
)

INPUT_NAME = "input"
OUTPUT_NAME = "output"
DEFAULT_MIN_IOS = 16
MIN_IOS_CHOICES = (15, 16, 17, 18, 26)
# The keys coremltools adds on its own; the date one makes two exports differ.
_NONDETERMINISTIC_KEYS = ("com.github.apple.coremltools.conversion_date",)

# (path, NCHW float32 [0,1], options) -> NCHW float32; raise ParityUnavailable to pass.
ReferenceEvaluator = Callable[[Path, np.ndarray, ExportOptions], np.ndarray]
_REFERENCE_EVALUATORS: list[tuple[str, ReferenceEvaluator]] = []


def register_reference_evaluator(name: str, evaluator: ReferenceEvaluator) -> None:
    """Let CoreML parity run off macOS (e.g. a MIL interpreter in numpy)."""
    _REFERENCE_EVALUATORS.append((name, evaluator))


class ScaleOutput(nn.Module):
    """[0,1] -> [0,255] so that an ImageType output holds pixel values."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image) * 255.0


class CoreMLTarget(Target):
    name = "coreml"
    suffix = ".mlpackage"
    options = frozenset({"image_io", "shapes", "min_ios"}) | QUANT_OPTIONS
    requires = (("coremltools", "coremltools"),)
    runtime = "CoreML MLModel.predict (macOS only)"

    def check_options(self, options: ExportOptions) -> None:
        if options.min_ios is not None and options.min_ios not in MIN_IOS_CHOICES:
            raise EdgeSRError(
                f"--min-ios {options.min_ios}: an ML Program needs one of "
                f"{', '.join(map(str, MIN_IOS_CHOICES))}")

    def wrap(self, module: nn.Module, options: ExportOptions) -> nn.Module:
        return ScaleOutput(module).eval() if options.image_io else module

    def convert(self, module: nn.Module, example: torch.Tensor, options: ExportOptions,
                destination: Path) -> None:
        require("coremltools", "coremltools", "exporting to CoreML")
        sizes = _sizes(options)
        dynamic_shapes = None
        if len(sizes) > 1:
            heights, widths = [h for h, _ in sizes], [w for _, w in sizes]
            dynamic_shapes = ({
                2: torch.export.Dim("height", min=min(heights), max=max(max(heights), min(heights) + 1)),
                3: torch.export.Dim("width", min=min(widths), max=max(max(widths), min(widths) + 1)),
            },)
        try:
            program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes)
            program = program.run_decompositions({})
        except Exception as exc:
            raise EdgeSRError(f"torch.export failed before CoreML conversion: {first_line(exc)}") from exc
        self.convert_program(program, options, destination)

    def convert_program(self, program, options: ExportOptions, destination: Path) -> None:
        """coremltools on an ExportedProgram (also a PT2E-quantized one: edgesr.quantize)."""
        ct = require("coremltools", "coremltools", "exporting to CoreML")
        sizes = _sizes(options)
        shape = (ct.EnumeratedShapes(shapes=[(1, 3, h, w) for h, w in sizes], default=(1, 3, *sizes[0]))
                 if len(sizes) > 1 else (1, 3, *sizes[0]))
        if options.image_io:
            inputs = [ct.ImageType(name=INPUT_NAME, shape=shape, scale=1.0 / 255.0,
                                   color_layout=ct.colorlayout.RGB)]
            outputs = [ct.ImageType(name=OUTPUT_NAME, color_layout=ct.colorlayout.RGB)]
        else:
            inputs = [ct.TensorType(name=INPUT_NAME, shape=shape, dtype=np.float32)]
            outputs = [ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)]
        precision = ct.precision.FLOAT16 if options.precision == "fp16" else ct.precision.FLOAT32
        target = getattr(ct.target, f"iOS{options.min_ios or DEFAULT_MIN_IOS}")
        try:
            mlmodel = ct.convert(program, convert_to="mlprogram", inputs=inputs, outputs=outputs,
                                 minimum_deployment_target=target, compute_precision=precision,
                                 skip_model_load=True)
            mlmodel.save(str(destination))
        except Exception as exc:
            raise EdgeSRError(f"CoreML conversion failed: {first_line(exc)}") from exc
        _make_deterministic(destination)

    def write_metadata(self, path: Path, metadata: Mapping[str, str]) -> None:
        spec = read_spec(path)
        described = spec.description.metadata
        for key in sorted(metadata):
            described.userDefined[key] = str(metadata[key])
        described.author = "edgesr " + metadata.get("edgesr.version", "")
        described.shortDescription = (
            f"{metadata.get('edgesr.arch', '')} x{metadata.get('edgesr.scale', '')} super-resolution; "
            f"{metadata.get('edgesr.value_range', '')}")
        _write_spec(path, spec)

    def read_metadata(self, path: Path) -> dict[str, str]:
        return read_metadata(path)

    def runtime_for(self, device: str) -> str:
        if platform.system() == "Darwin":
            if _REFERENCE_EVALUATORS:
                return f"CoreML MLModel.predict (compared with the {_REFERENCE_EVALUATORS[0][0]})"
            return "CoreML MLModel.predict"
        if _REFERENCE_EVALUATORS:
            return _REFERENCE_EVALUATORS[0][0]
        return self.runtime

    def run(self, path: Path, image_nchw: np.ndarray, options: ExportOptions,
            device: str = "cpu") -> np.ndarray:
        if device != "cpu":
            raise ParityUnavailable("CoreML picks its own compute units; the check runs once, as cpu")
        if platform.system() == "Darwin":
            output = _predict_macos(path, image_nchw, options)
            _compare_with_references(path, image_nchw, options, output)
            return output
        reasons = []
        for name, evaluator in _REFERENCE_EVALUATORS:
            try:
                return evaluator(path, image_nchw, options)
            except ParityUnavailable as exc:
                reasons.append(f"{name}: {exc}")
        extra = f" ({'; '.join(reasons)})" if reasons else ""
        raise ParityUnavailable(
            f"not run: CoreML models run only on macOS (MLModel.predict) and no reference "
            f"evaluator for {platform.system()} is available{extra}")


def _sizes(options: ExportOptions) -> list[tuple[int, int]]:
    """input_size first (the default), then the other --shapes, without repeats."""
    sizes = [tuple(options.input_size)]
    for size in options.shapes:
        if tuple(size) not in sizes:
            sizes.append(tuple(size))
    return sizes  # type: ignore[return-value]


# (evaluator name, max abs, PSNR dB) of the last macOS comparison, for tests and callers.
LAST_REFERENCE_COMPARISON: list[tuple[str, float, float]] = []


def _compare_with_references(path: Path, image_nchw: np.ndarray, options: ExportOptions,
                             apple: np.ndarray) -> None:
    """On macOS: run the registered reference evaluators too and say (stderr) how far
    they are from Apple's runtime. A disagreement is a warning, not a failure: the
    parity check against PyTorch judges the file; this judges the evaluator."""
    import sys

    from edgesr.export.parity import compare, tolerance_for

    LAST_REFERENCE_COMPARISON.clear()
    for name, evaluator in _REFERENCE_EVALUATORS:
        try:
            reference = evaluator(path, image_nchw, options)
            max_abs, _, value_psnr = compare(reference, apple)
        except Exception as exc:  # noqa: BLE001 - the comparison is advisory
            print(f"[coreml] {name}: not compared with MLModel.predict ({first_line(exc)})",
                  file=sys.stderr)
            continue
        LAST_REFERENCE_COMPARISON.append((name, max_abs, value_psnr))
        agrees = tolerance_for(options).accepts(max_abs, value_psnr)
        print(f"[coreml] {name} vs MLModel.predict: max abs {max_abs:.3g}, PSNR {value_psnr:.1f} dB"
              f"{'' if agrees else ' -- WARNING: they disagree beyond the parity tolerance'}",
              file=sys.stderr)


def _reference_evaluation(path: Path, image_nchw: np.ndarray, options: ExportOptions) -> np.ndarray:
    """edgesr.coreml_eval: the numpy evaluator of the ML program inside the package."""
    if importlib.util.find_spec("coremltools") is None:
        raise ParityUnavailable("coremltools is not installed")
    from edgesr.coreml_eval import UnsupportedOpError, reference_evaluator

    try:
        return reference_evaluator(path, image_nchw, options)
    except UnsupportedOpError as exc:
        raise ParityUnavailable(f"not run: {exc}") from exc


def _predict_macos(path: Path, image_nchw: np.ndarray, options: ExportOptions) -> np.ndarray:
    ct = require("coremltools", "coremltools", "checking a CoreML file")
    model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
    outputs = []
    for image in image_nchw:
        if options.image_io:
            from PIL import Image

            pixels = np.round(np.clip(image.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
            result = model.predict({INPUT_NAME: Image.fromarray(pixels, "RGB")})[OUTPUT_NAME]
            outputs.append(np.asarray(result.convert("RGB"), np.float32).transpose(2, 0, 1) / 255.0)
        else:
            result = model.predict({INPUT_NAME: image[None].astype(np.float32)})[OUTPUT_NAME]
            outputs.append(np.asarray(result, np.float32)[0])
    return np.stack(outputs)


def _write_spec(path: Path, spec) -> None:
    # deterministic=True: protobuf map fields (userDefined) otherwise serialise in any order.
    (path / SPEC_PATH).write_bytes(spec.SerializeToString(deterministic=True))


def _make_deterministic(path: Path) -> None:
    """Drop the conversion date, serialise maps in order and name manifest items by path.

    coremltools writes a random UUID per package item and today's date into the spec;
    both would make two identical exports differ.
    """
    spec = read_spec(path)
    for key in _NONDETERMINISTIC_KEYS:
        if key in spec.description.metadata.userDefined:
            del spec.description.metadata.userDefined[key]
    _write_spec(path, spec)
    manifest_path = path / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    renamed = {}
    for old, item in manifest.get("itemInfoEntries", {}).items():
        new = str(uuid.uuid5(uuid.NAMESPACE_URL, "edgesr:" + item.get("path", old))).upper()
        renamed[old] = new
    manifest["itemInfoEntries"] = {renamed[k]: v for k, v in manifest["itemInfoEntries"].items()}
    if manifest.get("rootModelIdentifier") in renamed:
        manifest["rootModelIdentifier"] = renamed[manifest["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")
    for root, dirs, files in os.walk(path):
        for entry in dirs:
            os.chmod(os.path.join(root, entry), 0o755)
        for entry in files:
            os.chmod(os.path.join(root, entry), 0o644)


def _register_builtin_evaluator() -> None:
    from edgesr.coreml_eval import REFERENCE_RUNTIME

    if all(evaluator is not _reference_evaluation for _, evaluator in _REFERENCE_EVALUATORS):
        register_reference_evaluator(REFERENCE_RUNTIME, _reference_evaluation)


_register_builtin_evaluator()
