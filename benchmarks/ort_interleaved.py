"""ONNX files against each other in onnxruntime's CPU EP: interleaved runs, fresh sessions each round.

    .venv/bin/python benchmarks/ort_interleaved.py fp32.onnx int8.onnx [--rounds 5 --repeats 4 --profile]

Every round opens a new session per file (2 threads by default) and runs the files in
turn, ``--repeats`` times; the figure per file is the median over rounds of each round's
median, and each file's ratio is against the first one. One round on a shared machine can
be slow for every file (seen here: up to 2x); the median over rounds drops it, and so does running the
files in turn within a round. Sessions do not spin (``session.intra_op.allow_spinning``
off): a spinning pool of the session timed before slows the next on 2 cores.
``--profile`` adds, per file, onnxruntime's kernel time by op type in the fastest of three
profiled sessions. Not a test: run it with nothing else on the cores. Used for the int8
--fused-ops figures of docs/quantization.md.
"""
from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgesr.runtimes.onnxruntime_runner import placement_from_profile  # noqa: E402 (after the path)


def _session(ort, path: Path, threads: int, profile_prefix: str | None = None):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _op_profile(ort, path: Path, batch, threads: int, folder: str) -> tuple[float, collections.Counter]:
    """Kernel time (ms) by op type in the last run of the fastest of three profiled sessions."""
    best = None
    for attempt in range(3):
        session = _session(ort, path, threads, f"{folder}/{path.stem}-{attempt}")
        name = session.get_inputs()[0].name
        for _ in range(3):
            session.run(None, {name: batch})
        events = json.loads(Path(session.end_profiling()).read_text())
        last = [e for e in events if e.get("name") == "model_run"][-1]
        by_type = collections.Counter(placement_from_profile(events)["CPUExecutionProvider"]["op_ms"])
        if best is None or last["dur"] < best[0]:
            best = (last["dur"] / 1e3, by_type)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    import numpy as np
    import onnxruntime as ort

    from edgesr.hostcpu import describe

    missing = [str(path) for path in args.files if not path.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    shape = [dim if isinstance(dim, int) else 1 for dim in
             _session(ort, args.files[0], args.threads).get_inputs()[0].shape]
    batch = np.random.default_rng(0).random(shape, dtype=np.float32)
    rounds: dict[Path, list[float]] = {path: [] for path in args.files}
    for _ in range(args.rounds):
        sessions = []
        for path in args.files:
            session = _session(ort, path, args.threads)
            name = session.get_inputs()[0].name
            session.run(None, {name: batch})
            sessions.append((path, session, name))
        times: dict[Path, list[float]] = {path: [] for path in args.files}
        for _ in range(args.repeats):
            for path, session, name in sessions:
                started = time.perf_counter()
                session.run(None, {name: batch})
                times[path].append((time.perf_counter() - started) * 1e3)
        for path in args.files:
            rounds[path].append(statistics.median(times[path]))
        del sessions
    cpu = describe()
    print(f"CPU: {cpu['model']}, {', '.join(cpu['vector_extensions']) or 'no x86 vector extensions'}; "
          f"onnxruntime {ort.__version__}, {args.threads} threads, input {shape}")
    first = statistics.median(rounds[args.files[0]])
    for path in args.files:
        median = statistics.median(rounds[path])
        print(f"{path}: {median:.0f} ms (rounds: {', '.join(f'{v:.0f}' for v in rounds[path])}), "
              f"{first / median:.2f}x the first file's speed")
    if args.profile:
        with tempfile.TemporaryDirectory(prefix="edgesr-ort-profile-") as folder:
            for path in args.files:
                run_ms, by_type = _op_profile(ort, path, batch, args.threads, folder)
                top = ", ".join(f"{op} {ms:.0f}" for op, ms in by_type.most_common(12))
                print(f"{path}: profiled run {run_ms:.0f} ms; kernel ms by op type: {top}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
