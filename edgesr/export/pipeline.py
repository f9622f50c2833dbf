"""One export, whatever the target: validate → prepare → wrap → convert → metadata →
delegate readiness → parity → atomic move → report.

The final path only ever holds an artifact that passed its checks (or whose checks
could not run, which the report says in words): conversion happens in a temporary
directory inside the output folder and is moved into place at the end.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from edgesr import quantize
from edgesr.errors import EdgeSRError, stop_if_interrupted
from edgesr.export.base import (
    DEVICES,
    OPTION_FLAGS,
    VALUE_RANGE,
    ExportOptions,
    Target,
    minimum_input_size,
    stdout_to_stderr,
)
from edgesr.export.parity import FAILED, NOT_RUN, ParityResult, check_parity

# Targets on which --delegate-ready is on unless turned off: a mobile file whose
# accelerator (LiteRT GPU delegate, Neural Engine) would take only part of it fails.
DELEGATE_READY_BY_DEFAULT = frozenset({"tflite", "coreml"})

# name -> "module:Class"; imported on use so that one target's dependencies are not
# needed for another.
TARGETS: dict[str, str] = {
    "onnx": "edgesr.export.onnx_target:OnnxTarget",
    "tflite": "edgesr.export.tflite_target:TFLiteTarget",
    "coreml": "edgesr.export.coreml_target:CoreMLTarget",
}

Stage = Callable[[str], None]


def get_target(name: str) -> Target:
    key = str(name).lower()
    if key not in TARGETS:
        raise EdgeSRError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
    module, cls = TARGETS[key].split(":")
    return getattr(importlib.import_module(module), cls)()


def target_table() -> list[dict[str, Any]]:
    """Which target takes which precision and option (for docs and --help)."""
    rows = []
    for name in TARGETS:
        target = get_target(name)
        rows.append({"target": name, "suffix": target.suffix, "precisions": list(target.precisions),
                     "options": [OPTION_FLAGS[o] for o in sorted(target.options)]})
    return rows


@dataclass
class ExportReport:
    status: str  # "passed", "failed", "not checked", "parity not run"
    target: str
    artifact: str | None
    report: str | None
    size_bytes: int | None
    model: dict[str, Any]
    options: dict[str, Any]
    metadata: dict[str, str]
    rewrites: list[dict[str, Any]]
    parity: dict[str, Any] | None
    timings_s: dict[str, float] = field(default_factory=dict)
    random_weights: bool = False
    notes: list[str] = field(default_factory=list)
    # int8/w8 (or --val): calibration, PSNR-Y float vs artifact, delta, size, latency, budget.
    quantization: dict[str, Any] | None = None
    # The runtimes' own judges of the file (edgesr.export.readiness.Readiness.to_dict).
    readiness: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def size_mb(self) -> float | None:
        return None if self.size_bytes is None else self.size_bytes / 1e6


def validate(target: Target, options: ExportOptions, model: nn.Module) -> ExportOptions:
    """Every user error, before any work; returns options with min_side filled in."""
    from edgesr.models.descriptor import describe

    if options.precision not in target.precisions:
        raise EdgeSRError(f"--precision {options.precision!r}: {target.name} supports "
                          f"{', '.join(target.precisions)}")
    for option, value in options.given().items():
        if option not in target.options:
            accepted = ", ".join(OPTION_FLAGS[o] for o in sorted(target.options)) or "none"
            raise EdgeSRError(f"{OPTION_FLAGS[option]} does not apply to {target.name} "
                              f"(its options: {accepted})")
    if options.device not in DEVICES:
        raise EdgeSRError(f"--device {options.device!r}: choose {' or '.join(DEVICES)}")
    try:
        info = describe(model)
    except ValueError:
        raise EdgeSRError("the model carries no edgesr descriptor: build it with "
                          "edgesr.load or edgesr.create") from None
    minimum = minimum_input_size(info.arch, info.hparams)
    for size in [options.input_size, *options.shapes]:
        if min(size) < minimum:
            raise EdgeSRError(f"input size {size[0]}x{size[1]} is below {info.arch}'s minimum "
                              f"of {minimum}x{minimum}")
    target.check_options(options)
    from edgesr.quantize import check_options as check_quantization

    check_quantization(options, target)
    target.check_dependencies()
    return ExportOptions(**{**asdict(options), "min_side": minimum})


def default_name(info, options: ExportOptions) -> str:
    size = "dyn" if options.dynamic else "x".join(map(str, options.input_size))
    return f"{info.arch}_x{info.scale}_{size}_{options.precision}"


def delegate_forms_wanted(target: str, options: ExportOptions, delegate_ready: bool) -> bool:
    """Whether ops get the forms that mobile delegates take (``edgesr.rewrite.delegate_ops``,
    the constant-weight dynamic conv). An fp32 ONNX file is for onnxruntime on a desktop,
    server or Jetson unless ``--delegate-ready`` asks for NNAPI / CoreML EP: it keeps the
    fused ops (LayerNormalization, Gelu, reflect Pad, SRConvNet's runtime-weight conv) that
    onnxruntime runs as single kernels. fp16, int8 and w8 ONNX files are the ones phones'
    accelerators run, and keep the delegate forms."""
    if options.fused_ops:
        return False
    return target != "onnx" or delegate_ready or options.precision != "fp32"


def _prepare(model: nn.Module, target: str, options: ExportOptions,
             delegate_ready: bool) -> tuple[nn.Module, list[dict]]:
    from edgesr.rewrite import prepare_for_export

    size = None if options.dynamic else tuple(options.input_size)
    prepared = prepare_for_export(model, target=target, input_size=size,
                                  delegate_forms=delegate_forms_wanted(target, options, delegate_ready),
                                  float32_only=options.float32_only(target),
                                  depthwise_multiple=options.depthwise_multiple(target),
                                  precision=options.precision)
    return prepared, list(getattr(prepared, "edgesr_rewrites", []) or [])


WORK_PREFIX = ".edgesr-export-"


def _remove_stale_work_folders(out: Path) -> None:
    """Temporary folders of exports whose process is gone (killed with SIGKILL, a crash):
    they are named ``.edgesr-export-<pid>-*``, and a live pid's folder is left alone."""
    for folder in out.glob(f"{WORK_PREFIX}*"):
        pid = folder.name[len(WORK_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _refuse_non_finite_reference(model: nn.Module, options: ExportOptions) -> None:
    """A model whose own output is NaN/Inf (diverged weights that are finite) would export
    and pass a parity check against itself: refused before conversion."""
    from edgesr.models.contract import with_unit_range

    probe = torch.rand(1, 3, *options.input_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        output = with_unit_range(model).eval()(probe)
    if not bool(torch.isfinite(output).all()):
        raise EdgeSRError("the PyTorch model's output on a random input holds NaN/Inf: its weights are "
                          "broken (diverged training?); nothing exported")


def build_metadata(info, options: ExportOptions, rewrites: list[dict], target: str) -> dict[str, str]:
    from edgesr import __version__

    height, width = options.input_size
    metadata = {
        "edgesr.arch": info.arch,
        "edgesr.scale": str(info.scale),
        "edgesr.input_size": "dynamic" if options.dynamic else f"{height}x{width}",
        "edgesr.output_size": ("dynamic (scale x input)" if options.dynamic
                               else f"{height * info.scale}x{width * info.scale}"),
        "edgesr.layout": options.layout,
        "edgesr.value_range": VALUE_RANGE,
        "edgesr.version": __version__,
        "edgesr.source_sha256": info.sha256 or (f"none (random initialisation, seed {info.seed})"
                                                if info.seed is not None else "none (random initialisation)"),
        "edgesr.precision": options.precision,
        "edgesr.rewrites": ",".join(r.get("name", "?") for r in rewrites) or "none",
    }
    if info.seed is not None and not info.sha256:
        metadata["edgesr.seed"] = str(info.seed)
    if options.float32_only(target):
        from edgesr.runtimes.onnxruntime_runner import FLOAT32_ONLY_KEY

        metadata[FLOAT32_ONLY_KEY] = "true"
    if options.image_io:
        metadata["edgesr.value_range"] = "RGB image in and out (8-bit pixels; the network sees [0,1])"
    if options.shapes:
        metadata["edgesr.shapes"] = ",".join(f"{h}x{w}" for h, w in [options.input_size, *options.shapes])
    return metadata


def _readiness(target: str, path: Path, options: ExportOptions):
    from edgesr.export.readiness import analyze

    with stdout_to_stderr():
        return analyze(target, path, precision=options.precision)


def _write_app_files(final: Path, report: ExportReport, stage: Stage) -> None:
    """Model card and Swift/Kotlin snippets beside the artifact (edgesr.appkit); never fails the export."""
    stage(f"writing the model card and app snippets for {final.name}")
    try:
        from edgesr.appkit import write_app_files

        with stdout_to_stderr():
            written = write_app_files(final, report.to_dict())
        report.notes.append("app files: " + ", ".join(Path(p).name for p in written.values()))
    except Exception as exc:  # the artifact is valid without its card; say why there is none
        report.notes.append(f"model card / snippets not written: {type(exc).__name__}: {exc}")


def _stderr_stage(message: str) -> None:
    print(f"[export] {message}", file=sys.stderr, flush=True)


def _stopping_at_stages(stage: Stage) -> Stage:
    def checked(message: str) -> None:
        stop_if_interrupted()
        stage(message)

    return checked


def _options_record(options: ExportOptions) -> dict[str, Any]:
    return {**asdict(options), "input_size": list(options.input_size),
            "shapes": [list(s) for s in options.shapes]}


def _writable_dir(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeSRError(f"{out_dir}: cannot create the output folder ({exc.strerror or exc})") from None
    if not out_dir.is_dir():
        raise EdgeSRError(f"{out_dir}: exists and is not a folder")
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise EdgeSRError(f"{out_dir}: output folder is not writable")
    return out_dir


def _install(source: Path, destination: Path) -> None:
    """Move ``source`` to ``destination`` atomically (a directory replaces a directory)."""
    if source.is_dir() and destination.exists():
        parked = destination.with_name(f".{destination.name}.old-{os.getpid()}")
        os.replace(destination, parked)
        try:
            os.replace(source, destination)
        except OSError:
            os.replace(parked, destination)
            raise
        _remove(parked)
    else:
        if destination.is_dir():
            _remove(destination)
        os.replace(source, destination)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(temporary, path)


def export(
    model: nn.Module,
    target: str,
    input_size: tuple[int, int] = (256, 256),
    precision: str = "fp32",
    dynamic: bool = False,
    out_dir: str | Path = ".",
    name: str | None = None,
    check: bool = True,
    device: str = "cpu",
    stage: Stage | None = None,
    delegate_ready: bool | None = None,
    allow_partial_delegation: bool = False,
    **target_options: Any,
) -> ExportReport:
    """Export ``model`` (from edgesr.load/create) to ``target``; see the module docstring.

    ``target_options`` are the target-specific ones: nhwc (tflite), image_io, shapes,
    min_ios (coreml). Raises EdgeSRError for bad input (nothing written) and for a
    failed export or parity check (nothing at the final path; a failed parity check
    leaves ``<name><suffix>.failed.report.json`` saying why).

    Every export runs the target's delegate analyzer (``edgesr.export.readiness``) and
    records it under ``readiness``. With ``delegate_ready`` (default: on for tflite and
    coreml, off for onnx) a split graph fails the export like a failed parity check,
    unless ``allow_partial_delegation``.
    """
    from edgesr.models.contract import with_unit_range
    from edgesr.models.descriptor import describe

    # A signal that got lost (see edgesr.errors.stop_if_interrupted) stops the work at its
    # next stage, up to the artifact's install; the card is written whatever comes.
    say = stage or _stderr_stage
    stage = _stopping_at_stages(say)
    unknown = sorted(set(target_options) - set(OPTION_FLAGS))
    if unknown:
        raise EdgeSRError(f"unknown export option(s) {', '.join(unknown)}; known: {', '.join(OPTION_FLAGS)}")
    chosen = get_target(target)
    shapes = tuple(tuple(int(v) for v in s) for s in (target_options.pop("shapes", None) or ()))
    options = ExportOptions(input_size=(int(input_size[0]), int(input_size[1])), precision=str(precision),
                            dynamic=bool(dynamic), shapes=shapes, device=str(device),
                            **{k: v for k, v in target_options.items() if v is not None})
    options = validate(chosen, options, model)
    if delegate_ready is None:
        # A --fused-ops file is split on purpose: the policy would refuse it.
        delegate_ready = chosen.name in DELEGATE_READY_BY_DEFAULT and not options.fused_ops
    from edgesr.models.profile import check_fits

    check_fits(model, *options.input_size)
    if delegate_ready and options.fused_ops:
        raise EdgeSRError("--fused-ops keeps ops that the target's delegates split (NNAPI and the CoreML EP "
                          "for onnx, XNNPACK for tflite): drop --delegate-ready or --fused-ops")
    info = describe(model)
    file_name = (name or default_name(info, options))
    if file_name.endswith(chosen.suffix):
        file_name = file_name[: -len(chosen.suffix)]
    if not file_name or os.sep in file_name or file_name.startswith("."):
        raise EdgeSRError(f"--name {file_name!r}: give a plain file name without folders")
    out = _writable_dir(Path(out_dir))
    final = out / (file_name + chosen.suffix)
    # The artifact's full name (suffix included) so that the reports of one model
    # exported to several targets into one folder do not overwrite each other.
    report_path = out / (final.name + ".report.json")
    failed_report_path = out / (final.name + ".failed.report.json")

    timings: dict[str, float] = {}
    notes: list[str] = []
    if info.sha256 is None:
        notes.append("random weights (no checkpoint): useful to check conversion, not for inference")
    _remove_stale_work_folders(out)
    work = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=out))
    try:
        started = time.perf_counter()
        stage(f"preparing {info.arch} x{info.scale} for {chosen.name}")
        prepared, rewrites = _prepare(model, chosen.name, options, delegate_ready)
        module = chosen.wrap(with_unit_range(prepared), options).eval()
        _refuse_non_finite_reference(model, options)
        timings["prepare"] = time.perf_counter() - started

        started = time.perf_counter()
        stage(f"converting to {chosen.name} ({options.precision})")
        # The artifact is written under its final name inside the temporary folder, so
        # that no temporary name can end up inside the file.
        staged = work / final.name
        quantization = None
        with stdout_to_stderr(), torch.inference_mode(False), torch.no_grad():
            if quantize.wanted(options):  # int8/w8, or a PSNR-Y check asked for (--val/--calib)
                try:
                    quantization = quantize.convert(chosen, module, chosen.example_input(options), options,
                                                    staged, with_unit_range(model).eval(), info, stage)
                except quantize.BudgetMissed as exc:
                    # The search took minutes: what it measured goes to the failed report.
                    _write_json(failed_report_path, {
                        "status": "failed", "error": str(exc), "target": chosen.name, "artifact": None,
                        "model": info.to_dict(), "options": _options_record(options),
                        "quantization": exc.section})
                    raise EdgeSRError(f"{exc}; what was measured is in {failed_report_path}") from None
            else:
                chosen.convert(module, chosen.example_input(options), options, staged)
        if not staged.exists():
            raise EdgeSRError(f"{chosen.name} conversion produced no file")
        metadata = build_metadata(info, options, rewrites, chosen.name)
        chosen.write_metadata(staged, metadata)
        timings["convert"] = time.perf_counter() - started

        started = time.perf_counter()
        stage(f"analysing delegate readiness of the {chosen.name} file")
        readiness = _readiness(chosen.name, staged, options)
        timings["readiness"] = time.perf_counter() - started
        refused = bool(delegate_ready and not allow_partial_delegation and readiness.split)
        if delegate_ready and readiness.split is None:
            notes.append(f"delegate readiness not checked: {readiness.summary()}")
        if readiness.split and not delegate_forms_wanted(chosen.name, options, delegate_ready):
            notes.append("this graph keeps the fused ops onnxruntime runs fastest on a CPU or GPU, which NNAPI "
                         "and the CoreML EP split; export with --delegate-ready for a graph they take whole")
        notes += chosen.notes(staged, options)
        if refused:
            check = False

        parity: ParityResult | None = None
        if check:
            started = time.perf_counter()
            stage(f"checking parity with {chosen.runtime_for('cpu')}")
            with stdout_to_stderr():
                parity = check_parity(chosen, staged, with_unit_range(model).eval(), options)
            timings["parity"] = time.perf_counter() - started
        status = ("not checked" if parity is None else
                  "parity not run" if parity.status == NOT_RUN else parity.status)
        report = ExportReport(
            status=status, target=chosen.name, artifact=str(final), report=str(report_path),
            size_bytes=_size(staged), model=info.to_dict(),
            options=_options_record(options),
            metadata=metadata, rewrites=rewrites,
            parity=parity.to_dict() if parity else None,
            timings_s={k: round(v, 3) for k, v in timings.items()},
            random_weights=info.sha256 is None, notes=notes, quantization=quantization,
            readiness={**readiness.to_dict(), "policy": {
                "delegate_ready": bool(delegate_ready),
                "allow_partial_delegation": bool(allow_partial_delegation)}},
        )
        if refused:
            report.artifact = None
            report.report = str(failed_report_path)
            report.status = "failed"
            _write_json(failed_report_path, report.to_dict())
            raise EdgeSRError(
                f"{chosen.name} file is not delegate-ready ({readiness.summary()}); no artifact written, "
                f"see {failed_report_path}. Pass --allow-partial-delegation to keep a split graph "
                f"or --no-delegate-ready to skip the policy")
        if parity is not None and parity.status == FAILED:
            report.artifact = None
            report.report = str(failed_report_path)
            worst = parity.failures[0]
            figures = (f"max abs {worst.max_abs:.3g}, PSNR {worst.psnr:.1f} dB"
                       if worst.max_abs is not None else worst.note)
            _write_json(failed_report_path, report.to_dict())
            raise EdgeSRError(
                f"parity check failed for {chosen.name} ({worst.input} vs {worst.reference}: "
                f"{figures}; needs {parity.tolerance}); no artifact written, see {failed_report_path}")
        stage(f"writing {final}")
        _install(staged, final)
        _write_app_files(final, report, say)
        _write_json(report_path, report.to_dict())
        _remove(failed_report_path)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)
