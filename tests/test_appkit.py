"""Model cards and app snippets (edgesr.appkit), checked against the exported files.

A tiny stand-in network (conv -> pixel shuffle, like tests/test_export.py) is exported
once per target; the export pipeline writes the card and the snippets beside it. The
tests read the tensor names, shapes, dtypes, layout and tiling constants back out of
the generated Swift/Kotlin text and compare them with the file itself (onnx graph,
LiteRT interpreter details, CoreML spec) and with edgesr.tiling. Where kotlinc exists,
the Kotlin snippets are compiled against stub API declarations and their tiling is
run against ``edgesr.tiling.tiled_upscale``; swiftc is used where it exists.
"""
from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edgesr import tiling
from edgesr.models.descriptor import ModelInfo, attach

SIZE = (16, 20)
SCALE = 2


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 3 * SCALE * SCALE, 3, padding=1)
        self.shuffle = nn.PixelShuffle(SCALE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.body(x)) + nn.functional.interpolate(x, scale_factor=SCALE, mode="nearest")


def toy_model() -> nn.Module:
    torch.manual_seed(0)
    network = Toy().eval()
    with torch.no_grad():
        network.body.weight.mul_(0.2)
    return attach(network, ModelInfo("toy", SCALE, {}, 1.0))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """target -> report of one export (with the app files the pipeline writes)."""
    from edgesr.export import export

    cache: dict = {}

    def get(target: str, **options):
        key = (target, tuple(sorted(options.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"appkit_{target}")
            cache[key] = export(toy_model(), target, input_size=SIZE, out_dir=out,
                                delegate_ready=False, **options)
        return cache[key]

    return get


# --- reading the snippets back -------------------------------------------------------------

def constant(code: str, name: str) -> str:
    """The literal of ``NAME = ...`` (Kotlin ``const val``/``val``, Swift ``static let``)."""
    match = re.search(rf"(?:const val|val|static let) {name}(?:: [^=]+)? = (.+?)\s*(?://.*)?$", code, re.M)
    assert match, f"{name} not found in the snippet"
    return match.group(1).strip()


def string_constant(code: str, name: str) -> str:
    literal = constant(code, name)
    assert literal.startswith('"') and literal.endswith('"'), literal
    return literal[1:-1]


def list_constant(code: str, name: str) -> list[int]:
    literal = constant(code, name)
    inner = re.fullmatch(r"(?:intArrayOf|longArrayOf)\((.*)\)|\[(.*)\]", literal)
    assert inner, literal
    return [int(v) for v in (inner.group(1) or inner.group(2)).split(",")]


KOTLIN_NAMES = {"tile_h": "TILE_H", "tile_w": "TILE_W", "overlap": "OVERLAP", "scale": "SCALE",
                "fixed": "FIXED_TILE", "zero_num": "ZERO_ZONE_NUM", "zero_den": "ZERO_ZONE_DEN",
                "window": "BLEND_WINDOW", "input": "INPUT_NAME", "output": "OUTPUT_NAME",
                "in_shape": "INPUT_SHAPE", "out_shape": "OUTPUT_SHAPE", "in_dtype": "INPUT_DTYPE",
                "out_dtype": "OUTPUT_DTYPE", "in_layout": "INPUT_LAYOUT", "out_layout": "OUTPUT_LAYOUT",
                "file": "MODEL_FILE"}
SWIFT_NAMES = {"tile_h": "tileH", "tile_w": "tileW", "overlap": "overlap", "scale": "scale",
               "fixed": "fixedTile", "zero_num": "zeroZoneNum", "zero_den": "zeroZoneDen",
               "window": "blendWindow", "input": "inputName", "output": "outputName",
               "in_shape": "inputShape", "out_shape": "outputShape", "in_dtype": "inputDType",
               "out_dtype": "outputDType", "in_layout": "inputLayout", "out_layout": "outputLayout",
               "file": "modelFile"}


def snippet_facts(code: str, lang: str) -> dict:
    n = KOTLIN_NAMES if lang == "kotlin" else SWIFT_NAMES
    return {
        "file": string_constant(code, n["file"]),
        "input": string_constant(code, n["input"]), "output": string_constant(code, n["output"]),
        "in_shape": list_constant(code, n["in_shape"]), "out_shape": list_constant(code, n["out_shape"]),
        "in_dtype": string_constant(code, n["in_dtype"]), "out_dtype": string_constant(code, n["out_dtype"]),
        "in_layout": string_constant(code, n["in_layout"]), "out_layout": string_constant(code, n["out_layout"]),
        "tile": (int(constant(code, n["tile_h"])), int(constant(code, n["tile_w"]))),
        "overlap": int(constant(code, n["overlap"])), "scale": int(constant(code, n["scale"])),
        "fixed": constant(code, n["fixed"]) == "true",
        "zero_zone": (int(constant(code, n["zero_num"])), int(constant(code, n["zero_den"]))),
        "window": string_constant(code, n["window"]),
    }


def expected_tiling(arch, input_size) -> dict:
    """What `edgesr upscale` uses for this file (edgesr.upscale.open_upscaler's rule)."""
    defaults = tiling.defaults_for(arch)
    sides = tuple(input_size) if input_size else (defaults.tile, defaults.tile)
    return {"tile": sides, "overlap": min(defaults.overlap, min(sides) // 4), "fixed": input_size is not None}


def check_common(code: str, lang: str, artifact: Path, name_in: str, name_out: str,
                 shape_in: list[int], shape_out: list[int], dtype_in: str, dtype_out: str,
                 layout: str) -> dict:
    facts = snippet_facts(code, lang)
    assert facts["file"] == artifact.name
    assert (facts["input"], facts["output"]) == (name_in, name_out)
    assert (facts["in_shape"], facts["out_shape"]) == (shape_in, shape_out)
    assert (facts["in_dtype"], facts["out_dtype"]) == (dtype_in, dtype_out)
    assert facts["in_layout"] == facts["out_layout"] == layout
    # Tiling: constants from edgesr.tiling, tile/overlap as `edgesr upscale` picks them.
    want = expected_tiling("toy", SIZE)
    assert facts["tile"] == want["tile"] and facts["overlap"] == want["overlap"]
    assert facts["fixed"] is want["fixed"] and facts["scale"] == SCALE
    assert facts["zero_zone"] == (tiling.ZERO_ZONE_NUM, tiling.ZERO_ZONE_DEN)
    assert facts["window"] == tiling.BLEND_WINDOW
    # No tensor name typed as a literal anywhere else: the code uses the constants.
    literals = re.findall(r'"([^"\\]*)"', code)
    assert literals.count(name_in) == 1 and literals.count(name_out) == 1
    return facts


def tensor_index_in_code(code: str, layout: str) -> None:
    """The flat index used to fill the input matches the file's layout."""
    index = "(c * h + y) * w + x" if layout == "NCHW" else "(y * w + x) * 3 + c"
    assert index in code, f"{layout} indexing missing"


# --- the tests ---------------------------------------------------------------------------

def test_onnx_card_and_snippets_match_the_file(exported):
    import onnx

    report = exported("onnx")
    artifact = Path(report.artifact)
    graph = onnx.load(str(artifact)).graph
    (graph_in,), (graph_out,) = graph.input, graph.output
    dims = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(graph_in) == [1, 3, *SIZE]
    kotlin, swift = Path(f"{artifact}.kt").read_text(), Path(f"{artifact}.swift").read_text()
    for code, lang in ((kotlin, "kotlin"), (swift, "swift")):
        check_common(code, lang, artifact, graph_in.name, graph_out.name, dims(graph_in), dims(graph_out),
                     "float32", "float32", "NCHW")
        tensor_index_in_code(code, "NCHW")
    assert "ORTSession" in swift and "OrtSession" in kotlin

    card = json.loads(Path(f"{artifact}.card.json").read_text())
    assert card["io"]["input"]["name"] == graph_in.name and card["io"]["input"]["shape"] == dims(graph_in)
    assert card["io"]["output"]["shape"] == dims(graph_out)
    assert card["io"]["input"]["layout"] == "NCHW" and card["io"]["input"]["color"] == "RGB"
    assert card["parity"]["status"] == "passed"
    assert card["tiling"]["tile"] == list(SIZE) and card["tiling"]["overlap"] == expected_tiling("toy", SIZE)["overlap"]
    assert card["latency"]["runtime"].startswith("onnxruntime") and card["latency"]["median_ms"] > 0
    assert card["snippets"] == {"swift": f"{artifact.name}.swift", "kotlin": f"{artifact.name}.kt"}
    text = Path(f"{artifact}.card.md").read_text()
    assert f"`{graph_in.name}`" in text and "NCHW" in text and "Parity" in text


def test_tflite_nhwc_snippet_matches_interpreter_details(exported):
    from ai_edge_litert.interpreter import Interpreter

    report = exported("tflite", nhwc=True)
    artifact = Path(report.artifact)
    interpreter = Interpreter(model_path=str(artifact))
    (detail_in,), (detail_out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert not Path(f"{artifact}.swift").exists()
    kotlin = Path(f"{artifact}.kt").read_text()
    check_common(kotlin, "kotlin", artifact, detail_in["name"], detail_out["name"],
                 [int(d) for d in detail_in["shape"]], [int(d) for d in detail_out["shape"]],
                 "float32", "float32", "NHWC")
    assert [int(d) for d in detail_in["shape"]] == [1, *SIZE, 3]
    tensor_index_in_code(kotlin, "NHWC")
    assert "GpuDelegate" in kotlin and "setNumThreads" in kotlin  # GPU with a CPU fallback
    card = json.loads(Path(f"{artifact}.card.json").read_text())
    assert card["io"]["input"]["layout"] == "NHWC"


def test_coreml_image_io_snippet_matches_spec(exported):
    from coremltools.models.utils import load_spec

    report = exported("coreml", image_io=True)
    artifact = Path(report.artifact)
    spec = load_spec(str(artifact))
    feature_in, feature_out = spec.description.input[0], spec.description.output[0]
    image = feature_in.type.imageType
    assert not Path(f"{artifact}.kt").exists()
    swift = Path(f"{artifact}.swift").read_text()
    facts = snippet_facts(swift, "swift")
    assert (facts["input"], facts["output"]) == (feature_in.name, feature_out.name)
    assert facts["in_shape"] == [1, image.height, image.width, 3] == [1, *SIZE, 3]
    assert facts["in_dtype"] == "image" and facts["in_layout"] == "image"
    assert "CVPixelBuffer" in swift and "MLFeatureValue(pixelBuffer:" in swift
    assert f'forResource: "{artifact.with_suffix("").name}", withExtension: "mlmodelc"' in swift
    assert facts["tile"] == SIZE and facts["fixed"]
    card = json.loads(Path(f"{artifact}.card.json").read_text())
    assert card["io"]["input"]["kind"] == "image" and card["io"]["input"]["color"] == "RGB"
    assert "macOS" in card["latency"]["note"]


def test_snippet_cli_prints_the_written_file_and_refuses_other_languages(exported):
    from edgesr.cli import app

    artifact = Path(exported("onnx").artifact)
    runner = CliRunner()
    result = runner.invoke(app, ["snippet", str(artifact), "--lang", "kotlin"])
    assert result.exit_code == 0, result.output
    assert result.output == Path(f"{artifact}.kt").read_text()
    tflite = Path(exported("tflite", nhwc=True).artifact)
    result = runner.invoke(app, ["snippet", str(tflite), "--lang", "swift"])
    assert result.exit_code != 0 and "no swift snippet" in result.output


def test_kotlin_tiling_equals_edgesr_tiling_without_compilers():
    """Without any compiler: the emitted constants and formulas are tiling.py's."""
    from edgesr.appkit.snippets import render
    from edgesr.appkit.artifact_io import ArtifactFacts, TensorFacts

    tensor = TensorFacts("x", "tensor", (1, 3, None, None), "float32", "NCHW", "RGB", "[0, 1]")
    facts = ArtifactFacts("m.onnx", "onnx", tensor, tensor, "hit-srf", 4, "fp32", None, None)
    spec = tiling.tiling_spec()
    for lang in ("kotlin", "swift"):
        code = render(facts, lang)
        got = snippet_facts(code, lang)
        defaults = tiling.defaults_for("hit-srf")
        assert got["tile"] == (defaults.tile, defaults.tile) and got["overlap"] == defaults.overlap
        assert got["fixed"] is False
        for formula in ("tile_count", "tile_start", "zero_zone", "ramp_length"):
            assert spec[formula] in code


def uint8_tflite_facts():
    """An --int-io TFLite file's I/O (uint8 pixels, scale 1/255), without exporting one."""
    from edgesr.appkit.artifact_io import ArtifactFacts, TensorFacts

    quant = (1 / 255, 0)
    tensor_in = TensorFacts("in_q", "tensor", (1, *SIZE, 3), "uint8", "NHWC", "RGB", "pixels", quant)
    tensor_out = TensorFacts("out_q", "tensor", (1, SIZE[0] * SCALE, SIZE[1] * SCALE, 3), "uint8", "NHWC",
                             "RGB", "pixels", quant)
    return ArtifactFacts("q.tflite", "tflite", tensor_in, tensor_out, "toy", SCALE, "int8", SIZE, None)


def test_uint8_tflite_snippet_quantizes_with_the_file_parameters():
    from edgesr.appkit.snippets import render

    code = render(uint8_tflite_facts(), "kotlin")
    facts = snippet_facts(code, "kotlin")
    assert facts["in_dtype"] == facts["out_dtype"] == "uint8"
    assert float(constant(code, "INPUT_QUANT_SCALE").rstrip("f")) == pytest.approx(1 / 255)
    assert int(constant(code, "INPUT_ZERO_POINT")) == 0
    assert "input.put(at, Math.rint(v / INPUT_QUANT_SCALE" in code and "coerceIn(0, 255)" in code
    assert "OUTPUT_QUANT_SCALE * ((output.get(at).toInt() and 0xFF) - OUTPUT_ZERO_POINT)" in code
    assert "ByteBuffer.allocateDirect(h * w * 3 * 1)" in code


# --- compilers --------------------------------------------------------------------------

KOTLIN_STUBS = {
    "android_graphics.kt": """
package android.graphics
class Bitmap private constructor(val width: Int, val height: Int) {
    enum class Config { ARGB_8888 }
    private val data = IntArray(width * height)
    fun getPixels(pixels: IntArray, offset: Int, stride: Int, x: Int, y: Int, width: Int, height: Int) {
        for (r in 0 until height) for (c in 0 until width) pixels[offset + r * stride + c] = data[(y + r) * this.width + x + c]
    }
    fun setPixels(pixels: IntArray, offset: Int, stride: Int, x: Int, y: Int, width: Int, height: Int) {
        for (r in 0 until height) for (c in 0 until width) data[(y + r) * this.width + x + c] = pixels[offset + r * stride + c]
    }
    companion object {
        @JvmStatic fun createBitmap(width: Int, height: Int, config: Config): Bitmap = Bitmap(width, height)
    }
}
""",
    "android_content.kt": """
package android.content
import android.content.res.AssetManager
abstract class Context { abstract val assets: AssetManager }
""",
    "android_content_res.kt": """
package android.content.res
class AssetFileDescriptor(val fileDescriptor: java.io.FileDescriptor, val startOffset: Long, val declaredLength: Long)
abstract class AssetManager { abstract fun openFd(name: String): AssetFileDescriptor }
""",
    "tflite.kt": """
package org.tensorflow.lite
class Tensor { fun shape(): IntArray = IntArray(0); fun name(): String = "" }
interface Delegate : AutoCloseable
class Interpreter(model: java.nio.ByteBuffer, options: Options) : AutoCloseable {
    class Options {
        fun setNumThreads(threads: Int): Options = this
        fun addDelegate(delegate: Delegate): Options = this
    }
    fun getInputTensor(index: Int): Tensor = Tensor()
    fun run(input: Any, output: Any) {}
    override fun close() {}
}
""",
    "tflite_gpu.kt": """
package org.tensorflow.lite.gpu
open class GpuDelegateFactory { open class Options }
class CompatibilityList : AutoCloseable {
    val isDelegateSupportedOnThisDevice: Boolean get() = false
    val bestOptionsForThisDevice: GpuDelegateFactory.Options get() = GpuDelegateFactory.Options()
    override fun close() {}
}
class GpuDelegate(options: GpuDelegateFactory.Options) : org.tensorflow.lite.Delegate { override fun close() {} }
""",
    "onnxruntime.kt": """
package ai.onnxruntime
open class OrtException(message: String) : Exception(message)
interface OnnxValue : AutoCloseable
class OrtEnvironment private constructor() {
    fun createSession(model: ByteArray, options: OrtSession.SessionOptions): OrtSession = OrtSession()
    companion object { @JvmStatic fun getEnvironment(): OrtEnvironment = OrtEnvironment() }
}
class OnnxTensor private constructor() : OnnxValue {
    val floatBuffer: java.nio.FloatBuffer get() = java.nio.FloatBuffer.allocate(0)
    override fun close() {}
    companion object {
        @JvmStatic fun createTensor(env: OrtEnvironment, data: java.nio.FloatBuffer, shape: LongArray): OnnxTensor = OnnxTensor()
    }
}
class OrtSession : AutoCloseable {
    class SessionOptions : AutoCloseable {
        fun setIntraOpNumThreads(threads: Int) {}
        fun addNnapi() {}
        override fun close() {}
    }
    class Result : AutoCloseable, Iterable<Map.Entry<String, OnnxValue>> {
        fun get(name: String): java.util.Optional<OnnxValue> = java.util.Optional.empty()
        override fun iterator(): Iterator<Map.Entry<String, OnnxValue>> = emptyList<Map.Entry<String, OnnxValue>>().iterator()
        override fun close() {}
    }
    fun run(inputs: Map<String, OnnxTensor>): Result = Result()
    override fun close() {}
}
""",
}

# Runs the generated tiling on a position-dependent fake network and prints the result.
KOTLIN_MAIN = """
fun main(args: Array<String>) {
    val h = args[0].toInt(); val w = args[1].toInt()
    val rgb = FloatArray(h * w * 3) { i -> ((i * 37) % 101) / 100f }
    val s = {cls}.SCALE
    val out = {cls}.tiledUpscale(rgb, h, w) { tile, th, tw ->
        val result = FloatArray(th * s * tw * s * 3)
        for (y in 0 until th * s) for (x in 0 until tw * s) for (c in 0 until 3)
            result[(y * tw * s + x) * 3 + c] = tile[((y / s) * tw + x / s) * 3 + c] * (1f + y.toFloat() / (th * s)) + x.toFloat() / (tw * s)
        result
    }
    println(out.joinToString(" "))
}
"""


def fake_network(tile: np.ndarray, scale: int) -> np.ndarray:
    th, tw, _ = tile.shape
    up = tile.repeat(scale, 0).repeat(scale, 1)
    ys = (np.arange(th * scale, dtype=np.float32) / (th * scale))[:, None, None]
    xs = (np.arange(tw * scale, dtype=np.float32) / (tw * scale))[None, :, None]
    return (up * (np.float32(1) + ys) + xs).astype(np.float32)


def _kotlinc() -> str:
    compiler = shutil.which("kotlinc")
    if compiler is None:
        pytest.skip("no Kotlin compiler (kotlinc) on this machine: snippets are checked by parsing only "
                    "(Debian: apt-get install kotlin)")
    return compiler


def test_kotlin_snippets_compile_and_tile_like_edgesr(exported, tmp_path):
    compiler = _kotlinc()
    from edgesr.appkit.snippets import class_name

    sources = []
    for name, text in KOTLIN_STUBS.items():
        (tmp_path / name).write_text(text)
        sources.append(str(tmp_path / name))
    onnx_artifact = Path(exported("onnx").artifact)
    tflite_artifact = Path(exported("tflite", nhwc=True).artifact)
    for artifact in (onnx_artifact, tflite_artifact):
        sources.append(f"{artifact}.kt")
    from edgesr.appkit.snippets import render

    (tmp_path / "q.tflite.kt").write_text(render(uint8_tflite_facts(), "kotlin"))
    sources.append(str(tmp_path / "q.tflite.kt"))
    cls = class_name(onnx_artifact.with_suffix("").name, "onnx")
    main = tmp_path / "Main.kt"
    main.write_text(KOTLIN_MAIN.replace("{cls}", cls))
    jar = tmp_path / "snippets.jar"
    done = subprocess.run([compiler, "-nowarn", *sources, str(main), "-include-runtime", "-d", str(jar)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    java = shutil.which("java")
    if java is None:
        pytest.skip("compiled, but no java to run the tiling check")
    plan_tile, overlap = SIZE, expected_tiling("toy", SIZE)["overlap"]
    for h, w in ((37, 45), (11, 50), (16, 20)):  # several tiles; a padded short side; one tile
        rgb = ((np.arange(h * w * 3) * 37) % 101 / 100).astype(np.float32).reshape(h, w, 3)
        plan = tiling.plan_tiles(h, w, SCALE, plan_tile, overlap, fixed=True)
        want = tiling.tiled_upscale(lambda t: fake_network(t, SCALE), rgb, plan)
        ran = subprocess.run([java, "-cp", str(jar), "MainKt", str(h), str(w)],
                             capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0, ran.stderr[-2000:]
        got = np.array(ran.stdout.split(), np.float32).reshape(h * SCALE, w * SCALE, 3)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_swift_snippets_compile(exported, tmp_path):
    compiler = shutil.which("swiftc")
    if compiler is None:
        pytest.skip("no Swift compiler (swiftc) on this machine (Debian has no Swift toolchain package); "
                    "Swift snippets are checked by parsing only")
    if platform.system() != "Darwin":
        pytest.skip("swiftc found, but Core ML/CoreVideo/CoreGraphics exist only in Apple SDKs; no "
                    "Linux stubs for them are maintained")
    swift = Path(exported("coreml", image_io=True).artifact + ".swift")
    done = subprocess.run([compiler, "-typecheck", str(swift)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
