"""ONNX: torch's dynamo exporter (onnxscript), onnxsim, optional fp16, run with onnxruntime."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from edgesr.errors import EdgeSRError
from edgesr.runtimes.onnxruntime_runner import read_metadata
from edgesr.export.base import (
    QUANT_OPTIONS,
    ExportOptions,
    ParityUnavailable,
    Target,
    first_line,
    require,
)

OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "output"
# Upper bound of the free H/W dimensions of a --dynamic graph (torch.export needs one).
MAX_DYNAMIC_SIDE = 8192
MAX_DYNAMIC_BATCH = 1024
# protobuf cannot hold more than 2 GiB; weights must stay inside the file.
PROTOBUF_LIMIT = 2**31 - 1
# onnxscript's (0.7) rewrite rules left out of the exporter's optimisation: SlicesSplit
# matches its two-output pattern by listing every node of the graph for each Slice, which
# is quadratic in the graph's size (HiT-SRF x4 at 128x128: 70 % of the export's time).
QUADRATIC_REWRITE_RULES = frozenset({"SlicesSplit"})


class OnnxTarget(Target):
    name = "onnx"
    suffix = ".onnx"
    options = frozenset({"dynamic", "fused_ops", "reduce_range"}) | QUANT_OPTIONS
    requires = (("onnx", "onnx"), ("onnxscript", "onnxscript"), ("onnxruntime", "onnxruntime"))
    runtime = "onnxruntime CPUExecutionProvider"

    def convert(self, module: nn.Module, example: torch.Tensor, options: ExportOptions,
                destination: Path) -> None:
        onnx = require("onnx", "onnx", "exporting to ONNX")
        dynamic_shapes = None
        if options.dynamic:
            # Dim.DYNAMIC, not named Dims: the exporter may refine a range with guards it
            # cannot prove (HiT-SR's window counts: "(H+7)//8 != 1"), which named Dims turn
            # into errors; it still fails if a dimension is specialised to a constant.
            side = dict(min=max(options.min_side, 1), max=MAX_DYNAMIC_SIDE)
            dynamic = torch.export.Dim.DYNAMIC
            dynamic_shapes = ({0: dynamic(min=1, max=MAX_DYNAMIC_BATCH), 2: dynamic(**side), 3: dynamic(**side)},)
        try:
            with _without_rewrite_rules(QUADRATIC_REWRITE_RULES):
                program = torch.onnx.export(
                    module, (example,), dynamo=True, opset_version=OPSET,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_shapes=dynamic_shapes, optimize=True, verbose=False,
                )
        except Exception as exc:  # the exporter raises many types; report one line
            raise EdgeSRError(f"ONNX export failed: {first_line(exc)}") from exc
        model = program.model_proto
        if options.dynamic:
            _name_free_dims(model, ("batch", None, "height", "width"))
        model = _simplify(model)
        if options.precision == "fp16":
            model = _to_fp16(model)
        if model.ByteSize() > PROTOBUF_LIMIT:
            raise EdgeSRError("the ONNX graph with its weights exceeds 2 GB; external data is not supported")
        # Nothing time- or path-dependent goes in: the same export gives the same bytes.
        model.producer_name = "edgesr"
        from edgesr import __version__

        model.producer_version = __version__
        onnx.save_model(model, str(destination))

    def write_metadata(self, path: Path, metadata: Mapping[str, str]) -> None:
        import onnx

        model = onnx.load_model(str(path))
        kept = [p for p in model.metadata_props if p.key not in metadata]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        for key in sorted(metadata):
            model.metadata_props.add(key=key, value=str(metadata[key]))
        onnx.save_model(model, str(path))

    def read_metadata(self, path: Path) -> dict[str, str]:
        return read_metadata(path)

    def runtime_for(self, device: str) -> str:
        return f"onnxruntime {_providers(device)[0]}"

    def run(self, path: Path, image_nchw: np.ndarray, options: ExportOptions,
            device: str = "cpu") -> np.ndarray:
        ort = require("onnxruntime", "onnxruntime", "checking an ONNX file")
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        session = ort.InferenceSession(str(path), session_options, providers=_providers(device))
        (output,) = session.run(None, {session.get_inputs()[0].name: image_nchw.astype(np.float32)})
        return np.asarray(output, dtype=np.float32)


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ParityUnavailable(
                "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@contextlib.contextmanager
def _without_rewrite_rules(names: frozenset[str]) -> Iterator[None]:
    """The exporter's optimizer runs onnxscript's default rewrite rules, read from the
    rewriter module at each call: without the ones named here while the block runs (as
    is, where onnxscript has no such list)."""
    try:
        from onnxscript import rewriter

        rules = rewriter._DEFAULT_REWRITE_RULES
    except (ImportError, AttributeError):
        yield
        return
    rewriter._DEFAULT_REWRITE_RULES = tuple(rule for rule in rules if getattr(rule, "name", None) not in names)
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = rules


def _name_free_dims(model, names) -> None:
    """Give the input's symbolic dims readable names (the exporter writes s0, s73, ...),
    in every shape of the graph: outputs read e.g. ``2*height``."""
    import re

    (graph_input,) = model.graph.input
    renames = {dim.dim_param: name for dim, name in zip(graph_input.type.tensor_type.shape.dim, names)
               if name and dim.dim_param}
    if not renames:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, renames)) + r")\b")
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda match: renames[match.group(1)], dim.dim_param)


def _simplify(model):
    """onnxsim when installed and when it succeeds; the unsimplified graph otherwise."""
    try:
        import onnxsim
    except ImportError:
        return model
    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception:  # onnxsim gives up on some graphs; the exporter's graph is valid as is
        return model
    if not ok:
        return model
    # onnxsim records its run (including timings) in metadata_props: that would make two
    # identical exports differ, so only edgesr's own metadata is kept.
    kept = [p for p in simplified.metadata_props if not p.key.startswith("onnxsim.")]
    del simplified.metadata_props[:]
    simplified.metadata_props.extend(kept)
    return simplified


def _to_fp16(model):
    """Weights and activations in float16, graph inputs/outputs kept float32."""
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        try:
            from onnxconverter_common.float16 import convert_float_to_float16
        except ImportError:
            raise EdgeSRError(
                "fp16 ONNX needs onnxruntime's float16 tools or onnxconverter-common; "
                "install it with: pip install onnxconverter-common"
            ) from None
    return convert_float_to_float16(model, keep_io_types=True)
