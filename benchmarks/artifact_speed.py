"""Every exported file against the PyTorch model it came from, timed in one run.

For SRConvNet x4 (official configuration, random weights) and HiT-SRF x4 (the trained
``../shared/data/weights/HiTNet.pth``) at each ``--sizes`` (default 128 and 256), the
benchmark exports (or reuses, with ``--cache``) through the library API, exactly as
``edgesr export`` does (parity gate on):

* ONNX fp32: the default fixed-size graph (onnxruntime's fused ops, float16-safe range),
  ``--delegate-ready`` (the forms NNAPI and the CoreML EP take whole) and ``--fused-ops``
  (float32 only);
* TFLite fp32 and fp16 (litert-torch), run in LiteRT with XNNPACK, and for SRConvNet the
  fp32 ``--fused-ops`` file (its dynamic convs in LiteRT's own kernels, outside XNNPACK);

then times PyTorch eager and every file **interleaved in one process** (round robin,
``--repeats`` rounds, same ``--threads``), so that load on the shared machine moves all
of them alike; a pause before each timed call lets the previous runtime's worker threads
stop spinning (onnxruntime's, OpenMP's and XNNPACK's pools busy-wait after a run, and on
2 cores they would slow whichever runtime comes next). Columns: median latency, ratio to eager (> 1: the file is faster), GFLOP
of the graph (Conv/MatMul/Gemm; TFLite conv/FC/batch-matmul) against the PyTorch
model's (its FLOP counter, plus torch.fft counted as 5 N log2 N per complex transform),
XNNPACK partitions and delegated nodes, peak RSS of one inference in a fresh process
(``edgesr bench``'s child: load + one run; eager measured the same way), export wall
time and the parity verdict. Prints the CPU's vector extensions with the table and
writes ``--out`` (markdown + JSON beside it).

    python benchmarks/artifact_speed.py --sizes 128 256 --threads 2 --repeats 5 --cache /tmp/speed-cache

Not a test: the figures depend on the machine; run it with nothing else on the cores.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from doc_notes import write_keeping_notes  # noqa: E402 (benchmarks/ is the script's folder)
HITNET = REPO.parent / "shared" / "data" / "weights" / "HiTNet.pth"

# (label, file tag, target, precision, export options, architectures: None for every one)
ARTIFACTS = (
    ("ORT fp32 (default graph)", "", "onnx", "fp32", {}, None),
    ("ORT fp32 (--delegate-ready)", "_mobile", "onnx", "fp32", {"delegate_ready": True}, None),
    ("ORT fp32 (--fused-ops)", "_fused", "onnx", "fp32", {"fused_ops": True}, None),
    ("LiteRT fp32 (XNNPACK)", "", "tflite", "fp32", {}, None),
    ("LiteRT fp16 (XNNPACK)", "", "tflite", "fp16", {}, None),
    # HiT-SR's --fused-ops TFLite graph is its default one (no dynamic conv; range scaling kept).
    ("LiteRT fp32 (--fused-ops)", "_fused", "tflite", "fp32", {"fused_ops": True}, {"srconvnet"}),
)
# Seconds between timed calls: longer than any runtime's pool spins after a run.
PAUSE_S = 0.2
PROFILED_RUNS = 2


def _model(name: str):
    from edgesr.models.loading import create, load

    if name == "hit-srf":
        if not HITNET.exists():
            raise SystemExit(f"{HITNET} is missing: HiT-SRF is measured with the trained checkpoint")
        return load(HITNET).eval(), f"HiT-SRF x4 ({HITNET.name})", HITNET
    import torch

    torch.manual_seed(0)
    return create(name, 4).eval(), f"{name} x4 (official config, random weights)", None


def _pytorch_gflop(model, size: tuple[int, int]) -> float:
    """The FLOP counter's convs/matmuls, plus each torch.fft transform at 5 N log2 N."""
    from edgesr.models.profile import count_macs
    from edgesr.models.srconvnet import FourierUnit
    from edgesr.rewrite.dft_plan import fft_flops

    flops = 2.0 * count_macs(model, *size)
    for unit in model.modules():
        if isinstance(unit, FourierUnit):  # rfft2 + irfft2 of every channel, at the LR size
            flops += 2 * unit.conv_layer.in_channels // 2 * fft_flops(*size)
    return flops / 1e9


def _export(model, model_name: str, tag: str, target: str, precision: str, options: dict, size, out_dir: Path,
            cache: Path | None):
    """(artifact path, export seconds, parity status, report rewrites) for one file."""
    import edgesr

    name = f"{model_name}_{target}_{precision}{tag}_{size[0]}x{size[1]}"
    directory = (cache or out_dir) / name
    reports = sorted(directory.glob("*.report.json")) if directory.exists() else []
    if cache and reports:
        report = json.loads(reports[0].read_text())
        artifact = directory / Path(report["artifact"]).name  # the cache folder may have moved
        return artifact, sum(report["timings_s"].values()), report["parity"]["status"], report
    started = time.perf_counter()
    report = edgesr.export(model, target, input_size=size, precision=precision, out_dir=directory,
                           allow_partial_delegation=True, **options)
    return Path(report.artifact), time.perf_counter() - started, report.parity["status"], report.to_dict()


def _graph_gflop(path: Path, size) -> float | None:
    from edgesr.bench import onnx_macs, tflite_macs

    if path.suffix == ".onnx":
        macs = onnx_macs(path, *size)
    else:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        interpreter = Interpreter(model_path=str(path),
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
        macs = tflite_macs(interpreter)
    return None if macs is None else 2 * macs / 1e9


def _peak_rss_mb(model: str, runtime: str, threads: int, **options) -> float | None:
    from edgesr.bench import bench

    try:
        return bench(model, runtime, warmup=0, iters=1, threads=threads, **options).get("peak_rss_mb")
    except Exception as exc:  # the table says why a figure is missing
        print(f"  peak RSS of {model} in {runtime} not measured: {exc}", file=sys.stderr)
        return None


def measure(name: str, size: tuple[int, int], threads: int, repeats: int, out_dir: Path,
            cache: Path | None) -> list[dict]:
    import torch

    from edgesr.models.contract import with_unit_range
    from edgesr.runtimes import open_runner
    from edgesr.runtimes.litert_runner import xnnpack_coverage

    torch.set_num_threads(threads)
    model, label, checkpoint = _model(name)
    rows = [{"model": label, "size": f"{size[0]}x{size[1]}", "runtime": "PyTorch eager",
             "gflop": _pytorch_gflop(model, size)}]
    runners = {}
    for runtime_label, tag, target, precision, options, archs in ARTIFACTS:
        if archs is not None and name not in archs:
            continue
        print(f"[{label} {size[0]}x{size[1]}] {runtime_label}: exporting", file=sys.stderr, flush=True)
        row = {"model": label, "size": f"{size[0]}x{size[1]}", "runtime": runtime_label}
        try:
            path, seconds, parity, report = _export(model, name, tag, target, precision, options, size, out_dir,
                                                    cache)
        except Exception as exc:
            row["error"] = f"export failed: {str(exc).splitlines()[0][:200]}"
            rows.append(row)
            continue
        row.update(artifact=str(path), export_s=seconds, parity=parity, gflop=_graph_gflop(path, size),
                   size_mb=path.stat().st_size / 1e6,
                   fourier_form=next((r.get("note", "") for r in report.get("rewrites", [])
                                      if r.get("name") == "fourier_as_dft"), None))
        if target == "tflite":
            coverage = xnnpack_coverage(path, threads)
            row["xnnpack_partitions"], row["delegated_nodes"], row["nodes"] = (
                coverage.partitions, coverage.delegated, coverage.nodes)
            row["outside_xnnpack"] = coverage.outside
        runners[runtime_label] = open_runner(path, threads=threads)
        rows.append(row)
    eager = with_unit_range(model).eval()
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    batches = {key: runner.native_input(*size) for key, runner in runners.items()}
    calls = {"PyTorch eager": lambda: eager(x),
             **{key: (lambda r=runner, b=batches[key]: r.run_native(b)) for key, runner in runners.items()}}
    times: dict[str, list[float]] = {key: [] for key in calls}
    print(f"[{label} {size[0]}x{size[1]}] timing {len(calls)} runtimes interleaved, {repeats} rounds",
          file=sys.stderr, flush=True)
    with torch.inference_mode():
        for call in calls.values():  # warm-up
            call()
        for _ in range(repeats):
            for key, call in calls.items():
                time.sleep(PAUSE_S)
                started = time.perf_counter()
                call()
                times[key].append((time.perf_counter() - started) * 1e3)
    for runner in runners.values():
        runner.close()
    for row in rows:  # where the ORT time goes: the last of PROFILED_RUNS runs per file (the
        # first pays the page faults of every new intermediate), after the timing
        if row.get("artifact", "").endswith(".onnx"):
            profiled = open_runner(row["artifact"], threads=threads, profiled_runs=PROFILED_RUNS)
            batch = profiled.native_input(*size)
            for _ in range(PROFILED_RUNS):
                profiled.run_native(batch)
            op_ms = profiled.placement["CPUExecutionProvider"]["op_ms"]
            total = sum(op_ms.values())
            row["ort_profile"] = {op: ms / total for op, ms in list(op_ms.items())[:8]}
    eager_ms = statistics.median(times["PyTorch eager"])
    with tempfile.TemporaryDirectory() as tmp:
        if checkpoint is None:  # eager RSS from a checkpoint of the same weights, as a user would load it
            from safetensors.torch import save_file

            checkpoint = Path(tmp) / f"{name}_x4.safetensors"
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
        rows[0]["peak_rss_mb"] = _peak_rss_mb(str(checkpoint), "pytorch", threads, input_size=size)
    for row in rows:
        if row["runtime"] in times:
            row["median_ms"] = statistics.median(times[row["runtime"]])
            row["vs_eager"] = eager_ms / row["median_ms"]
            row["gflop_vs_pytorch"] = (row["gflop"] / rows[0]["gflop"]) if row.get("gflop") else None
            if row.get("artifact"):
                row["peak_rss_mb"] = _peak_rss_mb(row["artifact"], None, threads)
    return rows


def _cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def to_markdown(rows: list[dict], header: str) -> str:
    lines = [header, "",
             "| model | size | runtime | median ms | vs eager | GFLOP | vs PyTorch | XNNPACK partitions "
             "(nodes delegated / all) | peak RSS MB | export s | parity |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row.get("error"):
            lines.append(f"| {row['model']} | {row['size']} | {row['runtime']} | {row['error']} |||||||| ")
            continue
        partitions = (f"{row['xnnpack_partitions']} ({row['delegated_nodes']}/{row['nodes']})"
                      if "xnnpack_partitions" in row else "-")
        lines.append(
            f"| {row['model']} | {row['size']} | {row['runtime']} | {_cell(row.get('median_ms'), '.1f')} | "
            f"{_cell(row.get('vs_eager'), '.2f')}x | {_cell(row.get('gflop'), '.2f')} | "
            f"{_cell(row.get('gflop_vs_pytorch'), '.2f')}x | {partitions} | {_cell(row.get('peak_rss_mb'), '.0f')} | "
            f"{_cell(row.get('export_s'), '.0f')} | {row.get('parity', '-')} |")
    profiled = [row for row in rows if row.get("ort_profile")]
    if profiled:
        lines += ["", "Where onnxruntime spends its time (share of kernel time in the second of two profiled runs, top ops; "
                  "LiteRT runs each file as one XNNPACK node, which its Python API does not break down):", ""]
        lines += [f"- {row['model']} {row['size']} {row['runtime']}: "
                  + ", ".join(f"{op} {share:.0%}" for op, share in row["ort_profile"].items()) for row in profiled]
    forms = sorted({row["fourier_form"] for row in rows if row.get("fourier_form")})
    if forms:
        lines += ["", "Fourier unit form named in the export reports:", ""] + [f"- {form}" for form in forms]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["srconvnet", "hit-srf"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache", type=Path, help="reuse the exports found here (and keep new ones)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "performance.md")
    args = parser.parse_args(argv)

    from edgesr import __version__, hostcpu

    header = (f"# Speed of the exported files against PyTorch eager\n\n"
              f"`python benchmarks/artifact_speed.py --sizes {' '.join(map(str, args.sizes))} "
              f"--threads {args.threads} --repeats {args.repeats}` (edgesr {__version__}). One process, "
              f"the runtimes interleaved round robin, {args.threads} threads each, median of {args.repeats} "
              f"rounds ({PAUSE_S} s pause before each timed call, so that no runtime's worker threads "
              f"still spin), batch 1 fp32 input. CPU: {hostcpu.summary()}. 'vs eager' > 1 means the file runs "
              f"faster than the PyTorch model. Ratios within one run are what the figures support; the "
              f"absolute times move with the shared machine's load.")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for size in args.sizes:
                rows += measure(name, (size, size), args.threads, args.repeats, Path(tmp), args.cache)
                text = to_markdown(rows, header)
                print(text, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_keeping_notes(args.out, text, "artifact_speed.py")
    cpu = hostcpu.describe()
    args.out.with_suffix(".json").write_text(json.dumps({"cpu": cpu, "rows": rows}, indent=1, default=str))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
