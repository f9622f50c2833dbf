"""What a run writes: model checkpoints edgesr.load reads, and the resumable state.

``last``/``best``/``ema.safetensors`` hold the network's state dict in the official
key layout with our metadata (arch, scale, hparams). ``state.pt`` holds everything
``--resume`` needs: weights, EMA, optimizer, scheduler, iteration, RNG states, the
best score and the log so far. Every file is written to a temporary name and renamed,
so an interrupted write never leaves a corrupted checkpoint behind.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgesr.errors import EdgeSRError
from edgesr.models.loading import save_checkpoint

STATE_FILE = "state.pt"
LAST, BEST, EMA = "last.safetensors", "best.safetensors", "ema.safetensors"


def write_model(model: nn.Module, path: Path) -> Path:
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    save_checkpoint(model, tmp)
    os.replace(tmp, path)
    return path


def write_state(state: dict[str, Any], out: Path) -> Path:
    path = out / STATE_FILE
    tmp = out / f".{STATE_FILE}.partial"
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def read_state(out: Path) -> dict[str, Any]:
    path = out / STATE_FILE
    if not path.is_file():
        raise EdgeSRError(
            f"--resume: no training state in {out} (expected {path}); "
            f"start without --resume or point --out at an earlier run"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means an unusable file
        raise EdgeSRError(f"{path}: unreadable training state ({str(exc).splitlines()[0]})") from None


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
