"""The training loop: L1 loss, Adam, MultiStepLR, optional EMA, validation, checkpoints."""
from __future__ import annotations

import copy
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgesr.errors import EdgeSRError
from edgesr.train import checkpoints as ckpt
from edgesr.train import ddp
from edgesr.train.config import TrainConfig
from edgesr.train.data import load_images, make_loader


class Log:
    """Messages and metrics of rank 0: stderr (through tqdm when a bar is shown) and log.jsonl."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        self.path = out / "log.jsonl"

    def say(self, message: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def record(self, entry: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(entry) + "\n")


class EMA:
    """Exponential moving average of a network's weights (BasicSR's ``net_g_ema``)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        current = model.state_dict()
        for key, value in self.model.state_dict().items():
            source = current[key].detach()
            if value.dtype.is_floating_point:
                value.mul_(self.decay).add_(source, alpha=1.0 - self.decay)
            else:
                value.copy_(source)


def _resolve_arch(name: str) -> str:
    from edgesr.models.loading import get_arch_or_error

    return get_arch_or_error(name).name


def _build_model(config: TrainConfig, arch: str, say) -> nn.Module:
    from edgesr.models.loading import create

    try:
        if config.init is None:
            return create(arch, config.scale, **config.hparams)
        return _init_from(config, arch, say)
    except ValueError as exc:  # the architectures reject impossible hyperparameters this way
        raise EdgeSRError(f"{arch} x{config.scale} with {config.hparams}: {exc}") from None


def _init_from(config: TrainConfig, arch: str, say) -> nn.Module:
    """Fine-tune from a checkpoint; layers whose shapes change with the scale are re-initialised."""
    from edgesr.models.descriptor import describe
    from edgesr.models.loading import create, load

    source = load(config.init)
    info = describe(source)
    if info.arch != arch:
        raise EdgeSRError(f"--init {config.init}: holds a {info.arch} but --model is {arch}")
    hparams = {**info.hparams, **config.hparams}
    model = create(arch, config.scale, **hparams)
    target, weights = model.state_dict(), source.state_dict()
    # A top-level module is kept only if every one of its tensors matches in name and shape.
    groups: dict[str, bool] = {}
    for key, value in target.items():
        group = key.split(".")[0]
        fits = key in weights and weights[key].shape == value.shape
        groups[group] = groups.get(group, True) and fits
    for key in weights:
        if key not in target:
            groups[key.split(".")[0]] = False
    reset = sorted(g for g, ok in groups.items() if not ok)
    if reset and info.scale == config.scale:
        raise EdgeSRError(
            f"--init {config.init}: does not fit {arch} x{config.scale} with "
            f"{hparams} (mismatched: {', '.join(reset)}); drop the --hparam overrides"
        )
    kept = {k: v for k, v in weights.items() if k.split(".")[0] in groups and groups[k.split(".")[0]]}
    model.load_state_dict(kept, strict=False)
    note = (f"; re-initialised for x{config.scale}: {', '.join(g + '.*' for g in reset)}" if reset else "")
    say(f"initialised from {config.init} ({info.arch} x{info.scale}): kept {len(kept)} of "
        f"{len(target)} tensors{note}")
    return model


def _optimizer(model: nn.Module, config: TrainConfig):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.99))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.milestones),
                                                     gamma=config.gamma)
    return optimizer, scheduler


def _restore_config(config: TrainConfig, saved: dict[str, Any], arch: str) -> TrainConfig:
    """On --resume the saved run's settings win; --iters may extend the run."""
    saved_cfg = TrainConfig(**{**saved, "data": Path(saved["data"]), "out": Path(saved["out"]),
                               "val": None if saved["val"] is None else Path(saved["val"])})
    if _resolve_arch(saved_cfg.model) != arch or saved_cfg.scale != config.scale:
        raise EdgeSRError(
            f"--resume: {config.out} holds a {saved_cfg.model} x{saved_cfg.scale} run, "
            f"not {config.model} x{config.scale}"
        )
    for key in ("out", "val", "val_every", "save_every", "log_every", "workers", "progress",
                "device", "threads", "amp"):
        setattr(saved_cfg, key, getattr(config, key))
    if config.iters is not None and config.iters > saved_cfg.iters:
        saved_cfg.iters = config.iters
    saved_cfg.resume = True
    return saved_cfg


def run(config: TrainConfig) -> nn.Module:
    ctx = ddp.setup(config.device)
    try:
        # Training needs autograd even when the caller runs under no_grad/inference mode.
        with torch.inference_mode(False), torch.enable_grad():
            return _run(config, ctx)
    finally:
        ddp.teardown(ctx)


def _run(config: TrainConfig, ctx: ddp.Dist) -> nn.Module:
    if config.threads:
        torch.set_num_threads(config.threads)
    arch = _resolve_arch(config.model)
    out = Path(config.out)
    saved = None
    if config.resume:
        saved = ckpt.read_state(out)
        config = _restore_config(config, saved["config"], arch)
    else:
        config = config.resolved(arch)
    if config.patch < 8 or config.batch < 1 or config.iters < 1:  # before --out is created
        raise EdgeSRError("--patch must be >= 8, --batch and --iters >= 1")
    log = Log(out, ctx.main)
    if ctx.main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EdgeSRError(f"--out {out}: cannot create the folder ({exc.strerror})") from None
        if not config.resume and (out / ckpt.STATE_FILE).exists():
            raise EdgeSRError(f"--out {out}: already holds a run; add --resume to continue it "
                              f"or choose another --out")

    cache = load_images(config.data, config.patch * config.scale)
    from edgesr.models.registry import get_arch

    input_range = get_arch(arch).input_range
    val_pairs = None
    if config.val is not None:
        from edgesr.train.validate import load_val_set

        val_pairs = load_val_set(config.val, config.scale)

    torch.manual_seed(config.seed)
    model = _build_model(config, arch, log.say).to(ctx.device).train()
    ema = EMA(model, config.ema) if config.ema > 0 else None
    optimizer, scheduler = _optimizer(model, config)
    use_amp = config.amp and ctx.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start, best, elapsed, last_saved = 0, None, 0.0, None
    if saved is not None:
        model.load_state_dict(saved["model"])
        if ema is not None and saved.get("ema") is not None:
            ema.model.load_state_dict(saved["ema"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scheduler.milestones.update({m: 1 for m in config.milestones if m not in scheduler.milestones})
        if saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        ckpt.set_rng_state(saved["rng"])
        start, best, elapsed = int(saved["iteration"]), saved.get("best"), float(saved.get("elapsed", 0.0))
        last_saved = start
        if start >= config.iters:
            raise EdgeSRError(f"--resume: {out} already finished {start} of {config.iters} iterations; "
                              f"pass a larger --iters to continue")
        log.say(f"resuming {out} at iteration {start} of {config.iters}")

    network = model
    if ctx.enabled:
        network = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)

    def state(iteration: int) -> dict[str, Any]:
        return {
            "iteration": iteration,
            "config": config.to_dict(),
            "model": model.state_dict(),
            "ema": ema.model.state_dict() if ema is not None else None,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if use_amp else None,
            "rng": ckpt.rng_state(),
            "best": best,
            "elapsed": elapsed + (time.perf_counter() - started),
        }

    def save(iteration: int) -> None:
        nonlocal last_saved
        if ctx.main:
            ckpt.write_model(model, out / ckpt.LAST)
            if ema is not None:
                ckpt.write_model(ema.model, out / ckpt.EMA)
            ckpt.write_state(state(iteration), out)
        last_saved = iteration

    if ctx.main:
        log.say(f"training {arch} x{config.scale} on {config.data}: {cache.summary()}; "
                f"{config.iters} iterations, batch {config.batch} per process x {ctx.world}, "
                f"LR patch {config.patch}, lr {config.lr:g}, milestones {config.milestones}, "
                f"device {ctx.device}{', AMP' if use_amp else ''}")
        for name in cache.too_small[:3] + cache.unreadable[:3]:
            log.say(f"  skipped {name}")

    loader = make_loader(cache, config.scale, config.patch, config.batch, config.seed, start,
                         config.iters, config.workers, ctx.rank, ctx.world,
                         pin=ctx.device.type == "cuda")
    show_bar = ctx.main and config.progress and sys.stderr.isatty()
    bar = None
    if show_bar:
        from tqdm import tqdm

        bar = tqdm(total=config.iters, initial=start, desc="train", file=sys.stderr, dynamic_ncols=True)
        log.bar = bar
    started = time.perf_counter()
    window_loss, window_count, window_start = 0.0, 0, time.perf_counter()
    psnr_text = "-"
    iteration = start
    for lr_batch, hr_batch in loader:
        lr_batch = lr_batch.to(ctx.device, non_blocking=True)
        hr_batch = hr_batch.to(ctx.device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
            sr = network(lr_batch * input_range) / input_range
        loss = F.l1_loss(sr.float(), hr_batch)
        reported = float(ddp.mean(loss, ctx))
        if not math.isfinite(reported):
            _stop_on_nan(iteration + 1, reported, out, last_saved, log, bar)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        iteration += 1
        if ema is not None:
            ema.update(model)
        window_loss += reported
        window_count += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{reported:.4f}", psnr=psnr_text, refresh=False)
        if iteration % config.log_every == 0 or iteration == config.iters:
            now = time.perf_counter()
            speed = window_count / max(now - window_start, 1e-9)
            entry = {"iter": iteration, "loss": window_loss / window_count,
                     "lr": optimizer.param_groups[0]["lr"], "it_s": speed,
                     "elapsed_s": elapsed + now - started}
            log.record(entry)
            if bar is None:
                log.say(f"iter {iteration}/{config.iters}  loss {entry['loss']:.4f}  "
                        f"lr {entry['lr']:.2e}  {speed:.2f} it/s  val {psnr_text} dB")
            window_loss, window_count, window_start = 0.0, 0, time.perf_counter()
        validate_now = val_pairs is not None and (iteration % config.val_every == 0
                                                  or iteration == config.iters)
        if validate_now:
            if ctx.main:
                psnr_text, best = _validate(model, ema, val_pairs, config, input_range, ctx, out,
                                            iteration, best, log)
            ddp.barrier(ctx)
        if iteration % config.save_every == 0 or iteration == config.iters:
            save(iteration)
            ddp.barrier(ctx)
    if bar is not None:
        bar.close()
        log.bar = None
    total = elapsed + time.perf_counter() - started
    if ctx.enabled:
        difference = ddp.max_param_difference(model, ctx)
        log.record({"iter": iteration, "ranks_max_weight_difference": difference})
        log.say(f"ranks in sync: largest weight difference between ranks {difference:g}")
    log.record({"done": iteration, "elapsed_s": total, "best": best})
    log.say(f"done: {iteration} iterations in {total / 60:.1f} min; checkpoints in {out} "
            f"({ckpt.LAST}{', ' + ckpt.EMA if ema is not None else ''}"
            f"{', ' + ckpt.BEST if best is not None else ''})"
            + (f"; best validation PSNR-Y {best['psnr_y']:.2f} dB at iteration {best['iter']} "
               f"({best['weights']})" if best else ""))
    return model


def _validate(model, ema, val_pairs, config, input_range, ctx, out, iteration, best, log):
    from edgesr.train.validate import validate

    scores = {"model": validate(model, val_pairs, config.scale, input_range, ctx.device)}
    if ema is not None:
        scores["ema"] = validate(ema.model, val_pairs, config.scale, input_range, ctx.device)
    which = max(scores, key=scores.get)
    entry = {"iter": iteration, "val_psnr_y": scores["model"]}
    if ema is not None:
        entry["val_psnr_y_ema"] = scores["ema"]
    log.record(entry)
    text = f"{scores[which]:.2f}"
    log.say(f"iter {iteration}: validation PSNR-Y {scores['model']:.2f} dB"
            + (f", EMA {scores['ema']:.2f} dB" if ema is not None else ""))
    if best is None or scores[which] > best["psnr_y"]:
        best = {"iter": iteration, "psnr_y": scores[which], "weights": which}
        ckpt.write_model(ema.model if which == "ema" else model, out / ckpt.BEST)
    return text, best


def _stop_on_nan(iteration, value, out, last_saved, log, bar) -> None:
    if bar is not None:
        bar.close()
        log.bar = None
    kept = (f"the last good checkpoint is {out / ckpt.LAST} (iteration {last_saved})"
            if last_saved is not None else "no checkpoint had been written yet")
    log.record({"iter": iteration, "stopped": f"loss {value}"})
    raise EdgeSRError(
        f"loss became {value} at iteration {iteration}; training stopped without saving; "
        f"{kept}; try a lower --lr"
    )
