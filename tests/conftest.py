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


@pytest.fixture
def small_srconvnet():
    from edgesr.models.loading import create

    return create("srconvnet", 2, dim=16, num_blocks=1, num_heads=2, num_kernels=4)
