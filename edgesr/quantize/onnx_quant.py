"""ONNX int8 (onnxruntime static quantization, QDQ) and w8 (int8 weights + DequantizeLinear).

int8: the float graph goes through onnxruntime's quantization pre-processing
(``quant_pre_process``: optimisation + shape inference), is calibrated once on the
calibration patches (ranges cached, so the budget search re-quantizes without
re-calibrating; see ``OnnxQuantizer.calibrate`` for the memory this needs), then
quantized in QDQ format with per-channel symmetric int8 weights and uint8 activations
(U8S8, what onnxruntime's CPU kernels run fastest). Only the compute ops
(``COMPUTE_OPS``: Conv, ConvTranspose, MatMul, Gemm) are quantized: that is where int8
arithmetic saves time, while a QDQ pair around each elementwise op only adds work and
rounding. HiT-SRF x4 (HiTNet, 128x128): every quantizable op 21.9 dB PSNR-Y on Set5
at 0.88x the fp32 speed; compute ops only 24.3 dB at 0.92x (float: 31.7 dB; this CPU
has AVX2 but no VNNI). See docs/quantization.md.
Nodes listed in ``keep_float`` are left out of quantization. A ``--fused-ops`` int8 file
is the one for onnxruntime's CPU: built on the float32-only graph, with the nodes of
``OnnxQuantizer.cpu_float_nodes`` in float whatever the budget search chooses, and the
elementwise ops between int8 layers (``OnnxQuantizer.int8_elementwise``) on uint8.

w8: weight-only: every Conv/ConvTranspose/MatMul/Gemm weight initializer is stored
as per-output-channel symmetric int8 with a DequantizeLinear in front; activations
stay float32 (smaller file, float compute).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable, Collection, Sequence

import numpy as np

from edgesr.calibration import CalibrationSet
from edgesr.errors import EdgeSRError
from edgesr.export.base import first_line

CALIB_METHODS = ("minmax", "percentile", "entropy")
# Weight inputs quantized by w8: op type -> (weight input index, channel axis of that weight)
_WEIGHT_INPUTS = {"Conv": (1, 0), "ConvTranspose": (1, 1), "MatMul": (1, -1), "Gemm": (1, None)}
# Ops onnxruntime performs the int8 arithmetic in: the ones a group's size is counted by.
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# Elementwise ops that a CPU file runs on uint8 where they sit between int8 layers
# (onnxruntime's QLinearMul / QLinearAdd; see OnnxQuantizer.int8_elementwise).
INT8_ELEMENTWISE = ("Mul", "Add")
# Ops that move values without changing them, looked through when following a tensor.
_LAYOUT_OPS = frozenset({"Reshape", "Transpose"})


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[name]


def quantizable_op_types() -> set[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QDQRegistry) | set(QLinearOpsRegistry)


def _conv_groups(node) -> int:
    return next((attr.i for attr in node.attribute if attr.name == "group"), 1)


def _is_depthwise(node) -> bool:
    return node.op_type == "Conv" and _conv_groups(node) > 1


def _fuse_gelus(path: Path) -> None:
    """The erf GELUs of the graph at ``path`` as onnxruntime's one-node Gelu (com.microsoft).

    onnxruntime fuses them itself when it loads a float graph, but not once a quantized
    conv feeds one: it gives each reader of a DequantizeLinear its own copy, and the
    GELU's two reads of its input then no longer match its fusion pattern (HiTNet with
    int8 depthwise convs: its 48 GELUs ran as Erf/Div/Mul/Add chains, Erf 28 + Mul 27 +
    Div 19 ms of kernel time, against 34 ms as Gelu kernels).
    Fused before quantization, the file needs onnxruntime, which is what it is for.
    """
    import onnx
    from onnxruntime.transformers.fusion_gelu import FusionGelu
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load_model(str(path)))
    FusionGelu(model).apply()
    model.prune_graph()
    onnx.save_model(model.model, str(path))


# onnxruntime's fast int8 depthwise kernel (MLAS ConvSym) takes group counts that are a
# multiple of 16 on x86 and of 8 on ARM64.
DEPTHWISE_GROUP_MULTIPLE = 16


def _dense_macs(node, data: list[int], weight: list[int], output: list[int]) -> int:
    if node.op_type == "Conv":  # each output takes (C_in / groups) * kH * kW
        return math.prod(output) * math.prod(weight[1:])
    if node.op_type == "ConvTranspose":  # each input feeds (C_out / groups) * kH * kW
        return math.prod(data) * math.prod(weight[1:])
    # MatMul, Gemm: the reduced axis is the first input's last (first if transA)
    transposed = any(a.name == "transA" and a.i for a in node.attribute)
    return math.prod(output) * (data[0] if transposed else data[-1])


class OnnxQuantizer:
    """One float ONNX graph, pre-processed and calibrated once; ``quantize(keep_float)`` many times.

    ``for_cpu``: the int8 file for onnxruntime's CPU (``--fused-ops``, built on the
    float32-only graph). The nodes of ``cpu_float_nodes`` (``float_by_design``) then stay
    float in every file this quantizer writes and are in no group, and Gemm outputs stay
    float: onnxruntime fuses DequantizeLinear -> Gemm without a QuantizeLinear after it into
    QGemm with a float output, so no Quantize/DequantizeLinear pair follows each Linear
    (HiTNet: 142 -> 70 DequantizeLinear; 1.30x -> 1.43x the default fp32 file's speed).
    The Mul and Add nodes of ``int8_elementwise`` run on uint8 too.
    """

    def __init__(self, float_path: Path, work: Path, calib: CalibrationSet, method: str = "minmax",
                 op_types: Sequence[str] | None = None, reduce_range: bool = False, for_cpu: bool = False):
        import onnx
        from onnxruntime.quantization import quant_pre_process

        if method not in CALIB_METHODS:
            raise EdgeSRError(f"--calib-method {method!r}: choose {', '.join(CALIB_METHODS)}")
        self.work, self.calib, self.method = Path(work), calib, method
        self.reduce_range = reduce_range
        # Op types whose outputs stay float (no QuantizeLinear after them).
        self.float_outputs = ["Gemm"] if for_cpu else []
        # Op types quantized (and whose tensors are calibrated); None: every type
        # onnxruntime can quantize.
        self.op_types = list(op_types) if op_types else None
        self.work.mkdir(parents=True, exist_ok=True)
        self.pre_path = self.work / "preprocessed.onnx"
        self.cache_path = self.work / "calibration.json"
        logging.getLogger().setLevel(logging.ERROR)
        try:
            quant_pre_process(str(float_path), str(self.pre_path), skip_symbolic_shape=True)
        except Exception as exc:  # pre-processing is an optimisation: fall back to the plain graph
            self.pre_note = f"onnxruntime quantization pre-processing failed ({first_line(exc)}); used the plain graph"
            self.pre_path.write_bytes(Path(float_path).read_bytes())
        else:
            self.pre_note = "onnxruntime quant_pre_process (optimisation + shape inference)"
        if for_cpu:
            _fuse_gelus(self.pre_path)
        self.model = onnx.load_model(str(self.pre_path))
        self.input_name = self.model.graph.input[0].name
        self.float_by_design = self.cpu_float_nodes() if for_cpu else {}
        self.always_float = [node for nodes in self.float_by_design.values() for node in nodes]
        # Whether Mul/Add between int8 layers are quantized too (``int8_elementwise``).
        self.elementwise_on_uint8 = for_cpu and self.op_types is not None

    def node_groups(self) -> dict[str, list[str]]:
        """Quantizable nodes grouped for the sensitivity search.

        One group per op type, with the first and the last Conv of the graph (the
        image-facing layers SR is known to be sensitive in) as groups of their own, and
        the nodes that feed a normalisation as ``<type>:norm-input``: a LayerNorm
        rescales every row to unit spread, so a row that a per-tensor int8 range rounds
        to a few steps (or to nothing) comes out as noise. In HiT-SRF (HiTNet) those are
        the first Conv, the correlations' output projections and the MLPs' second layers;
        with them in float, int8 costs 0.33 dB on Set5 instead of 7.5 (docs/quantization.md).
        Depthwise convs are ``Conv:depthwise``, weighed apart from the dense convs: on HiTNet
        (``--fused-ops``, minmax) the 24 cost 0.010 dB alone, the 115 other convs 0.089 dB.
        """
        types = set(self.op_types) if self.op_types else quantizable_op_types()
        nodes = [n for n in self.model.graph.node if n.op_type in types]
        groups: dict[str, list[str]] = {}
        convs = [n.name for n in nodes if n.op_type == "Conv"]
        special = {}
        if len(convs) >= 3:
            special = {convs[0]: "Conv:first", convs[-1]: "Conv:last"}
        consumers = _consumers(self.model.graph)
        fixed = set(self.always_float)
        for node in nodes:
            if node.name in fixed:
                continue
            group = special.get(node.name)
            if group is None and _feeds_a_norm(node, consumers):
                group = f"{node.op_type}:norm-input"
            elif group is None:
                group = "Conv:depthwise" if _is_depthwise(node) else node.op_type
            groups.setdefault(group, []).append(node.name)
        return groups

    def cpu_float_nodes(self) -> dict[str, list[str]]:
        """Compute nodes that an int8 file for onnxruntime's CPU keeps in float, by reason.

        Such a file (``--fused-ops``) is built from the float32-only graph, whose HiT-SR
        correlations skip the range scaling: their activation-by-activation MatMuls, and
        the first layers that read their output before a LayerNormalization (the output
        projections), see values that differ by many orders of magnitude between windows
        (calibrated ranges up to 8.7e12 on HiTNet), which no per-tensor int8 scale holds.
        Depthwise convs whose group count is not a multiple of ``DEPTHWISE_GROUP_MULTIPLE``
        stay float too: onnxruntime then runs them in its generic u8s8 path, which took 44 ms
        for HiTNet's 24 5x5 depthwise convs of 120 channels (128x128) where its float NCHWc
        conv took 17 (AMD EPYC, AVX-512 VNNI, 2 threads). The export pads HiT-SRF's to 128
        (``edgesr.rewrite.depthwise_padding``), which its fast symmetric kernel takes.
        Convs from one channel to one channel stay float: HiT-SR's key-cell pooling is such a
        strided conv, with the map's channels as its batch, and onnxruntime's int8 conv runs
        each image of the batch as its own small GEMM between two layout transposes. HiTNet's
        16 (128x128) took 24.7 ms of kernel time in int8 and 6.1 ms in float; the whole int8
        file 545 -> 508 ms (minmax ranges; 48 fewer Transposes).
        """
        graph = self.model.graph
        constants = {tensor.name: tuple(tensor.dims) for tensor in graph.initializer}  # name -> shape
        consumers = _consumers(graph)
        products = [node for node in graph.node if node.op_type == "MatMul"
                    and node.input[0] not in constants and node.input[1] not in constants]
        readers: dict[str, None] = {}
        for product in products:
            frontier, seen = list(product.output), set()
            while frontier:
                for user in consumers.get(frontier.pop(), []):
                    if user.name in seen or user.op_type == "LayerNormalization":
                        continue
                    seen.add(user.name)
                    if user.op_type in COMPUTE_OPS:
                        if user.input[1] in constants:
                            readers[user.name] = None
                    else:
                        frontier.extend(name for name in user.output if name)
        depthwise = [node.name for node in graph.node
                     if _is_depthwise(node) and _conv_groups(node) % DEPTHWISE_GROUP_MULTIPLE]
        single_channel = [node.name for node in graph.node if node.op_type == "Conv"
                          and constants.get(node.input[1], ())[:2] == (1, 1) and _conv_groups(node) == 1]
        reasons = {
            "activation MatMuls of the unscaled correlations": [node.name for node in products],
            "layers reading an unscaled correlation": list(readers),
            f"depthwise Conv whose groups are not a multiple of {DEPTHWISE_GROUP_MULTIPLE} (onnxruntime's generic "
            f"int8 depthwise path is slower than its float conv)": depthwise,
            "Conv from one channel to one channel (onnxruntime's int8 conv runs each image of the "
            "batch apart, slower than its float conv)": single_channel,
        }
        return {reason: nodes for reason, nodes in reasons.items() if nodes}

    def int8_elementwise(self, keep_float: Collection[str] = ()) -> list[str]:
        """Mul and Add nodes of a CPU file that run on uint8 (QLinearMul / QLinearAdd), given
        the compute nodes kept float besides ``always_float``: a product of two int8 layers' outputs (the gates
        of HiT-SR's correlations), and a sum of two activations that only int8 layers read
        and one of whose terms an int8 layer reads too (the ConvFFN's residual sum, between
        its int8 depthwise conv and its int8 second Linear).

        Both inputs are uint8 already (or one is, and the sum needs a QuantizeLinear for its
        reader anyway), so the op saves two DequantizeLinear, a float op and, for the gate,
        the float copies of the window partitions that follow it (they move uint8 instead).
        HiTNet x4 (128x128, minmax): 406 -> 369 ms (AMD EPYC, AVX-512 VNNI, 2 threads),
        0.01 dB on Set5. Elementwise ops elsewhere stay float: a Q/DQ pair around one only
        adds work and rounding.
        """
        if not self.elementwise_on_uint8:
            return []
        float_nodes = {*self.always_float, *keep_float}
        graph = self.model.graph
        constants = {tensor.name for tensor in graph.initializer}
        producers = {out: node for node in graph.node for out in node.output}
        consumers = _consumers(graph)

        def int8_layer(node) -> bool:
            return node is not None and node.op_type in COMPUTE_OPS and node.name not in float_nodes

        def readers(tensor: str) -> list:
            found, frontier = [], [tensor]
            while frontier:
                for user in consumers.get(frontier.pop(), []):
                    if user.op_type in _LAYOUT_OPS:
                        frontier.extend(user.output)
                    else:
                        found.append(user)
            return found

        chosen = []
        for node in graph.node:
            if node.op_type not in INT8_ELEMENTWISE or len(node.input) != 2 or set(node.input) & constants:
                continue
            if node.op_type == "Mul":
                if all(int8_layer(producers.get(name)) for name in node.input):
                    chosen.append(node.name)
                continue
            outputs = readers(node.output[0])
            if outputs and all(map(int8_layer, outputs)) and any(
                    int8_layer(user) for name in node.input for user in readers(name)):
                chosen.append(node.name)
        return chosen

    def node_macs(self) -> dict[str, int]:
        """Multiply-accumulates of each compute node (``COMPUTE_OPS``), from the shapes
        that the pre-processing inferred (0 where a shape is unknown, e.g. --dynamic).
        A constant weight's zeros do no work and are not counted: the zero channels of the
        depthwise padding (``edgesr.rewrite.depthwise_padding``) would otherwise count as
        int8 MACs (a trained weight has no exact zeros)."""
        from onnx import numpy_helper

        graph = self.model.graph
        shapes = {info.name: [dim.dim_value for dim in info.type.tensor_type.shape.dim]
                  for info in (*graph.value_info, *graph.input, *graph.output)}
        constants = {tensor.name: tensor for tensor in graph.initializer}
        shapes.update({name: list(tensor.dims) for name, tensor in constants.items()})
        macs = {}
        for node in graph.node:
            if node.op_type not in COMPUTE_OPS:
                continue
            data, weight, output = (shapes.get(name) for name in (node.input[0], node.input[1], node.output[0]))
            if not (data and weight and output) or 0 in (*data, *weight, *output):
                macs[node.name] = 0
            else:
                macs[node.name] = _dense_macs(node, data, weight, output)
                if node.input[1] in constants:  # every weight entry is used equally often
                    values = numpy_helper.to_array(constants[node.input[1]])
                    macs[node.name] = macs[node.name] * int(np.count_nonzero(values)) // max(1, values.size)
        return macs

    def calibrate(self) -> None:
        """Activation ranges of every tensor over the calibration patches, into the cache
        that ``quantize_static`` reads.

        onnxruntime's calibrator runs a copy of the graph with a ReduceMin and a ReduceMax
        on every tensor. In its default execution order that copy keeps the tensors alive
        long after their last use: HiT-SRF at 128x128 took 12.7 GB for one patch and was
        OOM-killed on this 24 GB machine (the plain graph: 1.0 GB). Priority-based order
        runs each reduction right after its tensor: 1.1 GB. So the calibrator's session is
        replaced by one with that order, and fed one patch per call (the histogram
        calibrators hold every tensor of the patches of one call).
        """
        import onnxruntime as ort
        from onnxruntime.quantization.calibrate import save_tensors_data

        calibrator = self._calibrator()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
        options.log_severity_level = 3
        calibrator.infer_session = ort.InferenceSession(calibrator.augmented_model_path, options,
                                                        providers=["CPUExecutionProvider"])
        for patch in self.calib.patches:
            calibrator.collect_data(_OnePatch(self.input_name, patch))
        save_tensors_data(calibrator.compute_data(), self.cache_path)

    def _calibrator(self):
        """onnxruntime's calibrator for ``self.method`` over the tensors that a quantized node
        may read or write: the compute ops' and, in a CPU file, those of the
        ``int8_elementwise`` candidates (calibrating every Mul and Add would add 387 tensors
        to HiTNet's 742, each a second of the entropy search), less those that only
        ``always_float`` nodes touch (onnxruntime selects by op type alone)."""
        from onnxruntime.quantization import calibrate

        base, settings = {
            "minmax": (calibrate.MinMaxCalibrater, {}),
            "percentile": (calibrate.PercentileCalibrater, {"num_bins": 2048, "percentile": 99.999, "symmetric": True}),
            "entropy": (calibrate.EntropyCalibrater, {"num_bins": 128, "num_quantized_bins": 128}),
        }[self.method]
        candidates = set(self.int8_elementwise())
        extra = {name for node in self.model.graph.node if node.name in candidates
                 for name in (*node.input, *node.output)}
        types, float_nodes = set(self.op_types or quantizable_op_types()), set(self.always_float)
        quantizable = {name for node in self.model.graph.node if node.op_type in types and node.name not in float_nodes
                       for name in (*node.input, *node.output)}

        class Calibrator(base):
            def select_tensors_to_calibrate(self, model):
                tensors, value_infos = super().select_tensors_to_calibrate(model)
                return (tensors & quantizable) | (extra & set(value_infos)), value_infos

        calibrator = Calibrator(self.pre_path, self.op_types, str(self.work / "augmented.onnx"), **settings)
        calibrator.augment_graph()
        return calibrator

    def quantize(self, destination: Path, keep_float: Sequence[str] = ()) -> Path:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        op_types, float_elementwise = self.op_types, []
        if self.elementwise_on_uint8:
            int8_elementwise = set(self.int8_elementwise(keep_float))
            op_types = [*self.op_types, *INT8_ELEMENTWISE]
            float_elementwise = [node.name for node in self.model.graph.node
                                 if node.op_type in INT8_ELEMENTWISE and node.name not in int8_elementwise]
        try:
            if not self.cache_path.exists():
                self.calibrate()
            quantize_static(
                str(self.pre_path), str(destination), None,
                quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=self.reduce_range,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=_method(self.method), nodes_to_exclude=[*self.always_float, *keep_float, *float_elementwise],
                op_types_to_quantize=op_types,
                calibration_cache_path=str(self.cache_path),
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                               "OpTypesToExcludeOutputQuantization": self.float_outputs},
            )
        except EdgeSRError:
            raise
        except Exception as exc:
            raise EdgeSRError(f"onnxruntime quantization failed: {first_line(exc)}") from exc
        return destination


# Ops between a layer and the normalisation it feeds that change no row's spread.
_ROW_PRESERVING = frozenset({"Add", "Reshape", "Transpose", "Squeeze", "Unsqueeze"})


def _consumers(graph) -> dict[str, list]:
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _feeds_a_norm(node, consumers: dict[str, list], hops: int = 3) -> bool:
    """Whether ``node``'s output reaches a normalisation through at most ``hops``
    row-preserving ops: a LayerNormalization, or the decomposed form ``x - mean(x)``
    (a ReduceMean whose result is subtracted from its own input)."""
    frontier = [name for name in node.output if name]
    for _ in range(hops + 1):
        following = []
        for tensor in frontier:
            users = consumers.get(tensor, [])
            means = {out for user in users if user.op_type == "ReduceMean" for out in user.output}
            for user in users:
                if user.op_type == "LayerNormalization" and user.input[0] == tensor:
                    return True
                if user.op_type == "Sub" and user.input[0] == tensor and user.input[1] in means:
                    return True
                if user.op_type in _ROW_PRESERVING:
                    following.extend(name for name in user.output if name)
        frontier = following
    return False


class _OnePatch:
    """An onnxruntime CalibrationDataReader that yields one patch (NCHW, batch 1), once."""

    def __init__(self, input_name: str, patch: np.ndarray):
        self.item = {input_name: np.ascontiguousarray(patch[None])}

    def get_next(self):
        item, self.item = self.item, None
        return item


def weight_only_int8(float_path: Path, destination: Path) -> int:
    """w8: int8 per-channel weights + DequantizeLinear; returns how many weights were quantized."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_model(str(float_path))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    done: dict[str, str] = {}
    new_nodes = []
    for node in graph.node:
        spec = _WEIGHT_INPUTS.get(node.op_type)
        if spec is None or len(node.input) <= spec[0]:
            continue
        name = node.input[spec[0]]
        if name not in initializers or name in done:
            continue
        weight = numpy_helper.to_array(initializers[name])
        if weight.dtype != np.float32 or weight.ndim < 2 or weight.size < 64:
            continue
        axis = spec[1] if spec[1] is not None else (0 if _trans_b(node) else 1)
        axis = axis % weight.ndim
        reduce_axes = tuple(i for i in range(weight.ndim) if i != axis)
        scale = np.max(np.abs(weight), axis=reduce_axes) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        shape = [1] * weight.ndim
        shape[axis] = -1
        q = np.clip(np.round(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
        graph.initializer.remove(initializers[name])
        graph.initializer.extend([
            numpy_helper.from_array(q, name + "_int8"),
            numpy_helper.from_array(scale, name + "_scale"),
            numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), name + "_zero_point"),
        ])
        new_nodes.append(helper.make_node("DequantizeLinear", [name + "_int8", name + "_scale",
                                                               name + "_zero_point"], [name],
                                          name=name + "_dequantize", axis=axis))
        done[name] = name + "_int8"
    # DequantizeLinear nodes first: the graph stays topologically sorted.
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes + nodes)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(destination))
    return len(done)


def _trans_b(node) -> bool:
    return any(a.name == "transB" and a.i == 1 for a in node.attribute)


def session_fn(path: Path, threads: int | None = None, exact: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """An NCHW batch function over an onnxruntime CPU session (private: no metadata needed).

    ``exact``: every graph optimisation off, so that each QDQ node runs as written
    (DequantizeLinear -> float op -> QuantizeLinear). That is the arithmetic the file
    specifies (int32 accumulation, up to float rounding) on any host; the default session
    fuses QDQ into the host's integer kernels, whose results depend on the CPU
    (``edgesr.hostcpu``: U8S8 saturates on AVX2 without VNNI).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # With spinning worker threads, 3 of 6 sessions of the same int8 HiTNet file ran 1.6x
    # slower than the others throughout (its DequantizeLinear and Transpose kernels 2-3.5x);
    # without, 6 of 6 ran at the fast speed (2 cores, AMD EPYC).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if exact:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise EdgeSRError(f"{Path(path).name}: onnxruntime cannot load the quantized graph "
                          f"({first_line(exc)})") from None
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: np.ascontiguousarray(batch, np.float32)})[0], np.float32)

    return run


def export_quantized(target, module, example, options, destination: Path, work: Path, calib, val,
                     float_quality, arch, stage) -> dict:
    """The ONNX side of ``edgesr.quantize.convert``: float graph, then int8 / w8 / as is."""
    import shutil

    from edgesr.quantize import float_options
    from edgesr.quantize.budget import KeepFloat
    from edgesr.quantize.quality import latency_comparison, measure_psnr

    float_path = work / "float.onnx"
    stage("converting the float graph")
    target.convert(module, example, float_options(options) if options.precision in ("int8", "w8")
                   else options, float_path)
    section: dict = {"runtime": "onnxruntime CPUExecutionProvider",
                     "gate": EXACT_GATE if options.precision == "int8" else "onnxruntime CPU, default graph"}
    tile = tuple(options.input_size)

    def psnr_of(path: Path, exact: bool = True):
        return measure_psnr(session_fn(path, exact=exact), val, tile, arch) if val is not None else None

    if options.precision == "w8":
        count = weight_only_int8(float_path, destination)
        section["method"] = (f"weight-only: {count} Conv/MatMul/Gemm weights as per-channel symmetric "
                             f"int8 + DequantizeLinear; activations float32")
    elif options.precision == "int8":
        stage(f"onnxruntime static quantization (QDQ, per-channel weights, {options.calib_method} "
              f"calibration on {len(calib)} patches)")
        for_cpu = options.float32_only(target.name)
        quantizer = OnnxQuantizer(float_path, work, calib, options.calib_method, op_types=COMPUTE_OPS,
                                  reduce_range=options.reduce_range, for_cpu=for_cpu)
        section["preprocessing"] = quantizer.pre_note
        if quantizer.float_by_design:
            section["float_by_design"] = {reason: len(nodes) for reason, nodes in quantizer.float_by_design.items()}
        candidate, last_measured = work / "candidate.onnx", []

        def measure(nodes):
            quantizer.quantize(candidate, nodes)
            last_measured[:] = nodes
            return psnr_of(candidate).psnr_y

        keep_float = KeepFloat(quantizer.node_groups(), measure, quantizer.node_macs(), quantizer.always_float)
        weights = "7-bit (--reduce-range)" if options.reduce_range else "int8"
        section["method"] = (f"onnxruntime quantize_static, QDQ, {'/'.join(COMPUTE_OPS)} only, per-channel "
                             f"symmetric {weights} weights, uint8 asymmetric activations (U8S8)"
                             + ("; Gemm outputs float (onnxruntime's QGemm with a float output); Mul/Add "
                                "between int8 layers on uint8" if for_cpu else ""))
        chosen = keep_float.nodes_of(keep_float.choose(options, float_quality.psnr_y if float_quality else None,
                                                       section, stage))
        if candidate.exists() and last_measured == chosen:  # plain int8, or the search's last step
            candidate.replace(destination)
        else:
            quantizer.quantize(destination, chosen)
        if for_cpu:
            section["int8_elementwise"] = {
                "ops": len(quantizer.int8_elementwise(chosen)),
                "why": "products of two int8 layers and sums that only int8 layers read run on uint8 "
                       "(onnxruntime's QLinearMul / QLinearAdd); other elementwise ops stay float"}
    else:
        shutil.copyfile(float_path, destination)
    quality = psnr_of(destination)
    section["quantized"] = quality.to_dict() if quality else None
    if options.precision == "int8" and quality is not None:
        section["host_kernels"] = host_kernel_quality(psnr_of(destination, exact=False), quality)
    shape = (1, 3, *tile)
    stage("latency (onnxruntime CPU)")
    reference_path = float_path if options.precision != "fp32" else destination
    section["latency_ms"] = latency_comparison(session_fn(reference_path), session_fn(destination), shape,
                                               options.precision)
    section["size_bytes"] = {"fp32": float_path.stat().st_size, options.precision: destination.stat().st_size}
    return section


EXACT_GATE = ("onnxruntime with graph optimisations off: each QDQ node runs as written "
              "(DequantizeLinear -> float op -> QuantizeLinear), the file's own arithmetic on any host")


def host_kernel_quality(host, exact, note: str | None = None) -> dict:
    """The same file on this host's fused integer kernels, beside the exact verdict
    (``note``: what the host's kernels do; default: onnxruntime's U8S8 on this CPU)."""
    from edgesr import hostcpu

    figure = {"psnr_y": round(host.psnr_y, 4), "vs_exact_db": round(host.psnr_y - exact.psnr_y, 4),
              "cpu": hostcpu.describe()}
    if note:
        figure["note"] = note
    elif hostcpu.u8s8_saturates():
        figure["note"] = ("this host has AVX2 without VNNI: onnxruntime's U8S8 kernels sum u8*s8 pairs in "
                          "int16, which saturates; phones and VNNI CPUs accumulate in int32 (the exact "
                          "figure). Export with --reduce-range to deploy on such a host")
    else:
        figure["note"] = ("this host's int8 kernels accumulate in int32; a CPU with AVX2 but no VNNI "
                          "saturates U8S8 pair sums (export with --reduce-range for such a host)")
    return figure
