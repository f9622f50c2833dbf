"""TFLite int8 (PT2E through litert-torch) and w8, with optional 8-bit image I/O.

int8: the wrapped module is captured with torch.export, observed with litert-torch's
PT2E quantizer (symmetric per-channel int8 weights, histogram-calibrated int8
activations) on the calibration patches, converted with ``convert_pt2e`` and then
by ``litert_torch.convert`` (``PT2EInt8``): SRConvNet as a fully int8 graph with
float32 I/O (QUANTIZE / DEQUANTIZE at its ends); HiT-SR with its Conv/Linear ops in
int8 and the rest in float (``COMPUTE_ONLY_ARCHS``). The report's ``op_precision``
names the float islands. ``--keep-float`` and the ``--max-psnr-drop`` search work as
for ONNX (``edgesr.quantize.budget.KeepFloat``), on the same kinds of groups.

I/O: litert-torch's PT2E graph already takes and returns int8 tensors (scale ~1/255,
zero point -128 for [0,1] images: q = pixel - 128), recorded in the report's ``io``
section, so Android code can feed bytes. ``--int-io`` turns a float-I/O graph into
uint8 pixel I/O (scale 1/255, zero point 0) where the graph starts with QUANTIZE and
ends with DEQUANTIZE (the first becomes a uint8 -> int8 requantize, the last a
QUANTIZE int8 -> uint8, as TF's ``modify_model_interface`` does).

w8: litert-torch's weight-only int8 recipe (ai-edge-quantizer); float activations.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgesr.errors import EdgeSRError
from edgesr.export.base import first_line
from edgesr.quantize.pt2e import PT2EInt8

IO_SCALE = 1.0 / 255.0
EXACT_GATE = ("LiteRT with XNNPACK: its int8 kernels accumulate in int32 on every CPU (no saturating "
              "int16 pair sums), so the figure does not depend on the host")


def _write_int8(quantizer: PT2EInt8, destination: Path, keep_float=()) -> None:
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig

    try:
        edge = litert_torch.convert(quantizer.converted(keep_float), (quantizer.example,),
                                    quant_config=QuantConfig(pt2e_quantizer=quantizer.quantizer(keep_float)))
        edge.export(str(destination))
    except Exception as exc:
        raise EdgeSRError(f"TFLite int8 (PT2E) conversion failed: {first_line(exc)}") from exc


def _weight_only(module, example, destination: Path) -> None:
    import litert_torch
    from litert_torch.generative.quantize import quant_recipes

    try:
        edge = litert_torch.convert(module, (example,), quant_config=quant_recipes.full_weight_only_recipe())
        edge.export(str(destination))
    except Exception as exc:
        raise EdgeSRError(f"TFLite w8 conversion failed: {first_line(exc)}") from exc


def make_int_io(path: Path) -> None:
    """Float32 I/O -> uint8 pixel I/O (scale 1/255, zero point 0); see the module docstring."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    graph = model.subgraphs[0]
    codes = [c.builtinCode if c.builtinCode else c.deprecatedBuiltinCode for c in model.operatorCodes]
    ops = schema.BuiltinOperator

    def pixel_params():
        q = schema.QuantizationParametersT()
        q.scale, q.zeroPoint = [IO_SCALE], [0]
        return q

    (input_index,) = graph.inputs
    (output_index,) = graph.outputs
    first = [op for op in graph.operators if input_index in op.inputs]
    last = [op for op in graph.operators if output_index in op.outputs]
    if (len(first) != 1 or codes[first[0].opcodeIndex] != ops.QUANTIZE or len(last) != 1
            or codes[last[0].opcodeIndex] != ops.DEQUANTIZE):
        raise EdgeSRError("--int-io: the int8 graph does not start with QUANTIZE and end with "
                          "DEQUANTIZE; cannot give it 8-bit I/O")
    tensor = graph.tensors[input_index]
    tensor.type, tensor.quantization = schema.TensorType.UINT8, pixel_params()
    quantize_code = first[0].opcodeIndex
    # The output: DEQUANTIZE int8 -> float becomes QUANTIZE int8 -> uint8 pixels.
    last[0].opcodeIndex = quantize_code
    last[0].builtinOptionsType = schema.BuiltinOptions.QuantizeOptions
    last[0].builtinOptions = schema.QuantizeOptionsT()
    tensor = graph.tensors[output_index]
    tensor.type, tensor.quantization = schema.TensorType.UINT8, pixel_params()
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))


def op_precision(path: Path) -> dict:
    """The file's ops by the type they compute in: ``int8`` (int8/uint8 output), ``float``
    (the float islands: each is a hand-off from int8 kernels, and NNAPI runs it in float
    or on the CPU) and the QUANTIZE/DEQUANTIZE ``transitions`` between them."""
    from collections import Counter

    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    integer = {schema.TensorType.INT8, schema.TensorType.UINT8, schema.TensorType.INT16, schema.TensorType.INT32}
    counts = {"int8": Counter(), "float": Counter(), "transitions": Counter()}
    for graph in model.subgraphs:
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
            if name in ("QUANTIZE", "DEQUANTIZE"):
                kind = "transitions"
            else:
                kind = "int8" if graph.tensors[op.outputs[0]].type in integer else "float"
            counts[kind][name] += 1
    return {kind: dict(counter.most_common()) for kind, counter in counts.items()}


def _io_description(path: Path) -> dict:
    """dtype and quantization of the file's input and output (int8 graphs: feed q = x/scale + zp)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    described = {}
    for key, (detail,) in (("input", interpreter.get_input_details()), ("output", interpreter.get_output_details())):
        scale, zero = detail["quantization"]
        described[key] = {"dtype": np.dtype(detail["dtype"]).name, "scale": float(scale), "zero_point": int(zero)}
    return described


def interpreter_fn(path: Path, nhwc: bool | None = None, builtin: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """An NCHW float [0,1] batch function over a LiteRT interpreter (XNNPACK), int I/O included.

    ``builtin``: LiteRT's builtin kernels without the XNNPACK delegate (what runs where
    XNNPACK is not linked or a delegate falls back).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        kwargs = {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES} if builtin else {}
        interpreter = Interpreter(model_path=str(path), **kwargs)
        interpreter.allocate_tensors()
    except Exception as exc:
        raise EdgeSRError(f"{Path(path).name}: LiteRT cannot load this file ({first_line(exc)})") from None
    (source,), (sink,) = interpreter.get_input_details(), interpreter.get_output_details()
    if nhwc is None:
        nhwc = int(source["shape"][-1]) == 3 and int(source["shape"][1]) != 3

    def run(batch: np.ndarray) -> np.ndarray:
        data = batch.transpose(0, 2, 3, 1) if nhwc else batch
        if source["dtype"] != np.float32:
            scale, zero = source["quantization"]
            info = np.iinfo(source["dtype"])
            data = np.clip(np.round(data / scale) + zero, info.min, info.max).astype(source["dtype"])
        interpreter.set_tensor(source["index"], np.ascontiguousarray(data))
        interpreter.invoke()
        output = interpreter.get_tensor(sink["index"])
        if sink["dtype"] != np.float32:
            scale, zero = sink["quantization"]
            output = (output.astype(np.float32) - zero) * scale
        output = np.asarray(output, np.float32)
        return output.transpose(0, 3, 1, 2) if nhwc else output

    return run


def _builtin_kernels(path: Path, nhwc: bool) -> dict:
    """Whether LiteRT's own int8 kernels (no XNNPACK: NNAPI/GPU fallback, builds without
    it) load the file; PT2E's int8 LOGISTIC has an output scale they refuse (not 1/256)."""
    try:
        interpreter_fn(path, nhwc, builtin=True)
    except EdgeSRError as exc:
        return {"runs": False, "error": str(exc).split("(", 1)[-1].rstrip(")")}
    return {"runs": True}


def export_quantized(target, module, example, options, destination: Path, work: Path, calib, val,
                     float_quality, arch, stage) -> dict:
    from edgesr.quantize import float_options
    from edgesr.quantize.quality import latency_comparison, measure_psnr

    section: dict = {"runtime": "ai_edge_litert Interpreter (CPU, XNNPACK)"}
    if options.precision == "int8":
        section["gate"] = EXACT_GATE
    float_path = work / "float.tflite"
    tile = tuple(options.input_size)
    if options.precision == "int8":
        stage(f"PT2E int8 through litert-torch: calibration on {len(calib)} patches, then the int8 graph")
        quantizer = PT2EInt8(module, example, calib.patches, options.nhwc, arch)
        section["method"] = (f"PT2E (litert-torch PT2EQuantizer), {quantizer.describe(section)}: symmetric "
                             "per-channel int8 weights, int8 activations calibrated with histogram observers")
        kept = quantizer.choose(options, val, float_quality.psnr_y if float_quality else None, arch, section, stage)
        stage("converting the int8 graph with litert-torch")
        _write_int8(quantizer, destination, kept)
        if calib.to_dict() and options.calib_method != "minmax":
            section["calibration_method_note"] = ("PT2E uses litert-torch's histogram observers; "
                                                  f"--calib-method {options.calib_method} applies to onnx")
        section["io"] = _io_description(destination)
        if options.int_io and section["io"]["input"]["dtype"] == "float32":
            make_int_io(destination)
            section["io"] = _io_description(destination)
        section["op_precision"] = op_precision(destination)
    elif options.precision == "w8":
        _weight_only(module, example, destination)
        section["method"] = "litert-torch weight-only int8 recipe (per-channel); float activations"
    else:
        target.convert(module, example, options, destination)
    if options.precision != "fp32":
        stage("converting the float graph for the latency comparison")
        target.convert(module, example, float_options(options), float_path)
    else:
        float_path = destination
    quality = measure_psnr(interpreter_fn(destination, options.nhwc), val, tile, arch) if val is not None else None
    section["quantized"] = quality.to_dict() if quality else None
    if options.precision == "int8":
        section["builtin_kernels"] = _builtin_kernels(destination, options.nhwc)
    shape = (1, 3, *tile)
    stage("latency (LiteRT CPU)")
    section["latency_ms"] = latency_comparison(interpreter_fn(float_path, options.nhwc),
                                               interpreter_fn(destination, options.nhwc), shape, options.precision)
    section["size_bytes"] = {"fp32": float_path.stat().st_size, options.precision: destination.stat().st_size}
    return section
