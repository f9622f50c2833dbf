"""Training configuration and the papers' defaults for each architecture."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# MultiStepLR milestones of both papers as fractions of the run: HiT-SR halves at
# 250K/400K/450K/475K of 500K iterations, SRConvNet at 50/80/90/95 % of training.
MILESTONE_FRACTIONS = (0.5, 0.8, 0.9, 0.95)

# Per-architecture defaults. ``patch`` is the LR patch side (HR patches are patch*scale).
PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    # HiT-SR (ECCV 2024): Adam lr 5e-4, 500K iterations, batch 64, LR patches 64x64.
    "hit": {"lr": 5e-4, "iters": 500_000, "batch": 64, "patch": 64},
    # SRConvNet (IJCV 2025): Adam lr 2e-4; EDSR-style batch 16 of 48x48 LR patches.
    "srconvnet": {"lr": 2e-4, "iters": 500_000, "batch": 16, "patch": 48},
}


def model_defaults(arch: str) -> dict[str, Any]:
    key = "hit" if arch.lower().startswith("hit") else arch.lower()
    return dict(PAPER_DEFAULTS.get(key, PAPER_DEFAULTS["srconvnet"]))


def default_milestones(iters: int) -> list[int]:
    return sorted({max(1, int(round(iters * f))) for f in MILESTONE_FRACTIONS})


@dataclass
class TrainConfig:
    model: str
    scale: int
    data: Path
    out: Path
    val: Path | None = None
    iters: int | None = None  # None: the paper's default for the model
    batch: int | None = None
    patch: int | None = None  # LR patch side
    lr: float | None = None
    milestones: list[int] | None = None  # None: 50/80/90/95 % of iters
    gamma: float = 0.5
    init: str | None = None
    resume: bool = False
    ema: float = 0.999  # decay; 0 disables the EMA copy
    val_every: int = 5000
    save_every: int = 1000
    log_every: int = 100
    workers: int = 2
    seed: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # only on CUDA
    threads: int | None = None
    progress: bool = True

    def resolved(self, arch: str) -> "TrainConfig":
        """A copy with the model's defaults filled in."""
        defaults = model_defaults(arch)
        values = asdict(self)
        for key in ("lr", "iters", "batch", "patch"):
            if values[key] is None:
                values[key] = defaults[key]
        if values["milestones"] is None:
            values["milestones"] = default_milestones(values["iters"])
        values["data"], values["out"] = Path(self.data), Path(self.out)
        values["val"] = Path(self.val) if self.val is not None else None
        return TrainConfig(**values)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        for key in ("data", "out", "val"):
            values[key] = None if values[key] is None else str(values[key])
        return values
