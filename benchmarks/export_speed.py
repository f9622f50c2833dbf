"""Speed and size of the rewritten ONNX exports against PyTorch eager, in one run.

For each model (default: HiT-SRF x4 with the trained HiTNet.pth when present, and
SRConvNet x4) at 1x3xHxW (default 128x128):

* PyTorch eager latency of the original model (``with_unit_range``, no rewrites);
* the ONNX export as the pipeline makes it: ``prepare_for_export(model, "onnx", size)``,
  ``with_unit_range``, then ``OnnxTarget.convert`` (dynamo exporter + onnxsim), in two
  forms (``--forms``): "mobile" (``edgesr export --delegate-ready``), with the
  delegate-friendly GELU/LayerNorm/padding, and "fused" (the default fp32 graph), which
  keeps the ops desktop onnxruntime fuses;
* onnxruntime fp32 CPU session-creation time and latency, measured in a child process
  whose address space is capped (``--mem-cap-gb``) so a runaway session cannot take
  the machine down, and the ORT output's max |difference| from eager;
* file size against the fp32 weight bytes;
* with ``--profile``, where the time goes: eager (torch.profiler, self time) and ORT
  (its node profile) split into convolutions, matrix products and the rest, and the
  ceiling ``eager ms / ORT conv+matmul ms``: the speed-up ORT would reach if every
  other op cost nothing. A ceiling under the target says the target cannot be met by
  graph rewrites on this CPU, only by faster convolution/GEMM kernels.

Prints a markdown table (and writes it with the raw numbers as JSON to ``--out``).
Not a test: timings depend on the machine and its load; the numbers are medians.

    python benchmarks/export_speed.py --size 128 --threads 2 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
HITNET = REPO.parent / "shared" / "data" / "weights" / "HiTNet.pth"

# Targets from the issue.
TARGET_SPEEDUP = 2.5
TARGET_SIZE_RATIO = 2.0
TARGET_SESSION_S = 2.0

_CHILD = r"""
import json, statistics, sys, time
import numpy as np
import onnxruntime as ort
path, input_path, threads, repeats, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
profile = sys.argv[6] == "1"
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
options.log_severity_level = 3
start = time.perf_counter()
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
created = time.perf_counter() - start
x = np.load(input_path)
feed = {session.get_inputs()[0].name: x}
for _ in range(warmup):
    out = session.run(None, feed)[0]
times = []
for _ in range(repeats):
    start = time.perf_counter()
    out = session.run(None, feed)[0]
    times.append(time.perf_counter() - start)
np.save(input_path + ".out.npy", out)
per_op_ms = {}
if profile:
    options.enable_profiling = True
    options.profile_file_prefix = input_path + ".profile"
    profiled = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    for _ in range(repeats):
        profiled.run(None, feed)
    for event in json.load(open(profiled.end_profiling())):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            per_op_ms[op] = per_op_ms.get(op, 0.0) + event["dur"] / 1000 / repeats
print(json.dumps({"session_s": created, "ort_ms": 1000 * statistics.median(times),
                  "ort_ms_all": [1000 * t for t in times], "ort_per_op_ms": per_op_ms}))
"""

# Op kinds of the --profile split: ORT op types and aten op names (substrings).
ORT_KINDS = {"conv": ("Conv", "ConvTranspose", "FusedConv", "NhwcFusedConv"),
             "matmul": ("MatMul", "Gemm", "FusedMatMul", "FusedGemm")}
ATEN_KINDS = {"conv": ("convolution", "conv2d", "conv_transpose"),
              "matmul": ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::matmul", "aten::linear")}


def _split(per_op_ms: dict, kind_of) -> dict:
    split = {"conv": 0.0, "matmul": 0.0, "other": 0.0}
    for op, ms in per_op_ms.items():
        split[kind_of(op)] += ms
    return split


def _ort_kind(op: str) -> str:
    return next((kind for kind, ops in ORT_KINDS.items() if op in ops), "other")


def _aten_kind(op: str) -> str:
    return next((kind for kind, names in ATEN_KINDS.items() if any(n in op for n in names)), "other")


def _eager_split(module, x, repeats: int, eager_ms: float) -> dict:
    """Eager time per kind: torch.profiler self times, scaled to the unprofiled median."""
    import torch

    with torch.inference_mode(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            module(x)
    per_op = {e.key: e.self_cpu_time_total / 1000 / repeats for e in prof.key_averages()}
    split = _split(per_op, _aten_kind)
    total = sum(split.values()) or 1.0
    return {kind: eager_ms * ms / total for kind, ms in split.items()}


def _model(name: str):
    from edgesr.models.loading import create, load

    if name == "hit-srf" and HITNET.exists():
        return load(HITNET).eval(), f"hit-srf x4 ({HITNET.name})"
    return create(name, 4).eval(), f"{name} x4 (random init)"


def _eager_ms(module, x, repeats: int, warmup: int) -> float:
    import torch

    with torch.inference_mode():
        for _ in range(warmup):
            module(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            module(x)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _export_onnx(prepared, example, size: tuple[int, int], destination: Path) -> float:
    """The pipeline's ONNX conversion (OnnxTarget.convert); returns seconds taken."""
    from edgesr.models.contract import with_unit_range

    network = with_unit_range(prepared).eval()
    start = time.perf_counter()
    try:
        from edgesr.export.base import ExportOptions
        from edgesr.export.onnx_target import OnnxTarget

        OnnxTarget().convert(network, example, ExportOptions(input_size=size), destination)
    except ImportError:  # pipeline not importable: the same steps by hand
        import onnx
        import onnxsim
        import torch

        program = torch.onnx.export(network, (example,), dynamo=True, opset_version=18,
                                    input_names=["input"], output_names=["output"], optimize=True)
        proto, ok = onnxsim.simplify(program.model_proto)
        onnx.save_model(proto if ok else program.model_proto, str(destination))
    return time.perf_counter() - start


def _ort_child(path: Path, x, threads: int, repeats: int, warmup: int, mem_cap_gb: float,
               profile: bool = False) -> dict:
    import numpy as np

    input_path = str(path) + ".input.npy"
    np.save(input_path, x.numpy())
    cap = int(mem_cap_gb * 2**30)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), input_path, str(threads), str(repeats), str(warmup),
         "1" if profile else "0"],
        capture_output=True, text=True, preexec_fn=limit, env=env, timeout=1800,
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"onnxruntime child exited {result.returncode} (memory cap {mem_cap_gb} GB): {tail[0]}"}
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    measured["output"] = np.load(input_path + ".out.npy")
    return measured


def measure(name: str, size: tuple[int, int], threads: int, repeats: int, warmup: int,
            out_dir: Path, mem_cap_gb: float, form: str = "mobile", profile: bool = False) -> dict:
    import torch

    from edgesr.models.contract import with_unit_range
    from edgesr.rewrite import prepare_for_export

    model, label = _model(name)
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    weight_bytes = sum(p.numel() * 4 for p in model.parameters())
    eager = with_unit_range(model).eval()
    row: dict = {"model": f"{label}, {form}", "input": f"1x3x{size[0]}x{size[1]}", "weight_bytes": weight_bytes}

    prepared = prepare_for_export(model, "onnx", size, delegate_forms=(form == "mobile"))
    row["rewrites"] = [r["name"] for r in getattr(prepared, "edgesr_rewrites", [])]
    path = out_dir / f"{name}_x4_{size[0]}x{size[1]}_{form}.onnx"
    try:
        row["export_s"] = _export_onnx(prepared, x, size, path)
    except Exception as exc:  # noqa: BLE001 - report, keep benchmarking the others
        row["error"] = f"export failed: {str(exc).splitlines()[0][:200]}"
        return row
    row["file_bytes"] = path.stat().st_size
    row["size_ratio"] = row["file_bytes"] / weight_bytes

    ort = _ort_child(path, x, threads, repeats, warmup, mem_cap_gb, profile)
    if "error" in ort:
        row["error"] = ort["error"]
    else:
        row["session_s"] = ort["session_s"]
        row["ort_ms"] = ort["ort_ms"]
        with torch.inference_mode():
            reference = eager(x).numpy()
        row["max_abs_diff"] = float(abs(ort.pop("output") - reference).max())
        row["ort_ms_all"] = ort["ort_ms_all"]
    # Eager after ORT, in the same process run, on the same input.
    row["eager_ms"] = _eager_ms(eager, x, repeats, warmup)
    if "ort_ms" in row:
        row["speedup"] = row["eager_ms"] / row["ort_ms"]
    if profile and ort.get("ort_per_op_ms"):
        ort_split = _split(ort["ort_per_op_ms"], _ort_kind)
        row["ort_split_ms"] = ort_split
        row["eager_split_ms"] = _eager_split(eager, x, repeats, row["eager_ms"])
        row["speedup_ceiling"] = row["eager_ms"] / max(ort_split["conv"] + ort_split["matmul"], 1e-9)
    return row


def _fmt(row: dict, key: str, spec: str, suffix: str = "") -> str:
    return format(row[key], spec) + suffix if key in row else "-"


def table(rows: list[dict]) -> str:
    lines = [
        "| model | input | eager ms | ORT fp32 ms | speedup | session s | ONNX MB | weights MB | size ratio | max diff |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['input']} | {_fmt(row, 'eager_ms', '.0f')} | {_fmt(row, 'ort_ms', '.0f')} "
            f"| {_fmt(row, 'speedup', '.2f', 'x')} | {_fmt(row, 'session_s', '.2f')} "
            f"| {row['file_bytes'] / 1e6:.2f} | {row['weight_bytes'] / 1e6:.2f} "
            f"| {_fmt(row, 'size_ratio', '.2f', 'x')} | {_fmt(row, 'max_abs_diff', '.1e')} |"
            if "file_bytes" in row else
            f"| {row['model']} | {row['input']} | {_fmt(row, 'eager_ms', '.0f')} | - | - | - | - "
            f"| {row['weight_bytes'] / 1e6:.2f} | - | - |"
        )
    notes = [f"- {row['model']}: {row['error']}" for row in rows if "error" in row]
    for row in rows:
        if "speedup_ceiling" in row:
            ort_split, eager_split = row["ort_split_ms"], row["eager_split_ms"]
            notes.append(
                f"- {row['model']}: eager conv {eager_split['conv']:.0f} / matmul {eager_split['matmul']:.0f} / "
                f"other {eager_split['other']:.0f} ms; ORT conv {ort_split['conv']:.0f} / matmul "
                f"{ort_split['matmul']:.0f} / other {ort_split['other']:.0f} ms (profiled run); ceiling with "
                f"every non-conv/matmul op free: {row['speedup_ceiling']:.2f}x")
    targets = (f"Targets: ORT >= {TARGET_SPEEDUP}x eager, HiT-SRF ONNX <= {TARGET_SIZE_RATIO}x fp32 weight "
               f"bytes, session creation < {TARGET_SESSION_S} s.")
    return "\n".join(lines + [""] + notes + [targets])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="hit-srf,srconvnet")
    parser.add_argument("--size", type=int, default=128, help="LR input side (square)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--mem-cap-gb", type=float, default=8.0)
    parser.add_argument("--forms", default="mobile,fused",
                        help="mobile (edgesr export --delegate-ready) and/or fused (the default fp32 export)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the .onnx files and results.json")
    parser.add_argument("--profile", action="store_true",
                        help="split eager and ORT time into conv / matmul / other, with the speed-up ceiling")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="edgesr_export_speed_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    size = (args.size, args.size)
    rows = []
    forms = [f.strip() for f in args.forms.split(",") if f.strip()]
    for name in [n.strip() for n in args.models.split(",") if n.strip()]:
        for form in forms:
            print(f"[export_speed] {name} ({form}) at {size[0]}x{size[1]} ...", file=sys.stderr, flush=True)
            rows.append(measure(name, size, args.threads, args.repeats, args.warmup, out_dir, args.mem_cap_gb,
                                form, args.profile))
    text = table(rows)
    print(text)
    (out_dir / "results.json").write_text(json.dumps({"rows": rows, "table": text}, indent=2, default=str))
    print(f"\n(files and results.json in {out_dir})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
