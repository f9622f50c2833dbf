"""SRConvNet: parity with the official implementation's golden outputs, shapes, detection."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgesr.models.registry import get_arch
from edgesr.models.srconvnet import SPEC, build, detect
from tests.conftest import make_every_branch_count

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden"
TOLERANCE = 1e-4 * 255  # the network works on [0, 255]

# Trainable parameter counts of the official code at its default configuration
# (x2, x4 from shared/README.md; x3 measured by running the official code).
OFFICIAL_PARAM_COUNTS = {2: 990_851, 3: 1_011_651, 4: 1_007_491}

SMALL_CONFIG = {"dim": 32, "num_blocks": 2, "num_heads": 4, "num_kernels": 8, "colors": 3}


def _strip_module_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def _golden(scale: int):
    checkpoint = GOLDEN / f"srconvnet_x{scale}.pth"
    arrays = GOLDEN / f"srconvnet_x{scale}_40x52.npz"
    if not (checkpoint.exists() and arrays.exists()):
        pytest.skip(f"golden SRConvNet x{scale} data not found under {GOLDEN}")
    state_dict = _strip_module_prefix(torch.load(checkpoint, map_location="cpu", weights_only=True))
    data = np.load(arrays)
    config = json.loads(str(data["config"]))
    return state_dict, data["lr"], data["sr"], config


@pytest.mark.parametrize("scale", [2, 4])
def test_golden_parity(scale: int) -> None:
    state_dict, lr, sr, config = _golden(scale)
    assert config.pop("scale") == scale
    # rgb_range only sets the never-applied MeanShift constants; the input range
    # contract lives in the spec.
    assert config.pop("rgb_range") == SPEC.input_range
    model = build(scale, **config).eval()
    model.load_state_dict(state_dict, strict=True)
    with torch.no_grad():
        out = model(torch.from_numpy(lr)).numpy()
    assert out.shape == sr.shape
    assert np.abs(out - sr).max() <= TOLERANCE


@pytest.mark.parametrize("scale", [2, 4])
def test_detect_golden_checkpoint(scale: int) -> None:
    state_dict, _, _, config = _golden(scale)
    config.pop("rgb_range")
    assert detect(state_dict) == config


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_trainable_parameter_count_matches_official(scale: int) -> None:
    model = build(scale)
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count == OFFICIAL_PARAM_COUNTS[scale]


def test_batch_equals_samples_alone() -> None:
    model = make_every_branch_count(build(2, **SMALL_CONFIG))
    images = 255 * torch.rand(3, 3, 17, 23, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        batched = model(images)
        alone = torch.cat([model(image[None]) for image in images])
    assert (batched - alone).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(17, 23), (33, 31), (8, 8), (1, 1)])
def test_output_size_and_finite(scale: int, size: tuple[int, int]) -> None:
    model = make_every_branch_count(build(scale, **SMALL_CONFIG))
    height, width = size
    with torch.no_grad():
        out = model(255 * torch.rand(1, 3, height, width))
    assert out.shape == (1, 3, height * scale, width * scale)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "scale, hparams",
    [
        (2, {}),
        (3, {}),
        (4, {}),
        (3, SMALL_CONFIG),
        (4, {"dim": 16, "num_blocks": 3, "num_heads": 2, "num_kernels": 4, "colors": 1}),
    ],
)
def test_detect_round_trips_hparams(scale: int, hparams: dict) -> None:
    model = build(scale, **hparams)
    expected = {"scale": scale, **SPEC.defaults, **hparams}
    assert detect(model.state_dict()) == expected
    # What detect reports must rebuild a model the state dict loads into strictly.
    found = detect(model.state_dict())
    build(found.pop("scale"), **found).load_state_dict(model.state_dict(), strict=True)


def test_detect_rejects_other_architectures() -> None:
    other = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    assert detect(other.state_dict()) is None
    assert detect({}) is None


def test_build_rejects_unknown_hparams() -> None:
    with pytest.raises(TypeError, match="window_size"):
        build(2, window_size=8)


def test_registered() -> None:
    assert get_arch("SRConvNet") is SPEC
    assert SPEC.input_range == 255.0
    assert SPEC.defaults == {"dim": 64, "num_blocks": 8, "num_heads": 8, "num_kernels": 16, "colors": 3}
