"""The I/O of an exported file as the file states it: names, shapes, dtypes, layout, range.

edgesr's own metadata is read with ``edgesr.runtimes.read_metadata`` (and checked
against the file's shapes with ``info_from_metadata``); the tensors themselves come
from the format:

- ONNX: the graph's inputs (initializers excluded) and outputs (``onnx``);
- TFLite: ``Interpreter.get_input_details()/get_output_details()`` (``ai-edge-litert``),
  with the quantization parameters of 8-bit I/O;
- CoreML: the spec's feature descriptions (``Data/com.apple.CoreML/model.mlmodel``):
  a multiArray (shape, dtype, enumerated shapes) or an image (size, colour space).

No torch is imported.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgesr.errors import EdgeSRError



@dataclass(frozen=True)
class TensorFacts:
    name: str
    kind: str  # "tensor" or "image"
    # Dimensions as in the file; None for a free dimension. An image is (1, H, W, C) pixels.
    shape: tuple[int | None, ...]
    dtype: str  # float32, float16, uint8, int8, ... or "image" (8-bit RGB/BGR pixels)
    layout: str  # NCHW, NHWC or "image"
    color: str  # colour order of the 3 channels: RGB or BGR
    value_range: str  # in words, what one value means
    # 8-bit tensors: real value = scale * (q - zero_point); None for float tensors.
    quantization: tuple[float, int] | None = None
    # Other shapes the file accepts (CoreML EnumeratedShapes), as in ``shape``.
    alternatives: tuple[tuple[int, ...], ...] = ()
    shape_source: str = "file"  # "file", or how the shape was derived when the file has none

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shape"] = [d if d is not None else "dynamic" for d in self.shape]
        data["alternatives"] = [list(s) for s in self.alternatives]
        data["quantization"] = (None if self.quantization is None else
                                {"scale": self.quantization[0], "zero_point": self.quantization[1]})
        return data

    @property
    def spatial(self) -> tuple[int | None, int | None]:
        """(H, W) of the tensor or image."""
        if self.layout == "NCHW":
            return self.shape[2], self.shape[3]
        return self.shape[1], self.shape[2]


@dataclass(frozen=True)
class ArtifactFacts:
    path: str
    format: str  # onnx | tflite | coreml
    input: TensorFacts
    output: TensorFacts
    arch: str | None
    scale: int
    precision: str
    input_size: tuple[int, int] | None  # fixed LR input (H, W); None when any size works
    sha256: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    # Format details: ONNX opset/producer, CoreML spec version / deployment target.
    format_details: dict[str, Any] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return Path(self.path).name.rsplit(".", 1)[0]

    @property
    def image_io(self) -> bool:
        return self.input.kind == "image"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "format": self.format, "arch": self.arch, "scale": self.scale,
            "precision": self.precision,
            "input_size": list(self.input_size) if self.input_size else "dynamic",
            "sha256": self.sha256, "input": self.input.to_dict(), "output": self.output.to_dict(),
            "format_details": self.format_details,
        }


def read_facts(path: str | Path) -> ArtifactFacts:
    """Read the I/O facts of an .onnx, .tflite or .mlpackage file."""
    from edgesr.runtimes import format_of, read_metadata

    path = Path(path)
    if not path.exists():
        raise EdgeSRError(f"{path}: no such file")
    fmt, _ = format_of(path)
    readers = {"onnx": _onnx_io, "tflite": _tflite_io, "coreml": _coreml_io}
    if fmt not in readers:
        raise EdgeSRError(f"{path}: not an exported artifact (.onnx, .tflite or .mlpackage)")
    metadata = read_metadata(path)
    value_range = metadata.get("edgesr.value_range", "")
    tensors, details = readers[fmt](path, value_range)
    inputs, outputs = tensors
    if len(inputs) != 1 or len(outputs) != 1:
        raise EdgeSRError(f"{path}: {len(inputs)} inputs and {len(outputs)} outputs; an edgesr "
                          f"artifact has one image input and one image output")
    tensor_in, tensor_out = inputs[0], outputs[0]
    info = _checked_info(path, fmt, metadata, tensor_in, tensor_out)
    if tensor_out.shape_source != "file" and info.input_size is not None:
        # CoreML ML programs often leave the output shape unset: derive it, and say so.
        h, w = info.input_size
        s = info.scale
        shape = (1, 3, h * s, w * s) if tensor_out.layout == "NCHW" else (1, h * s, w * s, 3)
        tensor_out = TensorFacts(**{**asdict(tensor_out), "shape": shape,
                                    "shape_source": f"not in the file: input x{s} (edgesr.scale)"})
    return ArtifactFacts(
        path=str(path), format=fmt, input=tensor_in, output=tensor_out, arch=info.arch,
        scale=info.scale, precision=info.precision, input_size=info.input_size,
        sha256=info.sha256, metadata=dict(metadata), format_details=details,
    )


def _checked_info(path: Path, fmt: str, metadata: dict, tensor_in: TensorFacts, tensor_out: TensorFacts):
    """runtimes' ArtifactInfo (scale, arch, ...), cross-checked against the tensors read here."""
    from edgesr.runtimes.base import info_from_metadata

    def layout_shape(t: TensorFacts):
        return None if t.kind == "image" or t.shape_source != "file" else list(t.shape)

    in_shape, out_shape = layout_shape(tensor_in), layout_shape(tensor_out)
    if tensor_in.kind == "image":  # check_shape wants the tensor layout the metadata names
        h, w = tensor_in.spatial
        in_shape = [1, 3, h, w]
    info = info_from_metadata(path, fmt, metadata, in_shape, out_shape)
    if tensor_in.kind != "image" and tensor_in.layout != info.layout:
        raise EdgeSRError(f"{path}: metadata says {info.layout} but the file's input is "
                          f"{list(tensor_in.shape)} ({tensor_in.layout})")
    return info


def _layout_of(shape: tuple[int | None, ...], hint: str | None) -> str:
    if len(shape) != 4:
        return "?"
    if shape[1] == 3 and shape[3] != 3:
        return "NCHW"
    if shape[3] == 3 and shape[1] != 3:
        return "NHWC"
    return (hint or "NCHW").upper()


def _float_range(value_range: str, role: str) -> str:
    """Float tensors carry no range in the file: edgesr's metadata states it."""
    if "[0,1]" not in value_range:
        return value_range or "unknown (no edgesr metadata)"
    clamped = ", clamped by the graph" if role == "output" and "clamped" in value_range else ""
    return f"[0, 1] = pixel / 255{clamped}"


def _tensor(name: str, shape, dtype: str, layout_hint: str | None, value_range: str, role: str,
            quantization: tuple[float, int] | None = None) -> TensorFacts:
    dims = tuple(int(d) if isinstance(d, int) and d > 0 else None for d in shape)
    layout = _layout_of(dims, layout_hint)
    if quantization is not None:
        scale, zero = quantization
        words = (f"{dtype} q, real = {scale:.6g} x (q - {zero})"
                 + (" (= pixel value 0-255)" if abs(scale * 255 - 1) < 1e-6 and zero == 0 else ""))
    else:
        words = _float_range(value_range, role)
    return TensorFacts(name=name, kind="tensor", shape=dims, dtype=dtype, layout=layout,
                       color="RGB", value_range=words, quantization=quantization)


def _onnx_io(path: Path, value_range: str):
    from edgesr.runtimes.base import require

    onnx = require("onnx", "onnx", "reading an ONNX file")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:
        raise EdgeSRError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    initializers = {i.name for i in model.graph.initializer}
    layout = None

    def facts(value, role):
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        return _tensor(value.name, dims, dtype, layout, value_range, role)

    inputs = [facts(v, "input") for v in model.graph.input if v.name not in initializers]
    outputs = [facts(v, "output") for v in model.graph.output]
    details = {"opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                            default=None),
               "producer": f"{model.producer_name} {model.producer_version}".strip()}
    return (inputs, outputs), details


def _tflite_io(path: Path, value_range: str):
    from edgesr.runtimes.base import first_line, require

    lib = require("ai_edge_litert.interpreter", "ai-edge-litert", "reading a TFLite file")
    try:
        interpreter = lib.Interpreter(model_path=str(path))
    except Exception as exc:
        raise EdgeSRError(f"{path}: LiteRT cannot load this file ({first_line(exc)})") from None

    def facts(detail, role):
        shape = [int(d) for d in detail.get("shape_signature", detail["shape"])]
        dtype = detail["dtype"].__name__ if hasattr(detail["dtype"], "__name__") else str(detail["dtype"])
        scale, zero = detail.get("quantization", (0.0, 0))
        quant = (float(scale), int(zero)) if scale else None
        return _tensor(detail["name"], shape, dtype, None, value_range, role, quant)

    inputs = [facts(d, "input") for d in interpreter.get_input_details()]
    outputs = [facts(d, "output") for d in interpreter.get_output_details()]
    signatures = list(interpreter.get_signature_list())
    return (inputs, outputs), {"signatures": signatures}


# CoreML ArrayFeatureType.ArrayDataType values (coremltools/proto/FeatureTypes.proto).
_COREML_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32", 131080: "int8"}
_COREML_COLORS = {10: "GRAYSCALE", 20: "RGB", 30: "BGR", 40: "GRAYSCALE_FLOAT16"}


def _coreml_io(path: Path, value_range: str):
    from edgesr.runtimes.coreml_runner import read_spec

    spec = read_spec(path)

    def facts(feature, role):
        kind = feature.type.WhichOneof("Type")
        if kind == "imageType":
            image = feature.type.imageType
            color = _COREML_COLORS.get(image.colorSpace, str(image.colorSpace))
            sizes = tuple((1, int(s.height), int(s.width), 3)
                          for s in image.enumeratedSizes.sizes) if image.HasField("enumeratedSizes") else ()
            if image.height and image.width:
                shape = (1, int(image.height), int(image.width), 3)
                source = "file"
            elif sizes:
                shape, source = sizes[0], "file"
            else:
                shape, source = (1, None, None, 3), "not in the file"
            return TensorFacts(name=feature.name, kind="image", shape=shape, dtype="image",
                               layout="image", color=color,
                               value_range=("8-bit pixels 0-255 (the model scales them to [0, 1])"
                                            if role == "input" else "8-bit pixels 0-255"),
                               alternatives=tuple(s for s in sizes if s != shape), shape_source=source)
        if kind != "multiArrayType":
            raise EdgeSRError(f"{path}: feature {feature.name!r} is a {kind}, not an array or image")
        array = feature.type.multiArrayType
        dims = list(array.shape)
        alternatives = ()
        if array.HasField("enumeratedShapes"):
            alternatives = tuple(tuple(int(d) for d in s.shape) for s in array.enumeratedShapes.shapes)
        source = "file"
        if not dims:
            dims, source = [1, 3, None, None], "not in the file"
        dtype = _COREML_DTYPES.get(array.dataType, str(array.dataType))
        base = _tensor(feature.name, dims, dtype, "NCHW", value_range, role)
        return TensorFacts(**{**asdict(base), "alternatives": tuple(a for a in alternatives
                                                                    if tuple(a) != tuple(dims)),
                              "shape_source": source})

    inputs = [facts(f, "input") for f in spec.description.input]
    outputs = [facts(f, "output") for f in spec.description.output]
    details = {"specification_version": int(spec.specificationVersion),
               "model_type": spec.WhichOneof("Type")}
    return (inputs, outputs), details
