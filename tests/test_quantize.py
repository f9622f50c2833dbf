"""Quantized exports (edgesr.quantize): int8 per target with a measured PSNR-Y check
against the float model, the bad-input errors, and the budget search on a model with
one op known to be sensitive. Tiny models and images only."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from edgesr.errors import EdgeSRError
from edgesr.export.parity import natural_image

SIZE = (32, 32)


def _tiny():
    from edgesr.models.loading import create

    torch.manual_seed(0)
    return create("srconvnet", 2, dim=16, num_blocks=1, num_heads=2, num_kernels=4)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A calibration folder (5 images) and a validation folder of HR images (2)."""
    root = tmp_path_factory.mktemp("quant")
    calib, val = root / "calib", root / "val"
    calib.mkdir()
    val.mkdir()
    for seed in range(5):
        pixels = (natural_image(48, 56, seed).transpose(1, 2, 0) * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(calib / f"c{seed}.png")
    for seed in (10, 11):
        pixels = (natural_image(64, 64, seed).transpose(1, 2, 0) * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(val / f"v{seed}.png")
    return {"calib": str(calib), "val": str(val), "root": root}


def _export(target, precision, data, out, **extra):
    from edgesr.export.pipeline import export

    return export(_tiny(), target, input_size=SIZE, precision=precision, out_dir=out,
                  calib=data["calib"], calib_count=6, val=data["val"], delegate_ready=False, **extra)


def test_onnx_int8_measured_against_float(data, tmp_path):
    import onnx

    report = _export("onnx", "int8", data, tmp_path)
    q = report.quantization
    assert report.status == "passed" and "PSNR-Y" in report.parity["tolerance"]
    assert q["calibration"]["patches"] == 6 and q["validation"]["images"] == ["v10", "v11"]
    # The measured quality: artifact vs the float model on the same tiles.
    assert abs(q["delta_db"]) < 1.0
    assert q["delta_db"] == pytest.approx(q["quantized"]["psnr_y"] - q["float"]["psnr_y"], abs=1e-3)
    assert q["latency_ms"]["int8"] > 0 and q["size_bytes"]["int8"] > 0
    model = onnx.load(report.artifact)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert {p.key: p.value for p in model.metadata_props}["edgesr.precision"] == "int8"
    saved = json.loads(open(report.report).read())
    assert saved["quantization"]["kept_float"]["groups"] == []
    assert q["macs"]["int8_fraction"] == 1.0 and q["macs"]["float_gmac"] == 0


def _int8_weight_peak(path) -> int:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return max(int(np.abs(numpy_helper.to_array(i).astype(np.int32)).max())
               for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8)


def test_onnx_int8_verdict_is_the_exact_figure_and_the_host_one_is_beside_it(data, tmp_path):
    """The gate's figure is the file's own arithmetic (QDQ run as written), recomputed
    here independently; the host's fused kernels are reported next to it with the ISA.
    --reduce-range stores 7-bit weights (what AVX2 hosts without VNNI need)."""
    from edgesr.calibration import validation_set
    from edgesr.quantize.onnx_quant import session_fn
    from edgesr.quantize.quality import measure_psnr

    report = _export("onnx", "int8", data, tmp_path / "plain")
    q = report.quantization
    exact = measure_psnr(session_fn(Path(report.artifact), exact=True), validation_set(2, data["val"]), SIZE)
    assert q["quantized"]["psnr_y"] == pytest.approx(exact.psnr_y, abs=1e-3)
    host = q["host_kernels"]
    assert host["cpu"]["vector_extensions"] is not None and "note" in host
    assert host["vs_exact_db"] == pytest.approx(host["psnr_y"] - q["quantized"]["psnr_y"], abs=1e-3)
    assert _int8_weight_peak(report.artifact) == 127
    reduced = _export("onnx", "int8", data, tmp_path / "reduced", reduce_range=True)
    assert "7-bit" in reduced.quantization["method"]
    assert 32 < _int8_weight_peak(reduced.artifact) <= 64
    with pytest.raises(EdgeSRError, match="--reduce-range"):
        _export("tflite", "int8", data, tmp_path / "tflite", reduce_range=True)


def test_onnx_w8_is_weight_only(data, tmp_path):
    import onnx

    report = _export("onnx", "w8", data, tmp_path)
    model = onnx.load(report.artifact)
    assert any(i.data_type == onnx.TensorProto.INT8 for i in model.graph.initializer)
    assert "QuantizeLinear" not in {n.op_type for n in model.graph.node}
    assert abs(report.quantization["delta_db"]) < 0.5


@pytest.mark.parametrize("extra, message", [
    ({"calib": None}, "--precision int8 needs --calib"),
    ({"int_io": True}, "--int-io does not apply to onnx"),
    ({"calib_method": "magic"}, "--calib-method 'magic'"),
    ({"max_psnr_drop": -1.0}, "--max-psnr-drop -1"),
    ({"calib": "/nonexistent/calib"}, "no such folder"),
])
def test_bad_options_fail_before_any_work(data, tmp_path, extra, message):
    from edgesr.export.pipeline import export

    options = {"calib": data["calib"], "val": data["val"], **extra}
    with pytest.raises(EdgeSRError, match=message.replace("(", r"\(")):
        export(_tiny(), "onnx", input_size=SIZE, precision="int8", out_dir=tmp_path / "out",
               **{k: v for k, v in options.items() if v is not None})
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_empty_calibration_folder_writes_nothing(data, tmp_path):
    from edgesr.export.pipeline import export

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EdgeSRError, match="no images"):
        export(_tiny(), "onnx", input_size=SIZE, precision="int8", out_dir=tmp_path / "out",
               calib=str(empty), val=data["val"])
    out = tmp_path / "out"  # refused before any work: the folder may not even exist
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")]


# --- the budget search ------------------------------------------------------------


def test_search_keeps_the_costliest_groups():
    from edgesr.quantize.budget import search

    costs = {"A": 0.05, "B": 0.8, "C": 0.02, "D": 0.3}
    groups = {name: [name.lower() + str(i) for i in range(3)] for name in costs}

    def measure(kept):  # additive costs of the quantized groups
        return 30.0 - sum(cost for name, cost in costs.items() if name not in kept)

    result = search(groups, measure, float_psnr=30.0, plain_psnr=measure([]), budget_db=0.1)
    assert result.met and result.kept_float == ["B", "D"]
    assert result.final_delta_db == pytest.approx(-0.07)
    assert [c.group for c in sorted(result.sensitivity, key=lambda c: -c.cost_db)][:2] == ["B", "D"]
    assert "kept B, D in float" in result.verdict
    tight = search(groups, measure, 30.0, measure([]), budget_db=0.01)
    assert tight.met and "most of the network in float" in tight.verdict


def test_search_orders_by_cost_per_share_and_gives_back_what_is_not_needed():
    """HiTNet's ONNX sensitivity: a 138-node Conv group costs 0.042 dB alone, the last Conv
    0.035. Ordered by cost alone, the search kept the whole Conv group in float (most of
    the MACs) where the one last Conv was enough; per share, it keeps the small one.
    A group added first for its cost per share goes back to int8 when a later one makes
    it unneeded."""
    from edgesr.quantize.budget import search

    sizes = {"Conv": 138, "Conv:last": 1, "Proj": 24, "MatMul": 120}
    costs = {"Conv": 0.042, "Conv:last": 0.035, "Proj": 1.0, "MatMul": 0.025}

    def additive(costs):
        return lambda kept: 30.0 - sum(cost for name, cost in costs.items() if name not in kept)

    groups = {name: [f"{name}{i}" for i in range(n)] for name, n in sizes.items()}
    measure = additive(costs)
    result = search(groups, measure, float_psnr=30.0, plain_psnr=measure([]), budget_db=0.1)
    assert result.met and sorted(result.kept_float) == ["Conv:last", "Proj"]
    assert result.final_delta_db == pytest.approx(-0.067)

    groups = {"A": ["a0"], "B": [f"b{i}" for i in range(10)]}
    measure = additive({"A": 0.3, "B": 2.0})  # per node: A 0.3, B 0.2 -> A first
    result = search(groups, measure, float_psnr=30.0, plain_psnr=measure([]), budget_db=0.35)
    assert [step["kept_float"] for step in result.steps] == [["A"], ["A", "B"], ["B"]]
    assert result.met and result.kept_float == ["B"] and result.final_delta_db == pytest.approx(-0.3)


def test_search_takes_the_lightest_group_that_covers_the_shortfall():
    """HiTNet's fused ONNX with minmax ranges: 0.002 dB short with the first, last and
    norm-input convs in float, the order's next group was the 115 dense convs; a group a
    fifth its size whose own cost covers the 0.002 dB meets the budget instead."""
    from edgesr.quantize.budget import search

    sizes = {"Norm": 2, "First": 1, "Last": 1, "Conv": 115, "Depthwise": 24, "Gemm": 24}
    costs = {"Norm": 0.26, "First": 0.065, "Last": 0.057, "Conv": 0.089, "Depthwise": 0.0097, "Gemm": 0.0035}
    groups = {name: [f"{name}{i}" for i in range(n)] for name, n in sizes.items()}

    def measure(kept):
        return 30.0 - sum(cost for name, cost in costs.items() if name not in kept)

    result = search(groups, measure, float_psnr=30.0, plain_psnr=measure([]), budget_db=0.1)
    assert [step["kept_float"] for step in result.steps][:4] == [
        ["Norm"], ["Norm", "First"], ["Norm", "First", "Last"], ["Norm", "First", "Last", "Depthwise"]]
    assert result.met and "Conv" not in result.kept_float
    assert result.final_delta_db >= -0.1 and result.float_fraction < 0.2


def test_search_gives_the_cheap_nodes_of_small_kept_groups_back_to_int8():
    """One node can carry a kept group's whole cost (HiTNet's Conv:norm-input: 0.25 and
    0.004 dB): once the budget holds, small groups are tried node by node; larger ones
    stay whole."""
    from edgesr.quantize.budget import REFINE_MAX_NODES, search

    node_costs = {"a0": 0.02, "a1": 0.02, "b0": 0.5, "b1": 0.001}
    node_costs.update({f"c{i}": 0.0 for i in range(6)})
    node_costs.update({f"d{i}": 0.05 for i in range(REFINE_MAX_NODES + 1)})
    groups = {name: [node for node in node_costs if node[0] == name.lower()] for name in "ABCD"}

    def measure(kept):
        floated = {node for name in kept for node in groups.get(name, [name])}
        return 30.0 - sum(cost for node, cost in node_costs.items() if node not in floated)

    result = search(groups, measure, float_psnr=30.0, plain_psnr=measure([]), budget_db=0.1)
    assert result.met and result.kept_float == ["D", "b0"]
    assert result.final_delta_db == pytest.approx(-0.041)
    assert {"kept_float": ["D", "b0"], "psnr_y": 29.959, "delta_db": -0.041} in result.steps
    assert "kept D, b0 in float (40% of the compute)" in result.verdict


def test_a_missed_budget_writes_no_artifact_but_reports_what_was_measured(data, tmp_path):
    """The bundled (trained) demo model with its MatMuls in float loses a little in int8
    (0.012 dB on the exact gate). The same export with a budget of half that loss is
    refused, with the measurements (minutes on a real model) in the failed report. The
    exact gate runs each QDQ node as written, so both runs give the same figure on any
    CPU (the host's fused kernels would not: U8S8 saturates on AVX2 without VNNI)."""
    from edgesr.cli_common import resolve_model
    from edgesr.export.pipeline import export

    val = tmp_path / "val"
    val.mkdir()
    for seed in (10, 11):  # x4: HR of 128 gives LR tiles of the export size
        pixels = (natural_image(128, 128, seed).transpose(1, 2, 0) * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(val / f"v{seed}.png")
    settings = dict(input_size=SIZE, precision="int8", calib=data["calib"], calib_count=6, val=str(val),
                    delegate_ready=False, keep_float=("MatMul",), check=False)
    measured = export(resolve_model("srconvnet-x4-demo"), "onnx", out_dir=tmp_path / "measured", **settings)
    loss = -measured.quantization["delta_db"]
    assert loss > 0
    assert 0 < measured.quantization["macs"]["float_gmac"] and measured.quantization["macs"]["int8_fraction"] < 1
    out = tmp_path / "out"
    with pytest.raises(EdgeSRError, match=r"int8 costs \d\.\d+ dB") as caught:
        export(resolve_model("srconvnet-x4-demo"), "onnx", out_dir=out, max_psnr_drop=loss / 2, **settings)
    assert "what was measured is in" in str(caught.value)
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert files == ["srconvnet_x4_32x32_int8.onnx.failed.report.json"]
    failed = json.loads((out / files[0]).read_text())
    q = failed["quantization"]
    assert failed["status"] == "failed" and not failed["artifact"]
    assert q["kept_float"]["groups"] == ["MatMul"]
    assert q["delta_db"] == pytest.approx(-loss, abs=2e-4)
    assert q["delta_db"] == pytest.approx(q["quantized"]["psnr_y"] - q["float"]["psnr_y"], abs=1e-3)


def _tiny_hitsr(**config):
    from edgesr.models.loading import create

    torch.manual_seed(0)
    return create("hit-srf", 2, **{"embed_dim": 16, "depths": [1, 1], "num_heads": [2, 2], **config})


def test_hitsr_tflite_int8_runs_with_its_float_islands_named(data, tmp_path):
    """HiT-SR's TFLite int8: Conv/Linear in int8, the range scaling and every other op in
    float (LiteRT's int8 DIV refuses its divisors). The report counts the file's ops of
    each kind; a --keep-float group's nodes become float ops of the file; the budget
    search's measure (the PT2E simulation) agrees with the file run in LiteRT."""
    from edgesr.export.pipeline import export

    report = export(_tiny_hitsr(), "tflite", input_size=SIZE, precision="int8", out_dir=tmp_path,
                    calib=data["calib"], calib_count=4, val=data["val"], delegate_ready=False,
                    keep_float=("Linear:norm-input:fc2",))
    q = report.quantization
    assert report.status == "passed" and q["io"]["input"]["dtype"] == "float32"
    groups, ops = q["groups"], q["op_precision"]
    # The layers that feed a LayerNorm, split by where they are called from.
    assert {"Conv:first", "Conv", "Linear", "Linear:norm-input:correlation", "Linear:norm-input:fc2"} <= set(groups)
    convs = sum(n for name, n in groups.items() if name.startswith("Conv"))
    assert ops["int8"].get("CONV_2D", 0) + ops["int8"].get("DEPTHWISE_CONV_2D", 0) == convs
    assert ops["int8"]["FULLY_CONNECTED"] == groups["Linear"] + groups["Linear:norm-input:correlation"]
    assert ops["float"]["FULLY_CONNECTED"] == groups["Linear:norm-input:fc2"]
    assert "DIV" in ops["float"] and "DIV" not in ops["int8"]
    assert ops["transitions"]["QUANTIZE"] > 0
    assert q["kept_float"]["replay"] == "--keep-float Linear:norm-input:fc2"
    # The correlations' activation-by-activation products stay float: not all MACs are int8.
    assert 0.5 < q["macs"]["int8_fraction"] < 1.0
    assert abs(q["delta_db"]) < 1.0
    assert q["plain_int8"]["psnr_y"] == pytest.approx(q["quantized"]["psnr_y"], abs=0.1)


def test_hitsr_onnx_int8_for_the_cpu_keeps_the_unscaled_correlation_float(data, tmp_path):
    """--fused-ops int8 ONNX (onnxruntime's CPU): built on the float32-only graph (no range
    scaling), so the correlations' products and the projections that read them stay float;
    every other Conv/MatMul/Gemm is int8, the depthwise convs too, padded from 24 to 32
    channels for onnxruntime's fast int8 depthwise kernel, and the GELUs are one node each."""
    import onnx

    from edgesr.export.pipeline import export

    report = export(_tiny_hitsr(mlp_ratio=1.5), "onnx", input_size=SIZE, precision="int8", out_dir=tmp_path,
                    calib=data["calib"], calib_count=4, val=data["val"], fused_ops=True)
    q = report.quantization
    assert report.status == "passed" and abs(q["delta_db"]) < 1.0
    model = onnx.load(report.artifact)
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["edgesr.float32_only"] == "true"
    assert {"correlation_range_unscaled", "depthwise_channel_padding"} <= set(metadata["edgesr.rewrites"].split(","))
    dequantized = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    constants = {tensor.name for tensor in model.graph.initializer}
    compute = [node for node in model.graph.node if node.op_type in ("Conv", "MatMul", "Gemm")]
    products = [n for n in compute if n.op_type == "MatMul" and not {n.input[0], n.input[1]} & constants
                and not {n.input[0], n.input[1]} & dequantized]
    float_weights = [n for n in compute if n.input[1] in constants]
    groups = {n.name: a.i for n in compute for a in n.attribute if a.name == "group" and a.i > 1}
    by_design = q["float_by_design"]
    assert set(by_design) == {"activation MatMuls of the unscaled correlations",
                              "layers reading an unscaled correlation"}
    assert len(products) == by_design["activation MatMuls of the unscaled correlations"] > 0
    assert len(float_weights) == by_design["layers reading an unscaled correlation"] > 0
    assert all(n.op_type in ("MatMul", "Gemm") for n in float_weights)
    depthwise = [n for n in compute if n.name in groups]
    assert len(depthwise) == 2 and set(groups.values()) == {32} and q["groups"]["Conv:depthwise"] == 2
    assert all(n.input[1] in dequantized for n in depthwise)
    ops = {(n.domain, n.op_type) for n in model.graph.node}
    assert ("com.microsoft", "Gelu") in ops and ("", "Erf") not in ops
    assert any(n.input[1] in dequantized for n in compute)  # the rest is int8
    # int8 Linears keep a float output (onnxruntime's QGemm then writes float: no Q/DQ pair).
    quantized_outputs = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    int8_gemms = [n for n in compute if n.op_type == "Gemm" and n.input[1] in dequantized]
    assert int8_gemms and not any(n.output[0] in quantized_outputs for n in int8_gemms)
    assert any(n.output[0] in quantized_outputs for n in compute if n.op_type == "Conv")
    assert 0.5 < q["macs"]["int8_fraction"] < 1.0
    # Each block's correlation gate (a product of two int8 convs) runs on uint8, and so do
    # sums between int8 layers (test_a_cpu_int8_file_calibrates_only_...: which ones).
    on_uint8 = [n for n in model.graph.node if n.op_type in ("Mul", "Add") and set(n.input) <= dequantized]
    kinds = collections.Counter(n.op_type for n in on_uint8)
    assert kinds["Mul"] == 2 and kinds["Add"] >= 2
    assert all(n.output[0] in quantized_outputs for n in on_uint8)
    # (A sum whose terms and readers are all int8 for other reasons is on uint8 unchosen.)
    assert 4 <= q["int8_elementwise"]["ops"] <= len(on_uint8)


def test_a_cpu_int8_file_calibrates_only_the_elementwise_ops_it_runs_on_uint8(tmp_path):
    """Which elementwise ops a --fused-ops int8 file runs on uint8: per block, the gate (a
    product of two int8 convs), the ConvFFN's residual sum of two GELUs (read by its int8
    second layer) and the block's last residual sum (read only by the next int8 conv).
    The calibrator adds their tensors to the compute ops' ones, and no other Mul or Add
    tensor (every Mul and Add would add half as many tensors again to HiTNet's, a second
    each in the entropy search), nor those that only its float-by-design nodes touch.
    Keeping a gate's conv float puts that gate back in float."""
    from edgesr.calibration import CalibrationSet
    from edgesr.export.pipeline import export
    from edgesr.quantize.onnx_quant import COMPUTE_OPS, OnnxQuantizer

    # mlp_ratio 2: 32 hidden channels, a depthwise conv that onnxruntime runs fast in int8.
    report = export(_tiny_hitsr(mlp_ratio=2), "onnx", input_size=SIZE, out_dir=tmp_path, fused_ops=True,
                    check=False)
    patches = np.random.default_rng(0).random((1, 3, *SIZE), dtype=np.float32)
    quantizer = OnnxQuantizer(Path(report.artifact), tmp_path / "work", CalibrationSet("test", SIZE, 0, patches),
                              op_types=COMPUTE_OPS, for_cpu=True)
    nodes = {node.name: node for node in quantizer.model.graph.node}
    producers = {out: node for node in nodes.values() for out in node.output}
    candidates = quantizer.int8_elementwise()
    assert sorted(nodes[name].op_type for name in candidates) == ["Add"] * 4 + ["Mul"] * 2
    gelu_sums = [name for name in candidates if {producers[t].op_type for t in nodes[name].input} == {"Gelu"}]
    assert len(gelu_sums) == 2
    quantizer.calibrate()
    calibrated = set(json.loads(quantizer.cache_path.read_text())["data"])
    by_design = set(quantizer.always_float)
    compute = {t for n in nodes.values() if n.op_type in COMPUTE_OPS and n.name not in by_design
               for t in (*n.input, *n.output)}
    elementwise = {t for name in candidates for t in (*nodes[name].input, *nodes[name].output)}
    assert elementwise - compute and elementwise <= calibrated
    # The correlations' float products and projections are never quantized: their own tensors are not calibrated.
    float_only = {t for name in by_design for t in (*nodes[name].input, *nodes[name].output)} - compute - elementwise
    assert float_only and not float_only & calibrated
    others = {t for n in nodes.values() if n.op_type in ("Mul", "Add") and n.name not in candidates
              for t in n.output} - compute - elementwise
    assert others and not others & calibrated
    gate = nodes[next(name for name in candidates if nodes[name].op_type == "Mul")]
    producer = next(n.name for n in nodes.values() if gate.input[0] in n.output)
    assert gate.name not in quantizer.int8_elementwise([producer])


def test_a_cpu_int8_file_keeps_its_one_channel_convs_float(tmp_path):
    """HiT-SR's key-cell pooling (windows larger than the base window) is a strided conv
    from one channel to one channel, the map's channels as its batch: onnxruntime's int8
    conv is slower than its float one there, so a --fused-ops int8 file keeps it float (in
    no group, whatever --keep-float says); a file for other runtimes quantizes it."""
    import onnx

    from edgesr.calibration import CalibrationSet
    from edgesr.export.pipeline import export
    from edgesr.quantize.onnx_quant import COMPUTE_OPS, OnnxQuantizer

    # Windows of 16 over a base window of 8: each block pools 2x2 cells of values.
    report = export(_tiny_hitsr(hier_win_ratios=[2]), "onnx", input_size=SIZE, out_dir=tmp_path, fused_ops=True,
                    check=False)
    patches = np.random.default_rng(0).random((1, 3, *SIZE), dtype=np.float32)
    calib = CalibrationSet("test", SIZE, 0, patches)
    quantizer = OnnxQuantizer(Path(report.artifact), tmp_path / "cpu", calib, op_types=COMPUTE_OPS, for_cpu=True)
    graph = quantizer.model.graph
    weights = {tensor.name: tuple(tensor.dims) for tensor in graph.initializer}
    pooling = [n.name for n in graph.node if n.op_type == "Conv" and weights[n.input[1]] == (1, 1, 2, 2)]
    assert len(pooling) == 2
    kept = {reason: nodes for reason, nodes in quantizer.float_by_design.items() if reason.startswith("Conv from one")}
    assert list(kept.values()) == [pooling]
    assert not set(pooling) & {name for names in quantizer.node_groups().values() for name in names}
    quantizer.calibrate()
    quantized = onnx.load(quantizer.quantize(tmp_path / "cpu.onnx"))
    dequantized = {out for n in quantized.graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    convs = {n.name: n for n in quantized.graph.node if n.op_type == "Conv"}
    assert all(convs[name].input[1] not in dequantized for name in pooling)
    assert sum(n.input[1] in dequantized for n in convs.values()) > len(pooling)
    elsewhere = OnnxQuantizer(Path(report.artifact), tmp_path / "any", calib, op_types=COMPUTE_OPS)
    assert set(pooling) <= set(elsewhere.node_groups()["Conv"])


def test_hitsr_coreml_int8_quantizes_only_its_compute_ops(data, tmp_path):
    """HiT-SR's CoreML W8A8 takes TFLite's Conv/Linear-only graph (every op in int8 lost
    2.5 dB on HiTNet): one int8 weight per Conv/Linear node of the groups, and the
    range scaling's divisions stay float ops of the program."""
    from edgesr.export.pipeline import export

    report = export(_tiny_hitsr(), "coreml", input_size=SIZE, precision="int8", out_dir=tmp_path,
                    calib=data["calib"], calib_count=4, val=data["val"], delegate_ready=False)
    q = report.quantization
    assert report.status == "passed" and "compute_only_reason" in q
    ops = q["structure"]["ops"]
    assert ops["constexpr_affine_dequantize"] == sum(q["groups"].values())
    assert ops["real_div"] > 0 and ops["quantize"] > 0
    assert 0.5 < q["macs"]["int8_fraction"] < 1.0 and abs(q["delta_db"]) < 1.0


def test_tflite_keep_float_with_an_unknown_group_writes_nothing(data, tmp_path):
    from edgesr.export.pipeline import export

    with pytest.raises(EdgeSRError, match="--keep-float Gemm: not a group or node of this graph "
                                          r"\(groups: Conv:first, .*Linear"):
        export(_tiny_hitsr(), "tflite", input_size=SIZE, precision="int8", out_dir=tmp_path / "out",
               calib=data["calib"], calib_count=4, val=data["val"], keep_float=("Gemm",))
    assert not any((tmp_path / "out").iterdir())


class Sensitive(nn.Module):
    """x2 upscaler (bilinear of the image plus a small residual) whose image path goes
    through a tensor with one channel 10^4 times larger than the others: a
    per-tensor int8 range on that tensor wipes out the image channels, so the ops that
    quantize it (the Mul, the last Conv reading it) are the sensitive ones."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 3, 3, padding=1)
        self.unmix = nn.Conv2d(4, 3, 1, bias=False)
        with torch.no_grad():
            self.c2.weight.mul_(0.1)
            self.unmix.weight.zero_()
            for channel in range(3):
                self.unmix.weight[channel, channel] = 1.0

    def forward(self, x):
        residual = self.c2(torch.relu(self.c1(x)))
        # (squared so that no optimizer folds the 10^4 into the next convolution)
        wide = torch.cat([x, torch.square(x[:, :1] * 100.0)], 1)
        base = self.unmix(wide) + residual
        return nn.functional.interpolate(base, scale_factor=2, mode="bilinear", align_corners=False).clamp(0, 1)


def test_budget_search_finds_the_sensitive_op(data, tmp_path):
    from edgesr.calibration import load_calibration, validation_set
    from edgesr.export.base import ExportOptions
    from edgesr.export.onnx_target import OnnxTarget
    from edgesr.quantize.budget import search
    from edgesr.quantize.onnx_quant import OnnxQuantizer, session_fn
    from edgesr.quantize.quality import measure_psnr, torch_batch_fn

    model = Sensitive().eval()
    float_path = tmp_path / "float.onnx"
    with torch.no_grad():
        OnnxTarget().convert(model, torch.rand(1, 3, *SIZE), ExportOptions(input_size=SIZE), float_path)
    calib = load_calibration(data["calib"], SIZE, count=6, holdout=0)
    val = validation_set(2, data["val"])
    float_psnr = measure_psnr(torch_batch_fn(model), val, SIZE).psnr_y
    quantizer = OnnxQuantizer(float_path, tmp_path / "work", calib)
    groups = quantizer.node_groups()
    counter = iter(range(1000))

    def measure(kept):
        nodes = [n for name in kept for n in groups.get(name, [name])]
        path = quantizer.quantize(tmp_path / f"c{next(counter)}.onnx", nodes)
        return measure_psnr(session_fn(path, exact=True), val, SIZE).psnr_y

    plain = measure([])
    assert float_psnr - plain > 0.5  # plain int8 misses a 0.1 dB budget by far
    result = search(groups, measure, float_psnr, plain, 0.1)
    assert result.met and result.final_delta_db >= -0.1
    assert "Mul" in result.kept_float or "Conv:last" in result.kept_float
    # The sensitive ops dominate the sensitivity ranking; the plain convs are cheap.
    costs = {c.group: c.cost_db for c in result.sensitivity}
    assert max(costs.get("Mul", 0), costs.get("Conv:last", 0)) > 0.5 > costs.get("Conv", 0)
    assert "Conv" not in result.kept_float and "Conv:first" not in result.kept_float


class NormFed(nn.Module):
    """x2 upscaler whose residual goes through two channel normalisations, one as
    nn.LayerNorm (exported as LayerNormalization) and one written out as x - mean(x).
    The convs feeding them see rows (pixels) of very different spread, 1 on the left
    half and 0.01 on the right: a per-tensor int8 range rounds the right half's rows to
    a few steps, which the norms scale back up to unit size as noise."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.to_layer_norm = nn.Conv2d(8, 8, 1, bias=False)
        self.layer_norm = nn.LayerNorm(8)
        self.to_channel_norm = nn.Conv2d(8, 8, 1, bias=False)
        self.plain = nn.Conv2d(8, 8, 1)
        # one grey channel: PSNR-Y sees all of it
        self.tail = nn.Conv2d(8, 1, 3, padding=1)
        with torch.no_grad():
            self.tail.weight.mul_(0.1)

    def forward(self, x):
        features = torch.relu(self.head(x))
        mask = torch.ones_like(x[:, :1])
        mask[..., x.shape[-1] // 2:] = 0.01
        normed = self.layer_norm(self.to_layer_norm(features * mask).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        centred = self.to_channel_norm(normed * mask)
        centred = centred - centred.mean(1, keepdim=True)
        normed = centred / torch.sqrt((centred * centred).mean(1, keepdim=True) + 1e-6)
        base = nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        residual = nn.functional.interpolate(self.tail(self.plain(normed)), scale_factor=2, mode="nearest")
        residual = residual.expand(-1, 3, -1, -1)
        return (base + residual).clamp(0, 1)


def test_layers_feeding_a_norm_are_a_group_and_the_search_keeps_them(data, tmp_path):
    from edgesr.calibration import load_calibration
    from edgesr.calibration.validation import ValidationPair, ValidationSet
    from edgesr.export.base import ExportOptions
    from edgesr.export.onnx_target import OnnxTarget
    from edgesr.quantize.budget import search
    from edgesr.quantize.onnx_quant import COMPUTE_OPS, OnnxQuantizer, session_fn
    from edgesr.quantize.quality import measure_psnr, torch_batch_fn

    model = NormFed().eval()
    float_path = tmp_path / "float.onnx"
    with torch.no_grad():
        OnnxTarget().convert(model, torch.rand(1, 3, *SIZE), ExportOptions(input_size=SIZE), float_path)
    quantizer = OnnxQuantizer(float_path, tmp_path / "work", load_calibration(data["calib"], SIZE, count=6, holdout=0),
                              op_types=COMPUTE_OPS)
    groups = quantizer.node_groups()
    weights = {n.name: n.input[1] for n in quantizer.model.graph.node if n.op_type == "Conv"}
    by_weight = {group: sorted(weights[n].split(".")[0] for n in nodes) for group, nodes in groups.items()}
    assert by_weight == {"Conv:first": ["head"], "Conv:norm-input": ["to_channel_norm", "to_layer_norm"],
                         "Conv": ["plain"], "Conv:last": ["tail"]}
    # MACs from the inferred shapes: output pixels x output channels x (C_in * kH * kW)
    pixels = SIZE[0] * SIZE[1]
    macs = {weights[n].split(".")[0]: count for n, count in quantizer.node_macs().items()}
    assert macs == {"head": pixels * 8 * 27, "to_layer_norm": pixels * 64, "to_channel_norm": pixels * 64,
                    "plain": pixels * 64, "tail": pixels * 72}

    # A random residual is far from any real HR image, so the float model would score
    # badly and the quantization noise would hide in its error: the HR images here are
    # the float model's own outputs plus a fixed noise (about 30 dB).
    noise = np.random.default_rng(0)
    val = ValidationSet("float model outputs", "test", 2)
    for seed in (10, 11):
        lr = natural_image(*SIZE, seed)
        with torch.no_grad():
            sr = model(torch.from_numpy(lr[None]))[0].numpy().transpose(1, 2, 0)
        hr = np.clip(sr + noise.normal(0, 0.03, sr.shape), 0, 1)
        val.pairs.append(ValidationPair(f"v{seed}", lr.transpose(1, 2, 0), (hr * 255).round().astype(np.uint8)))
    counter = iter(range(1000))

    def measure(kept):
        nodes = [n for name in kept for n in groups.get(name, [name])]
        path = quantizer.quantize(tmp_path / f"c{next(counter)}.onnx", nodes)
        return measure_psnr(session_fn(path, exact=True), val, SIZE).psnr_y

    float_psnr = measure_psnr(torch_batch_fn(model), val, SIZE).psnr_y
    result = search(groups, measure, float_psnr, measure([]), 0.1)
    costs = {c.group: c.cost_db for c in result.sensitivity}
    assert costs["Conv:norm-input"] > 1.0 > costs["Conv"]
    assert result.met and result.kept_float[0] == "Conv:norm-input"


# --- the other targets (slow: litert-torch / coremltools conversions) ----------------


@pytest.mark.slow
def test_tflite_int8_measured_against_float(data, tmp_path):
    """Measured on XNNPACK (int32 accumulation on every CPU); whether LiteRT's own kernels
    load the file is reported: PT2E's int8 LOGISTIC has an output scale they refuse."""
    report = _export("tflite", "int8", data, tmp_path)
    q = report.quantization
    assert abs(q["delta_db"]) < 1.0 and q["io"]["input"]["dtype"] in ("int8", "float32")
    assert report.parity["status"] == "passed" and "XNNPACK" in q["gate"]
    builtin = q["builtin_kernels"]
    assert builtin["runs"] or "LOGISTIC" in builtin["error"], builtin


def test_coreml_int8_and_w8_are_valid_and_measured_on_the_program(data, tmp_path):
    from edgesr.coreml_eval import REFERENCE_RUNTIME

    for precision, max_drop in (("w8", 0.1), ("int8", 1.0)):
        report = _export("coreml", precision, data, tmp_path, name=f"m_{precision}")
        q = report.quantization
        assert q["structure"]["model_type"] == "mlProgram"
        assert q["structure"]["int8_ops"], q["structure"]["ops"]
        # PSNR-Y of the written ML program (Apple's runtime on macOS), not of PyTorch.
        assert q["quantized"]["measured_with"] in (REFERENCE_RUNTIME, "MLModel.predict (compute units all)")
        assert abs(q["delta_db"]) < max_drop, q



def test_coreml_int8_keeps_the_chosen_groups_in_float(data, tmp_path):
    """--keep-float for coreml (the PT2E graph shared with tflite): the first Conv's weight
    stays float in the ML program, and the report's int8 share of the MACs drops."""
    plain = _export("coreml", "int8", data, tmp_path, name="plain").quantization
    kept = _export("coreml", "int8", data, tmp_path, name="kept", keep_float=("Conv:first",)).quantization
    int8_weights = "constexpr_affine_dequantize"
    assert kept["structure"]["int8_ops"][int8_weights] == plain["structure"]["int8_ops"][int8_weights] - 1
    assert kept["kept_float"]["groups"] == ["Conv:first"] and len(kept["kept_float"]["nodes"]) == 1
    assert kept["macs"]["int8_fraction"] < plain["macs"]["int8_fraction"]
    assert abs(kept["delta_db"]) < 1.0

_CALIBRATION_MEMORY = r"""
import resource, sys
from pathlib import Path
import numpy as np, onnx
from onnx import TensorProto, helper
from edgesr.calibration import CalibrationSet
from edgesr.quantize.onnx_quant import OnnxQuantizer

work, links = Path(sys.argv[1]), int(sys.argv[2])
shape = [1, 3, 512, 512]  # 3 MB per tensor
nodes = [helper.make_node("Relu" if i % 2 else "Sigmoid", [f"t{i}"], [f"t{i + 1}"], name=f"n{i}")
         for i in range(links)]
graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info(f"t{links}", TensorProto.FLOAT, shape)])
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), work / "chain.onnx")
patches = np.random.default_rng(0).random((2, *shape[1:]), dtype=np.float32)
quantizer = OnnxQuantizer(work / "chain.onnx", work, CalibrationSet("test", (512, 512), 0, patches))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
quantizer.calibrate()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_calibration_frees_each_tensor_after_its_reduction(tmp_path):
    """onnxruntime's calibration graph, run in its default order, keeps every tensor of
    the graph alive (HiT-SRF at 128x128: 12.7 GB, OOM-killed); edgesr's calibration must
    stay near the plain graph's footprint. A chain of 80 tensors of 3 MB: 240 MB if all
    are kept, a few tensors' worth if each is freed after its ReduceMin/ReduceMax."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _CALIBRATION_MEMORY, str(tmp_path), "80"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    grown_mb = float(result.stdout.split()[-1])
    assert grown_mb < 100, f"calibration grew the process by {grown_mb:.0f} MB"
    assert (tmp_path / "calibration.json").exists()


def test_zero_weights_of_a_padded_conv_are_not_counted_as_macs(data, tmp_path):
    from edgesr.calibration import load_calibration
    from edgesr.export.base import ExportOptions
    from edgesr.export.onnx_target import OnnxTarget
    from edgesr.quantize.onnx_quant import COMPUTE_OPS, OnnxQuantizer

    class PaddedDepthwise(nn.Module):  # 8 real channels padded to 16, as depthwise_padding does
        def __init__(self):
            super().__init__()
            self.expand = nn.Conv2d(3, 16, 1)
            self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
            self.reduce = nn.Conv2d(16, 3, 1)
            with torch.no_grad():
                for conv in (self.expand, self.depthwise):
                    conv.weight[8:] = 0
                self.reduce.weight[:, 8:] = 0

        def forward(self, x):
            return self.reduce(self.depthwise(self.expand(x)))

    float_path = tmp_path / "padded.onnx"
    with torch.no_grad():
        OnnxTarget().convert(PaddedDepthwise().eval(), torch.rand(1, 3, *SIZE), ExportOptions(input_size=SIZE),
                             float_path)
    quantizer = OnnxQuantizer(float_path, tmp_path / "work", load_calibration(data["calib"], SIZE, count=2, holdout=0),
                              op_types=COMPUTE_OPS)
    weights = {n.name: n.input[1].split(".")[0] for n in quantizer.model.graph.node if n.op_type == "Conv"}
    macs = {weights[n]: count for n, count in quantizer.node_macs().items()}
    pixels = SIZE[0] * SIZE[1]
    assert macs == {"expand": pixels * 8 * 3, "depthwise": pixels * 8 * 9, "reduce": pixels * 3 * 8}
