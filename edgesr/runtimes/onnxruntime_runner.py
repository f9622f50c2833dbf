"""onnxruntime: execution providers by short name, thread count. Needs only onnxruntime."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgesr.errors import EdgeSRError
from edgesr.runtimes.base import Runner, first_line, info_from_metadata, reject_options, require

# Short names users type -> onnxruntime provider names.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
}
_HINTS = {
    "CUDAExecutionProvider": "install onnxruntime-gpu on a machine with an NVIDIA GPU",
    "TensorrtExecutionProvider": "install onnxruntime-gpu with TensorRT on a machine with an NVIDIA GPU",
    "CoreMLExecutionProvider": "the CoreML provider exists in onnxruntime builds for macOS/iOS",
    "XnnpackExecutionProvider": "the XNNPACK provider exists in onnxruntime builds for Android/ARM "
                                "(e.g. onnxruntime-android) or a source build with --use_xnnpack",
}


def provider_name(name: str) -> str:
    key = name.strip()
    if key.lower() in PROVIDERS:
        return PROVIDERS[key.lower()]
    if key.lower().removesuffix("executionprovider") in PROVIDERS:
        return PROVIDERS[key.lower().removesuffix("executionprovider")]
    known = {v.lower(): v for v in PROVIDERS.values()}
    if key.lower() in known:
        return known[key.lower()]
    raise EdgeSRError(f"--provider {name!r}: unknown; choose from {', '.join(PROVIDERS)}")


def available_providers() -> list[str]:
    ort = require("onnxruntime", "onnxruntime", "running an ONNX file")
    return list(ort.get_available_providers())


def resolve_providers(requested: Sequence[str] | str | None) -> list[str]:
    """Provider names in order of preference, CPU appended as the fallback for unsupported ops."""
    if isinstance(requested, str):
        requested = [p for p in requested.split(",") if p.strip()]
    names = [provider_name(p) for p in (requested or ["cpu"])]
    available = available_providers()
    for name in names:
        if name not in available:
            short = [k for k, v in PROVIDERS.items() if v in available] or available
            hint = _HINTS.get(name, "install an onnxruntime build that has it")
            raise EdgeSRError(f"onnxruntime here has no {name} (available: {', '.join(short)}); {hint}")
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
    return names


class OnnxRuntimeRunner(Runner):
    runtime = "onnxruntime"

    def __init__(self, path: str | Path, providers: Sequence[str] | str | None = None,
                 threads: int | None = None, **unused: Any):
        reject_options(unused, "onnxruntime")
        ort = require("onnxruntime", "onnxruntime", "running an ONNX file")
        path = Path(path)
        self.providers = resolve_providers(providers)
        self.threads = threads
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        provider_options = [({"intra_op_num_threads": int(threads)} if threads and p == "XnnpackExecutionProvider"
                             else {}) for p in self.providers]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=self.providers,
                                                provider_options=provider_options)
        except Exception as exc:  # onnxruntime raises its own types for bad files
            raise EdgeSRError(f"{path}: onnxruntime cannot load this file ({first_line(exc)})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise EdgeSRError(f"{path}: expected one image input, found {len(inputs)} inputs")
        self.input_name = inputs[0].name
        metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        precision = "fp16" if "float16" in inputs[0].type else None
        info = info_from_metadata(path, "onnx", metadata, inputs[0].shape, outputs[0].shape, precision)
        super().__init__(path, info)

    def run_native(self, batch: np.ndarray) -> np.ndarray:
        try:
            (output, *_) = self.session.run(None, {self.input_name: batch})
        except Exception as exc:
            raise EdgeSRError(f"{self.path.name}: onnxruntime failed on input {list(batch.shape)} "
                              f"({first_line(exc)})") from None
        return np.asarray(output, dtype=np.float32)

    def options(self) -> dict[str, Any]:
        return {"providers": list(self.session.get_providers()), "threads": self.threads}


def read_metadata(path: str | Path) -> dict[str, str]:
    """metadata_props of an ONNX file: with the onnx package when present, else onnxruntime."""
    try:
        import onnx
    except ImportError:
        runner = OnnxRuntimeRunner(path)
        return dict(runner.info.metadata)
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:
        raise EdgeSRError(f"{path}: not a readable ONNX file ({first_line(exc)})") from None
    return {p.key: p.value for p in model.metadata_props}

