"""Choosing and applying the rewrites for one export."""
from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass
from typing import Callable

from torch import nn

from edgesr.models.descriptor import attach, describe

TARGETS = ("onnx", "tflite", "coreml")
# Modules whose import registers rewrites; imported on first use.
REWRITE_MODULES: tuple[str, ...] = ("fourier", "dynamic_conv", "norm_range", "hit_windows", "subpixel",
                                     "delegate_ops", "depthwise_padding", "pointwise", "hit_ffn")


@dataclass(frozen=True)
class ExportContext:
    target: str  # one of TARGETS
    # Fixed LR input size (H, W), or None for a graph that takes any size.
    input_size: tuple[int, int] | None
    batch: int = 1
    # Whether ops that mobile delegates reject get their delegate-friendly forms
    # (edgesr.rewrite.delegate_ops); False keeps the forms desktop runtimes fuse.
    delegate_forms: bool = True
    # Whether the file computes in float32 wherever it is meant to run (a fixed-size fp32
    # --fused-ops ONNX file for desktop onnxruntime): rewrites may then drop what only
    # float16 and int8 need (HiT-SR's correlation range scaling, see hit_windows).
    float32_only: bool = False
    # Channel multiple for depthwise convs (>1: the int8 file for onnxruntime's CPU, whose
    # fast int8 depthwise kernel needs it; see edgesr.rewrite.depthwise_padding).
    depthwise_multiple: int = 1
    # The file's precision (fp32, fp16, int8, w8): a form that a quantizer would leave in
    # float or quantize badly is for float files only (see edgesr.rewrite.pointwise).
    precision: str = "fp32"

    @property
    def float_precision(self) -> bool:
        """Whether weights and activations stay float (fp32, fp16): no quantizer sees the graph."""
        return self.precision in ("fp32", "fp16")


@dataclass(frozen=True)
class Rewrite:
    name: str
    description: str
    # Whether the rewrite is needed for this model and export; may inspect both.
    applies: Callable[[nn.Module, ExportContext], bool]
    # Pure: returns a new module, never mutates its input.
    apply: Callable[[nn.Module, ExportContext], nn.Module]
    # Optional: a one-line note for the report (e.g. which form was chosen and why).
    explain: Callable[[nn.Module, ExportContext], str] | None = None


_REWRITES: list[Rewrite] = []
_DESCRIPTOR_ATTRS = ("edgesr_info", "edgesr_rewrites")


def keep_descriptor(old: nn.Module, new: nn.Module) -> nn.Module:
    """``new`` with ``old``'s edgesr descriptor and train/eval mode: rewrites return
    copies, and the copy must still describe the same model."""
    for attr in _DESCRIPTOR_ATTRS:
        if hasattr(old, attr):
            object.__setattr__(new, attr, getattr(old, attr))
    return new.train(old.training)


def replace_modules(model: nn.Module, match: Callable[[nn.Module], bool],
                    make: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """A deep copy of ``model`` in which every submodule that ``match``es is ``make(it)``;
    the input is left untouched (rewrites are pure)."""
    new = copy.deepcopy(model)
    targets = [(name, module) for name, module in new.named_modules() if name and match(module)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = new.get_submodule(parent_name) if parent_name else new
        setattr(parent, child, make(module))
    return keep_descriptor(model, new)


def by_input_size(fixed: Callable[[nn.Module, tuple[int, int]], nn.Module],
                  any_size: Callable[[nn.Module], nn.Module]) -> Callable[[nn.Module, ExportContext], nn.Module]:
    """An ``apply`` for rewrites with a fixed-size form and an any-size (``--dynamic``) form."""

    def apply(model: nn.Module, context: ExportContext) -> nn.Module:
        if context.input_size is None:
            return any_size(model)
        return fixed(model, context.input_size)

    return apply


def register_rewrite(rewrite: Rewrite) -> Rewrite:
    _REWRITES.append(rewrite)
    return rewrite


def _registered() -> list[Rewrite]:
    for module in REWRITE_MODULES:
        importlib.import_module(f"edgesr.rewrite.{module}")
    return list(_REWRITES)


def prepare_for_export(model: nn.Module, target: str, input_size: tuple[int, int] | None,
                       batch: int = 1, delegate_forms: bool = True, float32_only: bool = False,
                       depthwise_multiple: int = 1, precision: str = "fp32") -> nn.Module:
    """The model with every rewrite this export needs; records them in ``edgesr_rewrites``."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}")
    context = ExportContext(target, input_size, batch, delegate_forms, float32_only, depthwise_multiple, precision)
    info = describe(model)
    applied = []
    prepared = model
    for rewrite in _registered():
        if rewrite.applies(prepared, context):
            note = rewrite.explain(prepared, context) if rewrite.explain else rewrite.description
            prepared = rewrite.apply(prepared, context)
            applied.append({"name": rewrite.name, "note": note})
    if prepared is model:
        prepared = copy.deepcopy(model)
    attach(prepared.eval(), info)
    object.__setattr__(prepared, "edgesr_rewrites", applied)
    return prepared
