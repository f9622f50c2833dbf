"""Checkpoints shipped inside the package, addressable by name."""
from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def bundled_weights(name: str) -> Path | None:
    candidate = ASSETS / f"{name}.safetensors"
    return candidate if candidate.is_file() else None
