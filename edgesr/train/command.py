"""`edgesr train`: the Typer command (torch is imported only when it runs)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from edgesr.cli_common import check_threads, user_errors
from edgesr.errors import EdgeSRError


def parse_hparams(items: List[str]) -> dict:
    """KEY=VALUE pairs; values are read as JSON where they parse (numbers, lists), else text."""
    hparams = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise EdgeSRError(f"--hparam {item!r}: expected KEY=VALUE, e.g. dim=32")
        try:
            hparams[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            hparams[key.strip()] = text
    return hparams


def parse_milestones(text: Optional[str]) -> Optional[List[int]]:
    if text is None:
        return None
    try:
        values = sorted(int(part) for part in text.replace(",", " ").split())
    except ValueError:
        raise EdgeSRError(f"--milestones {text!r}: expected iteration numbers, e.g. 250000,400000") from None
    if not values or values[0] < 1:
        raise EdgeSRError(f"--milestones {text!r}: expected positive iteration numbers")
    return values


@user_errors
def train_command(
    model: str = typer.Option(..., "--model", help="Architecture to train (srconvnet, hit-sir, hit-sng, hit-srf)."),
    scale: int = typer.Option(..., "--scale", help="Upscaling factor."),
    data: Path = typer.Option(..., "--data", help="Folder of HR training images (searched recursively)."),
    val: Optional[Path] = typer.Option(None, "--val", help="Validation folder: HR/ with or without LR_bicubic/X<s>/, or flat HR images."),
    iters: Optional[int] = typer.Option(None, "--iters", help="Iterations (default: the paper's 500000)."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Batch size per process (default: srconvnet 16, hit-* 64)."),
    patch: Optional[int] = typer.Option(None, "--patch", help="LR patch side; HR patches are patch*scale (default: srconvnet 48, hit-* 64)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate (default: srconvnet 2e-4, hit-* 5e-4)."),
    milestones: Optional[str] = typer.Option(None, "--milestones", help="Iterations at which the lr halves, e.g. 250000,400000,450000,475000 (default: 50/80/90/95 percent of --iters)."),
    init: Optional[str] = typer.Option(None, "--init", help="Fine-tune from a checkpoint (another scale re-initialises the upsampler)."),
    out: Path = typer.Option(Path("runs/train"), "--out", help="Folder for checkpoints and log.jsonl."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
    ema: float = typer.Option(0.999, "--ema", help="EMA decay of the weights; 0 turns it off."),
    val_every: int = typer.Option(5000, "--val-every", help="Validate every K iterations."),
    save_every: int = typer.Option(1000, "--save-every", help="Write checkpoints every K iterations."),
    log_every: int = typer.Option(100, "--log-every", help="Log loss and speed every K iterations."),
    workers: int = typer.Option(2, "--workers", help="Data-loading worker processes."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initialisation and the data order."),
    hparam: List[str] = typer.Option([], "--hparam", help="Model hyperparameter KEY=VALUE (repeatable), e.g. dim=32."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="Mixed precision on CUDA."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads per process."),
) -> None:
    """Train a network with L1 loss, Adam and MultiStepLR on random HR crops (LR made with MATLAB bicubic).

    Under `torchrun --nproc-per-node N` the same command trains with DistributedDataParallel.
    """
    from edgesr.train import TrainConfig, train

    if device not in ("auto", "cpu", "cuda"):
        raise EdgeSRError(f"--device {device!r}: choose auto, cpu or cuda")
    for name, value in (("--val-every", val_every), ("--save-every", save_every), ("--log-every", log_every)):
        if value < 1:
            raise EdgeSRError(f"{name} must be >= 1")
    if not 0.0 <= ema < 1.0:
        raise EdgeSRError(f"--ema {ema}: expected a decay in [0, 1)")
    if workers < 0:
        raise EdgeSRError("--workers must be >= 0")
    config = TrainConfig(
        model=model, scale=scale, data=data, out=out, val=val, iters=iters, batch=batch, patch=patch,
        lr=lr, milestones=parse_milestones(milestones), init=init, resume=resume, ema=ema,
        val_every=val_every, save_every=save_every, log_every=log_every, workers=workers, seed=seed,
        hparams=parse_hparams(hparam), device=device, amp=amp, threads=check_threads(threads),
    )
    train(config)
