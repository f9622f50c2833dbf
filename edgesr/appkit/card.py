"""The model card of one exported file: ``<name>.card.md`` and the same facts in ``<name>.card.json``.

I/O facts are read back from the artifact (``artifact_io``); architecture, paper and
licence from the registry; precision, parity, quantization (PSNR cost) and delegate
readiness from the export report (``<artifact>.report.json`` or the report dict the
pipeline passes); latency is measured here, in the file's own runtime, when that
runtime runs on this machine.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from edgesr.appkit.artifact_io import ArtifactFacts, read_facts
from edgesr.appkit.snippets import KINDS, snippet_paths, tiling_plan

CARD_SCHEMA_VERSION = 1
LATENCY_WARMUP = 1
LATENCY_REPEATS = 5
# Stop repeating once this much time is spent (a slow model on a busy machine gets fewer runs).
LATENCY_BUDGET_MS = 3000.0


def card_paths(artifact: str | Path) -> tuple[Path, Path]:
    """``<artifact>.card.md`` / ``.card.json``, suffix included like ``<artifact>.report.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".card.md"), artifact.with_name(artifact.name + ".card.json")


def build_card(artifact: str | Path, report: dict[str, Any] | None = None,
               measure_latency: bool = True) -> dict[str, Any]:
    artifact = Path(artifact)
    facts = read_facts(artifact)
    if report is None:
        report = _read_report(artifact)
    model = (report or {}).get("model") or {}
    plan = tiling_plan(facts)
    sha = facts.sha256 if facts.sha256 and not facts.sha256.startswith("none") else None
    card: dict[str, Any] = {
        "schema": CARD_SCHEMA_VERSION,
        "artifact": artifact.name,
        "format": facts.format,
        "size_bytes": _size(artifact),
        "architecture": _architecture(facts.arch),
        "scale": facts.scale,
        "source": {"sha256": sha, "checkpoint": Path(str(model["source"])).name if model.get("source") else None,
                   "note": None if sha else "random weights (no checkpoint): for checking conversion only"},
        "io": {"input": _io(facts.input), "output": _io(facts.output),
               "format_details": facts.format_details, "read_from": "the artifact file"},
        "precision": _precision(facts, report),
        "parity": (report or {}).get("parity"),
        "readiness": _readiness((report or {}).get("readiness")),
        "latency": measure(facts, plan) if measure_latency else {"note": "not measured"},
        "tiling": plan.to_dict(),
        "snippets": {lang: Path(p).name for lang, p in snippet_paths(artifact, facts.format).items()},
        "snippet_runtimes": {lang: words for lang, (_, words) in KINDS.get(facts.format, {}).items()},
        "edgesr_version": facts.metadata.get("edgesr.version"),
    }
    return card


def write_card(artifact: str | Path, report: dict[str, Any] | None = None,
               measure_latency: bool = True) -> dict[str, str]:
    card = build_card(artifact, report, measure_latency)
    md_path, json_path = card_paths(artifact)
    _write(json_path, json.dumps(card, indent=2, default=str) + "\n")
    _write(md_path, render_markdown(card))
    return {"card_md": str(md_path), "card_json": str(json_path)}


# --- sections --------------------------------------------------------------------------

def _architecture(arch: str | None) -> dict[str, Any]:
    from edgesr.models.registry import get_arch

    try:
        spec = get_arch(arch or "")
    except (KeyError, ImportError):
        return {"name": arch, "paper": None, "license": None,
                "note": "not an architecture in edgesr's registry"}
    return {"name": spec.name, "paper": spec.paper, "license": spec.license or None}


def _io(tensor) -> dict[str, Any]:
    data = tensor.to_dict()
    data["shape"] = [d if d is not None else -1 for d in tensor.shape]
    return data


def _precision(facts: ArtifactFacts, report: dict[str, Any] | None) -> dict[str, Any]:
    section: dict[str, Any] = {"precision": facts.precision}
    quantization = (report or {}).get("quantization")
    if quantization:
        section["quantization"] = quantization
        for key in ("psnr_y_delta", "delta_db", "psnr_delta", "psnr_drop"):
            if key in quantization:
                section["psnr_cost_db"] = quantization[key]
                break
    parity = (report or {}).get("parity") or {}
    figures = [c.get("psnr") for c in parity.get("checks", []) if c.get("psnr") is not None]
    if figures:
        section["psnr_vs_pytorch_db"] = round(min(figures), 2)
        section["psnr_vs_pytorch_note"] = "worst parity check: artifact output vs PyTorch fp32 output"
    if "psnr_cost_db" not in section:
        section["psnr_cost_note"] = ("no validation set measured (export with --val DIR to measure "
                                     "PSNR-Y against the float model)"
                                     if facts.precision != "fp32" else "fp32: no quantization")
    return section


def _readiness(readiness: dict[str, Any] | None) -> dict[str, Any] | None:
    if not readiness:
        return None
    delegates = [{k: d.get(k) for k in ("name", "ready", "partitions", "nodes_supported", "nodes_total",
                                           "unsupported_ops", "coverage", "verdict") if k in d}
                 for d in readiness.get("delegates", [])]
    return {"summary": readiness.get("summary"), "analyzer": readiness.get("analyzer"),
            "ready": readiness.get("ready"), "split": readiness.get("split"), "delegates": delegates}


def measure(facts: ArtifactFacts, plan) -> dict[str, Any]:
    """Median latency of one tile-sized call in the file's runtime on this machine."""
    from edgesr.errors import EdgeSRError
    from edgesr.runtimes import open_runner

    if facts.format == "coreml" and platform.system() != "Darwin":
        return {"runtime": "CoreML MLModel.predict", "median_ms": None,
                "note": f"not measured: Core ML runs only on macOS/iOS (this is {platform.system()})"}
    height, width = plan.tile
    try:
        runner = open_runner(facts.path)
        batch = runner.native_input(height, width)
        for _ in range(LATENCY_WARMUP):
            runner.run_native(batch)
        times: list[float] = []
        while len(times) < LATENCY_REPEATS and (not times or sum(times) < LATENCY_BUDGET_MS):
            started = time.perf_counter()
            runner.run_native(batch)
            times.append((time.perf_counter() - started) * 1e3)
        layout = runner.info.layout
        described = runner.describe()
        runner.close()
    except EdgeSRError as exc:
        return {"runtime": facts.format, "median_ms": None, "note": f"not measured: {exc}"}
    runtime = described.get("runtime", "")
    extra = {k: v for k, v in described.items() if k not in ("runtime", "artifact") and v}
    return {
        "runtime": runtime + (f" ({', '.join(f'{k}={v}' for k, v in extra.items())})" if extra else ""),
        "median_ms": round(statistics.median(times), 3),
        "input": [1, 3, height, width] if layout == "NCHW" else [1, height, width, 3],
        "repeats": len(times),
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} logical CPUs",
        "note": "measured at export time on the export machine, not on a phone; shared CPUs are noisy",
    }


# --- markdown --------------------------------------------------------------------------

def _shape(io: dict) -> str:
    return "[" + ", ".join("?" if d == -1 else str(d) for d in io["shape"]) + "]"


def render_markdown(card: dict[str, Any]) -> str:
    arch = card["architecture"]
    io_in, io_out = card["io"]["input"], card["io"]["output"]
    precision = card["precision"]
    tiling = card["tiling"]
    lines = [f"# {card['artifact']}", ""]
    lines += [f"Super-resolution x{card['scale']} ({arch.get('name') or 'unknown architecture'}), "
              f"{card['format']} file, {card['size_bytes'] / 1e6:.2f} MB. "
              f"Generated by edgesr {card.get('edgesr_version') or ''}.".rstrip(), ""]
    lines += ["## Model", "",
              f"- Architecture: {arch.get('name')}" + (f" ({arch['paper']})" if arch.get("paper") else ""),
              f"- Licence of the architecture: {arch.get('license') or 'not stated in edgesr registry'}",
              f"- Scale: x{card['scale']}",
              "- Source checkpoint: " + (f"sha256 `{card['source']['sha256']}`"
                                         + (f" ({card['source']['checkpoint']})" if card['source'].get('checkpoint') else "")
                                         if card["source"]["sha256"] else card["source"]["note"]), ""]
    lines += ["## Input and output (read from the file)", "",
              "| | name | shape | dtype | layout | colour | values |", "|---|---|---|---|---|---|---|"]
    for role, io in (("input", io_in), ("output", io_out)):
        shape = _shape(io) + ("" if io.get("shape_source") == "file" else f" ({io['shape_source']})")
        lines.append(f"| {role} | `{io['name']}` | {shape} | {io['dtype']} | {io['layout']} | "
                     f"{io['color']} | {io['value_range']} |")
    if io_in.get("alternatives"):
        lines.append("")
        lines.append("Also accepts: " + ", ".join(_shape({"shape": s}) for s in io_in["alternatives"]))
    lines.append("")
    lines += ["## Precision", "", f"- Precision: {precision['precision']}"]
    if "psnr_cost_db" in precision:
        lines.append(f"- PSNR-Y cost vs the float model: {precision['psnr_cost_db']} dB (validation set, see report)")
    else:
        lines.append(f"- PSNR cost: {precision['psnr_cost_note']}")
    if "psnr_vs_pytorch_db" in precision:
        lines.append(f"- PSNR vs PyTorch: {precision['psnr_vs_pytorch_db']} dB ({precision['psnr_vs_pytorch_note']})")
    lines.append("")
    lines += ["## Parity with PyTorch", ""]
    parity = card.get("parity")
    if not parity:
        lines.append("Not checked (exported with --no-check, or no report found).")
    else:
        lines.append(f"Status: **{parity.get('status')}** (tolerance {parity.get('tolerance')})")
        lines.append("")
        for check in parity.get("checks", []):
            if check.get("max_abs") is None:
                lines.append(f"- {check['input']} vs {check['reference']}: {check.get('status')}: {check.get('note')}")
            else:
                lines.append(f"- {check['input']} vs {check['reference']} on {check['runtime']}: max abs "
                             f"{check['max_abs']:.2e}, mean abs {check['mean_abs']:.2e}, PSNR {check['psnr']:.1f} dB")
    lines.append("")
    lines += ["## Delegate readiness", ""]
    readiness = card.get("readiness")
    if not readiness:
        lines.append("Not analysed.")
    else:
        lines.append(f"{readiness.get('summary')}")
        lines.append("")
        lines.append(f"Analyzer: {readiness.get('analyzer')}")
    lines.append("")
    latency = card["latency"]
    lines += ["## Latency (measured here)", ""]
    if latency.get("median_ms") is None:
        lines.append(latency.get("note", "not measured"))
    else:
        lines.append(f"{latency['median_ms']:.2f} ms median of {latency['repeats']} runs, input "
                     f"{_shape({'shape': latency['input']})}, {latency['runtime']} on {latency['machine']}. "
                     f"{latency['note']}.")
    lines.append("")
    lines += ["## Tiling", "",
              f"- Tile {tiling['tile'][0]}x{tiling['tile'][1]} (LR pixels){' = the fixed input size' if tiling['fixed'] else ''}, "
              f"overlap {tiling['overlap']} px, {tiling['blend_window']} blend (zero zone {tiling['zero_zone']} px)",
              "- The generated snippets tile exactly like `edgesr upscale` (constants from edgesr.tiling).", ""]
    if card["snippets"]:
        lines += ["## Integration code", ""]
        for lang, name in card["snippets"].items():
            lines.append(f"- `{name}`: {card['snippet_runtimes'][lang]} "
                         f"(print it with `edgesr snippet {card['artifact']} --lang {lang}`)")
        lines.append("")
    return "\n".join(lines)


def _read_report(artifact: Path) -> dict[str, Any] | None:
    path = artifact.with_name(artifact.name + ".report.json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)
