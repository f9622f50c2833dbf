"""The conversion matrix: every architecture x scale x target x precision, exported at
a small fixed size with the full pipeline (rewrites, conversion, delegate policy,
parity), one row each. ``benchmarks/conversion_matrix.py`` runs all of it and writes
docs/conversion-matrix.md; the tests run a subset with small configurations.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from edgesr.bench_table import FAIL, OK, SOFT_FAIL
from edgesr.errors import EdgeSRError

# The marks of edgesr bench's table, with the same meaning.
STATUS_MARKS = {"passed": OK, "failed": SOFT_FAIL, "error": FAIL}


@dataclass
class MatrixCell:
    arch: str
    scale: int
    target: str
    precision: str
    size: tuple[int, int]
    hparams: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.arch}_x{self.scale}_{self.target}_{self.precision}"


@dataclass
class MatrixRow:
    cell: MatrixCell
    status: str  # passed | failed (exported, parity or policy failed) | error (no conversion)
    seconds: float
    size_mb: float | None = None
    max_abs: float | None = None
    min_psnr: float | None = None
    runtime: str = ""
    delegates: str = ""  # ready | split | - (the target's analyzer, see edgesr.export.readiness)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cell": {**asdict(self.cell), "label": self.cell.label}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MatrixRow":
        cell = {k: v for k, v in data["cell"].items() if k != "label"}
        cell["size"] = tuple(cell["size"])
        return cls(**{**data, "cell": MatrixCell(**cell)})


def merged(earlier: list[MatrixRow], new: list[MatrixRow]) -> list[MatrixRow]:
    """Earlier rows with the new ones replacing those of the same cell, in matrix order."""
    by_label = {row.cell.label: row for row in earlier}
    by_label.update({row.cell.label: row for row in new})
    order = {"srconvnet": 0, "hit-sir": 1, "hit-sng": 2, "hit-srf": 3}
    targets, precisions = ("onnx", "tflite", "coreml"), ("fp32", "fp16")

    def key(row: MatrixRow):
        c = row.cell
        return (order.get(c.arch, 9), c.arch, c.scale, targets.index(c.target) if c.target in targets else 9,
                precisions.index(c.precision) if c.precision in precisions else 9)

    return sorted(by_label.values(), key=key)


def run_cell(cell: MatrixCell, out_dir: Path, seed: int = 0) -> MatrixRow:
    """Export one cell with random, branch-exercising weights; never raises for a
    conversion or parity failure: the row says what happened."""
    from edgesr.export.pipeline import export
    from edgesr.models.loading import create
    from edgesr.models.random_weights import trained_like

    model = trained_like(create(cell.arch, cell.scale, **cell.hparams), seed)
    started = time.perf_counter()
    try:
        report = export(model, cell.target, input_size=cell.size, precision=cell.precision,
                        out_dir=out_dir, name=cell.label)
    except EdgeSRError as exc:
        message = str(exc).splitlines()[0]
        status = "failed" if "no artifact written" in message else "error"
        return MatrixRow(cell, status, time.perf_counter() - started, message=message)
    checks = (report.parity or {}).get("checks", [])
    measured = [c for c in checks if c.get("max_abs") is not None]
    psnrs = [float(c["psnr"]) for c in measured if c.get("psnr") is not None]
    readiness = report.readiness or {}
    return MatrixRow(
        cell, "passed" if report.status == "passed" else "failed", time.perf_counter() - started,
        size_mb=report.size_mb,
        max_abs=max((c["max_abs"] for c in measured), default=None),
        min_psnr=min(psnrs, default=None),
        runtime=", ".join(sorted({c["runtime"] for c in checks})),
        delegates="ready" if readiness.get("ready") else ("split" if readiness.get("split") else "-"),
        message="" if report.status == "passed" else f"parity {report.status}",
    )


def cells(archs: Iterable[str], scales: Iterable[int], targets: Iterable[str], precisions: Iterable[str],
          size: tuple[int, int]) -> list[MatrixCell]:
    return [MatrixCell(a, s, t, p, size) for a in archs for s in scales for t in targets for p in precisions]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(rows: list[MatrixRow], heading: str, planned: Iterable[MatrixCell] = ()) -> str:
    """The table; cells of ``planned`` that have no row are listed as not run."""
    lines = [heading, "",
             "| model | target | precision | status | size MB | max abs error | min PSNR dB | export s | "
             "delegates | checked with | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        c = row.cell
        lines.append(
            f"| {c.arch} x{c.scale} | {c.target} | {c.precision} | {STATUS_MARKS[row.status]} {row.status} | "
            f"{_fmt(row.size_mb, '.2f')} | {_fmt(row.max_abs, '.1e')} | {_fmt(row.min_psnr, '.1f')} | "
            f"{row.seconds:.0f} | {row.delegates} | {row.runtime or '-'} | {row.message.replace('|', '/')[:160] or '-'} |")
    done = {row.cell.label for row in rows}
    missing = [cell.label for cell in planned if cell.label not in done]
    if missing:
        lines += ["", f"Not run yet ({len(missing)} cells): " + ", ".join(missing) + "."]
    return "\n".join(lines) + "\n"
