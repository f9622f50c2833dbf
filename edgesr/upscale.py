"""Upscaling image files with any upscaler (PyTorch model now; artifacts through runtimes)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
from PIL import Image

from edgesr.errors import EdgeSRError
from edgesr.imageio import LoadedImage

AlphaMode = Literal["bicubic", "model"]


def _bicubic_rows(plane: Image.Image, scale: int, top: int, rows: int) -> np.ndarray:
    """Output rows [top, top + rows) of the bicubic x``scale`` resize of ``plane`` (mode F);
    Pillow takes the filter's support from outside the box, so bands equal the whole."""
    width = plane.width
    resized = plane.resize((width * scale, rows), Image.BICUBIC,
                           box=(0, top / scale, width, (top + rows) / scale))
    return np.clip(np.asarray(resized), 0.0, 1.0)


def upscale_bands(upscaler: Any, image: LoadedImage, scale: int,
                  alpha: AlphaMode = "bicubic") -> Iterator[LoadedImage]:
    """The upscaled image top to bottom, in bands of rows as the upscaler finishes them.

    Colour goes through the network; alpha by bicubic (default) or through the network
    as grey, tile-row by tile-row beside the colour. ``upscaler`` is any Upscaler; one
    with a ``bands`` method (a tiled one) is streamed, others give one band.
    """
    def bands_of(rgb: np.ndarray) -> Iterator[np.ndarray]:
        return upscaler.bands(rgb) if hasattr(upscaler, "bands") else iter([upscaler(rgb)])

    colour = bands_of(image.rgb)
    through_model = None
    alpha_plane = None
    if image.alpha is not None:
        if alpha == "model":
            through_model = bands_of(np.repeat(image.alpha[..., None], 3, axis=2))
        else:
            alpha_plane = Image.fromarray(image.alpha.astype(np.float32), mode="F")
    top = 0
    for rgb in colour:
        band_alpha = None
        if through_model is not None:
            band_alpha = next(through_model).mean(axis=2)
        elif alpha_plane is not None:
            band_alpha = _bicubic_rows(alpha_plane, scale, top, rgb.shape[0])
        if image.grayscale:
            rgb = np.repeat(rgb.mean(axis=2, keepdims=True), 3, axis=2)
        top += rgb.shape[0]
        yield LoadedImage(rgb.astype(np.float32, copy=False), band_alpha, image.grayscale, image.bit_depth)


def upscale_image(upscale: Any, image: LoadedImage, scale: int, alpha: AlphaMode = "bicubic") -> LoadedImage:
    """The whole upscaled image (see ``upscale_bands``)."""
    bands = list(upscale_bands(upscale, image, scale, alpha))
    alpha_plane = None if image.alpha is None else np.concatenate([b.alpha for b in bands], axis=0)
    return LoadedImage(np.concatenate([b.rgb for b in bands], axis=0), alpha_plane,
                       image.grayscale, image.bit_depth)


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

    def bands(self, image: np.ndarray) -> Iterator[np.ndarray]:
        return self.tiler.bands(image) if self.tiler else iter([self.runner(image)])

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
    _refuse_collisions(jobs)
    return jobs


def _refuse_collisions(jobs: list[tuple[Path, Path]]) -> None:
    """A user's file is never overwritten: an output that is one of the inputs, or two
    inputs that map to one output name, is refused before any work."""
    sources = {source.resolve(): source for source, _ in jobs}
    claimed: dict[Path, Path] = {}
    for source, target in jobs:
        resolved = target.resolve()
        if resolved in sources:
            raise EdgeSRError(f"-o {target.parent}: the output {target} would overwrite the input "
                              f"{sources[resolved]}; choose another output folder")
        if resolved in claimed and claimed[resolved].resolve() != source.resolve():
            raise EdgeSRError(f"{claimed[resolved]} and {source} would both be written to {target}; "
                              f"upscale them into different output folders")
        claimed[resolved] = source


def upscale_files(upscaler: OpenedUpscaler, jobs: list[tuple[Path, Path]], out: Path,
                  alpha: AlphaMode = "bicubic", show_progress: bool = False) -> list[dict]:
    """Read, upscale (tiled), write each job; outputs are written to a temporary name and
    renamed, so an interrupted or failed run never leaves a half-written image. PNG
    outputs are written band by band as the tiles finish, so the upscaled image is never
    whole in memory."""
    from edgesr.imageio import ImageWriter, read_image
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
        height, width = image.rgb.shape[:2]
        size = [height * upscaler.scale, width * upscaler.scale]
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with ImageWriter(target, size[0], size[1], image.grayscale, image.alpha is not None,
                             image.bit_depth) as writer:
                for band in upscale_bands(upscaler, image, upscaler.scale, alpha):
                    writer.write(band)
        finally:
            if bar is not None:
                bar.close()
                upscaler.tiler.on_tile = None
        written.append({"input": str(source), "output": str(target), "mode": image.mode, "size": size})
    return written
