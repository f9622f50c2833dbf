"""`make demo`: the main job end to end on the embedded default model.

Load the bundled SRConvNet x4 (trained with `edgesr train`, see docs/training.md),
upscale a generated test image, export it to ONNX with the parity check, time the
file in onnxruntime, and print a summary. Everything lands in ./demo-output.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


DEFAULT_MODEL = "srconvnet-x4-demo"
OUT = Path("demo-output")
EXPORT_SIZE = (64, 64)


def _log(message: str) -> None:
    print(message, flush=True)


def main() -> int:
    import edgesr
    from edgesr.bench import bench
    from edgesr.export.parity import natural_image
    from edgesr.imageio import LoadedImage, write_image
    from edgesr.models.inference import TorchUpscaler
    from edgesr.models.profile import trainable_parameters
    from edgesr.upscale import upscale_image

    OUT.mkdir(exist_ok=True)
    model = edgesr.load(DEFAULT_MODEL)
    info = edgesr.describe(model)
    _log(f"model     {info.arch} x{info.scale}, {trainable_parameters(model):,} parameters "
         f"({info.source})")

    image = LoadedImage(natural_image(96, 128).transpose(1, 2, 0), None, False, 8)
    write_image(OUT / "input.png", image)
    started = time.perf_counter()
    upscaled = upscale_image(TorchUpscaler(model), image, info.scale)
    write_image(OUT / "upscaled.png", upscaled)
    _log(f"upscale   {OUT / 'input.png'} 128x96 -> {OUT / 'upscaled.png'} "
         f"{upscaled.rgb.shape[1]}x{upscaled.rgb.shape[0]} in {time.perf_counter() - started:.2f} s")

    report = edgesr.export(model, "onnx", input_size=EXPORT_SIZE, out_dir=OUT)
    worst = max(report.parity["checks"], key=lambda check: check["max_abs"])
    _log(f"export    {report.artifact} ({report.size_mb:.2f} MB), parity {report.parity['status']}: "
         f"max abs {worst['max_abs']:.2e}, PSNR {worst['psnr']:.1f} dB vs PyTorch "
         f"({worst['runtime']})")
    _log(f"rewrites  {', '.join(r['name'] for r in report.rewrites) or 'none'}")
    timing = bench(report.artifact, "onnxruntime", warmup=3, iters=20)
    latency = timing["latency_ms"]
    _log(f"bench     onnxruntime {EXPORT_SIZE[0]}x{EXPORT_SIZE[1]}: p50 {latency['p50']:.1f} ms, "
         f"p90 {latency['p90']:.1f} ms, {timing['throughput_mpx_s']:.2f} output Mpx/s, "
         f"peak RSS {timing['peak_rss_mb']:.0f} MB")
    (OUT / "summary.json").write_text(json.dumps(
        {"model": info.to_dict(), "export": report.to_dict(), "bench": timing}, indent=2, default=str))
    _log(f"summary   {OUT / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
