"""A reference evaluator for CoreML ML Programs that runs anywhere numpy does.

``MLModel.predict`` exists only on macOS, so an ``.mlpackage`` converted on Linux
would ship with its numerics unchecked. This package reads the MIL program back
with coremltools (``loader``), and evaluates it op by op with numpy kernels
(``ops_*``), honouring the program's dtypes: fp16 results are rounded to fp16 after
every op, and ``constexpr_*`` weights (int8 / palettised / sparse) are decompressed
with coremltools' own ``decompress`` functions. An op without a kernel is an
``UnsupportedOpError`` naming it, never a silent pass.

It is a reference evaluation of the ML program, not Apple's runtime: it checks what
the converter wrote (layouts, casts, decompositions, quantised constants), not the
Core ML framework's kernels.

Entry points::

    from edgesr.coreml_eval import evaluate_mlpackage
    outputs = evaluate_mlpackage("model.mlpackage", {"input": nchw_float32})
    outputs["output"]                    # float32 array

    model = load("model.mlpackage")      # compile once, run many times (cached per path)
    model.predict({"input": batch_of_one})
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgesr.coreml_eval.registry import UnsupportedOpError, supported_ops

# What reports call this runtime.
REFERENCE_RUNTIME = "reference evaluation of the ML program (not Apple's runtime)"

__all__ = ["REFERENCE_RUNTIME", "CompiledMLPackage", "UnsupportedOpError", "evaluate_mlpackage",
           "evaluate_program", "load", "reference_evaluator", "supported_ops"]


class CompiledMLPackage:
    """An ``.mlpackage``'s main function compiled for the numpy evaluator.

    ``predict`` mirrors ``MLModel.predict``: a dict of named inputs in, a dict of named
    outputs out. Tensor features take and give float32 arrays of the program's shape
    (the batch dimension included). Image features take the pixel values the Core ML
    runtime would put in the program's tensor: float (or uint8) arrays, N x C x H x W,
    0..255, channels in the feature's colour layout; image outputs come back clipped to
    0..255 and rounded to whole pixel values (float32), as Core ML writes an 8-bit image.
    """

    def __init__(self, path: str | Path, function_name: str | None = None):
        from edgesr.coreml_eval.evaluator import ProgramEvaluator
        from edgesr.coreml_eval.loader import load_mlpackage

        self.path = Path(path)
        loaded = load_mlpackage(self.path, function_name)
        self.inputs = loaded.inputs
        self.outputs = loaded.outputs
        self.evaluator = ProgramEvaluator(loaded.program, loaded.function_name)

    @property
    def input_names(self) -> list[str]:
        return list(self.evaluator.input_names)

    @property
    def output_names(self) -> list[str]:
        return list(self.evaluator.output_names)

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        feeds = {}
        for name in self.evaluator.input_names:
            if name not in inputs:
                raise ValueError(f"missing input {name!r}; the model takes {', '.join(self.input_names)}")
            feeds[name] = np.asarray(inputs[name], dtype=np.float32)
        results = self.evaluator.run(feeds)
        images = {feature.name for feature in self.outputs if feature.kind == "image"}
        outputs = {}
        for name, value in results.items():
            value = np.asarray(value, dtype=np.float32)
            outputs[name] = np.round(np.clip(value, 0.0, 255.0)) if name in images else value
        return outputs


_CACHE: dict[tuple[str, float], CompiledMLPackage] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 4


def load(path: str | Path) -> CompiledMLPackage:
    """The compiled package at ``path``; reused while the file is unchanged."""
    path = Path(path).resolve()
    spec = path / "Data/com.apple.CoreML/model.mlmodel"
    key = (str(path), spec.stat().st_mtime if spec.exists() else 0.0)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    compiled = CompiledMLPackage(path)
    with _CACHE_LOCK:
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = compiled
    return compiled


def evaluate_mlpackage(path: str | Path, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run the ``.mlpackage`` at ``path`` on ``inputs`` with the numpy reference
    evaluator; {output name: float32 array}. See ``CompiledMLPackage.predict``.

    Raises ``UnsupportedOpError`` (naming the op) when the program holds an op the
    evaluator does not implement, and ``edgesr.errors.EdgeSRError`` for a file that is
    not an ML Program package.
    """
    return load(path).predict(inputs)


def evaluate_program(program, inputs: Mapping[str, Any], function_name: str = "main") -> dict[str, np.ndarray]:
    """Evaluate an in-memory pymil ``Program`` (e.g. ``mlmodel._mil_program`` or one
    built with ``mb.program``)."""
    from edgesr.coreml_eval.evaluator import ProgramEvaluator

    return ProgramEvaluator(program, function_name).run(inputs)


def reference_evaluator(path: Path, image_nchw: np.ndarray, options: Any) -> np.ndarray:
    """``coreml_target``'s ReferenceEvaluator: edgesr's [0,1] NCHW contract in and out.

    The package's single input/output are "input"/"output"; with --image-io they are
    8-bit RGB images (pixels in, pixels out), otherwise float tensors of batch 1.
    """
    model = load(path)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"{Path(path).name}: expected one input and one output, found "
                         f"{len(model.inputs)} and {len(model.outputs)}")
    input_feature, output_feature = model.inputs[0], model.outputs[0]
    results = []
    for image in np.asarray(image_nchw, dtype=np.float32):
        if input_feature.kind == "image":
            feed = np.round(np.clip(image, 0.0, 1.0) * 255.0)[None]
        else:
            feed = image[None]
        out = model.predict({input_feature.name: feed})[output_feature.name]
        if output_feature.kind == "image":
            out = out / 255.0
        results.append(np.asarray(out, dtype=np.float32)[0])
    return np.stack(results)
