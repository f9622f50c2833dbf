"""onnxruntime: execution providers by short name, thread count, the GPU providers' settings,
and which provider ran each node. Needs only onnxruntime."""
from __future__ import annotations

import functools
import json
import tempfile
from collections import Counter
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
# Metadata of files that compute in float32 only (edgesr.export.base.ExportOptions.float32_only).
FLOAT32_ONLY_KEY = "edgesr.float32_only"
_HINTS = {
    "CUDAExecutionProvider": "install onnxruntime-gpu on a machine with an NVIDIA GPU (on a Jetson: "
                             "NVIDIA's onnxruntime-gpu wheel for its JetPack)",
    "TensorrtExecutionProvider": "install onnxruntime-gpu and TensorRT on a machine with an NVIDIA GPU (on a "
                                 "Jetson: NVIDIA's onnxruntime-gpu wheel for its JetPack, which has TensorRT)",
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


def provider_options_for(providers: Sequence[str], threads: int | None = None, trt_fp16: bool = False,
                         trt_engine_cache: str | Path | None = None, trt_workspace_gb: float | None = None,
                         device_id: int | None = None) -> list[dict[str, str]]:
    """onnxruntime's per-provider option dicts for ``providers`` (resolved names, in order).

    The TensorRT settings are what a Jetson user sets: fp16 kernels, a folder that keeps the
    built engines (and TensorRT's timing cache) so that the minutes of engine building happen
    once, the builder's workspace; ``device_id`` picks the GPU of CUDA and TensorRT.
    """
    trt, cuda = "TensorrtExecutionProvider" in providers, "CUDAExecutionProvider" in providers
    if (trt_fp16 or trt_engine_cache is not None or trt_workspace_gb is not None) and not trt:
        raise EdgeSRError("--trt-fp16, --trt-engine-cache and --trt-workspace-gb are TensorRT settings: "
                          "add --provider tensorrt")
    if device_id is not None and not (trt or cuda):
        raise EdgeSRError("--device-id picks the GPU of --provider cuda or tensorrt; neither is requested")
    if device_id is not None and device_id < 0:
        raise EdgeSRError(f"--device-id {device_id}: a GPU index is 0 or more")
    if trt_workspace_gb is not None and not trt_workspace_gb > 0:
        raise EdgeSRError(f"--trt-workspace-gb {trt_workspace_gb}: give a size above 0 (GiB)")
    gpu = {} if device_id is None else {"device_id": str(device_id)}
    tensorrt = dict(gpu)
    if trt_fp16:
        tensorrt["trt_fp16_enable"] = "True"
    if trt_workspace_gb is not None:
        tensorrt["trt_max_workspace_size"] = str(int(trt_workspace_gb * 2**30))
    if trt_engine_cache is not None:
        cache = Path(trt_engine_cache)
        if cache.exists() and not cache.is_dir():
            raise EdgeSRError(f"--trt-engine-cache {cache}: exists and is not a folder")
        cache.mkdir(parents=True, exist_ok=True)
        tensorrt.update({"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache),
                         "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache)})
    by_provider = {"TensorrtExecutionProvider": tensorrt, "CUDAExecutionProvider": gpu,
                   "XnnpackExecutionProvider": {"intra_op_num_threads": str(threads)} if threads else {}}
    return [by_provider.get(name, {}) for name in providers]


@functools.cache
def register_exact_size_arena(ort: Any) -> None:
    """Registers, once per process, a CPU arena that grows by the size asked for instead of
    the next power of two (sessions opt in with ``session.use_env_allocators``): SRConvNet x4
    at 256x256 asks for 256 MB blocks in its upsampler, which the default growth turned into
    a 1.05 GB peak during one run; 0.86 GB with exact growth (HiTNet 0.21 -> 0.27 GB), the
    same speed or faster interleaved (SRConvNet 1558 / 1485 ms, HiTNet 3133 / 2933 ms)."""
    ort.create_and_register_allocator(
        ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT),
        ort.OrtArenaCfg({"arena_extend_strategy": 1}))  # 1: kSameAsRequested


def session_options(ort: Any, threads: int | None = None) -> Any:
    """The SessionOptions of edgesr's runner (and of benchmarks that time bare graphs with it).

    onnxruntime's memory pattern pre-plans one block for the graph's intermediates: peak
    RSS of one benchmark, with / without it, HiTNet x4 at 256x256 3.9 / 2.0 GB, SRConvNet
    x4 2.6 / 1.5 GB; the same speed within 1 % (interleaved runs, 2 threads). Its buffer
    reuse plan then still held HiTNet's freed intermediates through the run (the RSS climbed
    node by node while the live tensors in its own execution order peak at 140 MB): with
    reuse off, the arena recycles them; peak during one run at 256x256 1.82 GB -> 0.21 GB,
    at 128x128 0.49 -> 0.06 GB, 5-12 % faster interleaved; SRConvNet the same either way.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_mem_pattern = False
    options.enable_mem_reuse = False
    register_exact_size_arena(ort)
    options.add_session_config_entry("session.use_env_allocators", "1")
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return options


def placement_from_profile(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per provider, from the last profiled run: the nodes it ran, their op types and their time (ms).

    A TensorRT partition is one node (``TRTKernel_graph_...``) that runs a whole subgraph, so
    the count of TensorRT nodes is the count of engines; every node left on the CPU provider
    is a hand-off from the GPU and back.
    """
    runs_ended = [i for i, event in enumerate(events) if event.get("name") == "model_run"]
    if len(runs_ended) > 1:  # onnxruntime writes a run's nodes before its model_run event
        events = events[runs_ended[-2] + 1:]
    nodes: dict[str, tuple[str, str]] = {}
    op_us: dict[str, Counter[str]] = {}
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") != "Node" or "provider" not in args:
            continue
        provider, op = args["provider"], args.get("op_name", "?")
        nodes[str(event.get("name", "")).removesuffix("_kernel_time")] = (provider, op)
        op_us.setdefault(provider, Counter())[op] += float(event.get("dur", 0))
    op_counts: dict[str, Counter[str]] = {}
    for provider, op in nodes.values():
        op_counts.setdefault(provider, Counter())[op] += 1
    return {provider: {"nodes": sum(ops.values()), "ms": sum(op_us[provider].values()) / 1e3,
                       "ops": dict(ops.most_common()),
                       "op_ms": {op: us / 1e3 for op, us in op_us[provider].most_common()}}
            for provider, ops in op_counts.items()}


class OnnxRuntimeRunner(Runner):
    runtime = "onnxruntime"

    def __init__(self, path: str | Path, providers: Sequence[str] | str | None = None,
                 threads: int | None = None, trt_fp16: bool = False, trt_engine_cache: str | None = None,
                 trt_workspace_gb: float | None = None, device_id: int | None = None,
                 profiled_runs: int = 0, **unused: Any):
        reject_options(unused, "onnxruntime")
        ort = require("onnxruntime", "onnxruntime", "running an ONNX file")
        path = Path(path)
        self.providers = resolve_providers(providers)
        self.threads = threads
        if trt_fp16:
            refuse_float16_for_float32_only(path, read_metadata(path))
        provider_options = provider_options_for(self.providers, threads, trt_fp16, trt_engine_cache,
                                                trt_workspace_gb, device_id)
        self.gpu_settings = {k: v for k, v in {"trt_fp16": trt_fp16 or None, "trt_engine_cache": trt_engine_cache,
                                               "trt_workspace_gb": trt_workspace_gb, "device_id": device_id}.items()
                             if v is not None}
        options = session_options(ort, threads)
        self._profile_dir = None
        self.placement: dict[str, dict[str, Any]] | None = None
        self._runs_to_profile = profiled_runs
        if profiled_runs:
            self._profile_dir = tempfile.TemporaryDirectory(prefix="edgesr-ort-profile-")
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(self._profile_dir.name) / "run")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=self.providers,
                                                provider_options=provider_options)
        except Exception as exc:  # onnxruntime raises its own types for bad files
            raise EdgeSRError(f"{path}: onnxruntime cannot load this file ({first_line(exc)})") from None
        # onnxruntime's Python layer retries on the remaining providers when one fails to start
        # (e.g. TensorRT whose libraries are missing): a request that did not hold is an error.
        started = set(self.session.get_providers())
        missing = [name for name in self.providers if name not in started]
        if missing:
            raise EdgeSRError(f"onnxruntime could not start {', '.join(missing)} for {path.name} (it fell back to "
                              f"{', '.join(self.session.get_providers())}); check the GPU libraries it needs "
                              f"(CUDA, cuDNN, TensorRT) with onnxruntime's own log")
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
        if self._profile_dir is not None:
            self._runs_to_profile -= 1
            if not self._runs_to_profile:
                self._end_profiling()
        return np.asarray(output, dtype=np.float32)

    def _end_profiling(self) -> None:
        """Reads the last profiled run into ``placement``; later runs are not profiled."""
        trace = Path(self.session.end_profiling())
        try:
            self.placement = placement_from_profile(json.loads(trace.read_text()))
        finally:
            self._profile_dir.cleanup()
            self._profile_dir = None

    def options(self) -> dict[str, Any]:
        return {"providers": list(self.session.get_providers()), "threads": self.threads, **self.gpu_settings}


def refuse_float16_for_float32_only(path: Path, metadata: dict[str, str]) -> None:
    """--trt-fp16 on a file written for float32 only (``edgesr export --fused-ops`` leaves
    out HiT-SR's range scaling, whose values then reach ~1e12, past float16's 65504)."""
    if metadata.get(FLOAT32_ONLY_KEY) == "true":
        raise EdgeSRError(f"{path.name} computes in float32 only (exported with --fused-ops, without the "
                          f"float16 range scaling): drop --trt-fp16, or export again without --fused-ops")


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

