"""Delegate readiness: what the mobile runtimes' own judges say about an exported file.

A file that converts is not yet a file that is fast on a phone: every op that an
accelerator cannot take splits the graph and sends work back to the CPU. Each target
has its judge, run here on the staged artifact:

- ONNX: onnxruntime's mobile usability analysis (``onnxruntime.tools.mobile_helpers.
  usability_checker``, the library behind ``python -m onnxruntime.tools.
  check_onnx_model_mobile_usability``), per execution provider: NNAPI, CoreML
  NeuralNetwork and CoreML MLProgram: partitions, nodes covered / total, unsupported
  ops and ORT's verdict ("should perform well ... as is: YES/MAYBE/NO").
- TFLite: LiteRT's model analyzer with GPU compatibility (``ai_edge_litert``'s
  ``ModelAnalyzer``): whether the GPU delegate takes the whole model, and which ops not.
- CoreML: the ML program's ops, with the ones flagged that are known not to run on the
  Neural Engine (see ``ANE_UNSUPPORTED``; sources in docs/delegates.md).

``Readiness.split`` is the policy's question: does the judge of the target's
delegate(s) report a graph split between accelerator and CPU? The ONNX judgement covers
the two EPs the issue asks for (NNAPI and CoreML MLProgram); CoreML NeuralNetwork (the
format older than iOS 15) is recorded but not required.
"""
from __future__ import annotations

import collections
import logging
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# ONNX EPs whose verdict decides ``split`` (the targets); the others are reported.
ONNX_REQUIRED_EPS = ("NNAPI", "CoreML MLProgram")
ONNX_EPS = ("NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram")

# MIL ops known not to run on the Apple Neural Engine, with the source that says so.
_HOLLANCE = "hollance/neural-engine docs/unsupported-layers.md (community measurements)"
ANE_UNSUPPORTED: dict[str, str] = {
    "gather": f"gather layers do not run on the ANE ({_HOLLANCE})",
    "gather_nd": f"gather layers do not run on the ANE ({_HOLLANCE})",
    "gather_along_axis": f"gather layers do not run on the ANE ({_HOLLANCE})",
    "scatter": f"gather/scatter layers do not run on the ANE ({_HOLLANCE})",
    "scatter_nd": f"gather/scatter layers do not run on the ANE ({_HOLLANCE})",
    "scatter_along_axis": f"gather/scatter layers do not run on the ANE ({_HOLLANCE})",
    "lstm": f"RNN layers do not run on the ANE ({_HOLLANCE})",
    "gru": f"RNN layers do not run on the ANE ({_HOLLANCE})",
    "rnn": f"RNN layers do not run on the ANE ({_HOLLANCE})",
}
# CoreML takes tensors of rank <= 5 (onnxruntime's CoreML EP refuses higher ranks for
# the same reason); the ANE itself favours rank-4 channels-first data (Apple, "Deploying
# Transformers on the Apple Neural Engine", 2022).
COREML_MAX_RANK = 5
# coremltools, "Typed Execution": a float 32 typed ML program executes on GPU and CPU.
FP32_NOTE = ("fp32 ML program: Core ML runs float32 programs on GPU and CPU only, never on the "
             "Neural Engine (coremltools 'Typed Execution'); export --precision fp16 for the ANE")


@dataclass
class DelegateReadiness:
    """One accelerator's view of the file."""

    name: str  # "NNAPI", "CoreML MLProgram", "LiteRT GPU", "Apple Neural Engine"
    ready: bool  # one partition, every node on the accelerator
    partitions: int | None  # None where the judge does not count them
    nodes_supported: int | None
    nodes_total: int | None
    unsupported_ops: list[str] = field(default_factory=list)
    verdict: str = ""  # the judge's own word (ORT: YES/MAYBE/NO)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def coverage(self) -> float | None:
        if not self.nodes_total or self.nodes_supported is None:
            return None
        return self.nodes_supported / self.nodes_total

    def line(self) -> str:
        parts = [self.name + ":"]
        if self.verdict:
            parts.append(self.verdict)
        if self.partitions is not None:
            parts.append(f"{self.partitions} partition{'s' if self.partitions != 1 else ''}")
        if self.nodes_total is not None:
            parts.append(f"{self.nodes_supported}/{self.nodes_total} nodes")
        if self.unsupported_ops:
            parts.append("unsupported " + ", ".join(self.unsupported_ops))
        return " ".join(parts)


@dataclass
class Readiness:
    """The judges' verdicts for one artifact (``to_dict`` goes in the report)."""

    target: str
    analyzer: str  # what produced the verdicts, in words
    delegates: list[DelegateReadiness] = field(default_factory=list)
    # Which delegates decide ``split`` (the others are informative).
    required: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Set when the analyzer could not run; ``split`` is then None (unknown).
    error: str | None = None

    @property
    def split(self) -> bool | None:
        if self.error is not None:
            return None
        judged = [d for d in self.delegates if d.name in self.required]
        return any(not d.ready for d in judged) if judged else None

    @property
    def ready(self) -> bool | None:
        split = self.split
        return None if split is None else not split

    def summary(self) -> str:
        if self.error is not None:
            return f"not analysed ({self.error})"
        verdict = "delegate-ready" if self.ready else "split graph"
        return f"{verdict}: " + "; ".join(d.line() for d in self.delegates)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ready"] = self.ready
        data["split"] = self.split
        data["summary"] = self.summary()
        for entry, delegate in zip(data["delegates"], self.delegates):
            entry["coverage"] = None if delegate.coverage is None else round(delegate.coverage, 4)
        return data


def analyze(target: str, path: Path, precision: str = "fp32") -> Readiness:
    """The readiness of the artifact at ``path`` for ``target``; never raises.

    An analyzer that cannot run (missing package, unreadable file) gives a Readiness
    with ``error`` set, which the report shows in words.
    """
    analyzers = {"onnx": analyze_onnx, "tflite": analyze_tflite, "coreml": analyze_coreml}
    if target not in analyzers:
        return Readiness(target, "none", error=f"no analyzer for target {target!r}")
    try:
        if target == "coreml":
            return analyze_coreml(Path(path), precision=precision)
        return analyzers[target](Path(path))
    except ImportError as exc:
        return Readiness(target, "none", error=f"analyzer not installed ({exc.name or exc})")
    except Exception as exc:  # an analyzer failure must not lose the export
        text = str(exc).strip().splitlines()
        return Readiness(target, "none", error=f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": "))


# --------------------------------------------------------------------------------------
# ONNX: onnxruntime's usability checker
# --------------------------------------------------------------------------------------


def analyze_onnx(path: Path) -> Readiness:
    """ORT's mobile usability analysis, as ``check_onnx_model_mobile_usability`` runs it.

    Like the command, the model is first optimised to ORT's BASIC level (what ORT does
    when it loads the model, e.g. constant folding), then every EP's partitioning is
    estimated with shape information.
    """
    import onnxruntime
    from onnxruntime.tools.mobile_helpers import usability_checker as checker
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    quiet = logging.getLogger("edgesr.readiness.ort")
    quiet.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / Path(path).name
        optimize_model(Path(path), optimized, use_external_initializers=True)
        model = ModelProtoWithShapeInfo(optimized.resolve()).model_with_shape_info
        dynamic_inputs, _ = checker.check_shapes(model.graph, quiet)
        judges = {
            "NNAPI": lambda m: checker.check_nnapi_partitions(m, True),
            "CoreML NeuralNetwork": lambda m: checker.check_coreml_partitions(
                m, True, "coreml_supported_neuralnetwork_ops.md"),
            "CoreML MLProgram": lambda m: checker.check_coreml_partitions(
                m, True, "coreml_supported_mlprogram_ops.md"),
        }
        delegates = []
        for name in ONNX_EPS:
            info = judges[name](model)
            verdict = info.suitability().name
            supported, total = info.num_supported_nodes, info.num_nodes
            delegates.append(DelegateReadiness(
                name=name,
                ready=info.num_partitions == 1 and supported == total,
                partitions=info.num_partitions,
                nodes_supported=supported,
                nodes_total=total,
                unsupported_ops=sorted(op.split(":", 1)[-1] for op in info.unsupported_ops),
                verdict=verdict,
                details={
                    "partition_sizes": [len(group) for group in info.supported_groups],
                    "unsupported_nodes_due_to_op": info.nodes_unsupported_due_to_op,
                    "unsupported_nodes_due_to_dynamic_shape": info.nodes_unsupported_due_to_dynamic_input,
                    "unsupported_nodes_due_to_rank": info.num_unsupported_nodes_due_to_rank,
                    "ops_with_unsupported_rank": sorted(info.ops_with_unsupported_rank),
                    "unsupported_node_ops": _unsupported_node_counts(model, info),
                    # Conditions ORT lists but cannot check from the graph alone.
                    "caveats": info.supported_ops_checker.get_caveats(),
                    "message": f"Model should perform well with {name} as is: {verdict}",
                },
            ))
    notes = []
    if dynamic_inputs:
        notes.append("dynamic input shapes: NNAPI takes none of the nodes whose shapes are not fixed; "
                     "export a fixed --input-size for mobile")
    return Readiness("onnx", f"onnxruntime {onnxruntime.__version__} mobile usability checker "
                     "(BASIC-optimised graph)", delegates, list(ONNX_REQUIRED_EPS), notes)


def _unsupported_node_counts(model, info) -> dict[str, int]:
    """op type -> how many nodes of the graph fall outside every supported partition."""
    covered = {id(node) for group in info.supported_groups for node in group}
    counts = collections.Counter(node.op_type for node in model.graph.node if id(node) not in covered)
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------------------
# TFLite: LiteRT's model analyzer with GPU compatibility
# --------------------------------------------------------------------------------------

_OP_LINE = re.compile(r"^\s*Op#(\d+)\s+([A-Z0-9_]+)\(")
_SUBGRAPH_LINE = re.compile(r"^Subgraph#(\d+)")
_COMPATIBLE = "Your model looks compatible with GPU delegate"


def litert_analyzer_text(path: Path, gpu_compatibility: bool = True) -> str:
    """The text dump of LiteRT's ModelAnalyzer (what ``tf.lite.experimental.Analyzer`` prints)."""
    from ai_edge_litert import _pywrap_analyzer_wrapper as analyzer

    return analyzer.ModelAnalyzer(str(path), True, bool(gpu_compatibility))


def parse_litert_analysis(text: str) -> DelegateReadiness:
    """Ops of the main subgraph and the GPU compatibility warnings that follow them."""
    total = 0
    incompatible: dict[int, str] = {}
    reasons: dict[str, set[str]] = collections.defaultdict(set)
    subgraph = None
    last_op: tuple[int, str] | None = None
    for line in text.splitlines():
        found = _SUBGRAPH_LINE.match(line)
        if found:
            subgraph = int(found.group(1))
            last_op = None
            continue
        found = _OP_LINE.match(line)
        if found:
            last_op = (int(found.group(1)), found.group(2))
            if subgraph == 0:
                total += 1
            continue
        if "GPU COMPATIBILITY WARNING" in line and last_op is not None and "has GPU delegate" not in line:
            index, op = last_op
            incompatible[index] = op
            reason = line.split("GPU COMPATIBILITY WARNING:", 1)[-1].strip()
            if reason:
                reasons[op].add(reason)
    compatible = _COMPATIBLE in text and not incompatible
    ops = sorted(set(incompatible.values()))
    # The GPU delegate takes maximal runs of compatible ops: count them like ORT does.
    partitions, inside = 0, False
    for index in range(total):
        if index in incompatible:
            inside = False
        elif not inside:
            partitions, inside = partitions + 1, True
    return DelegateReadiness(
        name="LiteRT GPU",
        ready=compatible,
        partitions=partitions if total else None,
        nodes_supported=total - len(incompatible),
        nodes_total=total,
        unsupported_ops=ops,
        verdict="compatible with GPU delegate" if compatible else "not compatible with GPU delegate",
        details={"incompatible_op_indices": sorted(incompatible),
                 "reasons": {op: sorted(text_) for op, text_ in sorted(reasons.items())}},
    )


def analyze_tflite(path: Path) -> Readiness:
    text = litert_analyzer_text(path, gpu_compatibility=True)
    delegate = parse_litert_analysis(text)
    notes = []
    if delegate.partitions is not None and delegate.partitions > 1:
        notes.append("partitions counted as runs of consecutive GPU-compatible ops in execution order "
                     "(an estimate, like ORT's)")
    import ai_edge_litert

    version = getattr(ai_edge_litert, "__version__", "")
    return Readiness("tflite", f"ai_edge_litert {version} ModelAnalyzer (gpu_compatibility=True)".replace("  ", " "),
                     [delegate], ["LiteRT GPU"], notes)


# --------------------------------------------------------------------------------------
# CoreML: the ML program's ops against what is known not to run on the Neural Engine
# --------------------------------------------------------------------------------------


def _mil_ops(block, found: list) -> None:
    for op in block.operations:
        found.append(op)
        for inner in op.blocks:
            _mil_ops(inner, found)


def _rank(value_type) -> int | None:
    if value_type.HasField("tensorType"):
        return int(value_type.tensorType.rank)
    return None


def analyze_coreml(path: Path, precision: str = "fp32") -> Readiness:
    from edgesr.runtimes.coreml_runner import read_spec

    spec = read_spec(path)
    if not spec.HasField("mlProgram"):
        return Readiness("coreml", "ML program op scan", error="not an ML program")
    operations: list = []
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            _mil_ops(block, operations)
    counts = collections.Counter(op.type for op in operations if op.type != "const")
    flagged: dict[str, str] = {}
    flagged_nodes = 0
    for op in operations:
        reason = ANE_UNSUPPORTED.get(op.type)
        if reason is None:
            for output in op.outputs:
                rank = _rank(output.type)
                if rank is not None and rank > COREML_MAX_RANK:
                    reason = (f"rank-{rank} tensor: Core ML takes rank <= {COREML_MAX_RANK} "
                              "(onnxruntime's CoreML EP refuses higher ranks); the ANE favours rank 4")
                    break
        if op.type == "conv" and "dilations" in op.inputs:
            dilations = _const_ints(op, "dilations", operations)
            if dilations and any(d != 1 for d in dilations):
                reason = f"dilated convolution ({_HOLLANCE})"
        if reason is not None:
            flagged.setdefault(op.type, reason)
            flagged_nodes += 1
    total = sum(counts.values())
    delegate = DelegateReadiness(
        name="Apple Neural Engine",
        ready=not flagged,
        partitions=None,
        nodes_supported=total - flagged_nodes,
        nodes_total=total,
        unsupported_ops=sorted(flagged),
        verdict="no op known to leave the ANE" if not flagged else "ops known not to run on the ANE",
        details={"ops": dict(sorted(counts.items())), "flags": dict(sorted(flagged.items())),
                 "precision": precision},
    )
    notes = [FP32_NOTE] if precision == "fp32" else []
    notes.append("op-level scan against documented limits; Core ML decides placement at load time "
                 "(check with Xcode's performance report on a device)")
    return Readiness("coreml", "ML program op scan against known Neural Engine limits",
                     [delegate], ["Apple Neural Engine"], notes)


def _const_ints(op, name: str, operations: list) -> list[int] | None:
    """Integer values of a const input of ``op`` (inline value or a const op's output)."""
    argument = op.inputs[name]
    for binding in argument.arguments:
        if binding.HasField("value"):
            return list(binding.value.immediateValue.tensor.ints.values)
        producer = next((o for o in operations if o.type == "const"
                         and any(out.name == binding.name for out in o.outputs)), None)
        if producer is not None and "val" in producer.attributes:
            return list(producer.attributes["val"].immediateValue.tensor.ints.values)
    return None
