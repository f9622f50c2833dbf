"""LiteRT (ai-edge-litert, formerly TFLite): XNNPACK or plain CPU kernels, threads, GPU delegate.

Needs only ai-edge-litert (and the ``flatbuffers`` package it depends on).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesr.errors import EdgeSRError
from edgesr.runtimes.base import Runner, first_line, info_from_metadata, reject_options, require

# Name of the flatbuffer Metadata entry that holds edgesr's JSON (written by export).
METADATA_NAME = "edgesr"
DELEGATES = ("xnnpack", "none", "gpu")
# Where the GPU delegate lives on the platforms that have one (Android builds ship it).
GPU_DELEGATE_LIBRARIES = ("libtensorflowlite_gpu_delegate.so", "libLiteRtGpuAccelerator.so")


class LiteRTRunner(Runner):
    runtime = "litert"

    def __init__(self, path: str | Path, threads: int | None = None, delegate: str | None = None,
                 **unused: Any):
        reject_options(unused, "litert")
        lib = require("ai_edge_litert.interpreter", "ai-edge-litert", "running a TFLite file")
        path = Path(path)
        self.delegate = (delegate or "xnnpack").lower()
        if self.delegate not in DELEGATES:
            raise EdgeSRError(f"--delegate {delegate!r}: choose {', '.join(DELEGATES)}")
        self.threads = threads
        metadata = read_metadata(path)
        kwargs: dict[str, Any] = {"num_threads": int(threads) if threads else None}
        if self.delegate == "none":
            kwargs["experimental_op_resolver_type"] = lib.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        elif self.delegate == "gpu":
            kwargs["experimental_delegates"] = [_gpu_delegate(lib)]
        try:
            self.interpreter = lib.Interpreter(model_path=str(path), **kwargs)
            self.interpreter.allocate_tensors()
        except Exception as exc:
            raise EdgeSRError(f"{path}: LiteRT cannot load this file ({first_line(exc)})") from None
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1:
            raise EdgeSRError(f"{path}: expected one image input, found {len(inputs)}")
        self._input, self._output = inputs[0], outputs[0]
        if self._input["dtype"] != np.float32:
            raise EdgeSRError(f"{path}: input is {np.dtype(self._input['dtype']).name}; edgesr artifacts "
                              f"take float32 (integer-quantised I/O is not supported)")
        in_shape = [int(d) for d in self._input.get("shape_signature", self._input["shape"])]
        out_shape = [int(d) for d in self._output.get("shape_signature", self._output["shape"])]
        info = info_from_metadata(path, "tflite", metadata, in_shape, out_shape)
        super().__init__(path, info)
        self._allocated = tuple(int(d) for d in self._input["shape"])

    def run_native(self, batch: np.ndarray) -> np.ndarray:
        interpreter = self.interpreter
        try:
            if tuple(batch.shape) != self._allocated:
                interpreter.resize_tensor_input(self._input["index"], list(batch.shape))
                interpreter.allocate_tensors()
                self._allocated = tuple(batch.shape)
            interpreter.set_tensor(self._input["index"], batch)
            interpreter.invoke()
            return np.array(interpreter.get_tensor(self._output["index"]), dtype=np.float32)
        except Exception as exc:
            raise EdgeSRError(f"{self.path.name}: LiteRT failed on input {list(batch.shape)} "
                              f"({first_line(exc)})") from None

    def options(self) -> dict[str, Any]:
        return {"delegate": self.delegate, "threads": self.threads}


@dataclass(frozen=True)
class XnnpackCoverage:
    """How XNNPACK took a TFLite graph: every partition boundary is a hand-off to TFLite's
    own kernels and back."""
    partitions: int
    delegated: int  # nodes inside the partitions
    nodes: int  # nodes of the graph
    outside: dict[str, int] = field(default_factory=dict)  # op -> nodes left to TFLite's kernels


def xnnpack_coverage(path: str | Path, threads: int | None = None) -> XnnpackCoverage:
    """XNNPACK's partitions of the graph in ``path``, read after ``allocate_tensors``.

    LiteRT lists the original nodes and then one DELEGATE node per partition; a
    partition's nodes are those between its input and output tensors.
    """
    lib = require("ai_edge_litert.interpreter", "ai-edge-litert", "reading XNNPACK's partitions")
    interpreter = lib.Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()  # noqa: SLF001 - LiteRT's only op-level view
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    nodes = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {int(t): i for i, op in enumerate(nodes) for t in op["outputs"]}
    taken: set[int] = set()
    for delegate in delegates:
        boundary = {int(t) for t in delegate["inputs"]}
        stack = [int(t) for t in delegate["outputs"]]
        while stack:
            tensor = stack.pop()
            node = producer.get(tensor)
            if tensor in boundary or node is None or node in taken:
                continue
            taken.add(node)
            stack.extend(int(t) for t in nodes[node]["inputs"] if t >= 0)
    outside = Counter(op["op_name"] for i, op in enumerate(nodes) if i not in taken)
    return XnnpackCoverage(len(delegates), len(taken), len(nodes), dict(outside.most_common()))


def _gpu_delegate(lib):
    import ctypes

    reasons = []
    for library in GPU_DELEGATE_LIBRARIES:
        try:
            ctypes.CDLL(library)  # probe first: a failed load_delegate warns from __del__
            return lib.load_delegate(library)
        except (OSError, ValueError, RuntimeError) as exc:
            reasons.append(first_line(exc))
    raise EdgeSRError("the LiteRT GPU delegate is not available here (no "
                      f"{' or '.join(GPU_DELEGATE_LIBRARIES)}); it ships with Android builds. "
                      "Use --delegate xnnpack")


def read_metadata(path: str | Path) -> dict[str, str]:
    """edgesr's JSON metadata entry of a .tflite flatbuffer ({} when there is none).

    Read with the flatbuffer schema shipped in ai-edge-litert, without unpacking the
    weights (fast for large models) and without torch or tensorflow.
    """
    path = Path(path)
    schema = require("ai_edge_litert.schema_py_generated", "ai-edge-litert", "reading a TFLite file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EdgeSRError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise EdgeSRError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        model = schema.Model.GetRootAsModel(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            name = entry.Name()
            name = name.decode() if isinstance(name, bytes) else str(name)
            if name != METADATA_NAME:
                continue
            buffer = model.Buffers(entry.Buffer())
            if buffer.Offset() > 1:  # large models keep buffers after the flatbuffer
                payload = data[buffer.Offset():buffer.Offset() + buffer.Size()]
            else:
                payload = buffer.DataAsNumpy().tobytes()
            return {str(k): str(v) for k, v in json.loads(payload.decode()).items()}
    except (ValueError, IndexError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
        raise EdgeSRError(f"{path}: corrupt TFLite file or metadata ({first_line(exc)})") from None
    return {}
