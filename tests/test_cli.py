from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from edgesr.cli import app
from edgesr.errors import EdgeSRError
from edgesr.models.loading import save_checkpoint
from tests.conftest import shared_path

runner = CliRunner()


@pytest.fixture
def checkpoint(tmp_path, small_srconvnet):
    return save_checkpoint(small_srconvnet, tmp_path / "small.safetensors")


def test_help_for_every_command():
    for command in ([], ["info"], ["eval"], ["upscale"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output


def test_info_json(checkpoint):
    result = runner.invoke(app, ["info", str(checkpoint), "--input-size", "32x48", "--json"])
    assert result.exit_code == 0, result.output
    details = json.loads(result.stdout)
    assert details["arch"] == "srconvnet" and details["scale"] == 2
    assert details["output_size"] == [64, 96]
    assert details["parameters"] > 0 and details["macs"] > 0
    assert details["input_range"] == 255.0 and len(details["sha256"]) == 64


def test_info_architecture_name_needs_scale():
    result = runner.invoke(app, ["info", "hit-sir"])
    assert result.exit_code == 2
    assert "give --scale" in result.stderr
    ok = runner.invoke(app, ["info", "hit-sir", "--scale", "2", "--input-size", "16x16", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["parameters"] == 772_064


@pytest.mark.parametrize("argv, message", [
    (["info", "nope.pth"], "neither a checkpoint file nor an architecture name"),
    (["info", "srconvnet", "--scale", "2", "--input-size", "12"], "expected HxW"),
])
def test_one_line_errors(argv, message):
    result = runner.invoke(app, argv)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_upscale_files_and_folders(tmp_path, checkpoint):
    folder = tmp_path / "in" / "sub"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (9, 7, 4), dtype=np.uint8), "RGBA").save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (5, 6), dtype=np.uint8), "L").save(tmp_path / "in" / "g.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["upscale", str(tmp_path / "in"), "--model", str(checkpoint),
                                 "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["alpha"] == "bicubic" and len(report["images"]) == 2
    rgba = Image.open(out / "sub" / "a.png")
    assert rgba.mode == "RGBA" and rgba.size == (14, 18)
    grey = Image.open(out / "g.png")
    assert grey.mode == "L" and grey.size == (12, 10)


def test_upscale_bad_input_writes_nothing(tmp_path, checkpoint):
    (tmp_path / "bad.png").write_text("nope")
    out = tmp_path / "out"
    result = runner.invoke(app, ["upscale", str(tmp_path / "bad.png"), "--model", str(checkpoint), "-o", str(out)])
    assert result.exit_code == 2 and "not a readable image" in result.stderr
    assert not out.exists() or not any(out.rglob("*.png"))
    missing = runner.invoke(app, ["upscale", str(tmp_path / "none"), "--model", str(checkpoint), "-o", str(out)])
    assert missing.exit_code == 2 and "no such file or folder" in missing.stderr


def test_eval_real_checkpoint_set5_reproduces_official():
    """HiT-SRF x4 (../shared HiTNet.pth): the official implementation gives 31.68 dB on Set5."""
    weights = shared_path("data", "weights", "HiTNet.pth")
    data = shared_path("data", "Set5")
    torch.set_num_threads(2)
    result = runner.invoke(app, ["eval", str(weights), "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"]["arch"] == "hit-srf"
    means = report["results"][0]["mean"]
    assert abs(means["psnr_y"] - 31.68) <= 0.01
    assert abs(means["bicubic_psnr_y"] - 28.43) <= 0.01


def test_export_takes_a_checkpoint_as_model_option(checkpoint, small_srconvnet):
    """``edgesr export --model CKPT``: the spelling of the docs, for a checkpoint file."""
    from edgesr.export.command import _load_model

    loaded = _load_model(None, str(checkpoint), None, None)
    for name, tensor in small_srconvnet.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    with pytest.raises(EdgeSRError, match="either as MODEL or as --weights"):
        _load_model(str(checkpoint), None, checkpoint, None)
