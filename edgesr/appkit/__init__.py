"""App integration kit: a model card and paste-able Swift/Kotlin code for one exported file.

Everything here is read back from the artifact itself (``artifact_io.read_facts``), not
taken from what the export meant to write, so a card or a snippet describes the bytes
that ship in the app:

- ``card.write_card(artifact)`` -> ``<artifact>.card.md`` and ``<artifact>.card.json``
- ``snippets.generate(artifact)`` -> {"swift": code, "kotlin": code} for that file
  (``.onnx``: ONNX Runtime Swift + Android; ``.tflite``: LiteRT Kotlin; ``.mlpackage``:
  Core ML Swift), written as ``<artifact>.swift`` / ``<artifact>.kt`` (the artifact's
  full file name, as for ``<artifact>.report.json``: an .onnx and a .tflite of one model
  in one folder keep separate cards and snippets)
- ``write_app_files(artifact)`` does both (the export pipeline calls it after a
  successful export).

The tiling in the snippets is emitted from ``edgesr.tiling`` (constants and arithmetic),
so an app tiles exactly as ``edgesr upscale`` does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_app_files", "read_facts", "generate", "write_card"]


def read_facts(path):
    from edgesr.appkit.artifact_io import read_facts as read

    return read(path)


def generate(path, lang: str | None = None):
    from edgesr.appkit.snippets import generate as gen

    return gen(path, lang)


def write_card(path, report: dict[str, Any] | None = None, measure_latency: bool = True):
    from edgesr.appkit.card import write_card as write

    return write(path, report, measure_latency=measure_latency)


def write_app_files(artifact: str | Path, report: dict[str, Any] | None = None,
                    measure_latency: bool = True) -> dict[str, str]:
    """Card (md + json) and snippets beside ``artifact``; returns {kind: path}."""
    from edgesr.appkit.card import card_paths
    from edgesr.appkit.card import write_card as write
    from edgesr.appkit.snippets import SUFFIXES, write_snippets

    try:
        written = dict(write(artifact, report, measure_latency=measure_latency))
        written.update(write_snippets(artifact))
    except Exception:
        # No card or snippet of an earlier export under the same name may describe this file.
        artifact = Path(artifact)
        stale = [*card_paths(artifact), *(artifact.with_name(artifact.name + s) for s in SUFFIXES.values())]
        for path in stale:
            path.unlink(missing_ok=True)
        raise
    return written
