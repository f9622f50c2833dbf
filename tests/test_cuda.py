"""CUDA paths: PyTorch on the GPU against the official outputs and the CPU, export parity
against PyTorch on CUDA, training with AMP, onnxruntime's CUDA provider.

Skipped where torch sees no CUDA GPU (CI, the developers' machines); run on a GPU machine
with ``pytest tests/test_cuda.py``.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import shared_path

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU here (torch.cuda.is_available() is False)")

ARCHS = ["srconvnet", "hit-sir", "hit-sng", "hit-srf"]
SMALL = {"srconvnet": {"dim": 16, "num_blocks": 1, "num_heads": 2, "num_kernels": 4},
         "hit-srf": {"embed_dim": 16, "depths": [2], "num_heads": [1]}}


@pytest.fixture
def exact_cuda():
    from edgesr.export.parity import exact_cuda as no_tf32

    with no_tf32():
        yield


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("arch", ARCHS)
def test_official_checkpoints_reproduce_the_golden_outputs_on_cuda(arch, scale, exact_cuda):
    import edgesr
    from edgesr.models.descriptor import describe

    golden = np.load(shared_path("golden", f"{arch}_x{scale}_40x52.npz"))
    model = edgesr.load(shared_path("golden", f"{arch}_x{scale}.pth"))
    # The CPU golden tests' bound: 1e-4 of the range the network works in ([0, 255] for
    # SRConvNet, [0, 1] for HiT-SR); cuFFT and cuDNN round differently from the CPU's kernels.
    bound = 1e-4 * describe(model).input_range
    with torch.inference_mode():
        output = model.cuda()(torch.from_numpy(golden["lr"]).cuda()).cpu().numpy()
    assert output.shape == golden["sr"].shape
    error = float(np.abs(output - golden["sr"]).max())
    print(f"{arch} x{scale} on {torch.cuda.get_device_name()}: max abs {error:.3g} (bound {bound:.3g})")
    assert error <= bound


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_export_is_checked_against_pytorch_on_cuda(arch, tmp_path):
    from edgesr.export import export
    from edgesr.models.loading import create

    model = create(arch, 2, seed=0, **SMALL[arch])
    report = export(model, "onnx", input_size=(24, 40), out_dir=tmp_path, device="cuda")
    checks = report.parity["checks"]
    on_cuda = [check for check in checks if check["reference"] == "pytorch cuda"]
    print(f"{arch}: " + "; ".join(f"{c['input']} max abs {c['max_abs']:.3g}" for c in on_cuda))
    assert report.status == "passed"
    assert on_cuda and len(on_cuda) == len(checks) // 2
    assert all(check["status"] == "passed" for check in on_cuda), on_cuda


def test_eval_on_cuda_scores_as_on_cpu():
    """HiTNet on Set5 x4: the GPU's fp32 (TF32 convs, as a user runs it) changes PSNR-Y by < 0.01 dB."""
    from edgesr.cli import app

    weights, set5 = shared_path("data", "weights", "HiTNet.pth"), shared_path("data", "Set5")
    scores = {}
    for device in ("cpu", "cuda"):
        result = CliRunner().invoke(app, ["eval", str(weights), "--data", str(set5), "--device", device,
                                          "--tile", "96", "--json"])
        assert result.exit_code == 0, result.output
        payload = json.loads(result.output)
        assert payload["runner"]["device"].startswith(device)
        scores[device] = payload["results"][0]
    print({device: score["mean"]["psnr_y"] for device, score in scores.items()})
    assert len(scores["cuda"]["images"]) == 5
    assert scores["cpu"]["mean"]["psnr_y"] > 30.0
    assert abs(scores["cuda"]["mean"]["psnr_y"] - scores["cpu"]["mean"]["psnr_y"]) < 0.01


def test_training_on_cuda_with_amp_writes_a_loadable_checkpoint(tmp_path, capsys):
    from PIL import Image

    import edgesr
    from edgesr.train import TrainConfig, train

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for index in range(3):
        pixels = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((96, 96), Image.BICUBIC).save(data / f"img{index}.png")
    config = TrainConfig(model="srconvnet", scale=2, data=data, out=tmp_path / "run", iters=8, batch=4, patch=16,
                         lr=1e-3, milestones=[6], ema=0.9, save_every=4, log_every=2, val_every=4, workers=0,
                         hparams=dict(SMALL["srconvnet"]), progress=False, device="cuda", amp=True)
    train(config)
    assert "device cuda:0, AMP" in capsys.readouterr().err
    reloaded = edgesr.load(tmp_path / "run" / "last.safetensors")
    assert all(parameter.device.type == "cpu" and torch.isfinite(parameter).all()
               for parameter in reloaded.parameters())


def test_onnxruntime_cuda_provider_matches_pytorch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider here (onnxruntime-gpu "
                    f"is not installed): providers {ort.get_available_providers()}")
    from edgesr.export import export
    from edgesr.models.contract import with_unit_range
    from edgesr.models.loading import create
    from edgesr.runtimes import open_runner

    model = create("srconvnet", 2, seed=0, **SMALL["srconvnet"])
    report = export(model, "onnx", input_size=(24, 40), out_dir=tmp_path, check=False)
    runner = open_runner(report.artifact, providers="cuda")
    batch = np.random.default_rng(0).random((1, 3, 24, 40), dtype=np.float32)
    with torch.inference_mode():
        expected = with_unit_range(model)(torch.from_numpy(batch)).numpy()
    assert np.abs(runner.run(batch) - expected).max() < 1e-4
