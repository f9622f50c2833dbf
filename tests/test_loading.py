from __future__ import annotations

import json

import pytest
import torch

from edgesr.errors import EdgeSRError
from edgesr.models.descriptor import describe
from edgesr.models.loading import create, load, save_checkpoint
from tests.conftest import shared_path

torch.manual_seed(0)


def _outputs(model, seed=0):
    x = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(seed)) * describe(model).input_range
    with torch.inference_mode():
        return model(x)


def _same(a, b):
    assert torch.equal(_outputs(a), _outputs(b))


LAYOUTS = {
    "plain": lambda sd: sd,
    "params": lambda sd: {"params": sd},
    "params_ema": lambda sd: {"params": {k: torch.zeros_like(v) for k, v in sd.items()}, "params_ema": sd},
    "state_dict": lambda sd: {"state_dict": sd, "epoch": 3},
    "model": lambda sd: {"model": sd},
    "module_prefix": lambda sd: {f"module.{k}": v for k, v in sd.items()},
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("suffix", [".pth", ".pt", ".ckpt"])
def test_torch_layouts_round_trip(tmp_path, small_srconvnet, layout, suffix):
    path = tmp_path / f"w{suffix}"
    torch.save(LAYOUTS[layout](small_srconvnet.state_dict()), path)
    loaded = load(path)
    info = describe(loaded)
    assert (info.arch, info.scale) == ("srconvnet", 2)
    assert info.hparams["dim"] == 16 and info.hparams["num_blocks"] == 1
    assert not loaded.training
    _same(small_srconvnet, loaded)


def test_params_ema_preferred(tmp_path, small_srconvnet):
    path = tmp_path / "w.pth"
    torch.save(LAYOUTS["params_ema"](small_srconvnet.state_dict()), path)
    assert describe(load(path)).layout.startswith("params_ema")


def test_safetensors_round_trip_keeps_metadata(tmp_path, small_srconvnet):
    path = save_checkpoint(small_srconvnet, tmp_path / "w.safetensors")
    loaded = load(path)
    assert describe(loaded).hparams["num_heads"] == 2
    _same(small_srconvnet, loaded)


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_hub_directory(tmp_path, small_srconvnet, weights):
    from safetensors.torch import save_file

    state = small_srconvnet.state_dict()
    if weights.endswith(".safetensors"):
        save_file(state, str(tmp_path / weights))
    else:
        torch.save(state, tmp_path / weights)
    (tmp_path / "config.json").write_text(json.dumps({"num_heads": 2, "upscale": 2}))
    loaded = load(tmp_path)
    assert describe(loaded).hparams["num_heads"] == 2
    _same(small_srconvnet, loaded)


class _Evil:
    def __reduce__(self):
        return (print, ("executed",))


def test_arbitrary_pickle_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"params": {"w": torch.zeros(1)}, "hook": _Evil()}, path)
    with pytest.raises(EdgeSRError, match="refusing to unpickle"):
        load(path)
    assert "executed" not in capsys.readouterr().out


def test_truncated_file(tmp_path, small_srconvnet):
    path = tmp_path / "cut.pth"
    torch.save(small_srconvnet.state_dict(), path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(EdgeSRError, match="not a readable PyTorch checkpoint"):
        load(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(EdgeSRError, match="not a readable PyTorch checkpoint"):
        load(path)
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(EdgeSRError, match="not a readable safetensors"):
        load(bad)


def test_unknown_architecture(tmp_path):
    path = tmp_path / "conv.pth"
    torch.save(torch.nn.Conv2d(3, 3, 3).state_dict(), path)
    with pytest.raises(EdgeSRError, match="unknown architecture.*weight, bias"):
        load(path)


def test_unknown_suffix_and_missing(tmp_path):
    with pytest.raises(EdgeSRError, match="no such checkpoint file"):
        load(tmp_path / "absent.pth")
    odd = tmp_path / "w.h5"
    odd.write_bytes(b"x")
    with pytest.raises(EdgeSRError, match="unknown checkpoint type '.h5'"):
        load(odd)


def test_missing_and_unexpected_keys(tmp_path, small_srconvnet):
    state = dict(small_srconvnet.state_dict())
    dropped = [k for k in state if "CPE" in k][:3]
    for key in dropped:
        del state[key]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    with pytest.raises(EdgeSRError) as err:
        load(path)
    message = str(err.value)
    assert f"{len(dropped)} missing keys" in message and "1 unexpected keys (extra.weight)" in message


def test_shape_mismatch_named(tmp_path, small_srconvnet):
    path = tmp_path / "w.pth"
    torch.save(small_srconvnet.state_dict(), path)
    # num_kernels can be forced but contradicts the bank's tensor shape in the file.
    with pytest.raises(EdgeSRError, match="shape mismatch"):
        load(path, num_kernels=8)


def test_forced_contradictions(tmp_path, small_srconvnet):
    path = tmp_path / "w.pth"
    torch.save(small_srconvnet.state_dict(), path)
    with pytest.raises(EdgeSRError, match="--scale 4 was given but the checkpoint holds a x2 srconvnet"):
        load(path, scale=4)
    with pytest.raises(EdgeSRError, match="--model hit-srf was given but the checkpoint holds srconvnet"):
        load(path, model="hit-srf")
    assert describe(load(path, scale=2, model="srconvnet")).scale == 2


def test_create_rejects_bad_names_and_scales():
    with pytest.raises(EdgeSRError, match="unknown architecture 'edsr'"):
        create("edsr", 2)
    with pytest.raises(EdgeSRError, match="no x5"):
        create("srconvnet", 5)
    with pytest.raises(EdgeSRError, match="nonsense"):
        create("srconvnet", 2, nonsense=1)


def test_real_hitnet_checkpoint_detected():
    model = load(shared_path("data", "weights", "HiTNet.pth"))
    info = describe(model)
    assert (info.arch, info.scale, info.input_range) == ("hit-srf", 4, 1.0)
    assert len(info.sha256) == 64
