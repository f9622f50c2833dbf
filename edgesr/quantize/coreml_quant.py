"""CoreML int8 (W8A8), w8 (weight-only) and fp16, produced and checked on Linux.

- w8: the fp32 ML Program is converted first, then ``coremltools.optimize.coreml.
  linear_quantize_weights`` (symmetric per-channel int8) rewrites its weights.
- int8 (W8A8): activations must be calibrated by running the model; CoreML runs only
  on macOS, so calibration happens on the PyTorch side: PT2E (``edgesr.quantize.pt2e``,
  litert-torch's symmetric per-channel int8 quantizer) observes the calibration
  patches, and the quantize/dequantize graph is converted by coremltools into an ML
  Program with int8 weights and quantized activations; for HiT-SR only its Conv/Linear
  (``COMPUTE_ONLY_ARCHS``, as for TFLite). ``--keep-float`` and the
  ``--max-psnr-drop`` search choose compute nodes to leave in float, as for ONNX and
  TFLite. (coremltools' own CoreMLQuantizer does not import with this PyTorch.)
- fp16: the target's own conversion.

PSNR-Y is measured on the written .mlpackage itself: with ``MLModel.predict`` on macOS,
elsewhere with edgesr's reference evaluation of the ML program (``edgesr.coreml_eval``,
the same arithmetic as the program's ops, including its quantize/dequantize and
``constexpr_*`` weights; not Apple's runtime), and the report names which. Structure is
checked by reloading the spec.
"""
from __future__ import annotations

from pathlib import Path

from edgesr.errors import EdgeSRError
from edgesr.export.base import first_line


def _weights_int8(source: Path, destination: Path) -> None:
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    try:
        model = ct.models.MLModel(str(source), skip_model_load=True)
        config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=64))
        quantized = cto.linear_quantize_weights(model, config)
        quantized.save(str(destination))
    except Exception as exc:
        raise EdgeSRError(f"CoreML w8 (linear_quantize_weights) failed: {first_line(exc)}") from exc


def _constants_dequantized(model):
    """The PT2E model with its per-tensor quantized constants (e.g. the 255 of the
    0-255 range, LayerNorm epsilons, layer scales) turned back into float constants.

    coremltools folds ``dequantize`` of a constant in the constant's own integer type,
    so ``q - zero_point`` wraps around in int8: the 255 stored as q = 127 with zero
    point -128 became -1.0 in the ML program, and the whole output 0. Folding them here,
    in float, gives the values the PT2E model computes. Weights (per-channel, zero point
    0: no wrap-around) stay int8.
    """
    import functools

    import torch

    dequantize = torch.ops.quantized_decomposed.dequantize_per_tensor.default
    graph = model.graph
    for node in list(graph.nodes):
        source = node.args[0] if node.op == "call_function" and node.target is dequantize else None
        if source is None or source.op != "get_attr":
            continue
        stored = functools.reduce(getattr, source.target.split("."), model)
        name = f"{source.target.replace('.', '_')}_dequantized"
        model.register_buffer(name, dequantize(stored, *node.args[1:]))
        with graph.inserting_before(node):
            node.replace_all_uses_with(graph.get_attr(name))
        graph.erase_node(node)
    graph.eliminate_dead_code()
    model.recompile()
    return model


def _structure(path: Path) -> dict:
    """Reload the package's spec: ML Program, its ops, and whether weights are 8-bit."""
    import coremltools as ct

    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    program = spec.mlProgram
    ops: dict[str, int] = {}
    for function in program.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                ops[op.type] = ops.get(op.type, 0) + 1
    return {"model_type": spec.WhichOneof("Type"), "spec_version": spec.specificationVersion,
            "ops": dict(sorted(ops.items())),
            "int8_ops": {k: v for k, v in ops.items() if "quantize" in k or "dequantize" in k}}


def _artifact_quality(path: Path, val, tile: tuple[int, int], arch) -> dict:
    from edgesr.quantize.quality import measure_psnr
    from edgesr.runtimes.coreml_runner import CoreMLRunner

    runner = CoreMLRunner(path)
    return {**measure_psnr(runner.run_native, val, tile, arch).to_dict(), "measured_with": runner.engine}


def export_quantized(target, module, example, options, destination: Path, work: Path, calib, val,
                     float_quality, arch, stage) -> dict:
    from edgesr.quantize import float_options

    section: dict = {"runtime": "CoreML (macOS only): not run here"}
    if options.precision == "w8":
        float_path = work / "float.mlpackage"
        target.convert(module, example, float_options(options), float_path)
        _weights_int8(float_path, destination)
        section["method"] = "coremltools.optimize.coreml.linear_quantize_weights: int8 per-channel symmetric"
    elif options.precision == "int8":
        if options.image_io:
            raise EdgeSRError("--image-io with --precision int8 is not supported for coreml yet")
        import torch

        from edgesr.quantize.pt2e import PT2EInt8

        stage(f"PT2E int8 calibration in PyTorch ({len(calib)} patches) for CoreML W8A8")
        quantizer = PT2EInt8(module, example, calib.patches, nhwc=False, arch=arch)
        scope = quantizer.describe(section)
        kept = quantizer.choose(options, val, float_quality.psnr_y if float_quality else None, arch, section, stage)
        try:
            quantized = _constants_dequantized(quantizer.converted(kept, fold_quantize=True))
            program = torch.export.export(quantized, (example,)).run_decompositions({})
        except Exception as exc:
            raise EdgeSRError(f"CoreML int8: export of the PT2E graph failed: {first_line(exc)}") from exc
        # Activation quantize/dequantize in an ML Program needs iOS 17.
        from dataclasses import replace

        convert_options = replace(float_options(options), min_ios=max(options.min_ios or 17, 17))
        section["min_ios"] = convert_options.min_ios
        target.convert_program(program, convert_options, destination)
        section["method"] = (f"W8A8: PT2E in PyTorch ({scope}; symmetric per-channel int8 weights, int8 "
                             "activations calibrated on Linux), converted by coremltools")
    else:
        target.convert(module, example, options, destination)
    if val is not None:
        stage(f"PSNR-Y of the {options.precision} ML program on {len(val)} validation image(s)")
        section["quantized"] = _artifact_quality(destination, val, tuple(options.input_size), arch)
        section["runtime"] = section["quantized"]["measured_with"]
    section["structure"] = _structure(destination)
    return section
