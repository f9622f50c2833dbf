"""`edgesr train`: loss, resume equivalence, DDP, checkpoints, bad input.

All runs use a tiny SRConvNet on small synthetic images, one CPU thread per process.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from edgesr.errors import EdgeSRError
from edgesr.train import TrainConfig, train

TINY = {"dim": 8, "num_blocks": 1, "num_heads": 2, "num_kernels": 2}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    coarse = rng.random((height // 8 + 1, width // 8 + 1, 3))
    image = Image.fromarray((coarse * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    noise = rng.normal(0, 6, (height, width, 3))
    return np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_data")
    rng = np.random.default_rng(0)
    for index, (height, width) in enumerate([(40, 48), (36, 36), (48, 40)]):
        Image.fromarray(_smooth_image(rng, height, width)).save(root / f"img{index}.png")
    return root


def _config(data_dir: Path, out: Path, **overrides) -> TrainConfig:
    values = dict(model="srconvnet", scale=2, data=data_dir, out=out, iters=6, batch=2, patch=8,
                  lr=1e-3, milestones=[3, 5], ema=0.9, save_every=3, log_every=2, val_every=3,
                  workers=0, hparams=dict(TINY), progress=False, threads=1)
    values.update(overrides)
    return TrainConfig(**values)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_loss_goes_down_on_a_fixed_batch(data_dir):
    from edgesr.models.loading import create
    from edgesr.train.data import PatchPairs, load_images
    from edgesr.train.loop import _optimizer

    torch.manual_seed(0)
    pairs = PatchPairs(load_images(data_dir, 24), scale=2, patch=12, seed=0)
    lr, hr = (torch.stack(t) for t in zip(*(pairs[i] for i in range(4))))
    model = create("srconvnet", 2, **TINY).train()
    optimizer, scheduler = _optimizer(model, _config(data_dir, data_dir, lr=2e-3, milestones=[100]))
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.l1_loss(model(lr * 255) / 255, hr)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(data_dir, tmp_path):
    whole = _config(data_dir, tmp_path / "whole", iters=6)
    train(whole)
    # The same run stopped after 3 iterations (different worker count: the data order
    # must not depend on it), then resumed to 6.
    train(_config(data_dir, tmp_path / "split", iters=3, workers=1))
    train(_config(data_dir, tmp_path / "split", iters=6, resume=True))
    for name in ("last.safetensors", "ema.safetensors"):
        _assert_same(_weights(tmp_path / "whole" / name), _weights(tmp_path / "split" / name))
    a = torch.load(tmp_path / "whole" / "state.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "state.pt", weights_only=True)
    assert a["iteration"] == b["iteration"] == 6
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    for state_a, state_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(state_a["exp_avg_sq"], state_b["exp_avg_sq"])


def test_checkpoints_round_trip_through_edgesr_load(data_dir, tmp_path):
    import edgesr
    from edgesr.models.descriptor import describe

    out = tmp_path / "run"
    model = train(_config(data_dir, out, iters=3, val=data_dir))
    for name in ("last", "ema", "best"):
        loaded = edgesr.load(out / f"{name}.safetensors")
        info = describe(loaded)
        assert (info.arch, info.scale) == ("srconvnet", 2)
        assert {k: info.hparams[k] for k in TINY} == TINY
    _assert_same(edgesr.load(out / "last.safetensors").state_dict(), model.state_dict())
    # Official key layout: what the official SRConvNet state dict holds, no wrapper prefix.
    assert "blocks.0.attention.a.conv_layer.weight" in _weights(out / "last.safetensors")
    lines = (out / "log.jsonl").read_text().splitlines()
    assert any("val_psnr_y" in line for line in lines)


def test_init_from_another_scale_reinitialises_the_upsampler(data_dir, tmp_path, capsys):
    x4 = tmp_path / "x4"
    train(_config(data_dir, x4, scale=4, patch=8, iters=1, milestones=[1]))
    model = train(_config(data_dir, tmp_path / "x2", iters=1, milestones=[1],
                          init=str(x4 / "last.safetensors"), hparams={}))
    message = capsys.readouterr().err
    assert "re-initialised for x2: upsampling.*" in message
    source = _weights(x4 / "last.safetensors")
    # Only one step was taken at lr 1e-3, so the kept body stays close to the x4 weights.
    assert torch.allclose(model.state_dict()["to_feat.weight"], source["to_feat.weight"], atol=5e-3)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_two_gloo_processes_hold_identical_weights(data_dir, tmp_path):
    import torch.multiprocessing as mp

    from edgesr.train.ddp import spawn_worker

    out = tmp_path / "ddp"
    config = _config(data_dir, out, iters=3, val_every=100)
    # fork where there is one: the children inherit the imported modules (spawn
    # re-imports torch in each, ~20 s on a busy machine).
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(spawn_worker, args=(2, _free_port(), config, str(tmp_path)), nprocs=2,
                       join=True, start_method=method)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    _assert_same(rank0, rank1)
    _assert_same(_weights(out / "last.safetensors"), rank0)
    # Rank 0 alone wrote the run's files.
    assert (out / "state.pt").exists()
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # The run checks itself that the ranks agree, and says so once (rank 0 logs alone).
    assert [r["ranks_max_weight_difference"] for r in records if "ranks_max_weight_difference" in r] == [0.0]
    assert len([r for r in records if "done" in r]) == 1
    from edgesr.models.loading import create

    torch.manual_seed(config.seed)
    initial = create("srconvnet", 2, **TINY).state_dict()
    assert not torch.equal(initial["to_feat.weight"], rank0["to_feat.weight"])


@pytest.mark.slow
def test_torchrun_runs_the_same_command(data_dir, tmp_path):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "torchrun"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-port", str(_free_port()), "-m", "edgesr.cli", "train", "--model", "srconvnet",
               "--scale", "2", "--data", str(data_dir), "--iters", "2", "--batch", "2", "--patch", "8",
               "--out", str(out), "--workers", "0"]
    command += [arg for key, value in TINY.items() for arg in ("--hparam", f"{key}={value}")]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {"iter": 2, "ranks_max_weight_difference": 0.0} in records


# ----- bad input -------------------------------------------------------------------


def test_empty_data_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgeSRError, match="no images found"):
        train(_config(tmp_path / "empty", tmp_path / "out"))


def test_images_smaller_than_the_patch_are_skipped_or_refused(data_dir, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for path in data_dir.iterdir():
        (mixed / path.name).write_bytes(path.read_bytes())
    Image.new("RGB", (10, 10)).save(mixed / "tiny.png")
    (mixed / "broken.png").write_bytes(b"not a png")
    train(_config(mixed, tmp_path / "ok", iters=1, milestones=[1]))
    assert "3 training images, 1 skipped as smaller than the patch, 1 skipped as unreadable" in capsys.readouterr().err
    with pytest.raises(EdgeSRError, match=r"no usable training images \(4 smaller than the 96x96 HR patch, 1 unreadable\)"):
        train(_config(mixed, tmp_path / "big", patch=48))


def test_resume_without_a_checkpoint(data_dir, tmp_path):
    with pytest.raises(EdgeSRError, match="--resume: no training state"):
        train(_config(data_dir, tmp_path / "nothing", resume=True))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, monkeypatch):
    import edgesr.train.loop as loop

    out = tmp_path / "nan"
    calls = {"n": 0}
    real_l1 = torch.nn.functional.l1_loss

    class PoisonedF:
        def __getattr__(self, name):
            return getattr(torch.nn.functional, name)

        @staticmethod
        def l1_loss(a, b):
            calls["n"] += 1
            loss = real_l1(a, b)
            return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(loop, "F", PoisonedF())
    with pytest.raises(EdgeSRError, match=r"loss became nan at iteration 5; .*iteration 3\)"):
        train(_config(data_dir, out, iters=6))
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["iteration"] == 3
    _assert_same(_weights(out / "last.safetensors"), state["model"])
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_cli_reports_bad_input_in_one_line(tmp_path):
    from edgesr.cli import app

    (tmp_path / "empty").mkdir()
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--model", "srconvnet", "--scale", "2",
                                 "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "no images found" in result.output
    result = runner.invoke(app, ["train", "--model", "srconvnet", "--scale", "2", "--data",
                                 str(tmp_path), "--out", str(tmp_path / "o"), "--resume"])
    assert result.exit_code == 2 and "no training state" in result.output
    result = runner.invoke(app, ["train", "--model", "nonet", "--scale", "2", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "unknown architecture" in result.output


def test_training_works_when_the_caller_disabled_autograd(data_dir, tmp_path):
    """A library caller inside no_grad or inference mode still trains."""
    with torch.inference_mode():
        model = train(_config(data_dir, tmp_path / "run", iters=2))
    assert any(p.requires_grad for p in model.parameters())
