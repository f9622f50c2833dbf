"""Delegate readiness: the runtimes' judges, the delegate rewrites and the policy.

The analyzer tests export small configurations (seconds each); the rewrite tests are
pure PyTorch parity checks.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgesr.errors import EdgeSRError
from edgesr.export import export
from edgesr.export.readiness import (
    DelegateReadiness,
    Readiness,
    analyze,
    parse_litert_analysis,
)
from edgesr.models.loading import create
from edgesr.rewrite import delegate_ops
from edgesr.rewrite.plan import REWRITE_MODULES
from tests.conftest import make_every_branch_count

SRCONVNET_SMALL = dict(dim=16, num_blocks=1, num_heads=2, num_kernels=4)
HIT_SMALL = dict(embed_dim=16, depths=[2], num_heads=[1])
SIZE = (32, 32)


# --------------------------------------------------------------------------------------
# Rewrites: parity with the original maths
# --------------------------------------------------------------------------------------


def test_gelu_without_erf_matches_exact_gelu():
    x = torch.linspace(-20, 20, 400_001)
    reference = F.gelu(x.double())
    ours = delegate_ops.gelu_without_erf(x).double()
    # The fit's own error (1.4e-6) plus fp32 rounding; far beyond the fit's range the
    # sigmoid saturates to exactly x or 0.
    assert (ours - reference).abs().max().item() < 2e-6
    huge = torch.tensor([-1e30, -300.0, 300.0, 1e30])
    assert torch.equal(delegate_ops.gelu_without_erf(huge), torch.tensor([0.0, 0.0, 300.0, 1e30]))
    # float16 (NNAPI's relaxed mode, ORT fp16 graphs): x*x overflows past |x| = 256, and
    # the result must stay finite and as close as torch's own float16 GELU.
    half = torch.linspace(-60000, 60000, 100_001).half()
    assert torch.isfinite(delegate_ops.gelu_without_erf(half)).all()
    small = torch.linspace(-12, 12, 20_001)
    half_error = (delegate_ops.gelu_without_erf(small.half()).double() - F.gelu(small.double())).abs()
    torch_half_error = (F.gelu(small.half().float()).half().double() - F.gelu(small.double())).abs()
    assert half_error.max() <= 2 * torch_half_error.max()


def test_fusable_gelu_matches_and_onnxruntime_fuses_it(tmp_path):
    import onnx
    import onnxruntime as ort

    from edgesr.export.onnx_target import OPSET, _simplify

    x = torch.linspace(-12, 12, 200_001)
    gelu = delegate_ops.FusableGELU()
    assert (gelu(x).double() - F.gelu(x.double())).abs().max().item() < 1e-6
    # alone, and before a conv (where the exporter folds a trailing constant factor into the
    # conv's weights), through the same export steps as `edgesr export`
    for module, fused in [(gelu, ["Gelu"]), (nn.Sequential(gelu, nn.Conv2d(4, 4, 3)), ["Gelu", "Conv"])]:
        path, optimized = tmp_path / "gelu.onnx", tmp_path / "gelu.opt.onnx"
        program = torch.onnx.export(module.eval(), (torch.rand(1, 4, 8, 8),), dynamo=True, opset_version=OPSET)
        onnx.save(_simplify(program.model_proto), str(path))
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(optimized)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # no NCHWc reorders
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        assert [node.op_type for node in onnx.load(str(optimized)).graph.node] == fused


def test_elementary_layernorm_matches():
    norm = nn.LayerNorm(24)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 5, 7, 24) * 3 + 1
    ours = delegate_ops.ElementaryLayerNorm(norm)(x)
    assert (ours - norm(x)).abs().max().item() < 1e-5


@pytest.mark.parametrize("flip_as_matmul", [False, True], ids=["flip", "exchange-matmul"])
@pytest.mark.parametrize("pad", [(0, 3, 0, 2), (1, 1, 1, 1), (1, 0, 1, 0), (2, 5, 3, 0), (8, 8, 6, 6)])
def test_reflect_pad_by_slices_is_exact(pad, flip_as_matmul):
    x = torch.randn(2, 3, 7, 9)
    assert torch.equal(delegate_ops.reflect_pad_by_slices(x, pad, flip_as_matmul), F.pad(x, pad, mode="reflect"))


@pytest.mark.parametrize("count", [1, 3, 4, 5, 8, 9, 17, 64])
def test_narrow_concatenation_is_the_concatenation(count):
    parts = [torch.randn(2, 3, 5) + i for i in range(count)]
    for dim in (0, 1, 2, -1):
        assert torch.equal(delegate_ops.concat_narrow(parts, dim), torch.cat(parts, dim))


def test_matmul_without_broadcast_matches_the_broadcast_product():
    from edgesr.rewrite.layout import matmul_without_broadcast

    # (lead axes, groups, rows, inner, tail): HiT-SR's bias (windows,) and the DFT's (batch, channels)
    for lead, groups, rows, inner, tail in [((1,), 2, 16, 4, 8), ((9,), 3, 64, 16, 5), ((4,), 1, 7, 3, 2),
                                            ((2, 3), 4, 10, 10, 7)]:
        shared, batched = torch.randn(groups, rows, inner), torch.randn(*lead, groups, inner, tail)
        result = matmul_without_broadcast(shared, batched)
        assert result.shape == (*lead, groups, rows, tail)
        assert (result - shared @ batched).abs().max().item() < 1e-5


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_upsample_by_conv_matches_interpolate(scale, mode):
    x = torch.rand(2, 3, 9, 13)
    reference = F.interpolate(x, scale_factor=scale, mode=mode,
                              align_corners=False if mode == "bilinear" else None)
    assert (delegate_ops.upsample_by_conv(x, scale, mode) - reference).abs().max().item() < 1e-6


def test_reflect_pad_context_restores_f_pad():
    original = F.pad
    with delegate_ops.reflect_pads_as_slices():
        assert F.pad is not original
        x = torch.randn(1, 2, 5, 5)
        assert torch.equal(F.pad(x, (1, 1, 1, 1)), original(x, (1, 1, 1, 1)))  # constant mode untouched
    assert F.pad is original


@pytest.mark.parametrize("arch", ["hit-sir", "hit-sng", "hit-srf", "srconvnet"])
def test_delegate_rewrites_keep_parity(arch):
    from edgesr.rewrite.plan import ExportContext

    model = make_every_branch_count(create(arch, 2, **(SRCONVNET_SMALL if arch == "srconvnet" else HIT_SMALL)))
    folded = model
    if arch != "srconvnet" and importlib.util.find_spec("edgesr.rewrite.hit_windows"):
        from edgesr.rewrite.hit_windows import fold_hit_windows

        folded = fold_hit_windows(model, SIZE)
    x = torch.rand(1, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    for target, rewrites in [("onnx", (delegate_ops.GELU_WITHOUT_ERF, delegate_ops.LAYERNORM_OPS,
                                        delegate_ops.REFLECT_PAD_SLICES, delegate_ops.BIAS_SLICES)),
                             ("tflite", (delegate_ops.REFLECT_PAD_SLICES_XNNPACK, delegate_ops.BIAS_SLICES))]:
        context = ExportContext(target, SIZE)
        prepared = folded
        for rewrite in rewrites:
            if rewrite.applies(prepared, context):
                prepared = rewrite.apply(prepared, context)
        if target == "onnx":
            assert not any(isinstance(m, (nn.GELU, nn.LayerNorm)) for m in prepared.modules())
        with torch.no_grad():
            error = (prepared(x) - model(x)).abs().max().item()
        # HiT-SR works on [0, 1], SRConvNet on [0, 255]: the export parity bound is 1e-5 x range.
        assert error < 1e-5 * (255 if arch == "srconvnet" else 1), target


def test_bias_slices_match_gathers():
    hit_bias = pytest.importorskip("edgesr.rewrite.hit_bias")
    from edgesr.models.hit_common import WindowPositionBias

    for window, grid in [((16, 16), (8, 8)), ((8, 8), (8, 8)), ((32, 32), (8, 8))]:
        pos = WindowPositionBias(48, 3, window, grid).eval()
        folded = hit_bias.FoldedWindowBias(pos)
        holder = nn.Sequential(folded)
        anchor = torch.zeros(1, 1, 1)
        for narrow in (False, True):
            sliced = delegate_ops.bias_gathers_as_slices(holder, narrow_concats=narrow)[0]
            assert type(sliced).__name__.startswith("Sliced")
            assert torch.equal(sliced(anchor), folded(anchor))


def test_rewrites_are_chosen_per_target():
    from edgesr.rewrite.plan import ExportContext

    model = create("hit-sir", 2, **HIT_SMALL)
    onnx_fixed = ExportContext("onnx", SIZE)
    for rewrite in (delegate_ops.GELU_WITHOUT_ERF, delegate_ops.LAYERNORM_OPS, delegate_ops.REFLECT_PAD_SLICES):
        assert rewrite.applies(model, onnx_fixed)
        # LiteRT's GPU delegate and CoreML take GELU, LayerNorm and reflect Pad natively.
        assert not rewrite.applies(model, ExportContext("tflite", SIZE))
        assert not rewrite.applies(model, ExportContext("coreml", SIZE))
    for rewrite in (delegate_ops.GELU_WITHOUT_ERF, delegate_ops.LAYERNORM_OPS, delegate_ops.REFLECT_PAD_SLICES):
        # --dynamic ONNX serves desktops (NNAPI takes no dynamic shapes): fused kernels kept.
        assert not rewrite.applies(model, ExportContext("onnx", None))
        # --fused-ops: a fixed-size graph for desktop onnxruntime.
        assert not rewrite.applies(model, ExportContext("onnx", SIZE, delegate_forms=False))
    fusable = delegate_ops.GELU_FUSABLE
    assert fusable.applies(model, ExportContext("onnx", None))
    assert fusable.applies(model, ExportContext("onnx", SIZE, delegate_forms=False))
    assert not fusable.applies(model, onnx_fixed)
    assert not fusable.applies(model, ExportContext("tflite", SIZE))
    # XNNPACK takes neither MIRROR_PAD nor REVERSE_V2: TFLite alone gets the sliced reversal.
    folded = pytest.importorskip("edgesr.rewrite.hit_windows").fold_hit_windows(model, SIZE)
    rewrite = delegate_ops.REFLECT_PAD_SLICES_XNNPACK
    assert rewrite.applies(folded, ExportContext("tflite", SIZE))
    assert not rewrite.applies(folded, ExportContext("onnx", SIZE))
    assert not rewrite.applies(folded, ExportContext("coreml", SIZE))
    assert REWRITE_MODULES[-1] == "delegate_ops" or "delegate_ops" in REWRITE_MODULES


# Small, but with HiT-SR's whole window hierarchy (windows 2 to 32): at 64x64 every level
# has more than one window (where one window covers the image, the channel product is a
# FULLY_CONNECTED with a computed weight, which XNNPACK does not take).
HIT_HIERARCHY = {"embed_dim": 16, "depths": [6], "num_heads": [2], "base_win_size": [4, 4]}


@pytest.mark.parametrize("arch", ["srconvnet", "hit-sir", "hit-sng", "hit-srf"])
def test_fp32_tflite_is_one_xnnpack_partition(arch, tmp_path):
    """Every partition boundary is a hand-off between XNNPACK and TFLite's own kernels."""
    pytest.importorskip("ai_edge_litert")
    from edgesr.runtimes.litert_runner import xnnpack_coverage

    model = create(arch, 2, seed=0, **(SRCONVNET_SMALL if arch == "srconvnet" else HIT_HIERARCHY))
    report = export(model, "tflite", input_size=(64, 64), out_dir=tmp_path)
    coverage = xnnpack_coverage(report.artifact, threads=1)
    assert (coverage.partitions, coverage.outside) == (1, {}), coverage
    assert coverage.delegated == coverage.nodes


def test_fused_ops_tflite_runs_the_dynamic_conv_in_litert_kernels(tmp_path):
    """tflite --fused-ops: SRConvNet's dynamic convs as DEPTHWISE_CONV_2D with a computed
    filter, outside XNNPACK (two per block); exported without the delegate policy (the
    split is the point), parity holds, and the report names the ops and how to get one
    partition."""
    pytest.importorskip("ai_edge_litert")
    from edgesr.runtimes.litert_runner import xnnpack_coverage

    model = make_every_branch_count(create("srconvnet", 2, **SRCONVNET_SMALL))
    report = export(model, "tflite", input_size=SIZE, out_dir=tmp_path, fused_ops=True)
    assert report.status == "passed" and report.parity["status"] == "passed"
    assert "dynamic_conv_static" not in [r["name"] for r in report.rewrites]
    coverage = xnnpack_coverage(report.artifact, threads=1)
    assert coverage.outside == {"DEPTHWISE_CONV_2D": 2 * SRCONVNET_SMALL["num_blocks"]}, coverage
    assert any("2 DEPTHWISE_CONV_2D" in note and "without --fused-ops" in note for note in report.notes), \
        report.notes
    with pytest.raises(EdgeSRError, match="--fused-ops"):
        export(model, "tflite", input_size=SIZE, out_dir=tmp_path, name="both", fused_ops=True,
               delegate_ready=True)


# --------------------------------------------------------------------------------------
# The judges
# --------------------------------------------------------------------------------------

_INCOMPATIBLE = """Your TFLite model has '1' subgraph(s).
Subgraph#0 main(T#0) -> [T#5]
  Op#0 CONV_2D(T#0, T#1, T#2) -> [T#3]
  Op#1 GATHER(T#3, T#4) -> [T#6]
GPU COMPATIBILITY WARNING: Not supported op GATHER
  Op#2 ADD(T#6, T#3) -> [T#5]

GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 1 on TFLite runtime version 2.22.0
"""


def test_litert_analysis_parser():
    bad = parse_litert_analysis(_INCOMPATIBLE)
    assert not bad.ready and bad.unsupported_ops == ["GATHER"]
    assert (bad.nodes_supported, bad.nodes_total, bad.partitions) == (2, 3, 2)
    good = parse_litert_analysis(_INCOMPATIBLE.replace("GPU COMPATIBILITY WARNING: Not supported op GATHER\n", "")
                                 .split("\nGPU COMPATIBILITY WARNING: Subgraph")[0]
                                 + "\nYour model looks compatible with GPU delegate on TFLite runtime version x.")
    assert good.ready and good.partitions == 1 and good.nodes_total == 3


def test_readiness_split_and_dict():
    ok = DelegateReadiness("NNAPI", True, 1, 10, 10, verdict="YES")
    bad = DelegateReadiness("CoreML MLProgram", False, 3, 8, 10, ["Gather"], "NO")
    info = DelegateReadiness("CoreML NeuralNetwork", False, 5, 5, 10, ["Erf"], "NO")
    readiness = Readiness("onnx", "test", [ok, bad, info], ["NNAPI", "CoreML MLProgram"])
    assert readiness.split is True
    assert Readiness("onnx", "test", [ok, info], ["NNAPI"]).split is False  # NeuralNetwork informative
    data = readiness.to_dict()
    assert data["split"] is True and data["delegates"][1]["coverage"] == 0.8
    assert "Gather" in data["summary"]
    assert Readiness("onnx", "none", error="missing").split is None


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """One small export per target (the analyzers' inputs), made once."""
    out = tmp_path_factory.mktemp("readiness")
    model = make_every_branch_count(create("srconvnet", 2, **SRCONVNET_SMALL))
    # ONNX with --delegate-ready: the graph NNAPI and the CoreML EP take whole (its default fp32
    # graph keeps onnxruntime's fused ops; test_default_fp32_onnx_keeps_fused_ops).
    return {target: export(model, target, input_size=SIZE, out_dir=out, check=(target == "onnx"),
                           delegate_ready=(target == "onnx"))
            for target in ("onnx", "tflite", "coreml")}


def test_onnx_verdicts_srconvnet(exports):
    readiness = exports["onnx"].readiness
    by_name = {d["name"]: d for d in readiness["delegates"]}
    assert set(by_name) == {"NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram"}
    for name in ("NNAPI", "CoreML MLProgram"):
        assert by_name[name]["verdict"] == "YES", by_name[name]
        assert by_name[name]["partitions"] == 1
        assert by_name[name]["nodes_supported"] == by_name[name]["nodes_total"]
    assert readiness["split"] is False
    report = json.loads(open(exports["onnx"].report).read())
    assert report["readiness"]["summary"].startswith("delegate-ready")


def test_tflite_gpu_compatible_srconvnet(exports):
    readiness = exports["tflite"].readiness
    (gpu,) = readiness["delegates"]
    assert gpu["name"] == "LiteRT GPU" and gpu["ready"], gpu
    assert gpu["verdict"] == "compatible with GPU delegate" and gpu["unsupported_ops"] == []


def test_coreml_ane_scan_srconvnet(exports):
    readiness = exports["coreml"].readiness
    (ane,) = readiness["delegates"]
    assert ane["name"] == "Apple Neural Engine"
    assert ane["details"]["ops"], "the ML program's ops are listed"
    assert ane["unsupported_ops"] == [] and readiness["split"] is False
    assert any("fp32" in note for note in readiness["notes"])


@pytest.mark.skipif("hit_windows" not in REWRITE_MODULES,
                    reason="HiT-SR's window rewrite (edgesr.rewrite.hit_windows) is not registered yet")
def test_onnx_verdicts_hit_sir(tmp_path):
    model = make_every_branch_count(create("hit-sir", 2, **HIT_SMALL))
    report = export(model, "onnx", input_size=SIZE, out_dir=tmp_path, delegate_ready=True)
    by_name = {d["name"]: d for d in report.readiness["delegates"]}
    for name in ("NNAPI", "CoreML MLProgram"):
        assert by_name[name]["verdict"] == "YES" and by_name[name]["partitions"] == 1, by_name[name]
    assert report.status == "passed"


def test_fused_ops_keep_desktop_kernels_and_parity(tmp_path):
    """--fused-ops: exact GELU and LayerNormalization stay (onnxruntime fuses them on
    desktops), parity still holds, and the NNAPI judge sees the split it causes."""
    import onnx

    model = make_every_branch_count(create("hit-sir", 2, **HIT_SMALL))
    report = export(model, "onnx", input_size=SIZE, out_dir=tmp_path, fused_ops=True)
    assert report.status == "passed"
    ops = {node.op_type for node in onnx.load(report.artifact).graph.node}
    assert {"Erf", "LayerNormalization"} <= ops, sorted(ops)
    names = [r["name"] for r in report.rewrites]
    assert "gelu_without_erf" not in names and "gelu_fusable" in names
    # fp32 only: no range scaling, and a float16 runtime is refused for this file.
    from edgesr.runtimes.onnxruntime_runner import read_metadata, refuse_float16_for_float32_only

    assert "correlation_range_unscaled" in names
    metadata = read_metadata(report.artifact)
    assert metadata["edgesr.float32_only"] == "true"
    with pytest.raises(EdgeSRError, match="drop --trt-fp16"):
        refuse_float16_for_float32_only(Path(report.artifact), metadata)
    # The default fp32 file keeps the fused ops as well, and the float16 range scaling (for
    # --trt-fp16); the report says how to get a graph NNAPI takes whole.
    default = export(model, "onnx", input_size=SIZE, out_dir=tmp_path, name="default")
    assert "edgesr.float32_only" not in read_metadata(default.artifact)
    refuse_float16_for_float32_only(Path(default.artifact), read_metadata(default.artifact))
    default_names = [r["name"] for r in default.rewrites]
    assert "gelu_without_erf" not in default_names and "correlation_range_unscaled" not in default_names
    assert {"Erf", "LayerNormalization"} <= {node.op_type for node in onnx.load(default.artifact).graph.node}
    assert default.status == "passed" and default.readiness["split"] is True
    assert any("--delegate-ready" in note for note in default.notes), default.notes
    nnapi = next(d for d in report.readiness["delegates"] if d["name"] == "NNAPI")
    assert nnapi["verdict"] != "YES" and report.readiness["split"] is True
    with pytest.raises(EdgeSRError, match="--fused-ops"):
        export(model, "onnx", input_size=SIZE, out_dir=tmp_path, name="both", fused_ops=True,
               delegate_ready=True)
    assert not list(tmp_path.glob("both*"))
    with pytest.raises(EdgeSRError, match="--fused-ops does not apply to coreml"):
        export(model, "coreml", input_size=SIZE, out_dir=tmp_path, name="cml", fused_ops=True)
    # SRConvNet keeps its runtime-weight dynamic conv there; parity still holds.
    srconvnet = make_every_branch_count(create("srconvnet", 2, **SRCONVNET_SMALL))
    for name, options in [("sr", {"fused_ops": True}), ("sr-default", {}), ("sr-mobile", {"delegate_ready": True})]:
        report = export(srconvnet, "onnx", input_size=SIZE, out_dir=tmp_path, name=name, **options)
        constant = "dynamic_conv_static" in [r["name"] for r in report.rewrites]
        assert report.status == "passed" and constant == (name == "sr-mobile"), name


def test_analyzer_failure_is_reported_not_raised(tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a model")
    readiness = analyze("onnx", tmp_path / "missing.onnx")
    assert readiness.split is None and readiness.error


# --------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------


def _split_readiness(target, path, options):
    return Readiness(target, "test judge", [DelegateReadiness("NNAPI", False, 3, 5, 9, ["Erf"], "NO")], ["NNAPI"])


def test_split_graph_fails_and_leaves_nothing(tmp_path, monkeypatch):
    from edgesr.export import pipeline

    monkeypatch.setattr(pipeline, "_readiness", _split_readiness)
    model = create("srconvnet", 2, **SRCONVNET_SMALL)
    with pytest.raises(EdgeSRError, match="not delegate-ready"):
        export(model, "onnx", input_size=(16, 16), out_dir=tmp_path, name="m", delegate_ready=True)
    assert not (tmp_path / "m.onnx").exists()
    assert not (tmp_path / "m.onnx.report.json").exists()
    failed = json.loads((tmp_path / "m.onnx.failed.report.json").read_text())
    assert failed["readiness"]["split"] is True and failed["artifact"] is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".edgesr-export-")]

    report = export(model, "onnx", input_size=(16, 16), out_dir=tmp_path, name="m", check=False,
                    delegate_ready=True, allow_partial_delegation=True)
    assert (tmp_path / "m.onnx").exists() and report.readiness["split"] is True
    assert report.readiness["policy"]["allow_partial_delegation"] is True


def test_policy_defaults(monkeypatch):
    from edgesr.export import pipeline

    assert pipeline.DELEGATE_READY_BY_DEFAULT == {"tflite", "coreml"}


def test_cli_flags(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from edgesr.cli import app
    from edgesr.export import pipeline

    monkeypatch.setattr(pipeline, "_readiness", lambda target, path, options: Readiness(
        target, "test judge", [DelegateReadiness("LiteRT GPU", False, 2, 5, 9, ["GATHER"], "not compatible")],
        ["LiteRT GPU"]))
    seen = {}
    original = pipeline.export

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline, "export", spy)
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--model", "srconvnet", "--scale", "2", "--target", "onnx",
                                 "--input-size", "16x16", "--out", str(tmp_path), "--no-check",
                                 "--delegate-ready"])
    assert result.exit_code != 0 and not list(tmp_path.glob("*.onnx"))
    assert seen["delegate_ready"] is True and seen["allow_partial_delegation"] is False
    result = runner.invoke(app, ["export", "--model", "srconvnet", "--scale", "2", "--target", "onnx",
                                 "--input-size", "16x16", "--out", str(tmp_path), "--no-check",
                                 "--delegate-ready", "--allow-partial-delegation"])
    assert result.exit_code == 0, result.output
    assert "readiness: split graph" in result.output
