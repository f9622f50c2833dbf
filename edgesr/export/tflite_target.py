"""TFLite (LiteRT): litert-torch conversion, fp16 weights, optional NHWC I/O, run with LiteRT."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from edgesr.errors import EdgeSRError
from edgesr.runtimes.litert_runner import METADATA_NAME, read_metadata, xnnpack_coverage
from edgesr.export.base import (
    QUANT_OPTIONS,
    ChannelsLast,
    ExportOptions,
    ParityUnavailable,
    Target,
    first_line,
    require,
)

# Name of the flatbuffer Metadata entry that holds edgesr's JSON.


class TFLiteTarget(Target):
    name = "tflite"
    suffix = ".tflite"
    options = frozenset({"nhwc", "int_io", "fused_ops"}) | QUANT_OPTIONS
    requires = (("litert_torch", "litert-torch"), ("ai_edge_litert", "ai-edge-litert"))
    runtime = "ai_edge_litert Interpreter (CPU, XNNPACK)"

    def example_input(self, options: ExportOptions) -> torch.Tensor:
        example = super().example_input(options)
        return example.permute(0, 2, 3, 1).contiguous() if options.nhwc else example

    def wrap(self, module: nn.Module, options: ExportOptions) -> nn.Module:
        from edgesr.models.contract import with_xnnpack_clamp

        module = with_xnnpack_clamp(module)
        return ChannelsLast(module).eval() if options.nhwc else module

    def convert(self, module: nn.Module, example: torch.Tensor, options: ExportOptions,
                destination: Path) -> None:
        litert_torch = require("litert_torch", "litert-torch", "exporting to TFLite")
        quant_config = None
        if options.precision == "fp16":
            # Weight-only float16 (the usual TFLite "fp16" model): weights stored as
            # float16, dequantised by the runtime; activations and I/O stay float32.
            from litert_torch.generative.quantize import quant_recipes

            quant_config = quant_recipes.full_fp16_recipe()
        try:
            edge_model = litert_torch.convert(module, (example,), quant_config=quant_config)
            edge_model.export(str(destination))
        except Exception as exc:  # converter errors come in many types; report one line
            raise EdgeSRError(f"TFLite conversion failed: {first_line(exc)}") from exc

    def notes(self, path: Path, options: ExportOptions) -> list[str]:
        """The ops XNNPACK leaves to LiteRT's own kernels, when there are any: each partition
        boundary is a hand-off (the GPU analyzer, the readiness judge, does not see them)."""
        coverage = xnnpack_coverage(path, threads=1)
        if coverage.partitions <= 1 and not coverage.outside:
            return []
        outside = ", ".join(f"{count} {op}" for op, count in coverage.outside.items())
        why = (" (--fused-ops: SRConvNet's runtime-weight depthwise convs, faster in LiteRT's CPU kernels "
               "than the constant-weight form in XNNPACK; export without --fused-ops for one partition)"
               if options.fused_ops else "")
        return [f"XNNPACK takes this graph in {coverage.partitions} partitions ({coverage.delegated} of "
                f"{coverage.nodes} nodes); LiteRT's own kernels run {outside}{why}"]

    def write_metadata(self, path: Path, metadata: Mapping[str, str]) -> None:
        """A flatbuffer ``Metadata`` entry named "edgesr" whose buffer holds JSON; the
        internal tensors get short names on the way (``_short_tensor_names``).

        litert-torch has no metadata API, so the model is re-packed with the schema's
        object API (what tflite-support's metadata writers do as well).
        """
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.tools import flatbuffer_utils

        model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
        _short_tensor_names(model)
        payload = json.dumps(dict(sorted(metadata.items())), sort_keys=True).encode()
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(payload, dtype=np.uint8)
        entries = [m for m in (model.metadata or []) if _name(m) != METADATA_NAME]
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata = entries + [entry]
        model.description = (f"edgesr {metadata.get('edgesr.arch', '')} "
                             f"x{metadata.get('edgesr.scale', '')}: {metadata.get('edgesr.value_range', '')}")
        path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))

    def read_metadata(self, path: Path) -> dict[str, str]:
        return read_metadata(path)

    def run(self, path: Path, image_nchw: np.ndarray, options: ExportOptions,
            device: str = "cpu") -> np.ndarray:
        if device != "cpu":
            raise ParityUnavailable("the LiteRT Python interpreter runs on CPU only")
        interpreter_lib = require("ai_edge_litert.interpreter", "ai-edge-litert", "checking a TFLite file")
        interpreter = interpreter_lib.Interpreter(model_path=str(path))
        data = image_nchw.transpose(0, 2, 3, 1) if options.nhwc else image_nchw
        (detail,) = interpreter.get_input_details()
        if tuple(detail["shape"]) != data.shape:
            interpreter.resize_tensor_input(detail["index"], list(data.shape))
        interpreter.allocate_tensors()
        data = np.ascontiguousarray(data, dtype=np.float32)
        if detail["dtype"] != np.float32:  # int8 graphs (edgesr.quantize): quantized I/O
            scale, zero = detail["quantization"]
            limits = np.iinfo(detail["dtype"])
            data = np.clip(np.round(data / scale) + zero, limits.min, limits.max).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], data)
        interpreter.invoke()
        sink = interpreter.get_output_details()[0]
        output = interpreter.get_tensor(sink["index"])
        if sink["dtype"] != np.float32:
            scale, zero = sink["quantization"]
            output = (output.astype(np.float32) - zero) * scale
        output = np.asarray(output, dtype=np.float32)
        return output.transpose(0, 3, 1, 2) if options.nhwc else output


def _short_tensor_names(model) -> None:
    """Names every tensor but the subgraphs' inputs and outputs by its index ("t123").

    litert-torch names a tensor after the module path that made it, several hundred bytes
    each: 4.5 of the 9.8 MB of SRConvNet x4's 256x256 file. No runtime reads them; an app
    sees only the inputs and outputs, which keep their names (as do the signatures)."""
    for graph in model.subgraphs:
        visible = set(graph.inputs) | set(graph.outputs)
        for index, tensor in enumerate(graph.tensors):
            if index not in visible:
                tensor.name = f"t{index}"


def _name(entry) -> str:
    name = entry.name
    return name.decode() if isinstance(name, bytes) else str(name)
