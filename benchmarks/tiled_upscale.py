"""Tiled x4 upscale of a large image: time and peak RSS; PSNR(tiled vs whole) on Set5.

    python benchmarks/tiled_upscale.py speed --model /work/shared/data/weights/HiTNet.pth \
        --size 1356x2040 --tile 256
    python benchmarks/tiled_upscale.py seams --model /work/shared/data/weights/HiTNet.pth \
        --data /work/shared/data/Set14/HR --limit 4

``speed`` runs in a child process (``edgesr upscale`` on a synthetic 2040x1356 PNG) so
that the peak RSS is that of the upscale alone; ``seams`` compares tiled and
whole-image outputs of the same model on every LR image of a benchmark folder.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def synthetic_photo(height: int, width: int) -> np.ndarray:
    from edgesr.export.parity import natural_image

    return (natural_image(height, width, seed=3).transpose(1, 2, 0) * 255).round().astype(np.uint8)


def speed(args) -> dict:
    height, width = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "large.png"
        Image.fromarray(synthetic_photo(height, width)).save(source)
        command = [sys.executable, "-m", "edgesr.cli", "upscale", str(source), "--model", args.model,
                   "-o", str(Path(folder) / "out"), "--tile", str(args.tile), "--json"]
        if args.scale:
            command += ["--scale", str(args.scale)]
        if args.overlap is not None:
            command += ["--overlap", str(args.overlap)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        started = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        elapsed = time.perf_counter() - started
        if completed.returncode:
            raise SystemExit(completed.stderr.strip().splitlines()[-1])
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        peak_mb = peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6
        report = json.loads(completed.stdout)
    return {"input": [height, width], "output": report["images"][0]["size"], "tile": args.tile,
            "tiling": report["runner"]["tiling"], "seconds": elapsed, "peak_rss_mb": peak_mb,
            "model": args.model}


def seams(args) -> dict:
    from edgesr.imageio import list_images, read_rgb
    from edgesr.metrics import psnr
    from edgesr.upscale import open_upscaler

    whole = open_upscaler(args.model, args.scale, tile=0, threads=args.threads)
    tiled = open_upscaler(args.model, args.scale, tile=args.tile, overlap=args.overlap, threads=args.threads)
    rows = []
    for lr_path in list_images(args.data)[:args.limit]:
        lr = read_rgb(lr_path)
        if args.crop:
            top, left = max(0, (lr.shape[0] - args.crop) // 2), max(0, (lr.shape[1] - args.crop) // 2)
            lr = np.ascontiguousarray(lr[top:top + args.crop, left:left + args.crop])
        reference, result = whole(lr), tiled(lr)
        plan = tiled.tiler.plan(*lr.shape[:2])
        rows.append({"image": lr_path.stem, "size": list(lr.shape[:2]), "tiles": plan.count,
                     "psnr_tiled_vs_whole": psnr(result, reference, peak=1.0),
                     "max_abs": float(np.abs(result - reference).max())})
    finite = [r["psnr_tiled_vs_whole"] for r in rows if np.isfinite(r["psnr_tiled_vs_whole"])]
    return {"model": args.model, "tiling": tiled.describe()["tiling"], "images": rows,
            "mean_psnr_tiled_vs_whole": float(np.mean(finite)) if finite else float("inf")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("speed", "seams"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--scale", type=int)
    parser.add_argument("--size", default="1356x2040", help="HxW of the LR image (speed)")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--data", type=Path, help="folder of input images (seams), e.g. Set14/HR")
    parser.add_argument("--crop", type=int, default=None, help="centre crop N x N of each image (seams)")
    parser.add_argument("--limit", type=int, default=None, help="first N images only (seams)")
    args = parser.parse_args()
    result = speed(args) if args.mode == "speed" else seams(args)
    print(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
