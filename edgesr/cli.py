"""The `edgesr` command: a thin Typer layer over the library API."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from edgesr import __version__
from edgesr.cli_common import check_threads, emit_json, parse_size, resolve_model, stderr_is_terminal, user_errors
from edgesr.errors import EdgeSRError

app = typer.Typer(
    help="Super-resolution networks from PyTorch weights to ONNX, CoreML and TFLite.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

MODEL_HELP = ("Checkpoint (.pth/.pt/.ckpt/.safetensors or a hub directory), a bundled model's "
              "name, or an architecture name (random weights, needs --scale).")
ARCH_OPTION = typer.Option(None, "--model", help="Force the architecture instead of detecting it.")
SCALE_HELP = "Force the scale (checked against the checkpoint)."
JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgesr {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """edgesr: load, check, export and benchmark lightweight SR networks."""


@app.command()
@user_errors
def info(
    model: str = typer.Argument(..., help=MODEL_HELP + " Or an exported .onnx/.tflite/.mlpackage file."),
    scale: Optional[int] = typer.Option(None, "--scale", help=SCALE_HELP),
    arch: Optional[str] = ARCH_OPTION,
    input_size: str = typer.Option("256x256", "--input-size", help="LR input size HxW for the MAC count."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Architecture, scale, parameters, MACs at an input size, input range, source sha256;
    for an exported file, what its metadata and tensors say (no PyTorch needed)."""
    from edgesr.runtimes import is_artifact

    if is_artifact(model):
        _artifact_info(Path(model), as_json)
        return
    from edgesr.models.descriptor import describe
    from edgesr.models.profile import check_fits, trainable_parameters

    height, width = parse_size(input_size)
    network = resolve_model(model, scale, arch)
    details = describe(network).to_dict()
    details.update(
        parameters=trainable_parameters(network),
        input_size=[height, width],
        output_size=[height * details["scale"], width * details["scale"]],
        macs=check_fits(network, height, width).macs,
    )
    if as_json:
        emit_json(details)
        return
    rows = [
        ("architecture", details["arch"]),
        ("scale", f"x{details['scale']}"),
        ("parameters", f"{details['parameters']:,}"),
        (f"MACs @ {height}x{width}", f"{details['macs'] / 1e9:.2f} G"),
        ("input range", f"0..{details['input_range']:g} (network); artifacts take 0..1"),
        ("hyperparameters", ", ".join(f"{k}={v}" for k, v in details["hparams"].items())),
        ("source", details["source"] or "random initialisation"),
        ("layout", details["layout"] or "-"),
        ("sha256", details["sha256"] or "-"),
    ]
    _echo_rows(rows)


def _echo_rows(rows: list[tuple[str, str]]) -> None:
    width_col = max(len(name) for name, _ in rows)
    for name, value in rows:
        typer.echo(f"{name:<{width_col}}  {value}")


def _artifact_info(path: Path, as_json: bool) -> None:
    from edgesr.appkit.artifact_io import read_facts

    facts = read_facts(path)
    details = facts.to_dict()
    if as_json:
        emit_json(details)
        return
    tensor = lambda t: f"{t.name} {list(t.shape)} {t.dtype} {t.layout}"  # noqa: E731
    rows = [("file", f"{path} ({facts.format})"), ("architecture", facts.arch or "-"),
            ("scale", f"x{facts.scale}"), ("precision", facts.precision),
            ("input size", "any" if facts.input_size is None else f"{facts.input_size[0]}x{facts.input_size[1]}"),
            ("input", tensor(facts.input)), ("output", tensor(facts.output)),
            ("source sha256", facts.sha256 or "-")]
    _echo_rows(rows)


RUNTIME_OPTION = typer.Option(None, "--runtime", help="pytorch, onnxruntime, litert or coreml "
                               "(default: the file's own).")
THREADS_OPTION = typer.Option(None, "--threads", help="Intra-op threads of the runtime.")
PROVIDER_OPTION = typer.Option(None, "--provider", help="onnxruntime execution provider(s), comma-separated: "
                                "cpu, cuda, tensorrt, coreml, xnnpack (CPU is always the fallback).")
DELEGATE_OPTION = typer.Option(None, "--delegate", help="litert: xnnpack (default), none or gpu.")
TRT_FP16_OPTION = typer.Option(False, "--trt-fp16", help="--provider tensorrt: let TensorRT use fp16 kernels.")
TRT_CACHE_OPTION = typer.Option(None, "--trt-engine-cache", help="--provider tensorrt: folder that keeps the "
                                "built engines and timing cache (the build, minutes on a Jetson, happens once).")
TRT_WORKSPACE_OPTION = typer.Option(None, "--trt-workspace-gb", help="--provider tensorrt: builder workspace "
                                    "limit in GiB.")
DEVICE_ID_OPTION = typer.Option(None, "--device-id", help="--provider cuda or tensorrt: GPU index (default 0).")
ARTIFACT_HELP = MODEL_HELP + " Or an exported .onnx/.tflite/.mlpackage file."


def _runtime_options(device: Optional[str], threads: Optional[int], provider: Optional[str],
                     delegate: Optional[str], trt_fp16: bool = False, trt_engine_cache: Optional[Path] = None,
                     trt_workspace_gb: Optional[float] = None, device_id: Optional[int] = None) -> dict:
    return {"device": device, "threads": check_threads(threads), "providers": provider, "delegate": delegate,
            "trt_fp16": trt_fp16 or None, "trt_engine_cache": str(trt_engine_cache) if trt_engine_cache else None,
            "trt_workspace_gb": trt_workspace_gb, "device_id": device_id}


@app.command("eval")
@user_errors
def eval_command(
    model: str = typer.Argument(..., help=ARTIFACT_HELP),
    data: List[Path] = typer.Option(..., "--data", help="Benchmark folder(s) with HR/ and LR_bicubic/X<s>/ (repeatable)."),
    scale: Optional[int] = typer.Option(None, "--scale", help=SCALE_HELP),
    arch: Optional[str] = ARCH_OPTION,
    device: Optional[str] = typer.Option(None, "--device", help="pytorch: cpu (default) or cuda."),
    runtime: Optional[str] = RUNTIME_OPTION,
    tile: Optional[int] = typer.Option(None, "--tile", help="Tile side (default: whole image; a fixed-size "
                                       "artifact is always tiled at its input size)."),
    overlap: Optional[int] = typer.Option(None, "--overlap", help="Tile overlap (default per model)."),
    threads: Optional[int] = THREADS_OPTION,
    provider: Optional[str] = PROVIDER_OPTION,
    delegate: Optional[str] = DELEGATE_OPTION,
    trt_fp16: bool = TRT_FP16_OPTION,
    trt_engine_cache: Optional[Path] = TRT_CACHE_OPTION,
    trt_workspace_gb: Optional[float] = TRT_WORKSPACE_OPTION,
    device_id: Optional[int] = DEVICE_ID_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """PSNR/SSIM on Y (BasicSR protocol), per image and mean, with the bicubic baseline; any format."""
    from edgesr.evaluate import evaluate
    from edgesr.upscale import open_upscaler

    upscaler = open_upscaler(model, scale, arch, runtime, tile, overlap, tile_by_default=False,
                             **_runtime_options(device, threads, provider, delegate, trt_fp16, trt_engine_cache,
                                              trt_workspace_gb, device_id))
    results = [evaluate(upscaler, folder, upscaler.scale, show_progress=stderr_is_terminal()) for folder in data]
    if as_json:
        runner = upscaler.runner
        details = (describe_network(runner.network) if runner.info.format == "pytorch"
                   else runner.info.to_dict())
        emit_json({"model": details, "runner": upscaler.describe(), "results": [r.to_dict() for r in results]})
        return
    tiling = upscaler.tiler.describe() if upscaler.tiler else None
    typer.echo(f"{model} on {upscaler.runner.runtime}" + (
        f", tiled {tiling['tile'][0]}x{tiling['tile'][1]} overlap {tiling['overlap']}" if tiling else ""))
    for result in results:
        typer.echo(f"{result.data} x{result.scale}")
        typer.echo(f"  {'image':<16} {'PSNR-Y':>8} {'SSIM-Y':>8} {'bicubic':>8}")
        for score in result.images:
            typer.echo(f"  {score.name:<16} {score.psnr_y:8.2f} {score.ssim_y:8.4f} {score.bicubic_psnr_y:8.2f}")
        typer.echo(f"  {'mean':<16} {result.mean('psnr_y'):8.2f} {result.mean('ssim_y'):8.4f} "
                   f"{result.mean('bicubic_psnr_y'):8.2f}  (bicubic SSIM {result.mean('bicubic_ssim_y'):.4f})")


def describe_network(network) -> dict:
    from edgesr.models.descriptor import describe

    return describe(network).to_dict()


@app.command()
@user_errors
def upscale(
    inputs: List[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    model: str = typer.Option(..., "--model", help=ARTIFACT_HELP),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (created if missing)."),
    scale: Optional[int] = typer.Option(None, "--scale", help=SCALE_HELP),
    alpha: str = typer.Option("bicubic", "--alpha",
                              help="How the alpha channel is upscaled: 'bicubic' or 'model' (as grey through the network)."),
    tile: Optional[int] = typer.Option(None, "--tile", help="Tile side in LR pixels (default per model; 0: whole "
                                       "image; a fixed-size artifact uses its input size)."),
    overlap: Optional[int] = typer.Option(None, "--overlap", help="Context per tile side (default per model)."),
    device: Optional[str] = typer.Option(None, "--device", help="pytorch: cpu (default) or cuda."),
    runtime: Optional[str] = RUNTIME_OPTION,
    threads: Optional[int] = THREADS_OPTION,
    provider: Optional[str] = PROVIDER_OPTION,
    delegate: Optional[str] = DELEGATE_OPTION,
    trt_fp16: bool = TRT_FP16_OPTION,
    trt_engine_cache: Optional[Path] = TRT_CACHE_OPTION,
    trt_workspace_gb: Optional[float] = TRT_WORKSPACE_OPTION,
    device_id: Optional[int] = DEVICE_ID_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Upscale images, tiled (memory bounded by the tile); grey, RGBA and 16-bit PNG keep their kind."""
    from edgesr.upscale import collect_jobs, open_upscaler, upscale_files

    if alpha not in ("bicubic", "model"):
        raise EdgeSRError(f"--alpha {alpha!r}: choose 'bicubic' or 'model'")
    jobs = collect_jobs(inputs, out)
    upscaler = open_upscaler(model, scale, None, runtime, tile, overlap, tile_by_default=True,
                             **_runtime_options(device, threads, provider, delegate, trt_fp16, trt_engine_cache,
                                              trt_workspace_gb, device_id))
    written = upscale_files(upscaler, jobs, out, alpha, show_progress=stderr_is_terminal())  # type: ignore[arg-type]
    if as_json:
        emit_json({"scale": upscaler.scale, "alpha": alpha, "runner": upscaler.describe(), "images": written})
        return
    alpha_note = f"; alpha upscaled by {alpha}" if any("alpha" in w["mode"] for w in written) else ""
    typer.echo(f"upscaled {len(written)} image(s) x{upscaler.scale} into {out}{alpha_note}")


@app.command("bench")
@user_errors
def bench_command(
    model: Optional[str] = typer.Argument(None, help="An artifact (.onnx/.tflite/.mlpackage) or checkpoint "
                                          "to time; omit it and give --model for the all-formats table."),
    runtime: Optional[str] = RUNTIME_OPTION,
    arch: Optional[str] = typer.Option(None, "--model", help="Table mode: model name or checkpoint to export "
                                       "to every format and compare."),
    scale: Optional[int] = typer.Option(None, "--scale", help="Table mode: scale (needed for a model name)."),
    input_size: Optional[str] = typer.Option(None, "--input-size", help="LR input HxW (default: the file's "
                                             "own, else 256x256)."),
    threads: Optional[int] = THREADS_OPTION,
    warmup: int = typer.Option(10, "--warmup", help="Untimed runs first."),
    iters: int = typer.Option(50, "--iters", help="Timed runs."),
    provider: Optional[str] = PROVIDER_OPTION,
    delegate: Optional[str] = DELEGATE_OPTION,
    trt_fp16: bool = TRT_FP16_OPTION,
    trt_engine_cache: Optional[Path] = TRT_CACHE_OPTION,
    trt_workspace_gb: Optional[float] = TRT_WORKSPACE_OPTION,
    device_id: Optional[int] = DEVICE_ID_OPTION,
    device: Optional[str] = typer.Option(None, "--device", help="pytorch: cpu or cuda."),
    macs: Optional[int] = typer.Option(None, "--macs", help="MACs of one run, when they cannot be counted here."),
    data: Optional[Path] = typer.Option(None, "--data", help="Table mode: benchmark folder (e.g. Set5) for PSNR-Y."),
    out: Optional[Path] = typer.Option(None, "--out", help="Table mode: folder for artifacts, bench.json and "
                                       "bench.csv (default bench-<arch>-x<scale>)."),
    formats: Optional[str] = typer.Option(None, "--formats", help="Table mode: targets, e.g. onnx,tflite."),
    in_process: bool = typer.Option(False, "--in-process", help="Measure in this process (peak RSS then "
                                    "includes the CLI's own)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Time one artifact in one runtime, or (no MODEL, --model NAME) every format in one table."""
    size = parse_size(input_size) if input_size else None
    if model is None:
        if arch is None:
            raise EdgeSRError("give an artifact to time (edgesr bench FILE) or --model NAME --scale S for the table")
        from edgesr.bench_table import bench_matrix, format_table

        table = bench_matrix(arch, scale, data=data, input_size=size, out_dir=out, warmup=warmup, iters=iters,
                             threads=check_threads(threads), formats=formats.split(",") if formats else None,
                             show_progress=stderr_is_terminal())
        if as_json:
            emit_json(table)
            return
        for line in format_table(table):
            typer.echo(line)
        return
    if arch is not None:
        raise EdgeSRError("give either MODEL (one file to time) or --model (the all-formats table), not both")
    from edgesr.bench import bench, format_result

    result = bench(model, runtime, size, warmup, iters, macs, isolate=not in_process,
                   **_runtime_options(device, threads, provider, delegate, trt_fp16, trt_engine_cache,
                                              trt_workspace_gb, device_id))
    if as_json:
        emit_json(result)
        return
    for line in format_result(result):
        typer.echo(line)


from edgesr.export.command import export_command  # noqa: E402

app.command("export")(export_command)
from edgesr.train.command import train_command  # noqa: E402

app.command("train")(train_command)
from edgesr.appkit.command import snippet_command  # noqa: E402

app.command("snippet")(snippet_command)


if __name__ == "__main__":
    app()
