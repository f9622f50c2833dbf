"""SRConvNet rewrites: parity with the original maths, purity, selection, exported ops."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from edgesr.models.descriptor import ModelInfo, attach
from edgesr.models.srconvnet import DynamicDepthwiseConv2d, FourierUnit, build
from edgesr.rewrite import dft_plan, prepare_for_export
from edgesr.rewrite.dynamic_conv import FORM_BY_TARGET, FORMS, ShiftedSumDynamicConv, dynamic_conv_static
from edgesr.rewrite.fourier import (
    AnySizeFourierUnit,
    DFTFourierUnit,
    fourier_any_size,
    fourier_as_dft,
)
from tests.conftest import make_every_branch_count

# The network works on [0, 255]: the bound is 1e-5 x output range.
TOLERANCE = 1e-5 * 255
SMALL = {"dim": 16, "num_blocks": 2, "num_heads": 2, "num_kernels": 4}
# (batch, H, W): odd and even W, non-square, batch 2.
SIZES = [(1, 16, 16), (2, 12, 17), (1, 9, 20), (2, 15, 7)]


def _small_model(scale: int = 2, **overrides) -> nn.Module:
    hparams = {**SMALL, **overrides}
    model = make_every_branch_count(build(scale, **hparams))
    return attach(model, ModelInfo("srconvnet", scale, hparams, 255.0))


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return _small_model()


def _input(batch: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 255


def _max_error(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item()


@pytest.mark.parametrize("size", [(1, 1), (1, 2), (2, 1), (3, 5), (4, 4), (6, 7), (7, 6), (8, 9),
                                  (16, 15), (13, 32), (32, 24), (40, 52), (64, 64), (120, 36), (127, 20)])
def test_dft_unit_matches_fourier_unit(size: tuple[int, int]) -> None:
    torch.manual_seed(sum(size))
    unit = FourierUnit(4).eval()
    x = torch.randn(2, 4, *size) * 10
    with torch.no_grad():
        expected = unit(x)
        scale = expected.abs().max().item() + 1e-6
        for rewritten in (DFTFourierUnit(unit, size), AnySizeFourierUnit(unit)):
            error = (rewritten(x) - expected).abs().max().item()
            assert error <= 2e-6 * scale, (type(rewritten).__name__, size, error, scale)


@pytest.mark.parametrize("height, radices", [(256, (16, 16)), (128, (8, 16)), (120, (10, 12)), (129, (3, 43)),
                                             (127, (1, 127)), (2, (1, 2)), (1, (1, 1)), (8192, (64, 128))])
def test_run_time_plan_splits_h_in_two_stages(height: int, radices: tuple[int, int]) -> None:
    """The any-size unit's H split (chosen in the graph): the largest radix up to sqrt(H)
    and dft_plan.MAX_RUN_TIME_RADIX first; a prime H gets 1 (one stage in effect)."""
    plan, matrices = dft_plan.run_time_plan(torch.zeros(1, 1, height, 6))
    assert plan.radices == radices and not plan.halvings
    assert matrices["fwd_h1_re"].shape == (2 * radices[0], radices[0])
    assert matrices["fwd_h2"].shape == matrices["inv_h2"].shape == (radices[0], 2 * radices[1], 2 * radices[1])
    assert matrices["fwd_w_re"].shape == (6, 4)


def _ordered_factorizations(height: int, stages: int = 3) -> list[tuple[int, ...]]:
    """Every way to write ``height`` as an ordered product of at most ``stages`` factors >= 2
    (and ``height`` alone)."""
    found = [(height,)]
    if stages > 1:
        for first in range(2, height):
            if height % first == 0:
                found += [(first, *rest) for rest in _ordered_factorizations(height // first, stages - 1)]
    return found


@pytest.mark.parametrize("size", [(9, 7), (12, 10), (13, 13), (15, 8), (33, 35), (48, 64), (64, 48), (128, 20),
                                  (7, 68), (9, 200), (12, 128)])
@pytest.mark.parametrize("form", ["chosen", "plain"])
def test_mixed_radix_and_plain_forms_match_fourier_unit(size: tuple[int, int], form: str) -> None:
    """Every H split of the mixed-radix DFT (one, two or three stages, twiddles folded),
    with every number of W halvings up to the chosen one (and the one-stage form),
    equals rfft2/irfft2: composite H, prime H (one stage), odd/even W, W halved down to
    an odd-half rest (200 -> 50), batch 2."""
    from edgesr.rewrite import dft_plan

    torch.manual_seed(sum(size))
    unit = FourierUnit(4).eval()
    with torch.no_grad():
        unit.conv_layer.weight.copy_(torch.randn_like(unit.conv_layer.weight))
    x = torch.randn(2, 4, *size) * 10
    plan = dft_plan.choose(*size) if form == "chosen" else dft_plan.plain(*size)
    splits = [dft_plan.Plan(size[0], size[1], radices, halvings)
              for radices in _ordered_factorizations(size[0]) for halvings in range(plan.halvings + 1)] \
        if form == "chosen" else [plan]
    with torch.no_grad():
        expected = unit(x)
        scale = expected.abs().max().item()
        for each in {plan, *splits}:
            for broadcast_free in (False, True):  # True: TFLite's form of the second stage
                error = (DFTFourierUnit(unit, size, each, broadcast_free)(x) - expected).abs().max().item()
                assert error <= 2e-6 * scale, (each.describe(), broadcast_free, error, scale)


def test_mixed_radix_is_chosen_where_it_takes_fewer_macs() -> None:
    from edgesr.rewrite import dft_plan

    assert not dft_plan.choose(13, 16).factored  # prime H: one stage
    big = dft_plan.choose(256, 256)
    assert big.radices == (8, 4, 8) and big.halvings == 3 and big.rest_width == 32
    assert big.transform_macs() < 0.17 * dft_plan.plain(256, 256).transform_macs()
    assert dft_plan.choose(128, 128).radices == (4, 4, 8)
    assert dft_plan.choose(128, 128).transform_macs() < 0.21 * dft_plan.plain(128, 128).transform_macs()
    # three stages only from H = 128 on, with radices of at least 4
    assert dft_plan.choose(64, 64).radices == (8, 8) and dft_plan.choose(120, 16).radices == (10, 12)
    assert sum(big.w_columns()) == big.half_width
    # W is halved while it is a multiple of 4 and at least 64 (below, a level costs more than it saves)
    assert [dft_plan.halvings_for(w) for w in (32, 48, 64, 66, 100, 128, 200)] == [0, 0, 1, 0, 1, 2, 2]
    # 5 N log2 N per complex transform: a 128x128 rfft2 of one channel
    assert dft_plan.fft_flops(128, 128) == pytest.approx(2.5 * 128 * 7 * 128 + 5 * 128 * 7 * 65)


@pytest.mark.parametrize("width", [8, 64])  # 64: W halved once, DC and Nyquist in the rest
def test_dft_unit_keeps_c2r_semantics(width: int) -> None:
    # Non-zero imaginary parts in the DC and Nyquist columns (which a random conv
    # produces) are ignored by irfft2; an identity conv with no GELU would hide that.
    torch.manual_seed(0)
    unit = FourierUnit(2).eval()
    with torch.no_grad():
        unit.conv_layer.weight.copy_(torch.randn_like(unit.conv_layer.weight))
    unit.act = nn.Identity()
    x = torch.randn(1, 2, 6, width)
    with torch.no_grad():
        expected = unit(x)
        assert (DFTFourierUnit(unit, (6, width))(x) - expected).abs().max() < 1e-5
        assert (AnySizeFourierUnit(unit)(x) - expected).abs().max() < 1e-5


def test_dft_unit_refuses_another_size(model: nn.Module) -> None:
    rewritten = fourier_as_dft(model, (16, 16))
    with pytest.raises(ValueError, match="16x16"):
        rewritten(_input(1, 16, 12))


@pytest.mark.parametrize("batch,height,width", SIZES)
def test_fourier_rewrites_parity(model: nn.Module, batch: int, height: int, width: int) -> None:
    x = _input(batch, height, width)
    assert _max_error(fourier_as_dft(model, (height, width)), model, x) <= TOLERANCE
    assert _max_error(fourier_any_size(model), model, x) <= TOLERANCE


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("batch,height,width", SIZES)
def test_dynamic_conv_forms_parity(model: nn.Module, form: str, batch: int, height: int, width: int) -> None:
    x = _input(batch, height, width)
    assert _max_error(dynamic_conv_static(model, form), model, x) <= TOLERANCE


@pytest.mark.parametrize("batch,height,width", SIZES)
@pytest.mark.parametrize("strip_bytes", [1, 2500, 9000])
def test_shifted_sum_in_row_strips_matches_the_conv(batch: int, height: int, width: int, strip_bytes: int) -> None:
    torch.manual_seed(height * width)
    conv = DynamicDepthwiseConv2d(16, 5, 3).eval()
    x = torch.randn(batch, 16, height, width) * 10
    shifted = ShiftedSumDynamicConv(conv, strip_bytes=strip_bytes)
    bounds = shifted.strip_bounds(x)
    expected_strips = min(height, -(-4 * x.numel() // strip_bytes))
    assert len(bounds) - 1 == expected_strips and bounds[0] == 0 and bounds[-1] == height
    assert all(bottom > top for top, bottom in zip(bounds, bounds[1:]))
    with torch.no_grad():
        expected = conv(x)
        assert (shifted(x) - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()


def test_dynamic_conv_parity_x4_batch_samples_differ() -> None:
    # Different images give different kernels: batch 2 must match per-sample runs.
    model = _small_model(scale=4, num_blocks=1)
    x = torch.cat([_input(1, 8, 11, seed=2), _input(1, 8, 11, seed=3) * 0.3])
    for form in FORMS:
        rewritten = dynamic_conv_static(fourier_as_dft(model, (8, 11)), form)
        assert _max_error(rewritten, model, x) <= TOLERANCE


@pytest.mark.parametrize("target", ["onnx", "tflite", "coreml"])
def test_combined_rewrites_parity(model: nn.Module, target: str) -> None:
    batch, height, width = SIZES[1]
    x = _input(batch, height, width)
    prepared = prepare_for_export(model, target, (height, width), batch=batch)
    assert _max_error(prepared, model, x) <= TOLERANCE
    dynamic = prepare_for_export(model, target, None)
    for batch, height, width in (SIZES[0], SIZES[3]):
        assert _max_error(dynamic, model, _input(batch, height, width)) <= TOLERANCE


def test_rewrites_are_pure(model: nn.Module) -> None:
    x = _input(1, 12, 13)
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(x)
    outputs = [
        fourier_as_dft(model, (12, 13)),
        fourier_any_size(model),
        *(dynamic_conv_static(model, form) for form in FORMS),
        prepare_for_export(model, "coreml", (12, 13)),
    ]
    with torch.no_grad():
        assert torch.equal(model(x), before)
    after_state = model.state_dict()
    assert list(after_state) == list(before_state)
    assert all(torch.equal(after_state[k], before_state[k]) for k in before_state)
    assert any(isinstance(m, FourierUnit) for m in model.modules())
    assert any(isinstance(m, DynamicDepthwiseConv2d) for m in model.modules())
    for rewritten in outputs:
        assert rewritten is not model
        state = rewritten.state_dict()
        # Same keys in the same order: reports and metadata still line up, and an
        # official checkpoint still loads strictly into the rewritten model.
        assert list(state) == list(before_state)
        assert all(torch.equal(state[k], before_state[k]) for k in before_state)
        # Parameters are not shared with the input model.
        assert all(
            p.data_ptr() != q.data_ptr()
            for p, q in zip(rewritten.parameters(), model.parameters())
        )


def test_rewritten_model_loads_official_state_dict(model: nn.Module) -> None:
    rewritten = dynamic_conv_static(fourier_as_dft(_small_model(), (8, 8)), "bank_conv")
    rewritten.load_state_dict(model.state_dict(), strict=True)


@pytest.mark.parametrize("target", ["onnx", "tflite", "coreml"])
def test_prepare_for_export_picks_rewrites(model: nn.Module, target: str) -> None:
    fixed = prepare_for_export(model, target, (24, 32))
    names = [entry["name"] for entry in fixed.edgesr_rewrites]
    # Registration order follows import order; both must be there, once each
    # (other modules in REWRITE_MODULES may add their own rewrites).
    assert names.count("fourier_as_dft") == 1 and names.count("dynamic_conv_static") == 1
    assert not any(isinstance(m, (FourierUnit, DynamicDepthwiseConv2d)) for m in fixed.modules())
    units = [m for m in fixed.modules() if isinstance(m, DFTFourierUnit)]
    assert len(units) == SMALL["num_blocks"] and all(u.size == (24, 32) for u in units)
    assert all(u.broadcast_free == (target == "tflite") for u in units)
    form = FORM_BY_TARGET[target]
    convs = [m for m in fixed.modules() if getattr(m, "form", None)]
    assert len(convs) == 2 * SMALL["num_blocks"] and all(c.form == form for c in convs)
    note = next(e["note"] for e in fixed.edgesr_rewrites if e["name"] == "dynamic_conv_static")
    assert repr(form) in note
    dynamic = prepare_for_export(model, target, None)
    assert any(isinstance(m, AnySizeFourierUnit) for m in dynamic.modules())
    assert not any(isinstance(m, DFTFourierUnit) for m in dynamic.modules())


def test_desktop_onnx_keeps_the_runtime_weight_conv(model: nn.Module) -> None:
    """--fused-ops (fixed-size ONNX for desktop onnxruntime, batch 1): the original
    dynamic conv, whose runtime weight ORT's CPU/CUDA kernels take, is the fastest form;
    with a free batch (--dynamic) its groups would not be constant, so a desktop file takes
    the runtime-weight conv for batch 1 only and the bank for a batch, and a file for
    mobile delegates the bank alone."""
    desktop = prepare_for_export(model, "onnx", (24, 32), delegate_forms=False)
    assert "dynamic_conv_static" not in [e["name"] for e in desktop.edgesr_rewrites]
    assert sum(isinstance(m, DynamicDepthwiseConv2d) for m in desktop.modules()) == 2 * SMALL["num_blocks"]
    for delegate_forms, form in ((False, "runtime_weight_at_batch_1"), (True, "bank_conv")):
        dynamic = prepare_for_export(model, "onnx", None, delegate_forms=delegate_forms)
        assert not any(isinstance(m, DynamicDepthwiseConv2d) for m in dynamic.modules())
        forms = [m.form for m in dynamic.modules() if getattr(m, "form", None)]
        assert forms == [form] * 2 * SMALL["num_blocks"]
        note = next(e["note"] for e in dynamic.edgesr_rewrites if e["name"] == "dynamic_conv_static")
        assert repr(form) in note


def test_fused_ops_tflite_keeps_the_runtime_weight_conv(model: nn.Module) -> None:
    """tflite --fused-ops: LiteRT's own DEPTHWISE_CONV_2D takes the runtime weight (outside
    XNNPACK); the default tflite graph and every coreml graph keep the constant bank."""
    fused = prepare_for_export(model, "tflite", (24, 32), delegate_forms=False)
    assert "dynamic_conv_static" not in [e["name"] for e in fused.edgesr_rewrites]
    assert sum(isinstance(m, DynamicDepthwiseConv2d) for m in fused.modules()) == 2 * SMALL["num_blocks"]
    for target in ("tflite", "coreml"):
        prepared = prepare_for_export(model, target, (24, 32))
        assert not any(isinstance(m, DynamicDepthwiseConv2d) for m in prepared.modules()), target
    coreml = prepare_for_export(model, "coreml", (24, 32), delegate_forms=False)
    assert not any(isinstance(m, DynamicDepthwiseConv2d) for m in coreml.modules())


def test_prepare_for_export_leaves_other_models_alone() -> None:
    plain = attach(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1)).eval(), ModelInfo("toy", 1))
    prepared = prepare_for_export(plain, "coreml", (8, 8))
    assert [entry["name"] for entry in prepared.edgesr_rewrites] == []


def _conv_weight_is_constant(graph) -> bool:
    initializers = {init.name for init in graph.initializer}
    constants = {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    return all(
        node.input[1] in initializers | constants
        for node in graph.node
        if node.op_type in ("Conv", "ConvTranspose")
    )


def test_exported_onnx_has_no_dft_and_constant_conv_weights(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    model = _small_model(num_blocks=1)
    prepared = prepare_for_export(model, "onnx", (12, 14))
    path = tmp_path / "small.onnx"
    x = _input(1, 12, 14)
    torch.onnx.export(prepared, (x,), str(path), dynamo=True, verbose=False)
    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    assert not ops & {"DFT", "STFT"}, ops
    assert _conv_weight_is_constant(graph)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        assert abs(out - model(x).numpy()).max() <= 10 * TOLERANCE


# --------------------------------------------------------------------------------------
# Last upsampling stage and tail per sub-pixel phase
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_subpixel_tail_matches_the_shuffled_tail(scale: int) -> None:
    from edgesr.rewrite.subpixel import SubPixelUpsampling, subpixel_tail

    model = _small_model(scale).eval()
    before = copy.deepcopy(model.state_dict())
    rewritten = subpixel_tail(model)
    tails = [m for m in rewritten.modules() if isinstance(m, SubPixelUpsampling)]
    assert len(tails) == 1 and len(tails[0].pads) == scale ** 2
    for batch, height, width in SIZES + [(1, 1, 1), (1, 13, 11)]:
        assert _max_error(rewritten, model, _input(batch, height, width)) <= TOLERANCE
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # pure
    assert not any(isinstance(m, SubPixelUpsampling) for m in model.modules())
    rewritten.load_state_dict(model.state_dict(), strict=True)  # the official keys


@pytest.mark.parametrize("scale,bound", [(2, 1.26), (3, 1.4), (4, 1.57)])
def test_subpixel_tail_costs_little_more_than_the_tail(scale: int, bound: float) -> None:
    """The stages' 1x1 convs keep their MACs and the tail's taps run once per output pixel
    (a 1x1 conv per phase); only the one-hot placement adds MACs: x 1.25 / 1.39 / 1.56 the
    tail's at x2 / x3 / x4 with 64 channels, where the dense per-phase conv took x 1.78 /
    2.78 / 1.78."""
    from edgesr.models.loading import create
    from edgesr.models.profile import count_macs
    from edgesr.rewrite.subpixel import subpixel_tail

    network = create("srconvnet", scale).eval()
    channels = network.upsampling[0].in_channels
    stages = count_macs(network.upsampling, 8, 8, channels=channels)
    folded_tail = count_macs(subpixel_tail(network).upsampling, 8, 8, channels=channels) - stages
    colours = network.tail.out_channels
    exact = colours * channels * 9 * (8 * scale) ** 2
    assert exact < folded_tail <= bound * exact, folded_tail / exact


@pytest.mark.parametrize("target", ["onnx", "tflite", "coreml"])
def test_every_srconvnet_export_gets_the_subpixel_tail(model: nn.Module, target: str) -> None:
    for size in ((24, 32), None):
        names = [entry["name"] for entry in prepare_for_export(model, target, size).edgesr_rewrites]
        assert names.count("subpixel_tail") == 1, (size, names)


def test_exported_x4_has_no_full_size_feature_map(tmp_path) -> None:
    """The reason for the form: at x4 no tensor of the file has the features' C channels at
    the output size (the shuffled 4C map was the largest tensor of the model)."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    model = _small_model(4, num_blocks=1)
    path = tmp_path / "x4.onnx"
    x = _input(1, 10, 12)
    torch.onnx.export(prepare_for_export(model, "onnx", (10, 12)), (x,), str(path), dynamo=True, verbose=False)
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    shapes = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*graph.value_info, *graph.output)]
    full_size = [s for s in shapes if len(s) == 4 and s[2:] == [40, 48]]
    assert full_size and all(s[1] == 3 for s in full_size), full_size
    biggest = max(s[1] * s[2] * s[3] for s in shapes if len(s) == 4)
    assert biggest < SMALL["dim"] * 40 * 48


# --------------------------------------------------------------------------------------
# Channel LayerNorm in float16 range
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(8, 8), (17, 23), (32, 32)])
def test_range_safe_channel_norm_changes_no_bit(small_srconvnet, size):
    from edgesr.rewrite.norm_range import range_safe_channel_norms

    rewritten = range_safe_channel_norms(small_srconvnet)
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(rewritten(x * 255), small_srconvnet(x * 255))


@pytest.mark.parametrize("size", [(8, 8), (17, 23), (32, 32)])
def test_channel_means_by_conv_match(small_srconvnet, size):
    """The ONNX form: channel means as 1x1 convs, sums in another order."""
    from edgesr.rewrite.norm_range import RangeSafeChannelLayerNorm, range_safe_channel_norms

    rewritten = range_safe_channel_norms(small_srconvnet, mean_by_conv=True)
    norms = [m for m in rewritten.modules() if isinstance(m, RangeSafeChannelLayerNorm)]
    assert norms and all(m.mean_by_conv for m in norms)
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        expected = small_srconvnet(x)
        got = rewritten(x)
    assert (got - expected).abs().max().item() <= 1e-5 * (expected.max() - expected.min()).item()


def test_range_safe_channel_norm_fits_float16():
    """Deviations of ~1000 (SRConvNet's 0..255 features): the square overflows float16 in
    the official form; the rewritten one stays within 1e-2 of float32 (outputs ~1)."""
    from edgesr.models.srconvnet import ChannelLayerNorm
    from edgesr.rewrite.norm_range import RangeSafeChannelLayerNorm

    norm = ChannelLayerNorm(16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(1, 16, 5, 5, generator=torch.Generator().manual_seed(2)) * 1000
    reference = norm(x)
    with torch.no_grad():
        official = copy.deepcopy(norm).half()(x.half()).float()
        safe = RangeSafeChannelLayerNorm(copy.deepcopy(norm)).half()(x.half()).float()
    assert (official - reference).abs().max() > 0.5
    assert (safe - reference).abs().max() < 1e-2


@pytest.mark.parametrize("batch,height,width", SIZES + [(1, 13, 11)])
def test_pointwise_as_matmul_is_exact_and_pure(model: nn.Module, batch: int, height: int, width: int) -> None:
    """The block projections and spectral convs as left matmuls (LiteRT's float files): the
    same output, the official state-dict keys and shapes, the input model untouched."""
    from edgesr.rewrite.pointwise import PointwiseMatmul, pointwise_as_matmul

    before = copy.deepcopy(model.state_dict())
    base = dynamic_conv_static(fourier_as_dft(model, (height, width)), "shifted_sum")
    rewritten = pointwise_as_matmul(base)
    # v, proj, proj_in, proj_out and the spectral conv of every block
    assert sum(isinstance(m, PointwiseMatmul) for m in rewritten.modules()) == 5 * SMALL["num_blocks"]
    assert not any(isinstance(m, PointwiseMatmul) for m in base.modules())  # pure
    assert _max_error(rewritten, model, _input(batch, height, width)) <= TOLERANCE
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    rewritten.load_state_dict(model.state_dict(), strict=True)


def test_pointwise_as_matmul_only_for_float_tflite_files(model: nn.Module) -> None:
    """Only LiteRT's fp32/fp16 files take it (onnxruntime runs the convs as fast; PT2E
    quantizes convs, not matmuls with a parameter); with --fused-ops the MixFFN keeps its
    convs beside the channels-last runtime-weight conv."""
    from edgesr.rewrite.pointwise import PointwiseMatmul

    def count(**kwargs) -> int:
        prepared = prepare_for_export(model, **kwargs)
        return sum(isinstance(m, PointwiseMatmul) for m in prepared.modules())

    blocks = SMALL["num_blocks"]
    assert count(target="tflite", input_size=(24, 32)) == 5 * blocks
    assert count(target="tflite", input_size=(24, 32), precision="fp16") == 5 * blocks
    assert count(target="tflite", input_size=(24, 32), delegate_forms=False) == 3 * blocks
    assert count(target="tflite", input_size=(24, 32), precision="int8") == 0
    for target in ("onnx", "coreml"):
        assert count(target=target, input_size=(24, 32)) == 0
