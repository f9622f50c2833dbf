"""The runner protocol: load an artifact, ``run(array) -> array``, describe itself.

A runner wraps one file in one runtime. Every runner keeps edgesr's I/O contract:
RGB float32 in [0, 1] in and out. ``run`` takes and returns NCHW batches whatever
the file's layout (the runner transposes for NHWC files); ``run_native`` feeds the
file's own layout untouched (what ``bench`` times); calling the runner on an
H x W x 3 image returns the (sH) x (sW) x 3 upscale, so a runner is an ``Upscaler``
for ``evaluate`` and ``upscale_image``.

This module imports numpy only: metadata of .onnx/.tflite files is read without torch.
"""
from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from edgesr.errors import EdgeSRError, MissingDependencyError

PREFIX = "edgesr."
LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class ArtifactInfo:
    """What a runner knows about its file, from the embedded metadata and the file's shapes."""

    path: str
    format: str  # pytorch | onnx | tflite | coreml
    arch: str | None
    scale: int
    layout: str = "NCHW"
    # (H, W) of the fixed input; None when the file takes any size.
    input_size: tuple[int, int] | None = None
    precision: str = "fp32"
    value_range: str = "RGB float32 [0,1] in and out, clamped"
    sha256: str | None = None
    # True when no edgesr metadata was found and the figures come from the file's shapes.
    inferred: bool = False
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def dynamic(self) -> bool:
        return self.input_size is None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_size"] = list(self.input_size) if self.input_size else "dynamic"
        return data


def require(module: str, package: str, purpose: str) -> Any:
    """Import an optional runtime or raise MissingDependencyError naming the pip package."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise MissingDependencyError(package, purpose)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EdgeSRError(f"{purpose} needs '{package}', which is installed but does not import "
                          f"here ({first_line(exc)})") from None


def reject_options(unused: Mapping[str, Any], runtime: str) -> None:
    """Options that were set but that this runtime has no use for are an error, not ignored."""
    given = {k: v for k, v in unused.items() if v not in (None, False, (), [])}
    if given:
        raise EdgeSRError(f"option(s) {', '.join(sorted(given))} do not apply to {runtime}")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def parse_size_text(text: str | None) -> tuple[int, int] | None:
    """"64x48" -> (64, 48); "dynamic"/None/"" -> None."""
    if not text or str(text).startswith("dynamic"):
        return None
    height, width = (int(part) for part in str(text).lower().split("x"))
    return height, width


def info_from_metadata(path: Path, fmt: str, metadata: Mapping[str, str],
                       input_shape: list | tuple | None, output_shape: list | tuple | None,
                       precision: str | None = None) -> ArtifactInfo:
    """ArtifactInfo from edgesr's metadata, checked against the file's own I/O shapes.

    ``input_shape``/``output_shape`` are the graph's (None, strings or -1 for free
    dimensions). Without edgesr metadata, layout and scale are read from the shapes.
    A metadata/file disagreement is an EdgeSRError, not a wrong upscale later.
    """
    metadata = {str(k): str(v) for k, v in metadata.items()}
    ours = {k: v for k, v in metadata.items() if k.startswith(PREFIX)}
    in_dims = _static_dims(input_shape)
    out_dims = _static_dims(output_shape)
    if in_dims is not None and len(in_dims) != 4:
        raise EdgeSRError(f"{path}: input has {len(in_dims)} dimensions; an edgesr artifact takes one 4-D image batch")
    if not ours:
        return _inferred(path, fmt, metadata, in_dims, out_dims, precision)
    try:
        scale = int(ours["edgesr.scale"])
        layout = ours.get("edgesr.layout", "NCHW").upper()
        size = parse_size_text(ours.get("edgesr.input_size"))
    except (KeyError, ValueError):
        raise EdgeSRError(f"{path}: edgesr metadata is incomplete or unreadable "
                          f"(edgesr.scale={ours.get('edgesr.scale')!r}, "
                          f"edgesr.input_size={ours.get('edgesr.input_size')!r})") from None
    if layout not in LAYOUTS or scale < 1:
        raise EdgeSRError(f"{path}: metadata says layout {layout!r}, scale {scale}: not an edgesr artifact")
    if in_dims is not None:
        channel_axis = 1 if layout == "NCHW" else 3
        spatial = (in_dims[2], in_dims[3]) if layout == "NCHW" else (in_dims[1], in_dims[2])
        if in_dims[channel_axis] not in (None, 3):
            raise EdgeSRError(f"{path}: metadata says {layout} but the input shape is {list(in_dims)} "
                              f"(3 colour channels expected on axis {channel_axis})")
        if size is not None and None not in spatial and tuple(spatial) != size:
            raise EdgeSRError(f"{path}: metadata says input {size[0]}x{size[1]} but the file's input is "
                              f"{spatial[0]}x{spatial[1]}; the file was changed after export")
        if size is not None and None in spatial:
            raise EdgeSRError(f"{path}: metadata says a fixed input {size[0]}x{size[1]} but the file "
                              f"takes any size; the file was changed after export")
        if out_dims is not None and size is not None and len(out_dims) == 4:
            out_spatial = (out_dims[2], out_dims[3]) if layout == "NCHW" else (out_dims[1], out_dims[2])
            expected = (size[0] * scale, size[1] * scale)
            if None not in out_spatial and tuple(out_spatial) != expected:
                raise EdgeSRError(f"{path}: metadata says x{scale} of {size[0]}x{size[1]} but the file "
                                  f"outputs {out_spatial[0]}x{out_spatial[1]}")
    return ArtifactInfo(
        path=str(path), format=fmt, arch=ours.get("edgesr.arch"), scale=scale, layout=layout,
        input_size=size, precision=ours.get("edgesr.precision", precision or "fp32"),
        value_range=ours.get("edgesr.value_range", ArtifactInfo.value_range),
        sha256=ours.get("edgesr.source_sha256"), metadata=metadata,
    )


def _static_dims(shape) -> tuple[int | None, ...] | None:
    if shape is None:
        return None
    return tuple(int(d) if isinstance(d, (int, np.integer)) and int(d) > 0 else None for d in shape)


def _inferred(path: Path, fmt: str, metadata: dict, in_dims, out_dims, precision) -> ArtifactInfo:
    if in_dims is None or out_dims is None or len(out_dims) != 4:
        raise EdgeSRError(f"{path}: no edgesr metadata and no shapes to read the scale from; "
                          f"export it with `edgesr export`")
    layout = "NCHW" if in_dims[1] == 3 else "NHWC" if in_dims[3] == 3 else None
    if layout is None:
        raise EdgeSRError(f"{path}: no edgesr metadata and the input {list(in_dims)} is neither "
                          f"NCHW nor NHWC RGB")
    h_axis, w_axis = (2, 3) if layout == "NCHW" else (1, 2)
    spatial = (in_dims[h_axis], in_dims[w_axis])
    out_spatial = (out_dims[h_axis], out_dims[w_axis])
    if None in spatial or None in out_spatial or out_spatial[0] % spatial[0]:
        raise EdgeSRError(f"{path}: no edgesr metadata and free input size: the scale cannot be "
                          f"read from the file; export it with `edgesr export`")
    return ArtifactInfo(path=str(path), format=fmt, arch=None, scale=out_spatial[0] // spatial[0],
                        layout=layout, input_size=(int(spatial[0]), int(spatial[1])),
                        precision=precision or "fp32", inferred=True, metadata=metadata)


class Runner(ABC):
    """One artifact in one runtime. Subclasses set ``runtime`` and implement ``run_native``."""

    runtime: ClassVar[str] = ""

    def __init__(self, path: str | Path, info: ArtifactInfo):
        self.path = Path(path)
        self.info = info

    # -- the protocol -------------------------------------------------------------------
    @abstractmethod
    def run_native(self, batch: np.ndarray) -> np.ndarray:
        """Feed ``batch`` in the file's own layout; return the output in that layout."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        """NCHW float32 [0,1] batch -> NCHW float32 [0,1] batch, whatever the file's layout."""
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise EdgeSRError(f"run() takes an N x 3 x H x W batch, got shape {list(batch.shape)}")
        self.check_size(batch.shape[2], batch.shape[3])
        if self.info.layout == "NHWC":
            return np.ascontiguousarray(self.run_native(np.ascontiguousarray(batch.transpose(0, 2, 3, 1)))
                                        .transpose(0, 3, 1, 2))
        return self.run_native(np.ascontiguousarray(batch))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """H x W x 3 float32 [0,1] -> (sH) x (sW) x 3 (the ``Upscaler`` contract)."""
        batch = np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1))[None]
        return self.run(batch)[0].transpose(1, 2, 0)

    # False where the engine is not the one a device would use (a reference evaluator):
    # its latency says nothing about the artifact's speed, so benchmarks do not report it.
    timing_meaningful: bool = True

    def describe(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "artifact": self.info.to_dict(), **self.options()}

    def options(self) -> dict[str, Any]:
        """Runtime settings in effect (providers, threads, delegate, device)."""
        return {}

    # -- helpers ------------------------------------------------------------------------
    def check_size(self, height: int, width: int) -> None:
        size = self.info.input_size
        if size is not None and (height, width) != tuple(size):
            raise EdgeSRError(f"{self.path.name} takes only {size[0]}x{size[1]} inputs, got "
                              f"{height}x{width}; tile the image (edgesr upscale --tile) or "
                              f"export with another --input-size")

    def native_input(self, height: int, width: int, batch: int = 1, seed: int = 0) -> np.ndarray:
        """A random [0,1] input in the file's own layout (what bench feeds)."""
        shape = (batch, 3, height, width) if self.info.layout == "NCHW" else (batch, height, width, 3)
        return np.random.default_rng(seed).random(shape, dtype=np.float32)

    def close(self) -> None:
        """Release the runtime's resources (optional)."""
