"""``edgesr bench --model NAME --scale S``: every format and precision in one table.

In the spirit of ``yolo benchmark``: each target/precision is exported (or an existing
artifact with the same name and source is reused), checked against PyTorch on a
natural test image, evaluated on ``--data`` (PSNR-Y) and timed. Status:
✅ ok, ❎ exported but parity/quality failed or could not be checked here, ❌ failed.
The table is also written as bench.json and bench.csv in the output folder.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgesr.errors import EdgeSRError

OK, SOFT_FAIL, FAIL = "✅", "❎", "❌"
TARGETS = ("onnx", "tflite", "coreml")
PRECISIONS = ("fp32", "fp16")
# An artifact whose PSNR-Y on --data is this much below PyTorch's fails the quality check
# (static artifacts are evaluated tiled, so this includes the tiling cost).
MAX_PSNR_DROP_DB = 0.2
DEFAULT_TABLE_SIZE = (256, 256)


@dataclass
class Row:
    format: str
    precision: str
    status: str
    size_mb: float | None = None
    psnr_y: float | None = None
    latency_p50_ms: float | None = None
    speedup: float | None = None
    parity_max_abs: float | None = None
    parity_psnr: float | None = None
    runtime: str | None = None
    artifact: str | None = None
    note: str = ""


@dataclass
class Table:
    model: dict
    input_size: list
    data: str | None
    warmup: int
    iters: int
    threads: int | None
    rows: list[Row] = field(default_factory=list)
    files: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _size_mb(path: Path) -> float:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
    return path.stat().st_size / 1e6


def _mean_psnr(upscaler, data: Path | None, scale: int) -> float | None:
    if data is None:
        return None
    from edgesr.evaluate import evaluate

    return evaluate(upscaler, data, scale, show_progress=False).mean("psnr_y")


def bench_matrix(model: str, scale: int | None = None, data: Path | None = None,
                 input_size: tuple[int, int] | None = None, out_dir: Path | None = None,
                 warmup: int = 10, iters: int = 50, threads: int | None = None,
                 formats: Sequence[str] | None = None, precisions: Sequence[str] = PRECISIONS,
                 show_progress: bool = False) -> dict[str, Any]:
    from edgesr.bench import percentile_summary, time_runner
    from edgesr.cli_common import resolve_model
    from edgesr.export.base import ExportOptions
    from edgesr.export.parity import compare, natural_image, tolerance_for
    from edgesr.export.pipeline import default_name, export, get_target
    from edgesr.models.descriptor import describe
    from edgesr.runtimes import open_runner
    from edgesr.runtimes.torch_runner import TorchRunner
    from edgesr.upscale import OpenedUpscaler
    from edgesr.tiling import TiledUpscaler, defaults_for

    formats = [f.strip().lower() for f in (formats or TARGETS)]
    for name in formats:
        get_target(name)
    network = resolve_model(model, scale)
    info = describe(network)
    height, width = input_size or DEFAULT_TABLE_SIZE
    out = Path(out_dir or f"bench-{info.arch}-x{info.scale}")
    out.mkdir(parents=True, exist_ok=True)
    table = Table(model=info.to_dict(), input_size=[height, width], data=str(data) if data else None,
                  warmup=warmup, iters=iters, threads=threads)
    say = (lambda text: print(f"[bench] {text}", file=__import__("sys").stderr, flush=True)) \
        if show_progress else (lambda text: None)

    # PyTorch eager: the reference for parity, quality and speed.
    torch_runner = TorchRunner(model=network, threads=threads)
    say("pytorch eager")
    reference_latency = percentile_summary(time_runner(torch_runner, height, width, warmup, iters))["p50"]
    reference_psnr = _mean_psnr(torch_runner, data, info.scale)
    table.rows.append(Row("pytorch", "fp32", OK, None, reference_psnr, reference_latency, 1.0,
                          runtime="pytorch cpu", artifact=info.source, note="eager, whole image"))
    crop = natural_image(2 * height, 2 * width)[:, height // 2:height // 2 + height,
                                               width // 3:width // 3 + width][None]
    reference_crop = torch_runner.run(np.ascontiguousarray(crop))
    overlap = min(defaults_for(info.arch).overlap, min(height, width) // 4)

    for target_name in formats:
        target = get_target(target_name)
        for precision in precisions:
            if precision not in target.precisions:
                continue
            options = ExportOptions(input_size=(height, width), precision=precision)
            path = out / (default_name(info, options) + target.suffix)
            row = Row(target_name, precision, FAIL)
            table.rows.append(row)
            say(f"{target_name} {precision}")
            try:
                if not _reusable(path, info):
                    export(network, target_name, input_size=(height, width), precision=precision,
                           out_dir=out, check=False, stage=lambda text: None)
                row.artifact, row.size_mb = str(path), _size_mb(path)
            except (EdgeSRError, Exception) as exc:  # any export failure is a ❌ row
                row.note = f"export failed: {_first_line(exc)}"
                continue
            try:
                runner = open_runner(path, threads=threads)
            except EdgeSRError as exc:
                row.status, row.note = SOFT_FAIL, f"exported; not run here: {_first_line(exc)}"
                continue
            row.runtime = runner.runtime
            try:
                output = runner.run(np.ascontiguousarray(crop))
                max_abs, _, parity_psnr = compare(output, reference_crop)
                row.parity_max_abs, row.parity_psnr = max_abs, (parity_psnr if np.isfinite(parity_psnr) else None)
                tolerance = tolerance_for(options)
                upscaler = OpenedUpscaler(runner, info.scale, info.arch,
                                          TiledUpscaler(runner, info.scale, (height, width), overlap, fixed=True))
                row.psnr_y = _mean_psnr(upscaler, data, info.scale)
                if runner.timing_meaningful:
                    row.latency_p50_ms = percentile_summary(time_runner(runner, height, width, warmup, iters))["p50"]
                    row.speedup = reference_latency / row.latency_p50_ms
            except EdgeSRError as exc:
                row.status, row.note = SOFT_FAIL, f"exported; run failed: {_first_line(exc)}"
                continue
            problems = []
            if not tolerance.accepts(max_abs, parity_psnr):
                problems.append(f"parity {tolerance.describe()} not met (max abs {max_abs:.2e})")
            if row.psnr_y is not None and reference_psnr is not None and \
                    reference_psnr - row.psnr_y > MAX_PSNR_DROP_DB:
                problems.append(f"PSNR-Y {reference_psnr - row.psnr_y:.2f} dB below PyTorch")
            row.status = SOFT_FAIL if problems else OK
            row.note = "; ".join(problems) or f"tiled {height}x{width}, overlap {overlap}"
            if not runner.timing_meaningful:
                row.note += f"; run by {runner.options().get('engine')}, latency not measured"
    table.files = {"json": str(out / "bench.json"), "csv": str(out / "bench.csv")}
    payload = table.to_dict()
    _atomic_write(out / "bench.json", json.dumps(payload, indent=2, default=str) + "\n")
    _atomic_write(out / "bench.csv", to_csv(table.rows))
    return payload


def _reusable(path: Path, info) -> bool:
    """An artifact already at ``path`` made from the same weights is taken as is."""
    if not path.exists():
        return False
    from edgesr.runtimes import read_metadata

    try:
        stated = read_metadata(path).get("edgesr.source_sha256")
    except EdgeSRError:
        return False
    return info.sha256 is not None and stated == info.sha256


def to_csv(rows: Sequence[Row] | Sequence[dict]) -> str:
    dicts = [asdict(r) if isinstance(r, Row) else dict(r) for r in rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(Row.__dataclass_fields__))
    writer.writeheader()
    writer.writerows(dicts)
    return buffer.getvalue()


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _fmt(value, spec: str) -> str:
    width = int(spec.split(".")[0] or 0)
    return "-".rjust(width) if value is None else format(value, spec)


def format_table(table: dict[str, Any]) -> list[str]:
    model = table["model"]
    h, w = table["input_size"]
    lines = [f"{model['arch']} x{model['scale']}, input {h}x{w}, warmup {table['warmup']}, iters "
             f"{table['iters']}" + (f", PSNR-Y on {table['data']}" if table["data"] else ""),
             f"{'format':<8} {'prec':<5} {'status':<6} {'size MB':>8} {'PSNR-Y':>7} {'p50 ms':>9} "
             f"{'speedup':>8}  note"]
    for row in table["rows"]:
        lines.append(f"{row['format']:<8} {row['precision']:<5} {row['status']:<5} "
                     f"{_fmt(row['size_mb'], '8.2f')} {_fmt(row['psnr_y'], '7.2f')} "
                     f"{_fmt(row['latency_p50_ms'], '9.2f')} {(_fmt(row['speedup'], '7.2f') + 'x') if row['speedup'] else '       -'}"
                     f"  {row['note']}")
    lines.append(f"written: {table['files']['json']}, {table['files']['csv']}")
    return lines
