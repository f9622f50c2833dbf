"""Where SRConvNet x4's time goes, per piece and runtime: LiteRT's Python API runs the
whole file as one XNNPACK node and gives no per-op profile, so the pieces are exported
and timed on their own.

    python benchmarks/srconvnet_pieces.py --size 256 --threads 2 --repeats 5

Pieces of the official configuration (random weights), each prepared with the rewrites
of its target (``prepare_for_export``: onnx default graph, tflite delegate forms),
converted with the same converters as ``edgesr export`` (torch.onnx dynamo with its
optimizer; litert-torch) and timed interleaved with PyTorch eager: one block's Fourier
modulation and MixFFN (the model has 8 blocks), and the x4 upsampler with the tail conv,
on a 1 x 64 x S x S feature map. Prints the CPU's vector extensions with the table.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def pieces(model):
    import torch

    network = next(module for module in model.modules() if hasattr(module, "blocks"))

    class UpsamplerAndTail(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.upsampling, self.tail = network.upsampling, network.tail

        def forward(self, features):
            return self.tail(self.upsampling(features))

    block = network.blocks[0]
    return {"Fourier modulation": block.attention, "MixFFN": block.ffn, "upsampler + tail": UpsamplerAndTail()}


def onnx_call(module, features, folder: Path, threads: int):
    import onnxruntime as ort
    import torch

    from edgesr.runtimes.onnxruntime_runner import session_options

    path = folder / "piece.onnx"
    torch.onnx.export(module.eval(), (features,), str(path), dynamo=True, optimize=True)
    # The runner's options; the runner itself takes only 3-channel images.
    session = ort.InferenceSession(str(path), session_options(ort, threads), providers=["CPUExecutionProvider"])
    name, batch = session.get_inputs()[0].name, features.numpy()
    return lambda: session.run(None, {name: batch})


def litert_call(module, features, folder: Path, threads: int):
    import litert_torch
    from ai_edge_litert.interpreter import Interpreter

    path = folder / "piece.tflite"
    litert_torch.convert(module.eval(), (features,)).export(str(path))
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    index, batch = interpreter.get_input_details()[0]["index"], features.numpy()

    def run():
        interpreter.set_tensor(index, batch)
        interpreter.invoke()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch

    from edgesr import hostcpu
    from edgesr.models.loading import create
    from edgesr.rewrite import prepare_for_export

    torch.set_num_threads(args.threads)
    model = create("srconvnet", 4, seed=0)
    size = (args.size, args.size)
    prepared = {"onnxruntime": prepare_for_export(model, "onnx", size, delegate_forms=False),
                "LiteRT (XNNPACK)": prepare_for_export(model, "tflite", size, delegate_forms=True)}
    features = torch.rand(1, 64, *size)
    calls: dict[tuple[str, str], object] = {}
    with tempfile.TemporaryDirectory() as work:
        for runtime, build in (("onnxruntime", onnx_call), ("LiteRT (XNNPACK)", litert_call)):
            for piece, module in pieces(prepared[runtime]).items():
                folder = Path(work) / f"{runtime[:6]}-{len(calls)}"
                folder.mkdir()
                calls[(piece, runtime)] = build(module, features, folder, args.threads)
        for piece, module in pieces(model).items():
            calls[(piece, "PyTorch eager")] = lambda module=module: module(features)
        times: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
        with torch.inference_mode():
            for call in calls.values():
                call()
            for _ in range(args.repeats):
                for key, call in calls.items():
                    time.sleep(0.1)
                    started = time.perf_counter()
                    call()
                    times[key].append((time.perf_counter() - started) * 1e3)
    print(f"SRConvNet x4 pieces on 1x64x{args.size}x{args.size}, {args.threads} threads, median of "
          f"{args.repeats}, interleaved; CPU: {hostcpu.summary()}")
    print(f"| piece | {' | '.join(r for r in ('PyTorch eager', *prepared))} |")
    print("|---|---|---|---|")
    for piece in pieces(model):
        cells = [f"{statistics.median(times[(piece, r)]):.1f} ms" for r in ('PyTorch eager', *prepared)]
        print(f"| {piece} | {' | '.join(cells)} |")
    print("(the model runs 8 blocks, each one Fourier modulation and one MixFFN)")


if __name__ == "__main__":
    main()
