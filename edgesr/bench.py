"""``edgesr bench MODEL --runtime R``: latency, throughput, peak RSS and GFLOP/s of one artifact.

Imports numpy and the runtime only (no torch for .onnx/.tflite), so it runs as is on a
phone or a Jetson with the runtime's wheel. The measurement runs in a child process
(``python -m edgesr.bench``) so that the peak RSS is the benchmark's own, not the
caller's; ``isolate=False`` measures in-process.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgesr.errors import EdgeSRError, stop_if_interrupted

BENCH_SCHEMA_VERSION = 1
DEFAULT_INPUT_SIZE = (256, 256)
PERCENTILES = (50, 90, 99)


def percentile_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """min/p50/p90/p99/mean in milliseconds (p from the sorted samples, linear interpolation)."""
    values = np.asarray(latencies_s, dtype=np.float64) * 1e3
    summary = {"min": float(values.min())}
    for q in PERCENTILES:
        summary[f"p{q}"] = float(np.percentile(values, q))
    summary["mean"] = float(values.mean())
    summary["max"] = float(values.max())
    return summary


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process so far (MB), where the OS tells it.

    Linux's VmHWM first: getrusage's maxrss survives fork+exec, so a benchmark child
    started from a big parent (one that imported torch) would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


def bench_size(info, input_size: tuple[int, int] | None) -> tuple[int, int]:
    if info.input_size is not None:
        if input_size is not None and tuple(input_size) != tuple(info.input_size):
            raise EdgeSRError(f"--input-size {input_size[0]}x{input_size[1]}: this file takes only "
                              f"{info.input_size[0]}x{info.input_size[1]}")
        return tuple(info.input_size)  # type: ignore[return-value]
    return tuple(input_size or DEFAULT_INPUT_SIZE)  # type: ignore[return-value]


def time_runner(runner, height: int, width: int, warmup: int, iters: int) -> list[float]:
    """Latencies (s) of ``iters`` runs on one random input, after ``warmup`` untimed runs."""
    batch = runner.native_input(height, width)
    for _ in range(warmup):
        runner.run_native(batch)
    latencies = []
    for _ in range(iters):
        stop_if_interrupted()
        started = time.perf_counter()
        runner.run_native(batch)
        latencies.append(time.perf_counter() - started)
    return latencies


def bench_in_process(model: str, runtime: str | None = None, input_size: tuple[int, int] | None = None,
                     warmup: int = 10, iters: int = 50, macs: int | None = None,
                     **runtime_options: Any) -> dict[str, Any]:
    """Open ``model`` in ``runtime`` and time it here (see ``bench`` for the result)."""
    from edgesr.runtimes import chosen_runtime, open_runner

    if iters < 1 or warmup < 0:
        raise EdgeSRError(f"--iters {iters} / --warmup {warmup}: need iters >= 1 and warmup >= 0")
    options = {k: v for k, v in runtime_options.items() if v is not None}
    placed = chosen_runtime(model, runtime) == "onnxruntime"
    if placed:  # one profiled run says which provider ran each node
        options["profiled_runs"] = 1
    started = time.perf_counter()
    runner = open_runner(model, runtime, **options)
    load_s = time.perf_counter() - started
    if not runner.timing_meaningful:
        raise EdgeSRError(f"{model}: here it runs only in {runner.options().get('engine')}, whose "
                          f"timings say nothing about a device; bench CoreML files on macOS")
    height, width = bench_size(runner.info, input_size)
    if placed:
        runner.run_native(runner.native_input(height, width))
    latencies = time_runner(runner, height, width, warmup, iters)
    peak_rss = peak_rss_mb()  # before the MAC count: shape inference of a big graph takes GBs
    latency = percentile_summary(latencies)
    scale = runner.info.scale
    out_mpx = height * scale * width * scale / 1e6
    notes = []
    macs_source = "given"
    if macs is None:
        macs, macs_source = count_macs_of(runner, height, width)
    gflops = None if macs is None else 2 * macs / (latency["p50"] / 1e3) / 1e9
    if macs is None:
        notes.append(f"GFLOP/s not computed: {macs_source}")
    return {
        "schema": BENCH_SCHEMA_VERSION,
        "model": str(model),
        "runtime": runner.runtime,
        "runner": runner.describe(),
        "input_size": [height, width],
        "output_size": [height * scale, width * scale],
        "scale": scale,
        "warmup": warmup,
        "iters": iters,
        "load_s": load_s,
        "latency_ms": latency,
        "throughput_mpx_s": out_mpx / (sum(latencies) / len(latencies)),
        "macs": macs,
        "macs_source": macs_source,
        "gflops": gflops,
        "peak_rss_mb": peak_rss,
        "peak_rss_scope": "this process",
        "placement": getattr(runner, "placement", None),
        "notes": notes,
    }


def bench(model: str, runtime: str | None = None, input_size: tuple[int, int] | None = None,
          warmup: int = 10, iters: int = 50, macs: int | None = None, isolate: bool = True,
          **runtime_options: Any) -> dict[str, Any]:
    """Benchmark one model/artifact: load time, latency min/p50/p90/p99/mean (ms),
    throughput (output megapixels/s), peak RSS (MB) and GFLOP/s from the MAC count.

    With ``isolate`` (default) the work runs in a fresh child process, so the peak RSS
    is that of the load + runs alone (interpreter, numpy and runtime included).
    """
    if not isolate:
        return bench_in_process(model, runtime, input_size, warmup, iters, macs, **runtime_options)
    request = {"model": str(model), "runtime": runtime,
               "input_size": list(input_size) if input_size else None,
               "warmup": warmup, "iters": iters, "macs": macs,
               **{k: v for k, v in runtime_options.items() if v is not None}}
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    completed = subprocess.run([sys.executable, "-m", "edgesr.bench", json.dumps(request)],
                               capture_output=True, text=True, env=env)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgeSRError(f"the benchmark process failed (exit {completed.returncode}): {tail}")
    result = json.loads(lines[-1])
    if "error" in result:
        raise EdgeSRError(result["error"])
    result["peak_rss_scope"] = "benchmark child process (load + warmup + iterations)"
    return result


def _child(argv: list[str]) -> int:
    request = json.loads(argv[0])
    if request.get("input_size"):
        request["input_size"] = tuple(request["input_size"])
    try:
        result = bench_in_process(**request)
    except EdgeSRError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 2
    print(json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------------------
# MAC counts without torch: read from the graph the runtime loaded.
# --------------------------------------------------------------------------------------


def count_macs_of(runner, height: int, width: int) -> tuple[int | None, str]:
    """(MACs of one forward pass at height x width, where the figure comes from).

    Convolutions, matrix products and fully connected layers are counted, as
    ``edgesr info`` does (element-wise ops and FFTs are not).
    """
    fmt = runner.info.format
    stated = runner.info.metadata.get("edgesr.macs")
    if stated and runner.info.input_size == (height, width):
        return int(stated), "export metadata (the PyTorch model's count)"
    try:
        if fmt == "pytorch":
            from edgesr.models.profile import count_macs

            return int(count_macs(runner.network, height, width)), "torch FLOP counter"
        if fmt == "tflite":
            return tflite_macs(runner.interpreter), "TFLite graph (conv, depthwise, fully connected, batch matmul)"
        if fmt == "onnx":
            macs = onnx_macs(runner.path, height, width, runner.info.layout)
            if macs is None:
                return None, "install the 'onnx' package to count MACs of an ONNX file, or pass --macs"
            return macs, "ONNX graph (Conv, ConvTranspose, MatMul, Gemm)"
    except Exception as exc:  # a count that fails must not fail the benchmark
        return None, f"MAC count failed ({type(exc).__name__}: {exc}); pass --macs"
    return None, f"no MAC counter for {fmt}; pass --macs"


def tflite_macs(interpreter) -> int:
    shapes = {d["index"]: [int(v) for v in d["shape"]] for d in interpreter.get_tensor_details()}
    total = 0
    for op in interpreter._get_ops_details():  # noqa: SLF001 - the only op-level view LiteRT offers
        name = op["op_name"]
        inputs = [i for i in op["inputs"] if i >= 0]
        outputs = [i for i in op["outputs"] if i >= 0]
        if not outputs or len(inputs) < 2:
            continue
        out = shapes.get(outputs[0], [])
        weight = shapes.get(inputs[1], [])
        if name == "CONV_2D" and len(weight) == 4:  # [Cout, kh, kw, Cin/groups]
            total += math.prod(out) * weight[1] * weight[2] * weight[3]
        elif name == "DEPTHWISE_CONV_2D" and len(weight) == 4:  # [1, kh, kw, Cout]
            total += math.prod(out) * weight[1] * weight[2]
        elif name == "FULLY_CONNECTED" and len(weight) == 2:  # [units, in]
            total += math.prod(out) * weight[1]
        elif name == "BATCH_MATMUL":
            a = shapes.get(inputs[0], [])
            if len(a) >= 2 and len(out) >= 2:
                inner = a[-1] if a[-2] == out[-2] else a[-2]
                total += math.prod(out) * inner
        elif name == "TRANSPOSE_CONV" and len(inputs) >= 3:  # inputs: output_shape, weights, input
            w, x = shapes.get(inputs[1], []), shapes.get(inputs[2], [])
            if len(w) == 4 and x:
                total += math.prod(x) * w[0] * w[1] * w[2]
    return int(total)


def onnx_macs(path: Path, height: int, width: int, layout: str = "NCHW") -> int | None:
    """MACs from an ONNX graph with shapes inferred at the bench size (needs the onnx package)."""
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:
        return None
    model = onnx.load_model(str(path), load_external_data=False)
    graph_input = model.graph.input[0]
    dims = graph_input.type.tensor_type.shape.dim
    concrete = [1, 3, height, width] if layout == "NCHW" else [1, height, width, 3]
    for dim, value in zip(dims, concrete):
        dim.ClearField("dim_param")
        dim.dim_value = value
    for output in model.graph.output:  # symbolic output dims would block inference
        for dim in output.type.tensor_type.shape.dim:
            dim.ClearField("dim_param")
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    for node in inferred.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if not out or 0 in out:
            continue
        if node.op_type == "Conv" and len(node.input) > 1:
            weight = shapes.get(node.input[1], [])
            if len(weight) >= 3:
                total += math.prod(out) * math.prod(weight[1:])
        elif node.op_type == "ConvTranspose" and len(node.input) > 1:
            weight, x = shapes.get(node.input[1], []), shapes.get(node.input[0], [])
            if len(weight) >= 3 and x and 0 not in x:
                total += math.prod(x) * math.prod(weight[1:])
        elif node.op_type in ("MatMul", "Gemm"):
            a = shapes.get(node.input[0], [])
            if a and 0 not in a:
                transposed = node.op_type == "Gemm" and any(
                    att.name == "transA" and att.i for att in node.attribute)
                total += math.prod(out) * (a[-2] if transposed else a[-1])
    return int(total)


def format_result(result: dict[str, Any]) -> list[str]:
    """The human-readable report of one benchmark."""
    latency = result["latency_ms"]
    runner = result["runner"]
    settings = ", ".join(f"{k}={v}" for k, v in runner.items() if k not in ("runtime", "artifact")
                         and v is not None)
    h, w = result["input_size"]
    oh, ow = result["output_size"]
    lines = [
        f"model       {result['model']}",
        f"runtime     {result['runtime']}" + (f" ({settings})" if settings else ""),
        f"input       {h}x{w} -> {oh}x{ow} (x{result['scale']}), warmup {result['warmup']}, iters {result['iters']}",
        f"load        {result['load_s'] * 1e3:.1f} ms",
        "latency ms  " + "  ".join(f"{k} {latency[k]:.2f}" for k in ("min", "p50", "p90", "p99", "mean")),
        f"throughput  {result['throughput_mpx_s']:.3f} output MP/s",
        "peak RSS    " + (f"{result['peak_rss_mb']:.0f} MB ({result['peak_rss_scope']})"
                           if result.get("peak_rss_mb") else "n/a on this OS"),
        "compute     " + (f"{result['gflops']:.2f} GFLOP/s at p50 ({result['macs'] / 1e9:.3f} GMACs, "
                          f"{result['macs_source']})" if result.get("gflops") else "n/a"),
    ]
    lines += format_placement(result.get("placement"))
    lines += [f"note        {note}" for note in result.get("notes", [])]
    return lines


def format_placement(placement: dict[str, dict[str, Any]] | None) -> list[str]:
    """Which provider ran how many nodes (one profiled run), and what fell back to the CPU."""
    if not placement:
        return []
    lines = []
    for index, (provider, entry) in enumerate(sorted(placement.items(), key=lambda kv: -kv[1]["nodes"])):
        lines.append(("providers   " if index == 0 else " " * 12)
                     + f"{provider}: {entry['nodes']} node(s), {entry['ms']:.1f} ms in the profiled run")
    if len(placement) > 1 and "CPUExecutionProvider" in placement:
        ops = ", ".join(f"{op} x{n}" for op, n in placement["CPUExecutionProvider"]["ops"].items())
        lines.append(f"{'':12}on the CPU (a hand-off each): {ops}")
    return lines


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
