"""Benchmark pages in docs/ that a re-run rewrites, keeping what was written there by hand."""
from __future__ import annotations

from pathlib import Path


def write_keeping_notes(page: Path, generated: str, script: str) -> None:
    """Write ``generated`` to ``page``, followed by the marker line of ``script`` and
    whatever followed that marker in the page before (the hand-written notes)."""
    marker = f"<!-- hand-written notes below: kept by benchmarks/{script} -->"
    previous = page.read_text() if page.exists() else ""
    hand_written = previous.split(marker, 1)[1] if marker in previous else "\n"
    page.write_text(f"{generated}\n\n{marker}{hand_written}")
