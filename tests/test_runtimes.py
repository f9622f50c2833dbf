"""Runners: each runtime on each artifact it supports; clear errors for the rest.

Artifacts are exported once per session (small SRConvNet, 24x24 input) and shared
with test_bench.py and test_tiling.py, which import the fixtures from here.
"""
from __future__ import annotations

import importlib.util
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgesr.errors import EdgeSRError, MissingDependencyError

REPO = Path(__file__).resolve().parents[1]
SIZE = 24


def _needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")


@pytest.fixture(scope="session")
def small_model():
    from edgesr.models.loading import create

    return create("srconvnet", 2, dim=16, num_blocks=1, num_heads=2, num_kernels=4)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, small_model):
    """name -> path: onnx (static), tflite (NHWC), checkpoint; coreml where it converts."""
    from edgesr.export.pipeline import export
    from edgesr.models.loading import save_checkpoint

    out = tmp_path_factory.mktemp("artifacts")
    found = {"checkpoint": save_checkpoint(small_model, out / "small.safetensors")}
    plans = [("onnx", "onnx", {}), ("tflite_nhwc", "tflite", {"nhwc": True})]
    for name, target, options in plans:
        try:
            report = export(small_model, target, input_size=(SIZE, SIZE), out_dir=out, name=name,
                            check=False, stage=lambda text: None, **options)
            found[name] = Path(report.artifact)
        except (EdgeSRError, ImportError) as exc:
            found[name] = exc
    return found


def artifact(artifacts, name):
    value = artifacts[name]
    if isinstance(value, Exception):
        pytest.skip(f"{name} export unavailable here: {value}")
    return value


@pytest.fixture(scope="session")
def reference(small_model):
    from edgesr.runtimes.torch_runner import TorchRunner

    batch = np.random.default_rng(1).random((1, 3, SIZE, SIZE), dtype=np.float32)
    return batch, TorchRunner(model=small_model).run(batch)


@pytest.mark.parametrize("name, runtime, options", [
    ("onnx", None, {}),
    ("onnx", "onnxruntime", {"providers": "cpu", "threads": 1}),
    ("tflite_nhwc", None, {}),
    ("tflite_nhwc", "litert", {"delegate": "none", "threads": 1}),
    ("checkpoint", None, {"threads": 1}),
])
def test_runner_matches_pytorch(artifacts, reference, name, runtime, options):
    from edgesr.runtimes import open_runner

    module = {"onnx": "onnxruntime", "tflite_nhwc": "ai_edge_litert", "checkpoint": "torch"}[name]
    _needs(module)
    runner = open_runner(artifact(artifacts, name), runtime, **options)
    batch, expected = reference
    output = runner.run(batch)
    assert output.shape == expected.shape and output.dtype == np.float32
    assert np.abs(output - expected).max() < 1e-4
    # the Upscaler contract: H x W x 3 in, sH x sW x 3 out
    image = batch[0].transpose(1, 2, 0)
    assert np.allclose(runner(image), expected[0].transpose(1, 2, 0), atol=1e-4)
    described = runner.describe()
    assert described["artifact"]["scale"] == 2
    json.dumps(described)


def test_metadata_read_from_files(artifacts):
    from edgesr.runtimes import open_runner

    _needs("onnxruntime"), _needs("ai_edge_litert")
    onnx_runner = open_runner(artifact(artifacts, "onnx"))
    assert onnx_runner.info.layout == "NCHW" and onnx_runner.info.input_size == (SIZE, SIZE)
    assert onnx_runner.info.arch == "srconvnet" and not onnx_runner.info.inferred
    tflite_runner = open_runner(artifact(artifacts, "tflite_nhwc"))
    assert tflite_runner.info.layout == "NHWC" and tflite_runner.info.scale == 2
    native = tflite_runner.native_input(SIZE, SIZE)
    assert native.shape == (1, SIZE, SIZE, 3)
    assert tflite_runner.run_native(native).shape == (1, 2 * SIZE, 2 * SIZE, 3)


def test_fixed_size_artifact_refuses_other_sizes(artifacts):
    from edgesr.runtimes import open_runner

    _needs("onnxruntime")
    runner = open_runner(artifact(artifacts, "onnx"))
    with pytest.raises(EdgeSRError, match="takes only 24x24"):
        runner.run(np.zeros((1, 3, 16, 16), np.float32))


def test_reading_metadata_imports_no_torch(artifacts):
    _needs("onnxruntime"), _needs("ai_edge_litert")
    code = (
        "import sys\n"
        "from edgesr.runtimes import open_runner, read_metadata\n"
        f"for p in [{str(artifact(artifacts, 'onnx'))!r}, {str(artifact(artifacts, 'tflite_nhwc'))!r}]:\n"
        "    assert read_metadata(p)['edgesr.scale'] == '2'\n"
        "    open_runner(p).run(__import__('numpy').zeros((1, 3, 24, 24), 'float32'))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-2000:]


def test_metadata_disagreeing_with_file(tmp_path, artifacts):
    _needs("onnx"), _needs("onnxruntime")
    import onnx

    from edgesr.runtimes import open_runner

    model = onnx.load_model(str(artifact(artifacts, "onnx")))
    for prop in model.metadata_props:
        if prop.key == "edgesr.input_size":
            prop.value = "64x64"
    bad = tmp_path / "bad.onnx"
    onnx.save_model(model, str(bad))
    with pytest.raises(EdgeSRError, match="metadata says input 64x64"):
        open_runner(bad)
    for prop in model.metadata_props:
        if prop.key == "edgesr.input_size":
            prop.value = f"{SIZE}x{SIZE}"
        if prop.key == "edgesr.layout":
            prop.value = "NHWC"
    onnx.save_model(model, str(bad))
    with pytest.raises(EdgeSRError, match="metadata says NHWC"):
        open_runner(bad)


def test_missing_and_corrupt_artifacts(tmp_path):
    from edgesr.runtimes import open_runner

    with pytest.raises(EdgeSRError, match="no such file"):
        open_runner(tmp_path / "none.onnx")
    for suffix in (".onnx", ".tflite"):
        broken = tmp_path / f"broken{suffix}"
        broken.write_bytes(b"\x00garbage" * 10)
        with pytest.raises(EdgeSRError) as info:
            open_runner(broken)
        assert "\n" not in str(info.value)
    unknown = tmp_path / "model.xyz"
    unknown.write_text("x")
    with pytest.raises(EdgeSRError, match="unknown artifact type"):
        open_runner(unknown)


def test_wrong_runtime_and_options(artifacts):
    from edgesr.runtimes import open_runner

    path = artifact(artifacts, "onnx")
    with pytest.raises(EdgeSRError, match="cannot run it"):
        open_runner(path, "litert")
    with pytest.raises(EdgeSRError, match="unknown"):
        open_runner(path, "tensorflow")
    with pytest.raises(EdgeSRError, match="do not apply"):
        open_runner(path, delegate="gpu")


def test_cuda_paths_fail_clearly_without_gpu(artifacts, small_model):
    """The CUDA/TensorRT paths exist; without a GPU they are one clear error, not a traceback."""
    from edgesr.runtimes import open_runner
    from edgesr.runtimes.torch_runner import TorchRunner

    _needs("onnxruntime")
    import onnxruntime
    import torch

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        runner = open_runner(artifact(artifacts, "onnx"), providers="cuda")
        assert runner.options()["providers"][0] == "CUDAExecutionProvider"
    else:
        for provider in ("cuda", "tensorrt", "coreml", "xnnpack"):
            with pytest.raises(EdgeSRError, match="onnxruntime here has no"):
                open_runner(artifact(artifacts, "onnx"), providers=provider)
    if torch.cuda.is_available():
        assert TorchRunner(model=small_model, device="cuda").run(np.zeros((1, 3, 8, 8), np.float32)).shape[2] == 16
    else:
        with pytest.raises(EdgeSRError, match="no CUDA GPU"):
            TorchRunner(model=small_model, device="cuda")


def test_litert_gpu_delegate_is_clear_where_absent(artifacts):
    from edgesr.runtimes import open_runner

    _needs("ai_edge_litert")
    try:
        runner = open_runner(artifact(artifacts, "tflite_nhwc"), delegate="gpu")
    except EdgeSRError as exc:
        assert "GPU delegate is not available" in str(exc)
    else:  # a platform with the delegate (Android)
        assert runner.options()["delegate"] == "gpu"


def test_coreml_runner_off_macos_uses_the_reference_evaluator(tmp_path, small_model):
    """Off macOS an .mlpackage runs in edgesr's reference evaluator, and says so."""
    from edgesr.export.pipeline import export
    from edgesr.models.inference import TorchUpscaler
    from edgesr.runtimes import open_runner

    if platform.system() == "Darwin":
        pytest.skip("on macOS the CoreML runner uses MLModel.predict (covered by exports)")
    report = export(small_model, "coreml", input_size=(SIZE, SIZE), out_dir=tmp_path, check=False,
                    stage=lambda text: None, delegate_ready=False)
    runner = open_runner(report.artifact)
    assert runner.options()["engine"] == "reference evaluation of the ML program (not Apple's runtime)"
    image = np.random.default_rng(0).random((SIZE, SIZE, 3), dtype=np.float32)
    assert np.abs(runner(image) - TorchUpscaler(small_model)(image)).max() <= 1e-4
    empty = tmp_path / "empty.mlpackage"
    empty.mkdir()
    with pytest.raises(EdgeSRError, match="not an .mlpackage"):
        open_runner(empty)


def test_missing_runtime_is_a_clear_error(monkeypatch, artifacts):
    import importlib.util as util

    from edgesr.runtimes import open_runner

    real = util.find_spec
    monkeypatch.setattr(util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgesr\[onnxruntime\]'.*onnxruntime-gpu"):
        open_runner(artifact(artifacts, "onnx"))


def test_artifact_without_edgesr_metadata_is_read_from_shapes(tmp_path, artifacts):
    _needs("onnx"), _needs("onnxruntime")
    import onnx

    from edgesr.runtimes import open_runner

    model = onnx.load_model(str(artifact(artifacts, "onnx")))
    del model.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save_model(model, str(plain))
    runner = open_runner(plain)
    assert runner.info.inferred and runner.info.scale == 2 and runner.info.input_size == (SIZE, SIZE)
