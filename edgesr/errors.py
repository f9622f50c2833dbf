"""User-facing errors: one line that says what is wrong and what to do."""


class EdgeSRError(Exception):
    """An error caused by the user's input, reported without a traceback."""


class _Interrupts:
    """Whether a signal asked the command to stop (set by the CLI's SIGTERM handler).

    The handler raises KeyboardInterrupt wherever the main thread is, and Python drops an
    exception raised inside a finalizer (``__del__``, a weakref callback that the garbage
    collector runs). In one CI run an export that got SIGTERM ran to the end with exit code
    0, which that would explain (not reproduced). Long work checks this between its stages,
    so a signal that got lost still stops it."""

    pending = False


def note_interrupt(pending: bool = True) -> None:
    _Interrupts.pending = pending


def stop_if_interrupted() -> None:
    """KeyboardInterrupt if a signal asked to stop and the work went on."""
    if _Interrupts.pending:
        raise KeyboardInterrupt


# Which install profile (pyproject's optional dependencies) brings each package.
EXTRA_OF_PACKAGE = {
    "torch": "export", "safetensors": "export", "onnxscript": "export", "onnxsim": "export",
    "coremltools": "export", "litert-torch": "export", "litert_torch": "export", "torchao": "export",
    "onnxruntime": "onnxruntime", "ai-edge-litert": "litert", "ai_edge_litert": "litert",
}


def install_hint(package: str) -> str:
    extra = EXTRA_OF_PACKAGE.get(package)
    if extra == "onnxruntime":
        return ("pip install 'edgesr[onnxruntime]' (or keep the onnxruntime-gpu / Jetson build you have: "
                "any distribution of the onnxruntime module works)")
    return f"pip install 'edgesr[{extra}]'" if extra else f"pip install {package}"


class MissingDependencyError(EdgeSRError):
    def __init__(self, package: str, purpose: str):
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed; "
            f"install it with: {install_hint(package)}"
        )
