"""PT2E int8 shared by the TFLite and CoreML targets: one capture and calibration,
int8 graphs with any choice of compute nodes kept in float.

litert-torch's PT2E quantizer (symmetric per-channel int8 weights, histogram-calibrated
int8 activations) annotates the captured ATen graph; ``convert_pt2e`` turns it into
quantize/dequantize nodes around float ops, which litert-torch and coremltools convert
into their int8 forms. The budget search (``edgesr.quantize.budget.KeepFloat``) measures
candidates on that simulation in PyTorch; the written file is judged in its runtime.
"""
from __future__ import annotations

import numpy as np

from edgesr.errors import EdgeSRError
from edgesr.export.base import first_line

# HiT-SR is int8 in its compute ops alone: the range scaling divides by per-window peaks
# floored at 2**-10, which round to the int8 zero point at int8 scales (LiteRT's int8 DIV
# refuses them; the CoreML program that quantizes every op loses 2.5 dB on HiTNet, 0.8 dB
# even with the norm-input layers in float), and the bias anchor's one-element reshape
# breaks litert-torch's same-scale rule. Every other op runs in float, on both targets.
COMPUTE_ONLY_ARCHS = ("hit-sir", "hit-sng", "hit-srf")
COMPUTE_ONLY_REASON = ("HiT-SR: the range scaling's divisors round to the int8 zero point (LiteRT's int8 DIV "
                       "refuses them, a CoreML program with every op in int8 loses 2.5 dB on HiTNet) and the "
                       "bias anchor's reshape breaks litert-torch's same-scale rule, so only Conv/Linear are int8")
SEARCH_MEASURED_WITH = ("the PT2E simulation in PyTorch (quantize/dequantize in float); the verdict is "
                        "the written file in its runtime")
# litert-torch's PT2E annotators of the compute ops (Conv, Linear and its addmm form).
_COMPUTE_ANNOTATORS = ("linear", "addmm", "conv")


def _quantizer(compute_only: bool, keep_float: frozenset[str]):
    """litert-torch's PT2E quantizer (symmetric per-channel int8 weights, int8
    activations), restricted to the compute ops with ``compute_only``, with the nodes
    named in ``keep_float`` left unannotated (float) before the annotation spreads to
    the reshapes and transposes around them."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.pt2e_quantizer_utils import propagate_annotation
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    class Quantizer(PT2EQuantizer):
        STATIC_OPS = list(_COMPUTE_ANNOTATORS) if compute_only else PT2EQuantizer.STATIC_OPS

        def annotate(self, model):
            model = self._annotate_for_static_quantization_config(model)
            for node in model.graph.nodes:
                if node.name in keep_float:
                    node.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)
            propagate_annotation(model)
            return model

    return Quantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


def _macs(node) -> int:
    """Multiply-accumulates of a conv2d, linear or matmul node (from the traced shapes)."""
    import math

    output = node.meta.get("val")
    if output is None:
        return 0
    if _compute_kind(node) == "Conv":
        weight = node.args[1].meta["val"]
        return output.numel() * math.prod(weight.shape[1:])
    return output.numel() * node.args[0].meta["val"].shape[-1]


def _is_matmul(node) -> bool:
    import torch

    return node.op == "call_function" and node.target in (torch.ops.aten.matmul.default, torch.ops.aten.bmm.default)


def _caller(node) -> str:
    """The attribute name of the innermost module a node was traced in (``fc2``)."""
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    names = [part for part in path.replace("[", ".").replace("]", "").split(".") if part and not part.isdigit()]
    return names[-1] if names else "model"


def _compute_kind(node) -> str | None:
    import torch

    kinds = {torch.ops.aten.conv2d.default: "Conv", torch.ops.aten.linear.default: "Linear"}
    return kinds.get(node.target) if node.op == "call_function" else None


def _row_preserving_targets():
    import torch

    aten = torch.ops.aten
    return {aten.add.Tensor, aten.reshape.default, aten.view.default, aten.permute.default,
            aten.squeeze.dim, aten.unsqueeze.default}


def _feeds_a_norm(node, hops: int = 3) -> bool:
    """Whether ``node``'s output reaches a normalisation through at most ``hops``
    row-preserving ops: a layer_norm, or ``x - mean(x)`` (onnx_quant's rule, on the
    captured ATen graph)."""
    import torch

    aten = torch.ops.aten
    row_preserving = _row_preserving_targets()
    frontier = [node]
    for _ in range(hops + 1):
        following = []
        for tensor in frontier:
            means = {user for user in tensor.users if user.target == aten.mean.dim}
            for user in tensor.users:
                if user.target == aten.layer_norm.default and user.args[0] is tensor:
                    return True
                if user.target == aten.sub.Tensor and user.args[0] is tensor and user.args[1] in means:
                    return True
                if user.target in row_preserving:
                    following.append(user)
        frontier = following
    return False


class PT2EInt8:
    """One module captured with torch.export and calibrated once (litert-torch's PT2E
    flow); int8 graphs with any choice of compute nodes in float from that calibration.

    A choice re-annotates a fresh copy of the captured graph and takes each observer's
    statistics from the calibrated one (observers are keyed by the node they watch), so
    the budget search measures candidates without calibrating again. For the
    architectures in ``COMPUTE_ONLY_ARCHS`` only Conv/Linear are annotated.
    """

    def __init__(self, module, example, patches: np.ndarray, nhwc: bool, arch: str):
        import torch

        self.example, self.patches, self.nhwc = example, patches, nhwc
        self.compute_only = arch in COMPUTE_ONLY_ARCHS
        self._calibrated = None
        try:
            self.captured = torch.export.export(module, (example,)).module()
        except Exception as exc:
            raise EdgeSRError(f"int8 (PT2E): torch.export failed: {first_line(exc)}") from exc

    @property
    def calibrated(self):
        """Every compute node observed on the calibration patches (on first use: the
        groups and --keep-float are checked before this work)."""
        import torch
        from torchao.quantization.pt2e import quantize_pt2e

        if self._calibrated is None:
            try:
                prepared = quantize_pt2e.prepare_pt2e(self._fresh(), self.quantizer())
                with torch.no_grad():
                    for patch in self.patches:
                        prepared(self._batch(patch[None]))
            except Exception as exc:
                raise EdgeSRError(f"int8 (PT2E) calibration failed: {first_line(exc)}") from exc
            self._calibrated = prepared
        return self._calibrated

    def describe(self, section: dict) -> str:
        """Which ops are int8 (for the report's ``method``); records why in ``section``
        when only the compute ops are."""
        if not self.compute_only:
            return "every op litert-torch annotates"
        section["compute_only_reason"] = COMPUTE_ONLY_REASON
        return "Conv/Linear only, every other op in float"

    def quantizer(self, keep_float=()):
        return _quantizer(self.compute_only, frozenset(keep_float))

    def _fresh(self):
        import copy

        return copy.deepcopy(self.captured)

    def _batch(self, nchw: np.ndarray):
        import torch

        batch = torch.from_numpy(np.ascontiguousarray(nchw, dtype=np.float32))
        return batch.permute(0, 2, 3, 1).contiguous() if self.nhwc else batch

    def node_groups(self) -> dict[str, list[str]]:
        """Compute nodes by kind, as ``OnnxQuantizer.node_groups`` groups them: the first
        and last Conv alone, ``<kind>:norm-input`` for those that feed a normalisation,
        split by the module they are called from where those differ (HiT-SR's
        ``Linear:norm-input:correlation``, its output projections, and
        ``Linear:norm-input:fc2``, the MLPs' second layers, cost very differently)."""
        nodes = [n for n in self.captured.graph.nodes if _compute_kind(n)]
        convs = [n.name for n in nodes if _compute_kind(n) == "Conv"]
        special = {convs[0]: "Conv:first", convs[-1]: "Conv:last"} if len(convs) >= 3 else {}
        feeding = {n.name: f"{_compute_kind(n)}:norm-input" for n in nodes
                   if n.name not in special and _feeds_a_norm(n)}
        callers = {}
        for node in nodes:
            if node.name in feeding:
                callers.setdefault(feeding[node.name], set()).add(_caller(node))
        groups: dict[str, list[str]] = {}
        for node in nodes:
            group = special.get(node.name) or feeding.get(node.name) or _compute_kind(node)
            if len(callers.get(group, ())) > 1:
                group = f"{group}:{_caller(node)}"
            groups.setdefault(group, []).append(node.name)
        return groups

    def choose(self, options, val, float_psnr: float | None, arch: str, section: dict, stage) -> list[str]:
        """The compute nodes to keep in float: ``budget.KeepFloat.choose`` on this graph
        (its groups, the simulation's PSNR-Y on ``val``, the Conv/Linear/MatMul MACs, of
        which the quantizer leaves the activation-by-activation MatMuls in float)."""
        from edgesr.quantize.budget import KeepFloat
        from edgesr.quantize.quality import measure_psnr

        tile = tuple(options.input_size)
        nodes = [n for n in self.captured.graph.nodes if _compute_kind(n) or _is_matmul(n)]
        keep_float = KeepFloat(self.node_groups(),
                               lambda kept: measure_psnr(self.batch_fn(kept), val, tile, arch).psnr_y,
                               {n.name: _macs(n) for n in nodes}, [n.name for n in nodes if _is_matmul(n)])
        section["search_measured_with"] = SEARCH_MEASURED_WITH
        return keep_float.nodes_of(keep_float.choose(options, float_psnr, section, stage))

    def converted(self, keep_float=(), fold_quantize: bool = False):
        """The PT2E int8 module (quantize/dequantize nodes, float ops) with the nodes in
        ``keep_float`` in float; ``fold_quantize``: weights stored quantized."""
        import torch
        from torchao.quantization.pt2e import quantize_pt2e

        prepared = quantize_pt2e.prepare_pt2e(self._fresh(), self.quantizer(keep_float))
        calibrated = _observers(self.calibrated)
        for watched, observers in _observers(prepared).items():
            for observer, source in zip(observers, calibrated.get(watched, [])):
                observer.load_state_dict(source.state_dict())
        with torch.no_grad():
            return quantize_pt2e.convert_pt2e(prepared, fold_quantize=fold_quantize)

    def batch_fn(self, keep_float=()):
        """The PT2E simulation as an NCHW batch function (the budget search's measure)."""
        import torch

        module = self.converted(keep_float)

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                output = module(self._batch(batch))
            output = output.permute(0, 3, 1, 2) if self.nhwc else output
            return output.float().numpy()

        return run


def _observers(prepared) -> dict[str, list]:
    """The observer modules of a prepared graph, by the name of the node each watches."""
    found: dict[str, list] = {}
    for node in prepared.graph.nodes:
        if node.op == "call_module" and node.name.startswith("activation_post_process"):
            found.setdefault(node.args[0].name, []).append(prepared.get_submodule(node.target))
    return found
