"""Reading checkpoints in the layouts people actually have, and building models from them.

Only safe formats are read: ``torch.load(weights_only=True)`` and safetensors. A
checkpoint that needs arbitrary unpickling is refused, never executed.
"""
from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from edgesr.errors import EdgeSRError
from edgesr.models.descriptor import ModelInfo, attach
from edgesr.models.registry import ArchSpec, StateDict, all_specs, get_arch

TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
# Wrapper keys of training frameworks, in order of preference (EMA weights first).
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model")
# Our own checkpoints carry this next to the weights so hyperparameters that tensor
# shapes do not reveal survive a round trip.
META_KEY = "edgesr"
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_MAX_LISTED = 5


@dataclass(frozen=True)
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    layout: str
    sha256: str
    path: Path
    # Hyperparameters stated by the file itself (our metadata or a hub config.json).
    stated: dict[str, Any]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_torch_file(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc) and not _looks_like_torch_file(path):
            raise EdgeSRError(f"{path}: not a PyTorch checkpoint (neither the zip archive torch.save "
                              f"writes nor a pickle)") from None
        reason = str(exc).splitlines()[0] if "GLOBAL" not in str(exc) else _unsafe_global(exc)
        raise EdgeSRError(
            f"{path}: refusing to unpickle this checkpoint: it holds Python objects beyond "
            f"tensors ({reason}); re-save it as a plain state dict "
            f"(torch.save(model.state_dict(), ...)) or as .safetensors"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any other failure means the bytes are not a checkpoint
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EdgeSRError(
            f"{path}: not a readable PyTorch checkpoint (truncated or another file type: {first})"
        ) from None


def _looks_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive; older files are a pickle (protocol 2+ marker 0x80)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _unsafe_global(exc: Exception) -> str:
    for line in str(exc).splitlines():
        if "GLOBAL" in line:
            return line.strip().rstrip(".")
    return "unsupported global"


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        tensors = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise EdgeSRError(f"{path}: not a readable safetensors file ({exc})") from None
    return tensors, metadata


def _stated_metadata(metadata: dict[str, str], path: Path) -> dict[str, Any]:
    """edgesr's own metadata entry of a .safetensors file (a JSON object), if present."""
    if META_KEY not in metadata:
        return {}
    try:
        stated = json.loads(metadata[META_KEY])
    except json.JSONDecodeError as exc:
        raise EdgeSRError(f"{path}: its {META_KEY!r} metadata is not valid JSON ({exc.msg}); "
                          f"re-save the weights or remove that entry") from None
    if not isinstance(stated, dict):
        raise EdgeSRError(f"{path}: its {META_KEY!r} metadata is a {type(stated).__name__}, not a JSON "
                          f"object; re-save the weights or remove that entry")
    return stated


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    """Find the state dict inside a training framework's checkpoint dict."""
    if not isinstance(obj, Mapping):
        raise EdgeSRError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    stated = dict(obj.get(META_KEY) or {}) if isinstance(obj.get(META_KEY), Mapping) else {}
    layout = "state_dict"
    for key in WRAPPER_KEYS:
        if isinstance(obj.get(key), Mapping):
            obj, layout = obj[key], key
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise EdgeSRError(
            f"{path}: no tensors found (looked at the top level and under "
            f"{', '.join(WRAPPER_KEYS)}); is this a model checkpoint?"
        )
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
        layout += " (module.-prefixed)"
    _refuse_non_finite(tensors, path)
    return tensors, layout, stated


def _refuse_non_finite(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """NaN/Inf weights would load, export and upscale to garbage without a word."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise EdgeSRError(f"{path}: tensor {name!r} holds {bad} NaN/Inf value(s); the checkpoint is "
                              f"damaged (or saved from a diverged training run): use another one")


def read_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.exists():
        raise EdgeSRError(f"{path}: no such file or directory")
    if path.is_dir():
        return _read_hub_directory(path)
    if path.suffix == ".safetensors":
        tensors, metadata = _read_safetensors(path)
        stated = _stated_metadata(metadata, path)
        state_dict, layout, _ = _unwrap(tensors, path)
        return Checkpoint(state_dict, "safetensors " + layout, sha256_of(path), path, stated)
    if path.suffix in TORCH_SUFFIXES:
        state_dict, layout, stated = _unwrap(_read_torch_file(path), path)
        return Checkpoint(state_dict, layout, sha256_of(path), path, stated)
    raise EdgeSRError(
        f"{path}: unknown checkpoint type {path.suffix!r}; expected "
        f"{', '.join(TORCH_SUFFIXES)}, .safetensors or a directory with config.json"
    )


def _read_hub_directory(path: Path) -> Checkpoint:
    """A Hugging Face hub-mixin directory: config.json + model.safetensors | pytorch_model.bin."""
    weights = next((path / name for name in HUB_WEIGHT_FILES if (path / name).exists()), None)
    if weights is None:
        raise EdgeSRError(
            f"{path}: a model directory needs one of {', '.join(HUB_WEIGHT_FILES)}"
        )
    inner = read_checkpoint(weights)
    config_path = path / "config.json"
    config = {}
    if config_path.exists():
        try:
            config = json.loads(config_path.read_text())
        except json.JSONDecodeError as exc:
            raise EdgeSRError(f"{config_path}: invalid JSON ({exc})") from None
    stated = {**config, **inner.stated}
    return Checkpoint(inner.state_dict, "hub directory, " + inner.layout, inner.sha256, weights, stated)


def detect(state_dict: StateDict) -> tuple[ArchSpec, dict[str, Any]]:
    for spec in all_specs():
        found = spec.detect(state_dict)
        if found is not None:
            return spec, found
    keys = list(state_dict)
    raise EdgeSRError(
        f"unknown architecture: the checkpoint's keys ({_listing(keys)}) match none of "
        f"{', '.join(s.name for s in all_specs())}; pass --model to force one"
    )


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    more = f", … ({len(keys)} in all)" if len(keys) > _MAX_LISTED else ""
    return shown + more


def _stated_hparams(spec: ArchSpec, stated: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperparameters a file states about itself (our metadata, a hub config.json)."""
    hparams = dict(stated.get("hparams", {}))
    hparams.update({k: v for k, v in stated.items() if k in spec.defaults})
    for key in ("scale", "upscale"):
        if key in stated:
            hparams["scale"] = int(stated[key])
    return hparams


def check_state_dict(model: nn.Module, state_dict: StateDict, what: str) -> None:
    """Strict comparison with readable messages, before load_state_dict."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_listing(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_listing(unexpected)})")
    mismatched = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches ({'; '.join(mismatched[:3])})")
    if problems:
        raise EdgeSRError(f"{what}: " + "; ".join(problems))


def load(
    path_or_name: str | Path,
    scale: int | None = None,
    model: str | None = None,
    **overrides: Any,
) -> nn.Module:
    """Load a checkpoint into its architecture, detected from the keys and tensor shapes.

    ``model`` and ``scale`` force the architecture and scale; a contradiction with what
    the file holds is an error naming both. ``overrides`` set hyperparameters that
    shapes do not reveal.
    """
    checkpoint = read_checkpoint(_resolve(path_or_name))
    if model is not None:
        spec = get_arch_or_error(model)
        found = spec.detect(checkpoint.state_dict)
        if found is None:
            try:
                detected = detect(checkpoint.state_dict)[0].name
            except EdgeSRError:
                detected = "no known architecture"
            raise EdgeSRError(
                f"{checkpoint.path}: --model {spec.name} was given but the checkpoint holds {detected}"
            )
    else:
        spec, found = detect(checkpoint.state_dict)
    hparams = {**found, **_stated_hparams(spec, checkpoint.stated), **overrides}
    file_scale = int(hparams.pop("scale"))
    if scale is not None and int(scale) != file_scale:
        raise EdgeSRError(
            f"{checkpoint.path}: --scale {scale} was given but the checkpoint holds a "
            f"x{file_scale} {spec.name} (its upsampler is built for x{file_scale})"
        )
    network = _build(spec, file_scale, hparams)
    check_state_dict(network, checkpoint.state_dict, f"{checkpoint.path} ({spec.name} x{file_scale})")
    network.load_state_dict(checkpoint.state_dict, strict=True)
    info = ModelInfo(
        arch=spec.name,
        scale=file_scale,
        hparams=hparams,
        input_range=spec.input_range,
        source=str(checkpoint.path),
        sha256=checkpoint.sha256,
        layout=checkpoint.layout,
    )
    return attach(network.eval(), info)


def create(name: str, scale: int, seed: int | None = None, **hparams: Any) -> nn.Module:
    """A randomly initialised model of a registered architecture (eval mode).

    ``seed``: draw the weights from that torch seed (the caller's RNG state is left as it
    was), so that the same call gives the same weights and a byte-identical export."""
    spec = get_arch_or_error(name)
    if scale not in spec.scales:
        raise EdgeSRError(f"{spec.name} has no x{scale}; choose one of {spec.scales}")
    _check_hparam_types(spec, hparams)
    merged = {**spec.defaults, **hparams}
    if seed is None:
        network = _build(spec, scale, merged)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            network = _build(spec, scale, merged)
    return attach(network.eval(), ModelInfo(spec.name, scale, merged, spec.input_range, seed=seed))


def _check_hparam_types(spec: ArchSpec, hparams: dict[str, Any]) -> None:
    """A value of another kind than the default's (dim=abc) is named before the build
    fails somewhere inside with a message about something else."""
    for key, value in hparams.items():
        default = spec.defaults.get(key)
        if default is None:
            continue
        numeric = (int, float)
        if isinstance(default, bool) or isinstance(value, bool):
            ok = isinstance(value, bool) == isinstance(default, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int)
        elif isinstance(default, float):
            ok = isinstance(value, numeric)
        elif isinstance(default, (list, tuple)):
            ok = isinstance(value, (list, tuple))
        else:
            ok = True
        if not ok:
            kind = {bool: "true or false", int: "an integer", float: "a number"}.get(type(default), "a list")
            raise EdgeSRError(f"{spec.name}: {key}={value!r} is not valid; {key} takes {kind} "
                              f"(default {default!r})")


def _build(spec: ArchSpec, scale: int, hparams: dict[str, Any]) -> nn.Module:
    try:
        return spec.build(scale=scale, **hparams)
    except (TypeError, ValueError) as exc:
        raise EdgeSRError(f"{spec.name}: {exc}") from None


def get_arch_or_error(name: str) -> ArchSpec:
    try:
        return get_arch(name)
    except KeyError as exc:
        raise EdgeSRError(exc.args[0]) from None


def _resolve(path_or_name: str | Path) -> Path:
    path = Path(path_or_name)
    if path.exists():
        return path
    from edgesr.models.bundled import bundled_weights

    bundled = bundled_weights(str(path_or_name))
    if bundled is not None:
        return bundled
    raise EdgeSRError(
        f"{path_or_name}: no such checkpoint file (and not the name of a bundled model; "
        f"use edgesr.create(name, scale) for random weights)"
    )


def save_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Write a model's weights with our metadata (.safetensors or .pth by suffix)."""
    from edgesr.models.descriptor import describe

    info = describe(model)
    meta = {"arch": info.arch, "scale": info.scale, "hparams": info.hparams}
    path = Path(path)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path), metadata={META_KEY: json.dumps(meta)})
    else:
        torch.save({"params": state, META_KEY: meta}, path)
    return path
