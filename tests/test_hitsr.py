"""HiT-SIR / HiT-SNG / HiT-SRF: parity with the official outputs, shapes, detection."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgesr.models.registry import get_arch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN = SHARED / "golden"
VARIANTS = ("hit-sir", "hit-sng", "hit-srf")
# Official constructor arguments that have no effect on inference and that our build drops.
INFERENCE_IRRELEVANT = {"img_size"}
# Trainable parameters of the official code (x3 from a run of the official code).
OFFICIAL_PARAMS = {
    "hit-sir": {2: 772_064, 3: 780_179, 4: 791_540},
    "hit-sng": {2: 1_012_584, 3: 1_020_699, 4: 1_032_060},
    "hit-srf": {2: 846_944, 3: 855_059, 4: 866_420},
}
# Small enough to run in milliseconds, yet every kind of block: windows 4..64.
SMALL = {
    "embed_dim": 24,
    "depths": [6, 2],
    "num_heads": [2, 3],
    "mlp_ratio": 1.5,
    "upsampler": "pixelshuffle",
    "resi_connection": "3conv",
}



@pytest.fixture(autouse=True)
def _no_autograd():
    with torch.no_grad():
        yield


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test data not found: {path} (see ../shared/README.md)")
    return path


def _params(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["params"]


def _from_state_dict(name: str, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    spec = get_arch(name)
    found = spec.detect(state_dict)
    assert found is not None, f"{name}.detect rejected its own checkpoint"
    scale = found.pop("scale")
    model = spec.build(scale=scale, **found).eval()
    model.load_state_dict(state_dict, strict=True)
    return model


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("name", VARIANTS)
def test_golden_parity(name: str, scale: int) -> None:
    golden = np.load(_need(GOLDEN / f"{name}_x{scale}_40x52.npz"))
    state_dict = _params(_need(GOLDEN / f"{name}_x{scale}.pth"))
    config = json.loads(str(golden["config"]))
    model = _from_state_dict(name, state_dict)
    # The hyperparameters read from the file are the ones the golden run used.
    built = {k: v for k, v in config.items() if k not in INFERENCE_IRRELEVANT and k != "upscale"}
    found = get_arch(name).detect(state_dict)
    assert found["scale"] == config["upscale"]
    assert {k: found[k] for k in built} == built
    out = model(torch.from_numpy(golden["lr"]))
    expected = torch.from_numpy(golden["sr"])
    assert out.shape == expected.shape
    assert (out - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", VARIANTS)
def test_param_counts_match_official(name: str) -> None:
    spec = get_arch(name)
    for scale, expected in OFFICIAL_PARAMS[name].items():
        model = spec.build(scale=scale)
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected, (name, scale)


def test_trained_hitnet_checkpoint_loads() -> None:
    state_dict = _params(_need(SHARED / "data" / "weights" / "HiTNet.pth"))
    assert get_arch("hit-sir").detect(state_dict) is None
    assert get_arch("hit-sng").detect(state_dict) is None
    found = get_arch("hit-srf").detect(state_dict)
    assert found is not None and found["scale"] == 4
    model = _from_state_dict("hit-srf", state_dict)
    out = model(torch.rand(1, 3, 12, 10))
    assert out.shape == (1, 3, 48, 40) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", VARIANTS)
def test_batch_equals_single_samples(name: str) -> None:
    torch.manual_seed(0)
    model = get_arch(name).build(scale=2, embed_dim=16, depths=[6], num_heads=[2]).eval()
    images = torch.rand(2, 3, 11, 14)
    batched = model(images)
    single = torch.cat([model(image[None]) for image in images])
    assert (batched - single).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("size", [(5, 7), (17, 23), (70, 66)])
def test_any_size_gives_scaled_finite_output(name: str, size: tuple[int, int]) -> None:
    # Below the smallest window, odd, below and above the largest window (64).
    torch.manual_seed(0)
    model = get_arch(name).build(scale=3, embed_dim=16, depths=[6], num_heads=[1]).eval()
    out = model(torch.rand(1, 3, *size))
    assert out.shape == (1, 3, size[0] * 3, size[1] * 3)
    assert torch.isfinite(out).all()


def test_one_pixel_side_is_refused() -> None:
    model = get_arch("hit-sir").build(scale=2, embed_dim=16, depths=[1], num_heads=[1]).eval()
    with pytest.raises(ValueError, match="reflect-pad"):
        model(torch.rand(1, 3, 1, 9))


@pytest.mark.parametrize("name", VARIANTS)
def test_detect_round_trips_hparams(name: str) -> None:
    spec = get_arch(name)
    for scale in spec.scales:
        found = spec.detect(spec.build(scale=scale).state_dict())
        assert found == {"scale": scale, **spec.defaults}
    found = spec.detect(spec.build(scale=3, **SMALL).state_dict())
    assert found == {"scale": 3, **spec.defaults, **SMALL}


@pytest.mark.parametrize("name", VARIANTS)
def test_detect_reads_upsamplers(name: str) -> None:
    spec = get_arch(name)
    small = {"embed_dim": 16, "depths": [1], "num_heads": [1]}
    for scale, upsampler in [(2, "pixelshuffle"), (4, "pixelshuffle"), (4, "nearest+conv"), (3, "pixelshuffledirect")]:
        found = spec.detect(spec.build(scale=scale, upsampler=upsampler, **small).state_dict())
        assert (found["scale"], found["upsampler"]) == (scale, upsampler)


def test_sng_detect_reads_a_non_default_window_hierarchy() -> None:
    spec = get_arch("hit-sng")
    hparams = {"embed_dim": 16, "depths": [3], "num_heads": [1], "base_win_size": [4, 4], "hier_win_ratios": [1, 2, 3]}
    found = spec.detect(spec.build(scale=2, **hparams).state_dict())
    assert found["base_win_size"] == [4, 4] and found["hier_win_ratios"] == [1, 2, 3]


@pytest.mark.parametrize("name", VARIANTS)
def test_detect_rejects_other_architectures(name: str) -> None:
    spec = get_arch(name)
    for other in VARIANTS:
        if other != name:
            assert spec.detect(get_arch(other).build(scale=2, **SMALL).state_dict()) is None, other
    conv_net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 12, 3, padding=1))
    assert spec.detect(conv_net.state_dict()) is None


def test_build_rejects_unknown_hparams() -> None:
    with pytest.raises(TypeError, match="window_size"):
        get_arch("hit-srf").build(scale=2, window_size=8)
