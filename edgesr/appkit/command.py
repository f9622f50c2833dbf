"""``edgesr snippet ARTIFACT --lang swift|kotlin``: print the integration code for one exported file.

Registered in cli.py as ``app.command("snippet")(snippet_command)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgesr.cli_common import user_errors
from edgesr.errors import EdgeSRError


@user_errors
def snippet_command(
    artifact: Path = typer.Argument(..., help="An exported .onnx, .tflite or .mlpackage file."),
    lang: Optional[str] = typer.Option(
        None, "--lang", help="swift or kotlin (.onnx: both exist; .tflite: kotlin; .mlpackage: swift)."),
) -> None:
    """Print Swift/Kotlin code for this exact file: its tensor names, shapes, normalisation and tiling."""
    from edgesr.appkit.artifact_io import read_facts
    from edgesr.appkit.snippets import generate, kinds_for

    if not artifact.exists():
        raise EdgeSRError(f"{artifact}: no such file")
    facts = read_facts(artifact)
    if "edgesr.arch" not in facts.metadata:
        raise EdgeSRError(f"{artifact.name}: no edgesr metadata (edgesr.* keys), so nothing says it is an RGB "
                          f"upscaler or how to feed it; snippets are for files that edgesr export wrote")
    if lang is None:
        available = list(kinds_for(facts.format))
        if len(available) != 1:
            raise EdgeSRError(f"{artifact.name}: give --lang ({' or '.join(available)})")
        lang = available[0]
    code = generate(artifact, lang)[lang.lower()]
    typer.echo(code, nl=False)
