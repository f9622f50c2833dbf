"""The export pipeline with a tiny stand-in network (conv -> pixel shuffle).

Every conversion costs seconds, so each (target, precision) is exported once per
session (module-scoped fixture) and the tests read what it produced.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edgesr.errors import EdgeSRError
from edgesr.export import export, get_target
from edgesr.export import parity as parity_module
from edgesr.models.descriptor import ModelInfo, attach

SIZE = (24, 32)
TARGETS = ("onnx", "tflite", "coreml")


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 12, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.body(x)) + nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def toy_model() -> nn.Module:
    torch.manual_seed(0)
    network = Toy().eval()
    with torch.no_grad():
        network.body.weight.mul_(0.2)
    return attach(network, ModelInfo("toy", 2, {}, 1.0))


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _bytes(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return {"": path.read_bytes()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(target, precision) -> (report, out_dir), each exported once."""
    cache: dict = {}

    def get(target: str, precision: str = "fp32", **options):
        key = (target, precision, tuple(sorted(options.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"{target}_{precision}")
            report = export(toy_model(), target, input_size=SIZE, precision=precision,
                            out_dir=out, **options)
            cache[key] = (report, out)
        return cache[key]

    return get


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_export_writes_artifact_report_and_metadata(exported, target, precision):
    report, out = exported(target, precision)
    suffix = get_target(target).suffix
    artifact = out / f"toy_x2_24x32_{precision}{suffix}"
    assert Path(report.artifact) == artifact and artifact.exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary folder left behind"

    saved = json.loads((out / f"toy_x2_24x32_{precision}{suffix}.report.json").read_text())
    for key in ("status", "target", "artifact", "size_bytes", "model", "options", "metadata",
                "rewrites", "parity", "timings_s", "random_weights"):
        assert key in saved
    assert saved["random_weights"] is True
    assert saved["size_bytes"] > 0

    metadata = get_target(target).read_metadata(artifact)
    assert metadata["edgesr.arch"] == "toy"
    assert metadata["edgesr.scale"] == "2"
    assert metadata["edgesr.input_size"] == "24x32"
    assert metadata["edgesr.layout"] == "NCHW"
    assert metadata["edgesr.precision"] == precision
    assert metadata["edgesr.value_range"] == "RGB float32 [0,1] in and out, clamped"
    assert "random" in metadata["edgesr.source_sha256"]
    assert {k: v for k, v in metadata.items() if k.startswith("edgesr.")} == saved["metadata"]

    checks = saved["parity"]["checks"]
    assert len(checks) == 2
    assert saved["status"] == "passed"
    for check in checks:
        assert check["status"] == "passed"
        if target == "coreml" and sys.platform != "darwin":
            # Off macOS the ML program runs in edgesr's reference evaluator, and says so.
            assert check["runtime"] == "reference evaluation of the ML program (not Apple's runtime)"
        if precision == "fp32":
            assert check["max_abs"] <= 1e-4
        else:
            assert check["psnr"] >= 45


@pytest.mark.parametrize("target", TARGETS)
def test_export_is_deterministic(exported, tmp_path, target):
    first, _ = exported(target)
    again = export(toy_model(), target, input_size=SIZE, out_dir=tmp_path, check=False)
    assert _bytes(Path(first.artifact)) == _bytes(Path(again.artifact))


def test_onnx_dynamic_runs_other_sizes(exported):
    report, _ = exported("onnx", dynamic=True)
    assert Path(report.artifact).name == "toy_x2_dyn_fp32.onnx"
    assert report.metadata["edgesr.input_size"] == "dynamic"
    dynamic_check = report.parity["checks"][-1]
    assert dynamic_check["input"].startswith("random, dynamic batch and size 2x3x")
    assert dynamic_check["status"] == "passed"


def test_tflite_nhwc_takes_and_returns_nhwc(exported):
    report, _ = exported("tflite", nhwc=True)
    assert report.status == "passed"
    assert report.metadata["edgesr.layout"] == "NHWC"
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=report.artifact)
    assert tuple(interpreter.get_input_details()[0]["shape"]) == (1, *SIZE, 3)
    assert tuple(interpreter.get_output_details()[0]["shape"]) == (1, 2 * SIZE[0], 2 * SIZE[1], 3)


def test_coreml_image_io_and_enumerated_shapes(tmp_path):
    report = export(toy_model(), "coreml", input_size=SIZE, out_dir=tmp_path, image_io=True,
                    shapes=[(48, 48)], precision="fp16")
    from coremltools.models.utils import load_spec

    spec = load_spec(report.artifact)
    image = spec.description.input[0].type.imageType
    assert [(s.height, s.width) for s in image.enumeratedSizes.sizes] == [SIZE, (48, 48)]
    assert spec.description.output[0].type.WhichOneof("Type") == "imageType"
    assert spec.description.metadata.author.startswith("edgesr")
    assert report.metadata["edgesr.shapes"] == "24x32,48x48"


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_failed_parity_leaves_no_artifact(tmp_path, monkeypatch, target):
    monkeypatch.setattr(parity_module, "FP32_MAX_ABS", 0.0)
    monkeypatch.setattr(get_target(target).__class__, "run",
                        lambda self, path, batch, options, device="cpu":
                        np.repeat(np.repeat(batch, 2, axis=2), 2, axis=3) * 0.5)
    with pytest.raises(EdgeSRError, match="parity check failed"):
        export(toy_model(), target, input_size=SIZE, out_dir=tmp_path)
    name = f"toy_x2_24x32_fp32{get_target(target).suffix}.failed.report.json"
    assert _files(tmp_path) == [name]
    saved = json.loads((tmp_path / name).read_text())
    assert saved["status"] == "failed" and saved["artifact"] is None


@pytest.mark.parametrize("target, options, message", [
    ("tflite", {"dynamic": True}, "--dynamic does not apply to tflite"),
    ("onnx", {"nhwc": True}, "--nhwc does not apply to onnx"),
    ("onnx", {"image_io": True}, "--image-io does not apply to onnx"),
    ("tflite", {"shapes": [(32, 32)]}, "--shapes does not apply to tflite"),
    ("coreml", {"min_ios": 12}, "--min-ios 12"),
    ("onnx", {"precision": "int4"}, "supports fp32, fp16, int8, w8"),
    ("onnx", {"precision": "int8"}, "--precision int8 needs --calib DIR"),
    ("onnx", {"input_size": (2, 64)}, "below toy's minimum"),
    ("onnx", {"device": "tpu"}, "--device 'tpu'"),
    ("caffe", {}, "unknown target 'caffe'; known: onnx, tflite, coreml"),
    ("onnx", {"colour": "red"}, "unknown export option"),
])
def test_bad_options_rejected_before_any_work(tmp_path, target, options, message):
    out = tmp_path / "out"
    with pytest.raises(EdgeSRError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        export(toy_model(), target, out_dir=out, **{"input_size": SIZE, **options})
    assert "\n" not in str(error.value)
    assert not out.exists()


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EdgeSRError, match="cannot create the output folder|not a folder"):
        export(toy_model(), "onnx", input_size=SIZE, out_dir=blocker / "sub")


def test_cli_export_json(tmp_path, monkeypatch):
    from edgesr import cli
    from edgesr.export import command

    monkeypatch.setattr(command, "_load_model", lambda *args: toy_model())
    runner = CliRunner()
    result = runner.invoke(cli.app, ["export", "--model", "toy", "--scale", "2", "--target", "onnx",
                                     "--input-size", "24x32", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["status"] == "passed"
    assert Path(payload["artifact"]).exists()

    result = runner.invoke(cli.app, ["export", "--model", "toy", "--scale", "2", "--target", "onnx",
                                     "--input-size", "24x32", "--out", str(tmp_path / "h")])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout and "parity (max abs <= 0.0001): passed" in result.stdout
    assert "random weights" in result.stdout


def test_cli_bad_input_is_one_line(tmp_path):
    from edgesr import cli

    runner = CliRunner()
    out = tmp_path / "out"
    for arguments in (["--model", "srconvnet", "--scale", "2", "--target", "caffe"],
                      ["--model", "srconvnet", "--scale", "2", "--target", "tflite", "--dynamic"],
                      ["--model", "nosuchnet", "--scale", "2", "--target", "onnx"],
                      ["--model", "srconvnet", "--scale", "2", "--target", "onnx", "--input-size", "1x1"]):
        result = runner.invoke(cli.app, ["export", *arguments, "--out", str(out)])
        assert result.exit_code == 2, (arguments, result.output)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
        assert not out.exists()


@pytest.mark.parametrize("arch, hparams", [
    ("hit-srf", dict(embed_dim=16, depths=[2], num_heads=[1])),
    ("hit-sng", dict(embed_dim=16, depths=[2], num_heads=[1])),
    ("srconvnet", dict(dim=16, num_blocks=1, num_heads=2, num_kernels=4)),
])
def test_dynamic_onnx_is_right_at_other_sizes_and_batches(tmp_path, arch, hparams):
    """The any-size graphs. HiT-SR: reflect padding as in-graph gathers of the border,
    window counts from the input's shape. SRConvNet: the Fourier unit's H split chosen in
    the graph (16 = 4x4, 9 = 3x3, 30 = 5x6, 37 prime: one stage), the dynamic conv's
    runtime weight for batch 1. The export's own parity check already ran batch 2 at
    another size; here batch 1 and 3 at sizes that are not multiples of any window."""
    import onnx
    import onnxruntime as ort

    from edgesr.models.contract import with_unit_range
    from edgesr.models.loading import create

    torch.manual_seed(0)
    model = create(arch, 2, **hparams).eval()
    report = export(model, "onnx", input_size=(16, 16), dynamic=True, out_dir=tmp_path)
    assert report.status == "passed", report.parity
    session = ort.InferenceSession(report.artifact)
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    graph = onnx.load_model(report.artifact).graph
    if arch.startswith("hit"):  # reflect padding gathers the border only, appended to the map
        users = {name: node.op_type for node in graph.node for name in node.input}
        gathers = [node for node in graph.node if node.op_type == "Gather"]
        assert len(gathers) == 2 * sum(hparams["depths"]) and all(users[g.output[0]] == "Concat" for g in gathers)
    if arch == "srconvnet":  # each dynamic conv: the runtime-weight conv for batch 1, the bank for more
        branches = [node for node in graph.node if node.op_type == "If"]
        assert len(branches) == 2 * hparams["num_blocks"]
        constants = {tensor.name for tensor in graph.initializer}
        for node in branches:
            then_branch = next(attr.g for attr in node.attribute if attr.name == "then_branch")
            constants |= {tensor.name for tensor in then_branch.initializer}
            convs = [n for n in then_branch.node if n.op_type == "Conv"]
            assert len(convs) == 1 and convs[0].input[1] not in constants
    reference = with_unit_range(model).eval()
    for batch, height, width in [(1, 16, 16), (1, 9, 30), (3, 37, 21), (1, 30, 37)]:
        x = np.random.default_rng(height).random((batch, 3, height, width), dtype=np.float32)
        (got,) = session.run(None, {"input": x})
        with torch.no_grad():
            expected = reference(torch.from_numpy(x)).numpy()
        assert got.shape == expected.shape == (batch, 3, 2 * height, 2 * width)
        assert np.abs(got - expected).max() <= 1e-4


def test_onnx_export_leaves_out_the_quadratic_rewrite_rule():
    """onnxscript's SlicesSplit rule scans the whole graph for every Slice (70 % of
    HiT-SRF's export time); the exporter runs without it, and the rule list is restored."""
    from onnxscript import rewriter

    from edgesr.export.onnx_target import QUADRATIC_REWRITE_RULES, _without_rewrite_rules

    def names():
        return {rule.name for rule in rewriter._DEFAULT_REWRITE_RULES}

    before = names()
    assert QUADRATIC_REWRITE_RULES <= before  # present in this onnxscript: leaving it out does something
    with _without_rewrite_rules(QUADRATIC_REWRITE_RULES):
        assert not names() & QUADRATIC_REWRITE_RULES and names() | QUADRATIC_REWRITE_RULES == before
    assert names() == before


def test_tflite_internal_tensors_get_short_names(exported):
    """litert-torch's module-path tensor names (hundreds of bytes each) are not shipped;
    the input and output keep theirs, and the file still runs (its parity passed)."""
    report, _ = exported("tflite")
    assert report.status == "passed"
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    buffer = Path(report.artifact).read_bytes()
    graph = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(buffer, 0)).subgraphs[0]
    visible = set(graph.inputs) | set(graph.outputs)
    internal = [(index, tensor.name.decode()) for index, tensor in enumerate(graph.tensors) if index not in visible]
    assert internal and all(name == f"t{index}" for index, name in internal)
    interpreter = Interpreter(model_path=report.artifact)
    io_names = {d["name"] for d in interpreter.get_input_details() + interpreter.get_output_details()}
    assert io_names == {graph.tensors[index].name.decode() for index in visible}
    assert not any(name.startswith("t") and name[1:].isdigit() for name in io_names)
