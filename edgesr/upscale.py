"""Upscaling image files with any upscaler (PyTorch model now; artifacts through runtimes)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from edgesr.errors import EdgeSRError
from edgesr.evaluate import Upscaler
from edgesr.imageio import LoadedImage

AlphaMode = Literal["bicubic", "model"]


def _bicubic_plane(plane: np.ndarray, scale: int) -> np.ndarray:
    height, width = plane.shape
    resized = Image.fromarray(plane.astype(np.float32), mode="F").resize(
        (width * scale, height * scale), Image.BICUBIC)
    return np.clip(np.asarray(resized), 0.0, 1.0)


def upscale_image(upscale: Upscaler, image: LoadedImage, scale: int,
                  alpha: AlphaMode = "bicubic") -> LoadedImage:
    """Colour through the network; alpha by bicubic (default) or through the network as grey."""
    rgb = upscale(image.rgb)
    upscaled_alpha = None
    if image.alpha is not None:
        if alpha == "model":
            upscaled_alpha = upscale(np.repeat(image.alpha[..., None], 3, axis=2)).mean(axis=2)
        else:
            upscaled_alpha = _bicubic_plane(image.alpha, scale)
    if image.grayscale:
        grey = rgb.mean(axis=2, keepdims=True)
        rgb = np.repeat(grey, 3, axis=2)
    return LoadedImage(rgb.astype(np.float32), upscaled_alpha, image.grayscale, image.bit_depth)


def output_path(source: Path, input_root: Path, out_dir: Path, suffix: str | None) -> Path:
    """Mirror the input's place under its folder into OUT, keeping the name."""
    relative = source.relative_to(input_root) if input_root.is_dir() else Path(source.name)
    target = out_dir / relative
    return target.with_suffix(suffix) if suffix else target


# --------------------------------------------------------------------------------------
# Any model or artifact as an Upscaler, tiled where it has to be (static files) or asked to.
# --------------------------------------------------------------------------------------


@dataclass
class OpenedUpscaler:
    """A runner plus the tiling around it; call it like any Upscaler."""

    runner: Any
    scale: int
    arch: str | None
    tiler: Any | None  # TiledUpscaler, or None for whole-image inference

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return (self.tiler or self.runner)(image)

    def describe(self) -> dict:
        tiling = self.tiler.describe() if self.tiler else {"tile": None, "overlap": None}
        return {**self.runner.describe(), "tiling": tiling}


def open_upscaler(model: str, scale: int | None = None, arch: str | None = None,
                  runtime: str | None = None, tile: int | None = None, overlap: int | None = None,
                  tile_by_default: bool = True, **runtime_options: Any) -> OpenedUpscaler:
    """A checkpoint/model name (PyTorch) or an artifact (.onnx/.tflite/.mlpackage) as an Upscaler.

    ``tile``: None picks the default (an artifact with a fixed input size is always tiled
    at that size; other models use the per-architecture tile when ``tile_by_default``,
    else run on the whole image); 0 means the whole image (refused for fixed-size files).
    ``overlap``: None picks the per-architecture default, reduced to fit a small fixed tile.
    """
    from edgesr.runtimes import is_artifact, open_runner
    from edgesr.tiling import TiledUpscaler, check_tiling, defaults_for

    if is_artifact(model):
        if arch is not None:
            raise EdgeSRError("--model/--arch applies to checkpoints; an artifact states its architecture")
        runner = open_runner(model, runtime, **runtime_options)
        if scale is not None and scale != runner.info.scale:
            raise EdgeSRError(f"--scale {scale}: {Path(model).name} is x{runner.info.scale} (from its metadata)")
    else:
        if runtime not in (None, "pytorch", "torch"):
            raise EdgeSRError(f"{model} is a checkpoint or model name: it runs in pytorch, not {runtime}")
        from edgesr.runtimes.torch_runner import TorchRunner

        runner = TorchRunner(model, scale=scale, arch=arch, **runtime_options)
    info = runner.info
    defaults = defaults_for(info.arch)
    fixed = info.input_size
    if fixed is not None:
        if tile not in (None,) and (tile, tile) != tuple(fixed):
            raise EdgeSRError(f"{Path(model).name} takes only {fixed[0]}x{fixed[1]} inputs, so its tile is "
                              f"{fixed[0]}x{fixed[1]}; drop --tile {tile} or export with "
                              f"--input-size {tile}x{tile} (or --dynamic)")
        sides = tuple(fixed)
    else:
        if tile is None:
            tile = defaults.tile if tile_by_default else 0
        if tile == 0:
            if overlap:
                raise EdgeSRError("--overlap needs tiling: give --tile N")
            return OpenedUpscaler(runner, info.scale, info.arch, None)
        sides = (tile, tile)
    if overlap is None:
        overlap = min(defaults.overlap, min(sides) // 4)
    min_tile = defaults.min_tile if fixed is None else 1
    check_tiling(sides, overlap, min_tile)
    tiler = TiledUpscaler(runner, info.scale, sides, overlap, fixed=fixed is not None, min_tile=min_tile)
    return OpenedUpscaler(runner, info.scale, info.arch, tiler)


def collect_jobs(inputs: list[Path], out: Path) -> list[tuple[Path, Path]]:
    """(source, target) for every image under the inputs, mirrored into ``out``."""
    from edgesr.imageio import list_images

    jobs = []
    for root in inputs:
        if not root.exists():
            raise EdgeSRError(f"{root}: no such file or folder")
        found = list_images(root)
        if not found:
            raise EdgeSRError(f"{root}: no images found (looked for png, jpg, bmp, tif, webp)")
        jobs += [(source, output_path(source, root, out, None)) for source in found]
    return jobs


def upscale_files(upscaler: OpenedUpscaler, jobs: list[tuple[Path, Path]], out: Path,
                  alpha: AlphaMode = "bicubic", show_progress: bool = False) -> list[dict]:
    """Read, upscale (tiled), write each job; outputs are written to a temporary name and
    renamed, so an interrupted or failed run never leaves a half-written image."""
    from edgesr.imageio import read_image, write_image
    from edgesr.progress import progress

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeSRError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    written = []
    for source, target in progress(jobs, desc="upscale", enabled=show_progress and len(jobs) > 1):
        image = read_image(source)
        bar = None
        if upscaler.tiler is not None and show_progress:
            from tqdm import tqdm

            plan = upscaler.tiler.plan(*image.rgb.shape[:2])
            passes = 2 if image.alpha is not None and alpha == "model" else 1
            if plan.count > 1:
                bar = tqdm(total=plan.count * passes, desc=source.name, leave=False, unit="tile",
                           file=__import__("sys").stderr, dynamic_ncols=True)
                upscaler.tiler.on_tile = bar.update
        try:
            result = upscale_image(upscaler, image, upscaler.scale, alpha)
        finally:
            if bar is not None:
                bar.close()
                upscaler.tiler.on_tile = None
        target.parent.mkdir(parents=True, exist_ok=True)
        write_image(target, result)
        written.append({"input": str(source), "output": str(target), "mode": image.mode,
                        "size": [int(result.rgb.shape[0]), int(result.rgb.shape[1])]})
    return written
