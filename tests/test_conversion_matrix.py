"""A subset of the conversion matrix (benchmarks/conversion_matrix.py runs all of it):
every architecture and every target at least once, fp32 and fp16, x2/x3/x4, through
the full export pipeline with its default delegate policy and parity gate."""
from __future__ import annotations

import pytest

from edgesr.export import get_target
from edgesr.export.matrix import MatrixCell, markdown, run_cell

SMALL = {
    "srconvnet": dict(dim=16, num_blocks=1, num_heads=2, num_kernels=4),
    "hit-sir": dict(embed_dim=16, depths=[2], num_heads=[1]),
    "hit-sng": dict(embed_dim=16, depths=[2], num_heads=[1]),
    "hit-srf": dict(embed_dim=16, depths=[2], num_heads=[1]),
}
SUBSET = [
    ("srconvnet", 4, "coreml", "fp16"),
    ("srconvnet", 3, "tflite", "fp32"),
    ("hit-sir", 2, "tflite", "fp16"),
    ("hit-sng", 3, "onnx", "fp16"),
    ("hit-srf", 4, "coreml", "fp32"),
    ("hit-srf", 2, "onnx", "fp32"),
]


@pytest.mark.parametrize("arch, scale, target, precision", SUBSET)
def test_matrix_cell_converts_and_passes_parity(tmp_path, arch, scale, target, precision):
    cell = MatrixCell(arch, scale, target, precision, (32, 32), SMALL[arch])
    row = run_cell(cell, tmp_path)
    assert row.status == "passed", row.message
    assert row.size_mb and row.size_mb > 0
    if precision == "fp32":
        assert row.max_abs is not None and row.max_abs <= 1e-4
    else:
        assert row.min_psnr is not None and row.min_psnr >= 45.0
    assert row.delegates == "ready" or target == "onnx"
    assert (tmp_path / f"{cell.label}{get_target(target).suffix}").exists()
    assert f"| {arch} x{scale} | {target} | {precision} | ✅ passed |" in markdown([row], "# m")


def test_failed_conversion_is_a_row_not_an_exception(tmp_path):
    """A cell that cannot convert (too small for the windows) is reported, not raised."""
    cell = MatrixCell("hit-srf", 2, "onnx", "fp32", (2, 2), SMALL["hit-srf"])
    row = run_cell(cell, tmp_path)
    assert row.status == "error" and row.message
    assert "❌ error" in markdown([row], "# m")
