"""``edgesr export``: the Typer command over ``edgesr.export.export``.

Registered in cli.py as ``app.command("export")(export_command)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgesr.cli_common import DEFAULT_SEED, emit_json, parse_size, resolve_model, user_errors
from edgesr.errors import EdgeSRError


def _load_model(model: Optional[str], arch: Optional[str], weights: Optional[Path], scale: Optional[int],
                seed: int = DEFAULT_SEED):
    from edgesr.models.loading import load

    if model is not None and weights is not None:
        raise EdgeSRError("give the checkpoint either as MODEL or as --weights, not both")
    if weights is not None:
        return load(weights, scale=scale, model=arch)
    if model is not None:
        return resolve_model(model, scale, arch, seed)
    if arch is None:
        raise EdgeSRError("say what to export: a checkpoint (MODEL or --weights) or an architecture (--model NAME)")
    # ``--model`` alone: an architecture (random weights, needs --scale), a bundled model or a checkpoint.
    return resolve_model(arch, scale, seed=seed)


def _parse_shapes(text: Optional[str]) -> list[tuple[int, int]]:
    if not text:
        return []
    return [parse_size(part.strip()) for part in text.split(",") if part.strip()]


def _figure(value, fmt: str) -> str:
    if value is None:
        return "-"
    if value == "inf" or value == float("inf"):
        return "inf"
    return format(value, fmt)


@user_errors
def export_command(
    model: Optional[str] = typer.Argument(
        None, help="Checkpoint, bundled model name or architecture name (random weights, needs --scale)."),
    arch: Optional[str] = typer.Option(
        None, "--model", help="Architecture (forces it for --weights; alone, random weights via --scale) or a checkpoint file."),
    scale: Optional[int] = typer.Option(None, "--scale", help="Scale (checked against the checkpoint)."),
    target: str = typer.Option(..., "--target", help="onnx, tflite or coreml."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Checkpoint to export."),
    input_size: str = typer.Option("256x256", "--input-size", help="LR input size HxW of the graph."),
    dynamic: bool = typer.Option(False, "--dynamic", help="onnx: free batch, height and width."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16, int8 (needs --calib) or w8 "
                                  "(int8 weights, float activations)."),
    out: Path = typer.Option(Path("."), "--out", help="Output folder (created if missing)."),
    name: Optional[str] = typer.Option(None, "--name", help="File name without suffix "
                                       "(default {arch}_x{scale}_{HxW}_{precision})."),
    no_check: bool = typer.Option(False, "--no-check", help="Skip the parity check."),
    nhwc: bool = typer.Option(False, "--nhwc", help="tflite: NHWC input and output."),
    image_io: bool = typer.Option(False, "--image-io", help="coreml: image input and output (8-bit RGB)."),
    shapes: Optional[str] = typer.Option(None, "--shapes", help="coreml: more input sizes, e.g. 64x64,128x128."),
    min_ios: Optional[int] = typer.Option(None, "--min-ios", help="coreml: minimum iOS version (default 16)."),
    fused_ops: bool = typer.Option(False, "--fused-ops", help="onnx, fixed size: the fused ops of an fp32 "
                                   "file (exact GELU, LayerNormalization, reflect Pad, SRConvNet's "
                                   "runtime-weight conv) for fp16/int8 too, and an fp32 or int8 file leaves out "
                                   "HiT-SR's float16 range scaling: the fastest file for float32 "
                                   "onnxruntime (no --trt-fp16); int8 then is the file for onnxruntime's "
                                   "CPU: the layers that see that range stay float, depthwise convs "
                                   "are padded to a multiple of 16 channels for its int8 kernel. tflite: SRConvNet's runtime-weight "
                                   "depthwise conv, which LiteRT's CPU kernels run ~2.7x faster than "
                                   "XNNPACK runs the constant-weight form, but outside XNNPACK (more "
                                   "partitions, so the delegate policy is off)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda: where the PyTorch reference also runs."),
    delegate_ready: Optional[bool] = typer.Option(
        None, "--delegate-ready/--no-delegate-ready",
        help="Fail when the target's delegate analyzer reports a split graph "
             "(default: on for tflite and coreml, off for onnx). An fp32 onnx file then gets the "
             "forms NNAPI and the CoreML EP take whole (elementary GELU and LayerNorm, constant-weight "
             "convs) instead of the fused ops onnxruntime runs fastest on a CPU or GPU."),
    allow_partial_delegation: bool = typer.Option(
        False, "--allow-partial-delegation",
        help="Keep a file whose graph the delegate would split (the report still says so)."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="int8: folder of calibration images (any size/format)."),
    calib_count: int = typer.Option(64, "--calib-count", help="Calibration patches (input size) to cut."),
    calib_method: str = typer.Option("minmax", "--calib-method", help="onnx: minmax, percentile or entropy."),
    val: Optional[Path] = typer.Option(None, "--val", help="Validation images for PSNR-Y (default: "
                                       "calibration images held out of calibration)."),
    max_psnr_drop: Optional[float] = typer.Option(None, "--max-psnr-drop", help="PSNR-Y budget in dB; "
                                                  "onnx/tflite int8 keep the costliest op groups in float to meet it."),
    keep_float: Optional[str] = typer.Option(None, "--keep-float", help="onnx/tflite int8: op groups/nodes to "
                                             "keep in float (replays a report's choice), comma-separated."),
    reduce_range: bool = typer.Option(False, "--reduce-range", help="onnx int8: 7-bit weights, for x86 CPUs "
                                      "with AVX2 but no VNNI, whose U8S8 kernels otherwise saturate "
                                      "(phones and VNNI CPUs do not need it)."),
    int_io: bool = typer.Option(False, "--int-io", help="tflite int8: 8-bit image input/output."),
    seed: int = typer.Option(DEFAULT_SEED, "--seed", help="Random weights (an architecture name, no "
                             "checkpoint): the torch seed they are drawn from, written into the metadata; "
                             "the same seed gives a byte-identical file."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Export to ONNX, TFLite or CoreML, check it against PyTorch, write a report beside it."""
    from edgesr.export.pipeline import export, get_target

    get_target(target)  # an unknown target is reported before the model is built
    size = parse_size(input_size)
    extra = {"nhwc": nhwc or None, "image_io": image_io or None, "min_ios": min_ios,
             "calib": str(calib) if calib else None, "calib_count": calib_count if calib_count != 64 else None,
             "calib_method": calib_method if calib_method != "minmax" else None,
             "val": str(val) if val else None, "max_psnr_drop": max_psnr_drop, "int_io": int_io or None,
             "fused_ops": fused_ops or None, "reduce_range": reduce_range or None,
             "keep_float": tuple(k.strip() for k in keep_float.split(",") if k.strip()) if keep_float else None,
             "shapes": _parse_shapes(shapes) or None}
    network = _load_model(model, arch, weights, scale, seed)
    report = export(network, target, input_size=size, precision=precision, dynamic=dynamic,
                    out_dir=out, name=name, check=not no_check, device=device,
                    delegate_ready=delegate_ready, allow_partial_delegation=allow_partial_delegation,
                    **{k: v for k, v in extra.items() if v is not None})
    if as_json:
        emit_json(report.to_dict())
        return
    info = report.model
    total = sum(report.timings_s.values())
    typer.echo(f"wrote {report.artifact} ({report.size_mb:.2f} MB) in {total:.1f} s")
    weights_note = (f"weights {info['source']} (sha256 {info['sha256'][:12]}…)" if info.get("sha256")
                    else f"random weights (seed {info.get('seed')}, no --weights): fine for checking "
                         f"conversion, not for inference")
    typer.echo(f"model: {info['arch']} x{info['scale']}, {weights_note}")
    if report.rewrites:
        typer.echo("rewrites: " + ", ".join(r.get("name", "?") for r in report.rewrites))
    if report.parity is None:
        typer.echo("parity: not checked (--no-check)")
    else:
        typer.echo(f"parity ({report.parity['tolerance']}): {report.parity['status']}")
        for check in report.parity["checks"]:
            if check["status"] == "not run":
                typer.echo(f"  {check['input']} vs {check['reference']}: {check['note']}")
                continue
            typer.echo(f"  {check['input']} vs {check['reference']} on {check['runtime']}: "
                       f"max abs {_figure(check['max_abs'], '.2e')}, mean abs {_figure(check['mean_abs'], '.2e')}, "
                       f"PSNR {_figure(check['psnr'], '.1f')} dB: {check['status']}")
    if report.readiness:
        typer.echo(f"readiness: {report.readiness.get('summary', '-')}")
    if report.quantization:
        from edgesr.quantize.report import summary_lines

        for line in summary_lines(report.quantization):
            typer.echo(line)
    for note in report.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"report: {report.report}")
