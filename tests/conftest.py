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
    """See ``edgesr.models.random_weights.trained_like``."""
    from edgesr.models.random_weights import trained_like

    return trained_like(model, seed)


@pytest.fixture
def small_srconvnet():
    from edgesr.models.loading import create

    return create("srconvnet", 2, dim=16, num_blocks=1, num_heads=2, num_kernels=4)
