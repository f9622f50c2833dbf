"""CoreML (.mlpackage): MLModel.predict on macOS; elsewhere edgesr's reference
evaluation of the ML program (``edgesr.coreml_eval``), which checks the numerics of
the converted program but is not Apple's runtime (its speed says nothing of a phone's).
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from edgesr.errors import EdgeSRError
from edgesr.runtimes.base import Runner, first_line, info_from_metadata, reject_options, require

INPUT_NAME = "input"
OUTPUT_NAME = "output"
COMPUTE_UNITS = ("all", "cpu_only", "cpu_and_gpu", "cpu_and_ne")
SPEC_PATH = Path("Data/com.apple.CoreML/model.mlmodel")


def read_spec(path: str | Path):
    """The protobuf ``Model`` spec inside an .mlpackage; the one reader every stage uses."""
    path = Path(path)
    spec_file = path / SPEC_PATH
    if not spec_file.is_file():
        raise EdgeSRError(f"{path}: not an .mlpackage (no {SPEC_PATH} inside)")
    proto = require("coremltools.proto.Model_pb2", "coremltools", "reading a CoreML file")
    spec = proto.Model()
    try:
        spec.ParseFromString(spec_file.read_bytes())
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise EdgeSRError(f"{path}: corrupt CoreML spec ({first_line(exc)})") from None
    return spec


def read_metadata(path: str | Path) -> dict[str, str]:
    return dict(read_spec(path).description.metadata.userDefined)


def _shapes(spec) -> tuple[list | None, list | None]:
    shapes = []
    for feature in (spec.description.input[0], spec.description.output[0]):
        array = feature.type.multiArrayType
        dims = list(array.shape) if feature.type.WhichOneof("Type") == "multiArrayType" else []
        shapes.append(dims or None)
    return shapes[0], shapes[1]


class CoreMLRunner(Runner):
    runtime = "coreml"

    def __init__(self, path: str | Path, compute_units: str | None = None, **unused: Any):
        reject_options(unused, "coreml")
        path = Path(path)
        units = (compute_units or "all").lower()
        if units not in COMPUTE_UNITS:
            raise EdgeSRError(f"--compute-units {compute_units!r}: choose {', '.join(COMPUTE_UNITS)}")
        self.compute_units = units
        spec = read_spec(path)
        in_shape, out_shape = _shapes(spec)
        info = info_from_metadata(path, "coreml", dict(spec.description.metadata.userDefined),
                                  in_shape, out_shape)
        if "image in and out" in info.value_range:
            raise EdgeSRError(f"{path.name}: exported with --image-io (8-bit image I/O); the runner "
                              f"takes float tensors: export without --image-io to bench or evaluate it")
        if platform.system() == "Darwin":
            ct = require("coremltools", "coremltools", "running a CoreML file")
            self.engine = f"MLModel.predict (compute units {units})"
            try:
                self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, units.upper()))
            except Exception as exc:
                raise EdgeSRError(f"{path}: CoreML cannot load this file ({first_line(exc)})") from None
        else:
            from edgesr.coreml_eval import REFERENCE_RUNTIME, load

            self.engine = REFERENCE_RUNTIME
            self.timing_meaningful = False
            self.model = load(path)
        super().__init__(path, info)

    def run_native(self, batch: np.ndarray) -> np.ndarray:
        outputs = []
        for image in batch:
            try:
                result = self.model.predict({INPUT_NAME: image[None]})[OUTPUT_NAME]
            except Exception as exc:
                raise EdgeSRError(f"{self.path.name}: CoreML failed ({first_line(exc)})") from None
            outputs.append(np.asarray(result, np.float32)[0])
        return np.stack(outputs)

    def options(self) -> dict[str, Any]:
        return {"compute_units": self.compute_units, "engine": self.engine}
