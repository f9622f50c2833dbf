"""Human-readable lines of a report's quantization section (for ``edgesr export``)."""
from __future__ import annotations

from typing import Any


def summary_lines(section: dict[str, Any]) -> list[str]:
    lines = []
    floating, measured = section.get("float") or {}, section.get("quantized") or {}
    if floating.get("psnr_y") is not None and measured.get("psnr_y") is not None:
        validation = (section.get("validation") or {}).get("source", "?")
        lines.append(f"quality ({section['precision']}): PSNR-Y {measured['psnr_y']:.3f} dB vs float "
                     f"{floating['psnr_y']:.3f} dB on {validation}: delta {section.get('delta_db', 0):+.3f} dB"
                     + (f" ({section['gate'].split(':')[0]})" if section.get("gate") else ""))
        host = section.get("host_kernels")
        if host:
            extensions = ", ".join(host["cpu"]["vector_extensions"]) or "?"
            lines.append(f"  on this host's integer kernels ({extensions}): PSNR-Y {host['psnr_y']:.3f} dB "
                         f"({host['vs_exact_db']:+.3f} dB vs the exact figure)")
    elif section.get("quality_note"):
        lines.append(f"quality: {section['quality_note']}")
    latency = section.get("latency_ms") or {}
    if latency:
        lines.append(f"latency ({section.get('runtime', '?')}): {latency.get(section['precision'])} ms vs fp32 "
                     f"{latency.get('fp32')} ms ({latency.get('speedup_vs_fp32')}x; shared CPU, noisy)")
    budget = section.get("budget")
    if budget:
        lines.append(f"budget: {budget.get('verdict')}")
    kept = (section.get("kept_float") or {}).get("replay")
    if kept:
        lines.append(f"replay: {kept}")
    return lines
