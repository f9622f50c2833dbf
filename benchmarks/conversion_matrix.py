"""Every architecture x x2/x3/x4 x ONNX/TFLite/CoreML x fp32/fp16, at 64x64, through the
full export pipeline (rewrites, conversion, delegate policy, parity in each runtime).

    .venv/bin/python benchmarks/conversion_matrix.py [--archs srconvnet,hit-sir] [--targets onnx]

Random branch-exercising weights at each architecture's default (paper) size. Writes
docs/conversion-matrix.md and .json after every row, so a long run can be read as it goes;
rows of other cells already in the JSON are kept (run the matrix in parts, or in parallel
into separate --out folders and merge them with --merge-from).
HiT-SR TFLite conversions take minutes each on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    from edgesr.export.matrix import MatrixRow, cells, markdown, merged, run_cell

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="srconvnet,hit-sir,hit-sng,hit-srf")
    parser.add_argument("--scales", default="2,3,4")
    parser.add_argument("--targets", default="onnx,tflite,coreml")
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--merge-from", type=Path, nargs="*", default=[],
                        help="conversion-matrix.json files of other runs to merge in (no export is run)")
    args = parser.parse_args()

    split = lambda text: [v.strip() for v in text.split(",") if v.strip()]  # noqa: E731
    plan = cells(split(args.archs), [int(s) for s in split(args.scales)], split(args.targets),
                 split(args.precisions), (args.size, args.size))
    heading = (f"# Conversion matrix\n\nProduced by `benchmarks/conversion_matrix.py` on {platform.machine()} "
               f"Linux: each row is `edgesr export` at {args.size}x{args.size} with random, "
               "branch-exercising weights (default configuration of the architecture), delegate "
               "policy at its default (on for tflite and coreml; fixed-size fp32 ONNX keeps onnxruntime's "
               "fused ops, which NNAPI and the CoreML EP split: `--delegate-ready` gives it the ready graph), "
               "parity against PyTorch CPU in the "
               "artifact's runtime (CoreML: edgesr's reference evaluator of the ML program off macOS). "
               "Tolerances: fp32 max abs <= 1e-4, fp16 PSNR >= 45 dB. ✅ passed, ❎ exported but "
               "parity or delegate policy failed, ❌ conversion failed. Export time includes parity, "
               "delegate analysis and the model card, on a shared 2-core CPU.")
    args.out.mkdir(parents=True, exist_ok=True)
    table = args.out / "conversion-matrix.json"

    def read(path: Path) -> list[MatrixRow]:
        return [MatrixRow.from_dict(r) for r in json.loads(path.read_text())] if path.exists() else []

    # The whole matrix, so that the page lists the cells no run has filled yet.
    everything = cells(split(parser.get_default("archs")), [int(s) for s in split(parser.get_default("scales"))],
                       split(parser.get_default("targets")), split(parser.get_default("precisions")),
                       (args.size, args.size))

    def write(rows: list[MatrixRow]) -> None:
        (args.out / "conversion-matrix.md").write_text(markdown(rows, heading, everything))
        table.write_text(json.dumps([r.to_dict() for r in rows], indent=1, default=str) + "\n")

    if args.merge_from:
        rows = read(table)
        for other in args.merge_from:
            rows = merged(rows, read(other))
        write(rows)
        return 0
    done: list[MatrixRow] = []
    with tempfile.TemporaryDirectory(prefix="edgesr-matrix-") as work:
        for index, cell in enumerate(plan, 1):
            print(f"[matrix {index}/{len(plan)}] {cell.label}", file=sys.stderr, flush=True)
            done.append(run_cell(cell, Path(work)))
            print(f"[matrix] {done[-1].status} in {done[-1].seconds:.0f} s {done[-1].message}", file=sys.stderr,
                  flush=True)
            write(merged(read(table), done[-1:]))
    return 0 if all(r.status == "passed" for r in done) else 1


if __name__ == "__main__":
    raise SystemExit(main())
