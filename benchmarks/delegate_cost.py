"""CPU cost of the delegate-friendly graphs (edgesr.rewrite.delegate_ops).

For each architecture, the same weights are exported twice for one target: "before"
with every registered rewrite except the delegate ones, "after" with all of them. Both
files run on this machine's CPU (onnxruntime CPUExecutionProvider, LiteRT's XNNPACK
interpreter) and the median of ``--repeats`` runs is compared; the issue's bound is
+10 %. Each file's readiness verdict is printed beside its timing.

    python benchmarks/delegate_cost.py --targets onnx tflite --size 64 --small

``--small`` uses reduced configurations (conversion of the full HiT-SR to TFLite takes
many minutes); shapes of ops and their order are those of the full models.
On a shared machine timings are noisy: run several times and read the medians.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SMALL = {
    "srconvnet": dict(dim=16, num_blocks=2, num_heads=2, num_kernels=4),
    "hit-sir": dict(embed_dim=24, depths=[6], num_heads=[2]),
    "hit-sng": dict(embed_dim=24, depths=[6], num_heads=[2]),
    "hit-srf": dict(embed_dim=24, depths=[6], num_heads=[2]),
}
DELEGATE_REWRITES = {"gelu_without_erf", "layernorm_ops", "reflect_pad_slices", "bias_slices"}


def prepared(model, target: str, size: tuple[int, int], delegate: bool):
    from edgesr.rewrite import plan

    rewrites = plan._registered()  # imports every rewrite module, in plan order
    saved = list(plan._REWRITES)
    try:
        plan._REWRITES[:] = [r for r in rewrites if delegate or r.name not in DELEGATE_REWRITES]
        return plan.prepare_for_export(model, target, size)
    finally:
        plan._REWRITES[:] = saved


def convert(module, target: str, size: tuple[int, int], path: Path) -> None:
    from edgesr.export.base import ExportOptions, stdout_to_stderr
    from edgesr.export.pipeline import get_target
    from edgesr.models.contract import with_unit_range

    chosen = get_target(target)
    options = ExportOptions(input_size=size)
    wrapped = chosen.wrap(with_unit_range(module), options).eval()
    with stdout_to_stderr(), torch.no_grad():
        chosen.convert(wrapped, chosen.example_input(options), options, path)


def runner(target: str, path: Path, size: tuple[int, int], threads: int):
    """A no-argument callable that runs the file once on the CPU."""
    data = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)
    if target == "onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda: session.run(None, {name: data})
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    (detail,) = interpreter.get_input_details()

    def run():
        interpreter.set_tensor(detail["index"], data)
        interpreter.invoke()

    return run


def time_interleaved(runs: dict, repeats: int) -> dict:
    """Median seconds of each runner, runs alternated so that load changes hit both."""
    for run in runs.values():
        run()
        run()
    samples = {label: [] for label in runs}
    for _ in range(repeats):
        for label, run in runs.items():
            started = time.perf_counter()
            run()
            samples[label].append(time.perf_counter() - started)
    return {label: statistics.median(values) for label, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=list(SMALL))
    parser.add_argument("--targets", nargs="+", default=["onnx", "tflite"])
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--small", action="store_true", help="reduced configurations (see SMALL)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    from edgesr.export.readiness import analyze
    from edgesr.models.loading import create

    size = (args.size, args.size)
    rows = []
    for arch in args.archs:
        torch.manual_seed(0)
        model = create(arch, args.scale, **(SMALL[arch] if args.small else {}))
        for target in args.targets:
            suffix = {"onnx": ".onnx", "tflite": ".tflite"}[target]
            runs, verdicts = {}, {}
            with tempfile.TemporaryDirectory() as tmp:
                for label, delegate in (("before", False), ("after", True)):
                    path = Path(tmp) / f"{arch}_{label}{suffix}"
                    convert(prepared(model, target, size, delegate), target, size, path)
                    runs[label] = runner(target, path, size, args.threads)
                    verdicts[label] = analyze(target, path).summary()
                timings = time_interleaved(runs, args.repeats)
            change = timings["after"] / timings["before"] - 1
            row = {"arch": arch, "scale": args.scale, "target": target, "size": list(size),
                   "small": args.small, "before_ms": round(timings["before"] * 1e3, 2),
                   "after_ms": round(timings["after"] * 1e3, 2), "change": round(change, 4),
                   "within_10pct": change <= 0.10, "before": verdicts["before"], "after": verdicts["after"]}
            rows.append(row)
            print(f"{arch:10s} x{args.scale} {target:6s} {row['before_ms']:9.2f} ms -> {row['after_ms']:9.2f} ms "
                  f"({change:+.1%})", flush=True)
            print(f"    before: {verdicts['before']}\n    after:  {verdicts['after']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
