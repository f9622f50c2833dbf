"""Read an ``.mlpackage`` back into the pymil Program coremltools built.

The package holds ``Data/com.apple.CoreML/model.mlmodel`` (a protobuf ``Model`` whose
``mlProgram`` is the MIL program) and, for the weights, ``weights/weight.bin``
(constants referenced by blob offset). coremltools' own milproto loader turns both
back into a pymil ``Program``: op types, input bindings, typed vars and const
values (blob weights included). Nothing here reimplements the format.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesr.errors import EdgeSRError
from edgesr.runtimes.coreml_runner import read_spec

WEIGHTS_DIR = Path("Data/com.apple.CoreML/weights")


@dataclass(frozen=True)
class Feature:
    """One model input or output as the spec describes it."""

    name: str
    kind: str  # "tensor" | "image"
    # For images: "RGB", "BGR" or "GRAYSCALE"; the program's tensor holds pixel values 0..255.
    color_layout: str | None = None


@dataclass
class LoadedModel:
    program: Any  # coremltools.converters.mil.mil.Program
    function_name: str
    inputs: list[Feature] = field(default_factory=list)
    outputs: list[Feature] = field(default_factory=list)
    specification_version: int = 0
    path: Path | None = None


def _features(descriptions) -> list[Feature]:
    from coremltools.proto import FeatureTypes_pb2

    features = []
    for feature in descriptions:
        kind = feature.type.WhichOneof("Type")
        if kind == "imageType":
            layout = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(feature.type.imageType.colorSpace)
            features.append(Feature(feature.name, "image", layout))
        elif kind == "multiArrayType":
            features.append(Feature(feature.name, "tensor"))
        else:
            raise EdgeSRError(f"feature {feature.name!r} has type {kind}; the reference evaluator "
                              f"takes multi-array and image features only")
    return features


def load_mlpackage(path: str | Path, function_name: str | None = None) -> LoadedModel:
    """The MIL program of an ML Program ``.mlpackage``, with its I/O description."""
    from coremltools.converters.mil.frontend.milproto.load import load as load_mil

    path = Path(path)
    spec = read_spec(path)
    if spec.WhichOneof("Type") != "mlProgram":
        raise EdgeSRError(f"{path}: a {spec.WhichOneof('Type')} model, not an ML Program; the "
                          f"reference evaluator runs ML Programs (convert_to='mlprogram') only")
    try:
        program = load_mil(spec, spec.specificationVersion, str(path / WEIGHTS_DIR))
    except Exception as exc:  # noqa: BLE001
        raise EdgeSRError(f"{path}: coremltools cannot load the ML program back "
                          f"({type(exc).__name__}: {exc})") from exc
    name = function_name or spec.description.defaultFunctionName or "main"
    if name not in program.functions:
        raise EdgeSRError(f"{path}: no function {name!r} in the program "
                          f"(it has {', '.join(program.functions)})")
    return LoadedModel(program, name, _features(spec.description.input), _features(spec.description.output),
                       spec.specificationVersion, path)
