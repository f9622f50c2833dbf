"""How fast is edgesr's numpy evaluator of CoreML ML Programs, against PyTorch eager?

Target (issue): a 64x64 HiT-SRF x4 program (default hyperparameters) evaluates in
under 3x the PyTorch eager time of the same network on the same machine. This is a
benchmark, not a test: timings on a shared machine are noisy, so it reports the
median and the best of several runs of each.

    python benchmarks/coreml_eval_speed.py [--arch hit-srf] [--scale 4] [--size 64]
        [--precision fp32] [--repeats 5] [--package existing.mlpackage]

Without --package it exports the model first (random weights) with
``edgesr.export.pipeline.export(..., check=False)``; the exported package and the
PyTorch model share the same weights only in that case.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _times(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    values = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        values.append(time.perf_counter() - started)
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="hit-srf")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--package", type=Path, default=None, help="evaluate this .mlpackage instead")
    args = parser.parse_args(argv)

    from edgesr.coreml_eval import load
    from edgesr.export.pipeline import export
    from edgesr.models.contract import with_unit_range
    from edgesr.models.loading import create

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create(args.arch, args.scale).eval()
    reference = with_unit_range(model).eval()
    batch = np.random.default_rng(0).random((1, 3, args.size, args.size), dtype=np.float32)

    with tempfile.TemporaryDirectory() as folder:
        package = args.package
        if package is None:
            started = time.perf_counter()
            export(model, "coreml", input_size=(args.size, args.size), precision=args.precision,
                   out_dir=folder, check=False, delegate_ready=False, name="bench")
            package = Path(folder) / "bench.mlpackage"
            print(f"exported in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        started = time.perf_counter()
        compiled = load(package)
        load_s = time.perf_counter() - started

        with torch.inference_mode():
            tensor = torch.from_numpy(batch)
            eager = _times(lambda: reference(tensor), args.repeats)
            expected = reference(tensor).numpy()
        evaluated = _times(lambda: compiled.predict({"input": batch}), args.repeats)
        output = compiled.predict({"input": batch})["output"]

    eager_med, evaluated_med = statistics.median(eager), statistics.median(evaluated)
    ratio = evaluated_med / eager_med
    print(f"{args.arch} x{args.scale} {args.size}x{args.size} {args.precision} "
          f"({sum(1 for _ in compiled.evaluator.steps)} runtime ops; torch threads {torch.get_num_threads()})")
    print(f"  load + compile of the package : {load_s:.2f} s")
    print(f"  PyTorch eager                 : median {eager_med * 1e3:.0f} ms, best {min(eager) * 1e3:.0f} ms")
    print(f"  reference evaluator (numpy)   : median {evaluated_med * 1e3:.0f} ms, best {min(evaluated) * 1e3:.0f} ms")
    print(f"  ratio evaluator / eager       : {ratio:.2f}x (median), "
          f"{min(evaluated) / min(eager):.2f}x (best)  target < 3x")
    if args.package is None:
        print(f"  max abs vs PyTorch            : {float(np.abs(output - expected).max()):.3g}")
    slowest = _op_profile(compiled, batch)
    print("  slowest op types (one run)    : " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in slowest[:6]))
    return 0


def _op_profile(compiled, batch) -> list[tuple[str, float]]:
    """Time per op type over one evaluation (wraps each step's kernel)."""
    totals: dict[str, float] = {}
    evaluator = compiled.evaluator
    originals = [step.kernel for step in evaluator.steps]

    def timed(kernel, op_type):
        def run(args, op):
            started = time.perf_counter()
            try:
                return kernel(args, op)
            finally:
                totals[op_type] = totals.get(op_type, 0.0) + time.perf_counter() - started
        return run

    for step in evaluator.steps:
        step.kernel = timed(step.kernel, step.op.op_type)
    try:
        compiled.predict({"input": batch})
    finally:
        for step, kernel in zip(evaluator.steps, originals):
            step.kernel = kernel
    return sorted(totals.items(), key=lambda item: -item[1])


if __name__ == "__main__":
    sys.exit(main())
