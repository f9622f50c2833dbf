from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (tests that need ../shared data skip without it)")
    return path


def make_every_branch_count(model, seed: int = 0):
    """Perturb a freshly built model like the golden weights: fresh models have
    layer_scale = 1e-6 and zero biases, which makes SRConvNet's attention softmax
    nearly uniform and hides whole branches from a parity test."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("layer_scale"):
                param.fill_(0.5)
            else:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model.eval()


@pytest.fixture
def small_srconvnet():
    from edgesr.models.loading import create

    return create("srconvnet", 2, dim=16, num_blocks=1, num_heads=2, num_kernels=4)
