"""Quantized exports of the real HiT-SRF x4 checkpoint: size, PSNR-Y, delta, latency.

    .venv/bin/python benchmarks/quantize_hitsr.py [--targets onnx,tflite,coreml] [--size 128]
        [--precisions int8] [--merge]

Calibration on ../shared/data/train/BSD200 (64 patches), validation (and the budget
search) on Set5, a second validation on Set14; every artifact runs in its own runtime
(onnxruntime CPU, LiteRT XNNPACK) at 1x3xSxS. Writes docs/quantization.md (table) and
docs/quantization.json (every export report). Timings on shared CPUs are noisy.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

from doc_notes import write_keeping_notes  # noqa: E402 (benchmarks/ is the script's folder)

# The layers that feed HiT-SRF's LayerNorms (OnnxQuantizer.node_groups, PT2EInt8.node_groups).
NORM_INPUTS = ("Conv:first", "MatMul:norm-input", "Gemm:norm-input", "Conv:norm-input")
# (the MLPs' second layers, Linear:norm-input:fc2, cost nothing in int8: 0.001 dB)
PT2E_NORM_INPUTS = ("Conv:first", "Linear:norm-input:correlation", "Conv:norm-input")
# Of the two Conv:norm-input nodes only the second residual group's conv costs (simulation:
# 0.004 vs 0.25 dB): keeping just that node in float leaves 77 % of the MACs in int8.
PT2E_NORM_INPUTS_ONE_CONV = ("Conv:first", "Linear:norm-input:correlation", "conv2d_140")
# target -> [(precision, extra export options, label suffix)]
PLAN = {
    "onnx": [("fp32", {}, ""), ("fp16", {}, ""), ("w8", {}, ""), ("int8", {}, ""),
             ("int8", {"keep_float": NORM_INPUTS}, " (norm inputs in float)"),
             ("int8", {"max_psnr_drop": 0.1}, " (budget 0.1 dB)"),
             ("int8", {"max_psnr_drop": 0.1, "calib_method": "entropy"}, " (entropy ranges, budget 0.1 dB)"),
             # --fused-ops: the file for onnxruntime's CPU (float32-only graph, see onnx_quant)
             ("int8", {"fused_ops": True}, " (fused ops, for onnxruntime CPU)"),
             ("int8", {"fused_ops": True, "max_psnr_drop": 0.1}, " (fused ops, budget 0.1 dB)"),
             ("int8", {"fused_ops": True, "max_psnr_drop": 0.1, "calib_method": "entropy"},
              " (fused ops, entropy ranges, budget 0.1 dB)")],
    "tflite": [("fp32", {}, ""), ("fp16", {}, ""), ("int8", {}, ""),
               ("int8", {"keep_float": PT2E_NORM_INPUTS}, " (norm inputs in float)"),
               ("int8", {"keep_float": PT2E_NORM_INPUTS_ONE_CONV}, " (norm inputs but one Conv in float)"),
               ("int8", {"max_psnr_drop": 0.1}, " (budget 0.1 dB)")],
    "coreml": [("fp16", {}, ""), ("w8", {}, ""), ("int8", {}, ""),
               ("int8", {"keep_float": PT2E_NORM_INPUTS}, " (norm inputs in float)"),
               ("int8", {"max_psnr_drop": 0.1}, " (budget 0.1 dB)")],
}
def _label(target: str, precision: str, suffix: str) -> str:
    return f"{target} {precision}{suffix}"


LABELS = [_label(target, precision, suffix) for target, plan in PLAN.items() for precision, _, suffix in plan]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="onnx,tflite,coreml")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--calib-count", type=int, default=64)
    parser.add_argument("--precisions", default="",
                        help="only these precisions (comma-separated); default: every row of the plan")
    parser.add_argument("--label-contains", default="",
                        help="only the rows whose label contains this text, e.g. 'norm inputs'")
    parser.add_argument("--label", action="append", default=[],
                        help="only the row with exactly this label, e.g. 'coreml int8' (repeatable)")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of OUT/quantization.json that this run does not redo")
    args = parser.parse_args()

    from edgesr.calibration import validation_set
    from edgesr.models.contract import with_unit_range
    from edgesr.models.loading import load
    from edgesr.quantize.quality import measure_psnr, torch_batch_fn

    weights = SHARED / "weights" / "HiTNet.pth"
    if not weights.exists():
        print(f"{weights} is absent: nothing to benchmark", file=sys.stderr)
        return 1
    model = load(weights)
    tile = (args.size, args.size)
    set14 = validation_set(4, SHARED / "Set14")
    float_set14 = measure_psnr(torch_batch_fn(with_unit_range(model).eval()), set14, tile, "hit-srf").psnr_y
    rows, reports = _previous(args.out) if args.merge else ([], [])
    with tempfile.TemporaryDirectory(prefix="edgesr-quant-bench-") as folder:
        for target, precision, extra, suffix in _selected_rows(args):
            label = _label(target, precision, suffix)
            rows = [r for r in rows if r["label"] != label]
            reports = [r for r in reports if r.get("label") != label]
            print(f"[bench] {label}", file=sys.stderr, flush=True)
            row, report = _measure_row(model, target, precision, extra, suffix, Path(folder), args.calib_count,
                                       tile, set14, float_set14)
            rows.append(row)
            if report is not None:
                reports.append({"label": label, **report.to_dict()})
                _write(args.out, rows, reports, float_set14, tile)
    _write(args.out, rows, reports, float_set14, tile)
    return 0


def _selected_rows(args):
    """(target, precision, export options, label suffix) of each row of the plan that the flags select."""
    precisions = {p.strip() for p in args.precisions.split(",") if p.strip()}
    for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
        for precision, extra, suffix in PLAN[target]:
            label = _label(target, precision, suffix)
            if precisions and precision not in precisions:
                continue
            if args.label_contains not in label or (args.label and label not in args.label):
                continue
            yield target, precision, extra, suffix


def _measure_row(model, target: str, precision: str, extra: dict, suffix: str, out_dir: Path, calib_count: int,
                 tile, set14, float_set14: float):
    """The table row of one export and its report (None when the export failed: the row says why)."""
    from edgesr.export.pipeline import export
    from edgesr.quantize.quality import artifact_fn, measure_psnr

    label = _label(target, precision, suffix)
    started = time.perf_counter()
    try:
        report = export(model, target, input_size=tile, precision=precision, out_dir=out_dir,
                        name="_".join(["hitnet", target, precision, *suffix.strip(" ()").split()]),
                        # an fp32 export refuses --calib: it has no ranges to calibrate
                        calib=None if precision == "fp32" else str(SHARED / "train" / "BSD200"),
                        calib_count=calib_count,
                        val=str(SHARED / "Set5"), delegate_ready=False, **extra)
    except Exception as exc:  # a row that failed says so in the table
        # (without the failed report's temporary path; its content goes to the notes)
        message = str(exc).splitlines()[0].split("; what was measured is in")[0]
        row = {"label": label, "error": message[:400]}
        print(f"[bench] {label}: {exc}", file=sys.stderr, flush=True)
        failed = next(out_dir.glob("*.failed.report.json"), None)
        if failed is not None:  # a missed budget: its search is in the failed report
            search = json.loads(failed.read_text()).get("quantization", {}).get("budget")
            row["note"] = _search_note(search) if search else None
            failed.unlink()
        return row, None
    q = report.quantization or {}
    row = {"label": label, "size_mb": report.size_bytes / 1e6,
           "set5_float": (q.get("float") or {}).get("psnr_y"),
           "set5": (q.get("quantized") or {}).get("psnr_y"), "set5_delta": q.get("delta_db"),
           "latency_ms": (q.get("latency_ms") or {}).get(precision),
           "latency_fp32_ms": (q.get("latency_ms") or {}).get("fp32"),
           "speedup": (q.get("latency_ms") or {}).get("speedup_vs_fp32"),
           "kept_float": (q.get("kept_float") or {}).get("groups"),
           "seconds": round(time.perf_counter() - started, 1), "note": _note(target, q)}
    try:
        row["set14"] = measure_psnr(artifact_fn(Path(report.artifact), exact=precision == "int8"),
                                    set14, tile, "hit-srf").psnr_y
        row["set14_delta"] = row["set14"] - float_set14
    except Exception as exc:
        row["set14"] = None
        row["note"] = (row.get("note") or "") + f" Set14 not run: {str(exc).splitlines()[0][:120]}"
    return row, report


def _previous(out: Path) -> tuple[list, list]:
    path = out / "quantization.json"
    if not path.exists():
        return [], []
    data = json.loads(path.read_text())
    return data["rows"], data["reports"]


def _search_note(search: dict) -> str:
    alone = ", ".join(f"{c['group']} ({c['nodes']}) {c['cost_db']:+.2f}" for c in search["sensitivity"])
    steps = "; ".join(f"{' + '.join(s['kept_float'])}: {s['delta_db']:+.3f} dB" for s in search["steps"])
    return (f"cost (dB) of each group quantized alone: {alone}. Float groups added in that order: {steps}")


def _note(target: str, q: dict) -> str | None:
    parts = [_search_note(q["budget"])] if q.get("budget") and q["budget"].get("sensitivity") else []
    ops = q.get("op_precision")
    if ops:  # tflite int8: what runs in int8, and the float islands
        int8 = ", ".join(f"{name} {count}" for name, count in ops["int8"].items()
                         if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL"))
        islands = sum(ops["float"].values())
        kinds = ", ".join(f"{name} {count}" for name, count in list(ops["float"].items())[:6])
        parts.append(f"int8 compute ops: {int8 or 'none'}; float islands: {islands} ops ({kinds}, ...), "
                     f"{sum(ops['transitions'].values())} QUANTIZE/DEQUANTIZE")
    if q.get("macs"):
        parts.append(f"{q['macs']['int8_fraction']:.0%} of the Conv/Linear/MatMul MACs in int8")
    own = _target_note(target, q)
    return "; ".join(parts + ([own] if own else [])) or None


def _target_note(target: str, q: dict) -> str | None:
    if target == "coreml":
        engine = (q.get("quantized") or {}).get("measured_with", "not measured")
        return f"PSNR-Y: {engine}; no latency (CoreML runs on macOS only)"
    host = q.get("host_kernels")
    if host:  # the PSNR-Y columns are the exact gate's; the host's own kernels go in the note
        extensions = ", ".join(host["cpu"]["vector_extensions"]) or "?"
        return (f"PSNR-Y on the exact gate ({q.get('gate', '').split(':')[0]}); Set5 on this host's "
                f"kernels ({extensions}): {host['psnr_y']:.3f} dB ({host['vs_exact_db']:+.3f} dB)")
    return q.get("quality_note")


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _write(out: Path, rows, reports, float_set14: float, tile) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: LABELS.index(r["label"]) if r["label"] in LABELS else len(LABELS))
    float_set5 = next((r["set5_float"] for r in rows if r.get("set5_float") is not None), None)
    lines = [
        "# Quantized exports of HiT-SRF x4 (HiTNet.pth)",
        "",
        f"Produced by `benchmarks/quantize_hitsr.py` on {platform.machine()} Linux "
        f"({platform.processor() or 'CPU'}), shared CPU cores: latencies are noisy, compare rows "
        f"of one run only. Input 1x3x{tile[0]}x{tile[1]}; images are run in fixed "
        f"{tile[0]}x{tile[1]} tiles (edgesr.tiling) by the float model and by every artifact alike.",
        "Calibration: 64 LR patches from `train/BSD200`; budget search and Set5 figures on Set5; "
        "Set14 is a second, untouched validation set.",
        "",
        f"Float (PyTorch fp32, same tiling): Set5 {_fmt(float_set5, '.3f')} dB, Set14 {float_set14:.3f} dB PSNR-Y.",
        "",
        "| target × precision | size MB | Set5 PSNR-Y | Δ Set5 dB | Set14 PSNR-Y | Δ Set14 dB | "
        "latency ms | fp32 latency ms (same run) | speed-up | kept in float |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | failed: {r['error']} |||||||||")
            continue
        lines.append(
            f"| {r['label']} | {r['size_mb']:.2f} | {_fmt(r['set5'], '.3f')} | {_fmt(r['set5_delta'], '+.3f')} | "
            f"{_fmt(r.get('set14'), '.3f')} | {_fmt(r.get('set14_delta'), '+.3f')} | "
            f"{_fmt(r['latency_ms'], '.0f')} | {_fmt(r['latency_fp32_ms'], '.0f')} | "
            f"{_fmt(r['speedup'], '.2f')}{'' if r['speedup'] is None else 'x'} | {', '.join(r['kept_float'] or []) or '-'} |")
    notes = [r for r in rows if r.get("note")]
    if notes:
        lines += ["", "Notes:"] + [f"- {r['label']}: {r['note']}" for r in notes]
    write_keeping_notes(out / "quantization.md", "\n".join(lines), "quantize_hitsr.py")
    (out / "quantization.json").write_text(json.dumps({"rows": rows, "reports": reports}, indent=1,
                                                      default=str) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
