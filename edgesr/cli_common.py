"""Shared pieces of the Typer commands: error reporting, JSON output, model resolution."""
from __future__ import annotations

import functools
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import typer

from edgesr.errors import EdgeSRError, note_interrupt


def user_errors(command: Callable) -> Callable:
    """Report EdgeSRError as one line on stderr with exit code 2, no traceback; Ctrl-C
    and SIGTERM as one line with exit code 130, after the same cleanup (temporary
    folders, ``.part`` files) that an error runs: SIGTERM is raised as KeyboardInterrupt."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        previous = _interrupt_on_sigterm()
        try:
            return command(*args, **kwargs)
        except EdgeSRError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except ModuleNotFoundError as exc:  # a light (device) install without the export extras
            from edgesr.errors import EXTRA_OF_PACKAGE, install_hint

            package = (exc.name or "").split(".")[0]
            if package not in EXTRA_OF_PACKAGE:
                raise
            typer.echo(f"error: this needs '{package}', which this install of edgesr does not have "
                       f"(checkpoints, export and train need PyTorch); {install_hint(package)}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: stopped, nothing half-written was left behind", err=True)
            raise typer.Exit(130) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            note_interrupt(False)  # handled: the next command in this process starts afresh

    return wrapper


def _raise_interrupt(signum, frame) -> None:
    note_interrupt()
    raise KeyboardInterrupt


def _interrupt_on_sigterm():
    """SIGTERM -> KeyboardInterrupt (main thread only); returns the handler it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


def emit_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def check_threads(threads: int | None) -> int | None:
    """--threads: 1 or more, and not so many that the runtime's thread pool cannot start
    (onnxruntime segfaults at 100000)."""
    import os

    if threads is None:
        return None
    limit = max(64, 4 * (os.cpu_count() or 1))
    if not 1 <= threads <= limit:
        raise EdgeSRError(f"--threads {threads}: give 1 to {limit} (this machine has {os.cpu_count()} CPUs)")
    return threads


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise EdgeSRError(f"--input-size {text!r}: expected HxW, e.g. 256x256") from None
    if height < 1 or width < 1:
        raise EdgeSRError(f"--input-size {text!r}: height and width must be positive")
    return height, width


# Random-weight models are drawn from this seed unless --seed says otherwise.
DEFAULT_SEED = 0


def resolve_model(model: str, scale: int | None = None, arch: str | None = None, seed: int = DEFAULT_SEED):
    """A checkpoint path, a bundled model's name, or an architecture name (random weights
    drawn from ``seed``)."""
    from edgesr.models.loading import create, get_arch_or_error, load
    from edgesr.models.registry import get_arch
    from edgesr.models.bundled import bundled_weights

    if Path(model).exists() or bundled_weights(model) is not None:
        return load(model, scale=scale, model=arch)
    try:
        get_arch(model)
    except KeyError:
        raise EdgeSRError(
            f"{model}: neither a checkpoint file nor an architecture name "
            f"(known: {', '.join(_arch_names())})"
        ) from None
    if scale is None:
        raise EdgeSRError(f"{model} is an architecture name: give --scale to build it with random weights")
    return create(get_arch_or_error(model).name, scale, seed=seed)


def _arch_names() -> list[str]:
    from edgesr.models.registry import list_archs

    return list_archs()


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()
