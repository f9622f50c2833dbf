"""edgesr bench: JSON schema and sanity, no torch on the artifact path, errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgesr.errors import EdgeSRError
from tests.test_runtimes import artifact, artifacts, small_model  # noqa: F401 - shared session fixtures

REPO = Path(__file__).resolve().parents[1]
KEYS = {"schema", "model", "runtime", "runner", "input_size", "output_size", "scale", "warmup", "iters",
        "load_s", "latency_ms", "throughput_mpx_s", "macs", "gflops", "peak_rss_mb", "notes"}


def check_result(result: dict) -> None:
    assert KEYS <= set(result)
    latency = result["latency_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert result["throughput_mpx_s"] > 0 and result["load_s"] > 0
    assert result["output_size"] == [v * result["scale"] for v in result["input_size"]]
    if result["macs"] is not None:
        assert result["macs"] > 0 and result["gflops"] > 0


@pytest.mark.parametrize("name", ["onnx", "tflite_nhwc"])
def test_bench_json_schema_and_sanity(artifacts, name):
    from edgesr.bench import bench

    result = bench(artifact(artifacts, name), warmup=1, iters=5, threads=1)
    check_result(result)
    assert result["peak_rss_mb"] is None or result["peak_rss_mb"] > 1
    assert "child" in result["peak_rss_scope"]
    assert result["macs"] > 0  # counted from the graph, no torch


def test_bench_cli_json_imports_no_torch(artifacts):
    """The bench path (CLI through typer, in-process) must not import torch."""
    path = artifact(artifacts, "onnx")
    code = (
        "import sys, json\n"
        "from typer.testing import CliRunner\n"
        "from edgesr.cli import app\n"
        f"r = CliRunner().invoke(app, ['bench', {str(path)!r}, '--runtime', 'onnxruntime', '--warmup', '1',"
        " '--iters', '3', '--in-process', '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "json.loads(r.stdout)\n"
        "from edgesr.bench import bench_in_process\n"
        f"bench_in_process({str(artifact(artifacts, 'tflite_nhwc'))!r}, warmup=0, iters=1)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-2000:]


def test_bench_cli_text_and_errors(artifacts, tmp_path):
    from edgesr.cli import app

    runner = CliRunner()
    path = artifact(artifacts, "onnx")
    ok = runner.invoke(app, ["bench", str(path), "--warmup", "0", "--iters", "2", "--threads", "1"])
    assert ok.exit_code == 0, ok.output
    assert "latency ms" in ok.stdout and "peak RSS" in ok.stdout
    for argv, message in [
        (["bench", str(path), "--input-size", "8x8"], "takes only 24x24"),
        (["bench", str(tmp_path / "none.onnx")], "no such file"),
        (["bench", str(path), "--runtime", "litert"], "cannot run it"),
        (["bench", str(path), "--provider", "cuda"], "no CUDAExecutionProvider"),
        (["bench", str(path), "--provider", "tensorrt", "--trt-fp16", "--trt-engine-cache", str(tmp_path / "c"),
          "--trt-workspace-gb", "2", "--device-id", "0"], "no TensorrtExecutionProvider"),
        (["bench", str(path), "--trt-fp16"], "add --provider tensorrt"),
        (["bench", str(path), "--device-id", "1"], "--device-id picks the GPU"),
        (["bench"], "give an artifact"),
    ]:
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, (argv, result.output)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bench_reports_the_provider_of_every_node(artifacts):
    """One profiled run tells which provider ran each node; on a CPU-only build all of them
    are the CPU provider's, and the count is the graph's node count after optimisation."""
    import onnxruntime as ort

    from edgesr.bench import bench, format_result

    path = artifact(artifacts, "onnx")
    result = bench(path, warmup=0, iters=2, threads=1)
    assert list(result["placement"]) == ["CPUExecutionProvider"]
    cpu = result["placement"]["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(Path(path).with_suffix(".opt.onnx"))
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    import onnx

    optimized = onnx.load(options.optimized_model_filepath)
    Path(options.optimized_model_filepath).unlink()
    assert cpu["nodes"] == len(optimized.graph.node) and sum(cpu["ops"].values()) == cpu["nodes"]
    assert any(line.startswith("providers   CPUExecutionProvider:") for line in format_result(result))


def test_gpu_provider_settings_and_partition_report():
    """The TensorRT/CUDA settings as onnxruntime takes them, and the report of a mixed run
    (a TensorRT engine plus nodes left on the CPU) as a Jetson profile gives it."""
    from edgesr.bench import format_placement
    from edgesr.runtimes.onnxruntime_runner import placement_from_profile, provider_options_for

    trt, cuda, cpu = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
    options = provider_options_for([trt, cuda, cpu], trt_fp16=True, trt_workspace_gb=1.5, device_id=1)
    assert options == [{"device_id": "1", "trt_fp16_enable": "True", "trt_max_workspace_size": str(3 * 2**29)},
                       {"device_id": "1"}, {}]
    assert provider_options_for([cpu]) == [{}]
    for providers, kwargs, message in [([cpu], {"trt_fp16": True}, "add --provider tensorrt"),
                                       ([cpu], {"device_id": 0}, "cuda or tensorrt"),
                                       ([trt, cpu], {"trt_workspace_gb": 0}, "above 0")]:
        with pytest.raises(EdgeSRError, match=message):
            provider_options_for(providers, **kwargs)

    def node(name, op, provider, dur):
        return {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur,
                "args": {"op_name": op, "provider": provider}}

    events = [{"cat": "Session", "name": "model_loading_uri", "dur": 900},
              node("TRTKernel_graph_main_0", "TRTKernel_graph_main_0", trt, 4000),
              node("/tail/DepthToSpace", "DepthToSpace", cpu, 500),
              node("/tail/Clip", "Clip", cpu, 100),
              {"cat": "Node", "name": "/tail/Clip_fence_before", "dur": 1, "args": {"op_name": "Clip"}}]
    placement = placement_from_profile(events)
    assert placement == {trt: {"nodes": 1, "ms": 4.0, "ops": {"TRTKernel_graph_main_0": 1},
                               "op_ms": {"TRTKernel_graph_main_0": 4.0}},
                         cpu: {"nodes": 2, "ms": 0.6, "ops": {"DepthToSpace": 1, "Clip": 1},
                               "op_ms": {"DepthToSpace": 0.5, "Clip": 0.1}}}
    # two profiled runs: the figures are the second's (the first pays first-touch allocations)
    warm_run = [node("/tail/DepthToSpace", "DepthToSpace", cpu, 300), {"cat": "Session", "name": "model_run"}]
    rerun = placement_from_profile(events + [{"cat": "Session", "name": "model_run"}] + warm_run)
    assert rerun == {cpu: {"nodes": 1, "ms": 0.3, "ops": {"DepthToSpace": 1}, "op_ms": {"DepthToSpace": 0.3}}}
    lines = format_placement(placement)
    assert lines[0].startswith("providers   CPUExecutionProvider: 2 node(s)")
    assert "DepthToSpace x1, Clip x1" in lines[-1]


def test_a_provider_that_fell_back_is_an_error(artifacts, monkeypatch):
    """onnxruntime's Python layer retries on the other providers when one fails to start;
    edgesr must not time the fallback as if it were TensorRT."""
    import onnxruntime as ort

    from edgesr.runtimes import onnxruntime_runner

    real_session = ort.InferenceSession

    class FellBack(real_session):
        def __init__(self, path, options, providers, provider_options):
            super().__init__(path, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(onnxruntime_runner, "available_providers",
                        lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", FellBack)
    with pytest.raises(EdgeSRError, match="could not start TensorrtExecutionProvider .* fell back to CPU"):
        onnxruntime_runner.OnnxRuntimeRunner(artifact(artifacts, "onnx"), providers="tensorrt")


def test_eval_on_artifact_tiles_fixed_size(artifacts, tmp_path):
    """edgesr eval accepts artifacts; a fixed-size file is tiled at its input size."""
    import numpy as np
    from PIL import Image

    from edgesr.cli import app

    data = tmp_path / "set"
    (data / "HR").mkdir(parents=True)
    (data / "LR_bicubic" / "X2").mkdir(parents=True)
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (80, 60, 3), dtype=np.uint8)
    Image.fromarray(hr).save(data / "HR" / "img.png")
    Image.fromarray(hr).resize((30, 40), Image.BICUBIC).save(data / "LR_bicubic" / "X2" / "imgx2.png")
    result = CliRunner().invoke(app, ["eval", str(artifact(artifacts, "onnx")), "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"]["arch"] == "srconvnet"
    assert report["runner"]["tiling"]["tile"] == [24, 24]
    assert np.isfinite(report["results"][0]["mean"]["psnr_y"])


def test_percentiles_and_csv():
    from edgesr.bench import percentile_summary
    from edgesr.bench_table import Row, to_csv

    summary = percentile_summary([0.003, 0.001, 0.002, 0.010])
    assert summary["min"] == 1.0 and summary["p50"] <= summary["p90"] <= summary["p99"] <= summary["max"]
    text = to_csv([Row("onnx", "fp32", "✅", 1.0, 30.0, 2.0, 1.5)])
    assert text.splitlines()[0].startswith("format,precision,status") and "✅" in text


def test_bench_needs_iterations(artifacts):
    from edgesr.bench import bench_in_process

    with pytest.raises(EdgeSRError, match="iters"):
        bench_in_process(artifact(artifacts, "onnx"), iters=0)
