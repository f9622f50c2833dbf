"""Quantized exports (int8, w8) and the quality they cost, measured every time.

The export pipeline calls two hooks:

- ``check_options(options, target)`` during validation (bad combinations, before any work);
- ``convert(target, module, example, options, destination, reference, info, stage)``
  instead of ``target.convert`` when the precision is int8/w8 or a validation set is
  given. It writes the artifact at ``destination`` and returns the ``quantization``
  section of the export report: calibration, validation set, PSNR-Y of the float
  model and of the artifact, the delta, sizes, latency, and the budget search.

Quality gate: a quantized artifact is not held to the fp32 max-abs parity tolerance;
it is judged by its PSNR-Y against the float model on the validation set, and by
``--max-psnr-drop`` when given (missed budget: ``BudgetMissed``, an EdgeSRError that
carries the measured section, so that the pipeline can write it to the failed report;
no artifact is written).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from edgesr.errors import EdgeSRError

QUANTIZED = ("int8", "w8")
# The options this package adds (also in edgesr.export.base.OPTION_FLAGS).
QUALITY_GATE = ("quantized exports are judged by PSNR-Y against the float model on the "
                "validation set (see the report's quantization section), not by max-abs parity")

Stage = Callable[[str], None]


class BudgetMissed(EdgeSRError):
    """--max-psnr-drop refused the result; ``section`` is what was measured on the way
    (the sensitivity analysis and the budget steps), for the failed report."""

    def __init__(self, message: str, section: dict[str, Any]):
        super().__init__(message)
        self.section = section


def check_options(options, target) -> None:
    """Every quantization-option error, before any work (one line each)."""
    from edgesr.quantize.onnx_quant import CALIB_METHODS

    precision = options.precision
    if precision == "int8" and not options.calib:
        raise EdgeSRError("--precision int8 needs --calib DIR: a folder of images to calibrate "
                          "activation ranges on")
    if options.calib and precision == "fp32":
        raise EdgeSRError("--calib: an fp32 export has no ranges to calibrate; drop --calib (give --val DIR "
                          "to measure its PSNR-Y), or export --precision int8")
    if options.calib_count < 1:
        raise EdgeSRError(f"--calib-count {options.calib_count}: give at least 1")
    if options.calib_method not in CALIB_METHODS:
        raise EdgeSRError(f"--calib-method {options.calib_method!r}: choose {', '.join(CALIB_METHODS)}")
    if options.max_psnr_drop is not None:
        if options.max_psnr_drop < 0:
            raise EdgeSRError(f"--max-psnr-drop {options.max_psnr_drop}: give a drop in dB >= 0")
        if precision == "fp32":
            raise EdgeSRError("--max-psnr-drop applies to fp16, int8 and w8 exports")
        if not (options.calib or options.val):
            raise EdgeSRError("--max-psnr-drop needs a validation set: give --val DIR or --calib DIR")
    if options.keep_float and precision != "int8":
        raise EdgeSRError("--keep-float applies to --precision int8")
    if options.reduce_range and precision != "int8":
        raise EdgeSRError("--reduce-range applies to --precision int8 (onnxruntime's x86 U8S8 kernels)")
    if options.int_io and precision != "int8":
        raise EdgeSRError("--int-io needs --precision int8 (8-bit image input/output of an int8 graph)")
    if options.calib and not Path(options.calib).is_dir():
        raise EdgeSRError(f"--calib {options.calib}: no such folder")
    if options.calib:
        from edgesr.imageio import IMAGE_SUFFIXES

        if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in Path(options.calib).rglob("*")):
            raise EdgeSRError(f"--calib {options.calib}: no images in it ({', '.join(IMAGE_SUFFIXES)}, "
                              f"subfolders included)")
    if options.val and not Path(options.val).exists():
        raise EdgeSRError(f"--val {options.val}: no such folder")


def wanted(options) -> bool:
    """Does this export go through ``convert`` (quantized, or quality asked for)?"""
    return options.precision in QUANTIZED or bool(options.val) or bool(options.calib)


def convert(target, module, example, options, destination: Path, reference, info,
            stage: Stage | None = None) -> dict[str, Any]:
    """Write the (quantized) artifact at ``destination``; return the report section."""
    from edgesr.calibration import load_calibration, validation_set
    from edgesr.quantize.quality import measure_psnr, torch_batch_fn

    stage = stage or (lambda message: None)
    destination = Path(destination)
    work = destination.parent / "quantize-work"
    work.mkdir(parents=True, exist_ok=True)
    calib = None
    if options.calib:
        stage(f"calibration: {options.calib_count} patches of {options.input_size[0]}x"
              f"{options.input_size[1]} from {options.calib}")
        calib = load_calibration(options.calib, options.input_size, options.calib_count)
    val = None
    if options.val or calib is not None:
        val = validation_set(info.scale, options.val, calib.held_out if calib else ())
    section: dict[str, Any] = {
        "precision": options.precision, "quality_gate": QUALITY_GATE,
        "calibration": calib.to_dict() if calib else None,
        "calibration_method": options.calib_method if options.precision == "int8" else None,
        "validation": val.to_dict() if val else None,
    }
    tile = tuple(options.input_size)
    float_quality = None
    if val is not None:
        stage(f"PSNR-Y of the float model on {len(val)} validation image(s) ({val.source})")
        float_quality = measure_psnr(torch_batch_fn(reference), val, tile, info.arch)
    context = dict(target=target, module=module, example=example, options=options,
                   destination=destination, work=work, calib=calib, val=val,
                   float_quality=float_quality, arch=info.arch, stage=stage)
    if target.name == "onnx":
        from edgesr.quantize import onnx_quant as backend
    elif target.name == "tflite":
        from edgesr.quantize import tflite_quant as backend
    elif target.name == "coreml":
        from edgesr.quantize import coreml_quant as backend
    else:
        raise EdgeSRError(f"{target.name}: no quantization backend")
    section.update(backend.export_quantized(**context))
    if float_quality is not None:
        section["float"] = float_quality.to_dict()
    measured = section.get("quantized")
    if measured and float_quality is not None and measured.get("psnr_y") is not None:
        section["delta_db"] = round(measured["psnr_y"] - float_quality.psnr_y, 4)
    _gate(section, options)
    return section


def _gate(section: dict[str, Any], options) -> None:
    """--max-psnr-drop: a missed budget is an error (the caller writes nothing)."""
    budget = options.max_psnr_drop
    if budget is None:
        return
    search = section.get("budget") or {}
    if search.get("verdict") and (not search.get("met") or search.get("float_fraction", 0) > 0.5):
        raise BudgetMissed(f"--max-psnr-drop {budget:g}: {search['verdict']}; no artifact written "
                           f"(export fp16, or allow a larger drop)", section)
    delta = section.get("delta_db")
    if delta is None:
        raise BudgetMissed(f"--max-psnr-drop {budget:g}: the quantized artifact could not be measured "
                           f"here ({section.get('quality_note', 'no runtime')}); no artifact written", section)
    if -delta > budget + 1e-9:
        raise BudgetMissed(f"--max-psnr-drop {budget:g}: {options.precision} costs {-delta:.3f} dB "
                           f"PSNR-Y on the validation set; no artifact written", section)


def float_options(options):
    return replace(options, precision="fp32")
