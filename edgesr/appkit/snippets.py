"""Swift and Kotlin code generated for one exported file.

Which snippets a file gets:

- ``.onnx``: Swift (ONNX Runtime, onnxruntime-objc) and Kotlin (ONNX Runtime Android);
- ``.tflite``: Kotlin (LiteRT ``Interpreter``, GPU delegate with CPU fallback);
- ``.mlpackage``: Swift (Core ML: ``MLMultiArray``, or ``CVPixelBuffer`` for --image-io).

Written beside the artifact as ``<artifact>.swift`` / ``<artifact>.kt`` (e.g.
``m.onnx.swift``, ``m.onnx.kt``, ``m.tflite.kt``, ``m.mlpackage.swift``).

Tensor names, shapes, dtypes, layout and 8-bit quantization come from the file
(``artifact_io.read_facts``). The tiling code and its constants come from
``edgesr.tiling`` (``tiling_plan`` below picks tile and overlap the way ``edgesr
upscale`` does), so an app cuts, pads and blends tiles exactly as the CLI does.

Templates are ``templates/*.tmpl`` with ``{{NAME}}`` placeholders (``$`` and ``\\(``
belong to Kotlin and Swift).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from edgesr.appkit.artifact_io import ArtifactFacts, TensorFacts, read_facts
from edgesr.errors import EdgeSRError

LANGS = ("swift", "kotlin")
SUFFIXES = {"swift": ".swift", "kotlin": ".kt"}
# format -> {lang: (template, runtime in words)}
KINDS: dict[str, dict[str, tuple[str, str]]] = {
    "onnx": {"swift": ("ort_ios.swift.tmpl", "ONNX Runtime (iOS, onnxruntime-objc)"),
             "kotlin": ("ort_android.kt.tmpl", "ONNX Runtime (Android, onnxruntime-android)")},
    "tflite": {"kotlin": ("litert.kt.tmpl", "LiteRT Interpreter (GPU delegate, CPU fallback)")},
    "coreml": {"swift": ("coreml.swift.tmpl", "Core ML (MLModel)")},
}
_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


@dataclass(frozen=True)
class TilingPlan:
    """Tile and overlap an app should use for this file (what ``edgesr upscale`` uses)."""

    tile: tuple[int, int]
    overlap: int
    scale: int
    fixed: bool  # the file takes only ``tile``-sized inputs
    min_tile: int
    why: str

    def to_dict(self) -> dict:
        from edgesr import tiling

        return {"tile": list(self.tile), "overlap": self.overlap, "scale": self.scale,
                "fixed": self.fixed, "min_tile": self.min_tile, "blend_window": tiling.BLEND_WINDOW,
                "zero_zone": tiling.zero_zone(self.overlap), "why": self.why}


def tiling_plan(facts: ArtifactFacts) -> TilingPlan:
    """The tile/overlap rule of ``edgesr.upscale.open_upscaler`` for an artifact."""
    from edgesr import tiling

    defaults = tiling.defaults_for(facts.arch)
    fixed = facts.input_size is not None
    sides = tuple(facts.input_size) if fixed else (defaults.tile, defaults.tile)
    overlap = min(defaults.overlap, min(sides) // 4)
    min_tile = 1 if fixed else defaults.min_tile
    tiling.check_tiling(sides, overlap, min_tile)
    return TilingPlan(tile=sides, overlap=overlap, scale=facts.scale, fixed=fixed, min_tile=min_tile,
                      why=defaults.why)


def kinds_for(fmt: str) -> dict[str, tuple[str, str]]:
    return KINDS.get(fmt, {})


def generate(path: str | Path, lang: str | None = None) -> dict[str, str]:
    """{lang: code} for the artifact (one language when ``lang`` is given)."""
    facts = read_facts(path)
    kinds = kinds_for(facts.format)
    if lang is not None:
        lang = lang.lower()
        if lang not in LANGS:
            raise EdgeSRError(f"--lang {lang!r}: choose {' or '.join(LANGS)}")
        if lang not in kinds:
            other = {"swift": ".mlpackage (Core ML) or .onnx (ONNX Runtime)",
                     "kotlin": ".tflite (LiteRT) or .onnx (ONNX Runtime)"}[lang]
            raise EdgeSRError(f"{Path(path).name}: no {lang} snippet for a {facts.format} file; "
                              f"{lang} code is generated for {other} exports")
        kinds = {lang: kinds[lang]}
    return {name: render(facts, name) for name in kinds}


def write_snippets(path: str | Path) -> dict[str, str]:
    """Write ``<name>.swift`` / ``<name>.kt`` beside the artifact; returns {lang: path}."""
    path = Path(path)
    facts = read_facts(path)
    written = {}
    for lang, target in snippet_paths(path, facts.format).items():
        target = Path(target)
        _write_text(target, render(facts, lang))
        written[lang] = str(target)
    return written


def snippet_paths(path: str | Path, fmt: str) -> dict[str, str]:
    """``<artifact file name>.swift|.kt``, suffix included (like ``<artifact>.report.json``): one
    model exported to several targets into one folder keeps one snippet per file."""
    path = Path(path)
    return {lang: str(path.with_name(path.name + SUFFIXES[lang])) for lang in kinds_for(fmt)}


def render(facts: ArtifactFacts, lang: str) -> str:
    template, runtime = KINDS[facts.format][lang]
    values = _values(facts, lang, runtime)
    if facts.format == "coreml":
        values["RUN_TILE"] = _fill(_template("coreml_image.swift.tmpl" if facts.image_io
                                             else "coreml_array.swift.tmpl"), values)
    values["TILING"] = _fill(_template("tiling.kt.tmpl" if lang == "kotlin" else "tiling.swift.tmpl"), values)
    return _fill(_template(template), values).rstrip() + "\n"


_FORMAT_WORDS = {"onnx": "Onnx", "tflite": "Tflite", "coreml": "CoreML"}


def class_name(stem: str, fmt: str) -> str:
    """``srconvnet_x4_64x64_fp32`` + onnx -> ``SrconvnetX464x64Fp32OnnxUpscaler`` (the format keeps
    the .onnx and .tflite snippets of one model apart in one app)."""
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", stem) if p]
    name = "".join(p[:1].upper() + p[1:] for p in parts) or "Model"
    if name[0].isdigit():
        name = "Model" + name
    return name + _FORMAT_WORDS.get(fmt, "") + "Upscaler"


# ---------------------------------------------------------------------------------------

def _template(name: str) -> str:
    return resources.files("edgesr.appkit").joinpath("templates", name).read_text()


def _fill(text: str, values: dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template placeholder {{{{{key}}}}} has no value")
        return str(values[key])

    return _PLACEHOLDER.sub(replace, text)


def _dims(t: TensorFacts) -> list[int]:
    return [-1 if d is None else int(d) for d in t.shape]


def _index(layout: str, h: str, w: str) -> str:
    """Flat index of (y, x, c) in one tensor of the file's layout (batch 1)."""
    if layout == "NCHW":
        return f"(c * {h} + y) * {w} + x"
    if layout == "NHWC":
        return f"(y * {w} + x) * 3 + c"
    raise EdgeSRError(f"layout {layout!r} has no snippet")


_BYTES = {"float32": 4, "uint8": 1, "int8": 1}


def _values(facts: ArtifactFacts, lang: str, runtime: str) -> dict[str, str]:
    from edgesr import tiling

    if tiling.BLEND_WINDOW != "raised-cosine":
        raise EdgeSRError(f"edgesr.tiling uses a {tiling.BLEND_WINDOW} window; the snippet templates "
                          f"implement the raised cosine only: update the templates")
    tensor_in, tensor_out = facts.input, facts.output
    for t in (tensor_in, tensor_out):
        if t.kind == "tensor" and t.dtype not in _BYTES:
            raise EdgeSRError(f"{Path(facts.path).name}: {t.name} is {t.dtype}; snippets handle float32 "
                              f"and 8-bit tensors")
        if t.kind == "tensor" and t.quantization is None and t.dtype != "float32":
            raise EdgeSRError(f"{Path(facts.path).name}: {t.name} is {t.dtype} without quantization "
                              f"parameters")
        if t.color not in ("RGB",):
            raise EdgeSRError(f"{Path(facts.path).name}: {t.name} is {t.color}; snippets feed RGB")
    if facts.format in ("onnx", "coreml") and not facts.image_io and tensor_in.dtype != "float32":
        raise EdgeSRError(f"{Path(facts.path).name}: {facts.format} input is {tensor_in.dtype}; "
                          f"snippets feed float32")
    if facts.format == "tflite" and facts.input_size is None:
        raise EdgeSRError(f"{Path(facts.path).name}: the LiteRT snippet needs a fixed input size")
    plan = tiling_plan(facts)
    spec = tiling.tiling_spec()
    name = Path(facts.path).name
    source = facts.sha256 if facts.sha256 and not facts.sha256.startswith("none") else None
    header = (f"Generated by edgesr for {name} ({facts.arch or 'unknown architecture'} x{facts.scale}, "
              f"{facts.precision}, {runtime}); weights sha256 {source[:12] if source else 'none (random weights)'}. "
              f"Regenerate with: edgesr snippet {name} --lang {lang}")
    values = {
        "HEADER": header,
        "CLASS": class_name(facts.stem, facts.format),
        "MODEL_FILE": name,
        "COMPILED_NAME": facts.stem,
        "INPUT_NAME": tensor_in.name,
        "OUTPUT_NAME": tensor_out.name,
        "INPUT_SHAPE": ", ".join(map(str, _dims(tensor_in))),
        "OUTPUT_SHAPE": ", ".join(map(str, _dims(tensor_out))),
        "INPUT_DTYPE": tensor_in.dtype,
        "OUTPUT_DTYPE": tensor_out.dtype,
        "INPUT_LAYOUT": tensor_in.layout,
        "OUTPUT_LAYOUT": tensor_out.layout,
        "INPUT_COLOR": (f"{tensor_in.color} image" if tensor_in.kind == "image" else f"{tensor_in.color} tensor"),
        "INPUT_RANGE": f"input {tensor_in.value_range}; output {tensor_out.value_range}",
        # tiling (edgesr.tiling)
        "TILE_H": str(plan.tile[0]),
        "TILE_W": str(plan.tile[1]),
        "OVERLAP": str(plan.overlap),
        "SCALE": str(facts.scale),
        "FIXED_TILE": "true" if plan.fixed else "false",
        "ZERO_ZONE_NUM": str(tiling.ZERO_ZONE_NUM),
        "ZERO_ZONE_DEN": str(tiling.ZERO_ZONE_DEN),
        "BLEND_WINDOW": tiling.BLEND_WINDOW,
        "TILE_COUNT": spec["tile_count"],
        "TILE_START": spec["tile_start"],
        "ZERO_ZONE": spec["zero_zone"],
        "RAMP_LENGTH": spec["ramp_length"],
    }
    if tensor_in.kind == "tensor":
        values["INPUT_INDEX"] = _index(tensor_in.layout, "h", "w")
        values["OUTPUT_INDEX"] = _index(tensor_out.layout, "oh", "ow")
        if lang == "kotlin":
            values["RUN_SHAPE"] = (", ".join(["1L", "3L", "h.toLong()", "w.toLong()"]) if tensor_in.layout == "NCHW"
                                   else ", ".join(["1L", "h.toLong()", "w.toLong()", "3L"]))
        else:
            values["RUN_SHAPE"] = "1, 3, h, w" if tensor_in.layout == "NCHW" else "1, h, w, 3"
    values.update(_tflite_io(tensor_in, tensor_out) if facts.format == "tflite" else {})
    return values


def _tflite_io(tensor_in: TensorFacts, tensor_out: TensorFacts) -> dict[str, str]:
    values = {"INPUT_BYTES": str(_BYTES[tensor_in.dtype]), "OUTPUT_BYTES": str(_BYTES[tensor_out.dtype])}
    for key, t in (("INPUT", tensor_in), ("OUTPUT", tensor_out)):
        scale, zero = t.quantization or (0.0, 0)
        values[f"{key}_QUANT_SCALE"] = repr(float(scale))
        values[f"{key}_ZERO_POINT"] = str(int(zero))
    if tensor_in.dtype == "float32":
        values["WRITE_INPUT"] = "input.putFloat(at * 4, v)"
    else:
        low, high = (0, 255) if tensor_in.dtype == "uint8" else (-128, 127)
        values["WRITE_INPUT"] = (f"input.put(at, Math.rint(v / INPUT_QUANT_SCALE + INPUT_ZERO_POINT.toDouble())"
                                 f".toInt().coerceIn({low}, {high}).toByte())")
    if tensor_out.dtype == "float32":
        values["READ_OUTPUT"] = "output.getFloat(at * 4)"
    elif tensor_out.dtype == "uint8":
        values["READ_OUTPUT"] = "OUTPUT_QUANT_SCALE * ((output.get(at).toInt() and 0xFF) - OUTPUT_ZERO_POINT)"
    else:
        values["READ_OUTPUT"] = "OUTPUT_QUANT_SCALE * (output.get(at).toInt() - OUTPUT_ZERO_POINT)"
    return values


def _write_text(path: Path, text: str) -> None:
    import os

    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)
