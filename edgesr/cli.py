"""The `edgesr` command: a thin Typer layer over the library API."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from edgesr import __version__
from edgesr.cli_common import emit_json, parse_size, resolve_model, stderr_is_terminal, user_errors
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
    model: str = typer.Argument(..., help=MODEL_HELP),
    scale: Optional[int] = typer.Option(None, "--scale", help=SCALE_HELP),
    arch: Optional[str] = ARCH_OPTION,
    input_size: str = typer.Option("256x256", "--input-size", help="LR input size HxW for the MAC count."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Architecture, scale, parameters, MACs at an input size, input range, source sha256."""
    from edgesr.models.descriptor import describe
    from edgesr.models.profile import count_macs, trainable_parameters

    height, width = parse_size(input_size)
    network = resolve_model(model, scale, arch)
    details = describe(network).to_dict()
    details.update(
        parameters=trainable_parameters(network),
        input_size=[height, width],
        output_size=[height * details["scale"], width * details["scale"]],
        macs=count_macs(network, height, width),
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
    width_col = max(len(name) for name, _ in rows)
    for name, value in rows:
        typer.echo(f"{name:<{width_col}}  {value}")


@app.command("eval")
@user_errors
def eval_command(
    model: str = typer.Argument(..., help=MODEL_HELP),
    data: List[Path] = typer.Option(..., "--data", help="Benchmark folder(s) with HR/ and LR_bicubic/X<s>/ (repeatable)."),
    scale: Optional[int] = typer.Option(None, "--scale", help=SCALE_HELP),
    arch: Optional[str] = ARCH_OPTION,
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    as_json: bool = JSON_OPTION,
) -> None:
    """PSNR/SSIM on Y (BasicSR protocol), per image and mean, with the bicubic baseline."""
    from edgesr.evaluate import evaluate
    from edgesr.models.descriptor import describe
    from edgesr.models.inference import TorchUpscaler

    network = resolve_model(model, scale, arch)
    model_scale = describe(network).scale
    upscaler = TorchUpscaler(network, device)
    results = [evaluate(upscaler, folder, model_scale, show_progress=stderr_is_terminal()) for folder in data]
    if as_json:
        emit_json({"model": describe(network).to_dict(), "results": [r.to_dict() for r in results]})
        return
    for result in results:
        typer.echo(f"{result.data} x{result.scale}")
        typer.echo(f"  {'image':<16} {'PSNR-Y':>8} {'SSIM-Y':>8} {'bicubic':>8}")
        for score in result.images:
            typer.echo(f"  {score.name:<16} {score.psnr_y:8.2f} {score.ssim_y:8.4f} {score.bicubic_psnr_y:8.2f}")
        typer.echo(f"  {'mean':<16} {result.mean('psnr_y'):8.2f} {result.mean('ssim_y'):8.4f} "
                   f"{result.mean('bicubic_psnr_y'):8.2f}  (bicubic SSIM {result.mean('bicubic_ssim_y'):.4f})")


@app.command()
@user_errors
def upscale(
    inputs: List[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    model: str = typer.Option(..., "--model", help=MODEL_HELP),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (created if missing)."),
    scale: Optional[int] = typer.Option(None, "--scale", help=SCALE_HELP),
    alpha: str = typer.Option("bicubic", "--alpha",
                              help="How the alpha channel is upscaled: 'bicubic' or 'model' (as grey through the network)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Upscale images; grey, RGBA and 16-bit PNG keep their kind in the output."""
    from edgesr.imageio import list_images, read_image, write_image
    from edgesr.models.descriptor import describe
    from edgesr.models.inference import TorchUpscaler
    from edgesr.progress import progress
    from edgesr.upscale import output_path, upscale_image

    if alpha not in ("bicubic", "model"):
        raise EdgeSRError(f"--alpha {alpha!r}: choose 'bicubic' or 'model'")
    jobs = []
    for root in inputs:
        if not root.exists():
            raise EdgeSRError(f"{root}: no such file or folder")
        found = list_images(root)
        if not found:
            raise EdgeSRError(f"{root}: no images found (looked for png, jpg, bmp, tif, webp)")
        jobs += [(source, output_path(source, root, out, None)) for source in found]
    network = resolve_model(model, scale)
    model_scale = describe(network).scale
    upscaler = TorchUpscaler(network, device)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeSRError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    written = []
    for source, target in progress(jobs, desc="upscale", enabled=stderr_is_terminal()):
        image = read_image(source)
        result = upscale_image(upscaler, image, model_scale, alpha)  # type: ignore[arg-type]
        target.parent.mkdir(parents=True, exist_ok=True)
        write_image(target, result)
        written.append({"input": str(source), "output": str(target), "mode": image.mode,
                        "size": [int(result.rgb.shape[0]), int(result.rgb.shape[1])]})
    if as_json:
        emit_json({"scale": model_scale, "alpha": alpha, "images": written})
        return
    alpha_note = f"; alpha upscaled by {alpha}" if any("alpha" in w["mode"] for w in written) else ""
    typer.echo(f"upscaled {len(written)} image(s) x{model_scale} into {out}{alpha_note}")


from edgesr.export.command import export_command  # noqa: E402

app.command("export")(export_command)
from edgesr.train.command import train_command  # noqa: E402

app.command("train")(train_command)


if __name__ == "__main__":
    app()
