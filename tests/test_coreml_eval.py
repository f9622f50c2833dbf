"""The numpy reference evaluator of CoreML ML Programs (edgesr.coreml_eval).

Per op: a one-op MIL program (built with coremltools' Builder) against PyTorch on
random inputs, with broadcasting and odd shapes. Whole models: SRConvNet (and a small
HiT-SRF) exported at fp32/fp16 must pass parity with the evaluator as runtime; W8,
palettised and W8A8 programs made with coremltools.optimize evaluate close to the
float model; a deliberately wrong conversion (pixel_shuffle converted as
depth_to_space, a real channel-order bug) is caught.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from edgesr.coreml_eval import (  # noqa: E402
    REFERENCE_RUNTIME,
    UnsupportedOpError,
    evaluate_mlpackage,
    evaluate_program,
    load,
    supported_ops,
)

RNG = np.random.default_rng(0)
IOS17 = ct.target.iOS17


def rand(*shape, low=-2.0, high=2.0):
    return RNG.uniform(low, high, size=shape).astype(np.float32)


def run1(build, x, opset=IOS17, dtype=types.fp32):
    @mb.program(input_specs=[mb.TensorSpec(shape=x.shape, dtype=dtype)], opset_version=opset)
    def program(x):
        return build(x)

    return evaluate_program(program, {"x": x})


def run2(build, x, y, opset=IOS17):
    @mb.program(input_specs=[mb.TensorSpec(shape=x.shape), mb.TensorSpec(shape=y.shape)], opset_version=opset)
    def program(x, y):
        return build(x, y)

    return evaluate_program(program, {"x": x, "y": y})


def only(outputs):
    assert len(outputs) == 1
    return next(iter(outputs.values()))


def close(actual, expected, atol=1e-5, rtol=1e-5):
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol)


T = torch.from_numpy

# -- elementwise ------------------------------------------------------------------------

BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "real_div": torch.div,
          "maximum": torch.maximum, "minimum": torch.minimum}


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("shapes", [((2, 3, 5, 7), (3, 1, 7)), ((1, 1, 9), (4, 5, 1)), ((3, 5), (3, 5))])
def test_binary_broadcasting(name, shapes):
    x, y = rand(*shapes[0]), rand(*shapes[1], low=0.5, high=2.0)
    out = only(run2(lambda a, b: getattr(mb, name)(x=a, y=b), x, y))
    close(out, BINARY[name](T(x), T(y)))


def test_pow_and_scalar_constants():
    x = rand(2, 3, 5, low=0.1, high=3.0)
    close(only(run1(lambda a: mb.pow(x=a, y=2.5), x)), T(x) ** 2.5, rtol=1e-5)
    close(only(run1(lambda a: mb.sub(x=3.0, y=a), x)), 3.0 - T(x))


UNARY = {
    "sigmoid": (lambda a: mb.sigmoid(x=a), torch.sigmoid),
    "tanh": (lambda a: mb.tanh(x=a), torch.tanh),
    "exp": (lambda a: mb.exp(x=a), torch.exp),
    "relu": (lambda a: mb.relu(x=a), torch.relu),
    "silu": (lambda a: mb.silu(x=a), F.silu),
    "erf": (lambda a: mb.erf(x=a), torch.erf),
    "sqrt": (lambda a: mb.sqrt(x=mb.abs(x=a)), lambda t: torch.sqrt(t.abs())),
    "rsqrt": (lambda a: mb.rsqrt(x=mb.abs(x=a), epsilon=1e-3), lambda t: torch.rsqrt(t.abs() + 1e-3)),
    "gelu exact": (lambda a: mb.gelu(x=a, mode="EXACT"), F.gelu),
    "gelu tanh": (lambda a: mb.gelu(x=a, mode="TANH_APPROXIMATION"), lambda t: F.gelu(t, approximate="tanh")),
    "leaky_relu": (lambda a: mb.leaky_relu(x=a, alpha=0.2), lambda t: F.leaky_relu(t, 0.2)),
    "clip": (lambda a: mb.clip(x=a, alpha=-0.5, beta=0.75), lambda t: t.clamp(-0.5, 0.75)),
    "softplus": (lambda a: mb.softplus(x=a), F.softplus),
    "elu": (lambda a: mb.elu(x=a, alpha=0.7), lambda t: F.elu(t, 0.7)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name):
    build, reference = UNARY[name]
    x = rand(2, 3, 7, 5, low=-4, high=4)
    close(only(run1(build, x)), reference(T(x)), atol=2e-6)


@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax(axis):
    x = rand(2, 5, 3, 7, low=-6, high=6)
    close(only(run1(lambda a: mb.softmax(x=a, axis=axis), x)), torch.softmax(T(x), axis), atol=1e-6)


# -- normalisation and reductions -------------------------------------------------------

@pytest.mark.parametrize("axes", [[-1], [1, 2, 3], [-2, -1]])
def test_layer_norm(axes):
    x = rand(2, 4, 5, 6)
    shape = [x.shape[a] for a in axes]
    gamma, beta = rand(*shape), rand(*shape)
    out = only(run1(lambda a: mb.layer_norm(x=a, axes=axes, gamma=gamma, beta=beta, epsilon=1e-5), x))
    dims = [a % 4 for a in axes]
    mean = T(x).mean(dim=dims, keepdim=True)
    var = T(x).var(dim=dims, keepdim=True, unbiased=False)
    gshape = [x.shape[i] if i in dims else 1 for i in range(4)]
    expected = (T(x) - mean) / torch.sqrt(var + 1e-5) * T(gamma).reshape(gshape) + T(beta).reshape(gshape)
    close(out, expected, atol=1e-5)


def test_batch_and_instance_norm():
    x = rand(2, 3, 5, 4)
    mean, var, gamma, beta = rand(3), rand(3, low=0.5, high=2), rand(3), rand(3)
    out = only(run1(lambda a: mb.batch_norm(x=a, mean=mean, variance=var, gamma=gamma, beta=beta, epsilon=1e-3), x))
    close(out, F.batch_norm(T(x), T(mean), T(var), T(gamma), T(beta), eps=1e-3), atol=1e-5)
    out = only(run1(lambda a: mb.instance_norm(x=a, gamma=gamma, beta=beta, epsilon=1e-5), x))
    close(out, F.instance_norm(T(x), weight=T(gamma), bias=T(beta), eps=1e-5), atol=1e-5)


@pytest.mark.parametrize("op, reference", [
    ("reduce_mean", lambda t, d, k: t.mean(dim=d, keepdim=k)),
    ("reduce_sum", lambda t, d, k: t.sum(dim=d, keepdim=k)),
    ("reduce_max", lambda t, d, k: t.amax(dim=d, keepdim=k)),
    ("reduce_min", lambda t, d, k: t.amin(dim=d, keepdim=k)),
])
@pytest.mark.parametrize("axes, keep", [([1], True), ([-1, 2], False), ([0, 1, 2, 3], True)])
def test_reductions(op, reference, axes, keep):
    x = rand(2, 3, 5, 7)
    out = only(run1(lambda a: getattr(mb, op)(x=a, axes=axes, keep_dims=keep), x))
    close(out, reference(T(x), [a % 4 for a in axes], keep), atol=1e-5)


# -- conv, linear, matmul -------------------------------------------------------------

CONV_CASES = [
    # in_ch, out_ch, kernel, stride, dilation, groups, pad_type, pad
    (4, 6, (3, 3), (1, 1), (1, 1), 1, "custom", (1, 1, 1, 1)),
    (4, 6, (3, 5), (2, 1), (1, 2), 1, "custom", (2, 0, 1, 3)),
    (4, 6, (3, 3), (2, 2), (1, 1), 2, "valid", None),
    (5, 5, (3, 3), (1, 1), (1, 1), 5, "custom", (1, 1, 1, 1)),  # depthwise
    (3, 6, (5, 5), (1, 1), (2, 2), 3, "same", None),  # depthwise, multiplier 2, dilated
    (4, 8, (1, 1), (1, 1), (1, 1), 1, "valid", None),
    (4, 3, (4, 4), (3, 3), (1, 1), 1, "same", None),
]


def _torch_same(x, weight, stride, dilation, lower=False):
    pads = []
    for size, k, s, d in zip(x.shape[2:], weight.shape[2:], stride, dilation):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        pads.append((large, small) if lower else (small, large))
    return F.pad(x, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d(case):
    cin, cout, kernel_size, stride, dilation, groups, pad_type, pad = case
    x = rand(2, cin, 11, 9)
    weight, bias = rand(cout, cin // groups, *kernel_size), rand(cout)
    kwargs = dict(weight=weight, bias=bias, strides=list(stride), dilations=list(dilation),
                  groups=groups, pad_type=pad_type)
    if pad is not None:
        kwargs["pad"] = list(pad)
    out = only(run1(lambda a: mb.conv(x=a, **kwargs), x))
    tx = T(x)
    if pad_type == "custom":
        tx = F.pad(tx, (pad[2], pad[3], pad[0], pad[1]))
    elif pad_type == "same":
        tx = _torch_same(tx, weight, stride, dilation)
    expected = F.conv2d(tx, T(weight), T(bias), stride=stride, dilation=dilation, groups=groups)
    close(out, expected, atol=1e-4)


def test_conv1d_and_conv_transpose():
    x = rand(1, 3, 13)
    weight = rand(4, 3, 3)
    out = only(run1(lambda a: mb.conv(x=a, weight=weight, strides=[2], pad_type="custom", pad=[1, 1]), x))
    close(out, F.conv1d(T(x), T(weight), stride=2, padding=1), atol=1e-5)
    x = rand(1, 3, 5, 6)
    weight = rand(3, 4, 3, 3)  # (C_in, C_out, kh, kw)
    out = only(run1(lambda a: mb.conv_transpose(x=a, weight=weight, strides=[2, 2], pad_type="valid"), x))
    close(out, F.conv_transpose2d(T(x), T(weight), stride=2), atol=1e-5)


@pytest.mark.parametrize("tx, ty", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_transposes_and_broadcasting(tx, ty):
    a, b = rand(2, 1, 5, 3), rand(4, 3, 6)
    a_in = np.ascontiguousarray(np.swapaxes(a, -1, -2)) if tx else a
    b_in = np.ascontiguousarray(np.swapaxes(b, -1, -2)) if ty else b
    out = only(run2(lambda x, y: mb.matmul(x=x, y=y, transpose_x=tx, transpose_y=ty), a_in, b_in))
    close(out, T(a) @ T(b), atol=1e-5)


def test_linear():
    x, weight, bias = rand(2, 7, 5), rand(3, 5), rand(3)
    close(only(run1(lambda a: mb.linear(x=a, weight=weight, bias=bias), x)), F.linear(T(x), T(weight), T(bias)),
          atol=1e-5)


# -- pooling and resampling ----------------------------------------------------------

@pytest.mark.parametrize("exclude", [True, False])
@pytest.mark.parametrize("ceil", [False, True])
def test_avg_and_max_pool(exclude, ceil):
    x = rand(1, 2, 9, 8)
    out = only(run1(lambda a: mb.avg_pool(x=a, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom",
                                          pad=[1, 1, 1, 1], exclude_padding_from_average=exclude,
                                          ceil_mode=ceil), x))
    close(out, F.avg_pool2d(T(x), 3, 2, padding=1, ceil_mode=ceil, count_include_pad=not exclude), atol=1e-6)
    out = only(run1(lambda a: mb.max_pool(x=a, kernel_sizes=[2, 3], strides=[2, 1], pad_type="valid",
                                          ceil_mode=ceil), x))
    close(out, F.max_pool2d(T(x), (2, 3), (2, 1), ceil_mode=ceil))


@pytest.mark.parametrize("align", [True, False])
@pytest.mark.parametrize("scale", [2, 3])
def test_upsample_bilinear(align, scale):
    x = rand(1, 3, 5, 7)
    out = only(run1(lambda a: mb.upsample_bilinear(x=a, scale_factor_height=scale, scale_factor_width=scale,
                                                   align_corners=align), x))
    close(out, F.interpolate(T(x), scale_factor=scale, mode="bilinear", align_corners=align), atol=1e-5)


def test_resize_bilinear_and_nearest():
    x = rand(1, 2, 4, 6)
    out = only(run1(lambda a: mb.resize_bilinear(x=a, target_size_height=9, target_size_width=10,
                                                 sampling_mode="STRICT_ALIGN_CORNERS"), x))
    close(out, F.interpolate(T(x), size=(9, 10), mode="bilinear", align_corners=True), atol=1e-5)
    out = only(run1(lambda a: mb.resize_bilinear(x=a, target_size_height=9, target_size_width=10,
                                                 sampling_mode="UNALIGN_CORNERS"), x))
    close(out, F.interpolate(T(x), size=(9, 10), mode="bilinear", align_corners=False), atol=1e-5)
    out = only(run1(lambda a: mb.upsample_nearest_neighbor(x=a, scale_factor_height=2, scale_factor_width=3), x))
    close(out, F.interpolate(T(x), scale_factor=(2, 3), mode="nearest"))


# -- data movement -------------------------------------------------------------------

def test_reshape_transpose_expand_squeeze():
    x = rand(2, 3, 4, 5)
    close(only(run1(lambda a: mb.reshape(x=a, shape=[6, -1, 5]), x)), T(x).reshape(6, -1, 5))
    # iOS17: a 0 copies the input dim it lines up with from the right (pymil infers (4, 30)).
    close(only(run1(lambda a: mb.reshape(x=a, shape=[0, -1]), x)), T(x).reshape(4, -1))
    close(only(run1(lambda a: mb.reshape(x=a, shape=[0, 0, -1, 0]), x)), T(x).reshape(2, 3, -1, 5))
    close(only(run1(lambda a: mb.transpose(x=a, perm=[2, 0, 3, 1]), x)), T(x).permute(2, 0, 3, 1))
    close(only(run1(lambda a: mb.expand_dims(x=a, axes=[0, -1]), x)), T(x)[None, ..., None])
    y = rand(1, 3, 1, 5)
    close(only(run1(lambda a: mb.squeeze(x=a, axes=[2]), y)), T(y)[:, :, 0])
    close(only(run1(lambda a: mb.squeeze(x=a), y)), T(y).squeeze())


def test_slice_by_index_masks():
    x = rand(4, 6, 7)
    out = only(run1(lambda a: mb.slice_by_index(x=a, begin=[1, 0, 2], end=[3, 5, 0], stride=[1, 2, 1],
                                                begin_mask=[False, True, False], end_mask=[False, False, True]), x))
    close(out, T(x)[1:3, 0:5:2, 2:])
    out = only(run1(lambda a: mb.slice_by_index(x=a, begin=[2, 0, 0], end=[3, 6, 7],
                                                squeeze_mask=[True, False, False]), x))
    close(out, T(x)[2])
    out = only(run1(lambda a: mb.slice_by_index(x=a, begin=[-3, 0, -1], end=[-1, 6, 0], stride=[1, 1, -2],
                                                end_mask=[False, False, True]), x))
    close(out, x[-3:-1, 0:6, -1::-2])


def test_concat_split_stack():
    x, y = rand(2, 3, 5), rand(2, 4, 5)
    close(only(run2(lambda a, b: mb.concat(values=[a, b, a], axis=1), x, y)), torch.cat([T(x), T(y), T(x)], 1))
    pieces = run1(lambda a: mb.split(x=a, split_sizes=[1, 3, 1], axis=-1), x)
    for got, want in zip(pieces.values(), torch.split(T(x), [1, 3, 1], dim=-1)):
        close(got, want)
    z = rand(2, 6, 3)
    pieces = run1(lambda a: mb.split(x=a, num_splits=3, axis=1), z)
    for got, want in zip(pieces.values(), torch.chunk(T(z), 3, dim=1)):
        close(got, want)
    close(only(run2(lambda a, b: mb.stack(values=[a, b], axis=2), x, x * 2)), torch.stack([T(x), T(x) * 2], 2))


def test_gather_variants():
    x = rand(5, 6, 4)
    idx = np.array([[0, 4], [2, -1]], np.int32)
    close(only(run1(lambda a: mb.gather(x=a, indices=idx, axis=1), x)), x[:, [[0, 4], [2, 5]]])
    table = rand(7, 3)
    index = RNG.integers(0, 7, size=(2, 5)).astype(np.int32)
    close(only(run1(lambda a: mb.gather(x=a, indices=index, axis=0), table)), T(table)[T(index).long()])
    along = RNG.integers(0, 6, size=(5, 2, 4)).astype(np.int32)
    close(only(run1(lambda a: mb.gather_along_axis(x=a, indices=along, axis=1), x)),
          torch.gather(T(x), 1, T(along).long()))
    batched = RNG.integers(0, 6, size=(5, 3)).astype(np.int32)
    out = only(run1(lambda a: mb.gather(x=a, indices=batched, axis=1, batch_dims=1), x))
    close(out, np.stack([x[b][batched[b]] for b in range(5)]))


@pytest.mark.parametrize("mode, torch_mode", [("constant", "constant"), ("reflect", "reflect"),
                                              ("replicate", "replicate")])
def test_pad(mode, torch_mode):
    x = rand(1, 2, 5, 6)
    kwargs = {"constant_val": 0.5} if mode == "constant" else {}
    out = only(run1(lambda a: mb.pad(x=a, pad=[1, 2, 3, 0], mode=mode, **kwargs), x))
    expected = F.pad(T(x), (3, 0, 1, 2), mode=torch_mode, **({"value": 0.5} if mode == "constant" else {}))
    close(out, expected)


def test_pixel_shuffle_unshuffle_tile():
    x = rand(2, 12, 3, 5)
    close(only(run1(lambda a: mb.pixel_shuffle(x=a, upscale_factor=2), x)), F.pixel_shuffle(T(x), 2))
    y = rand(1, 3, 6, 4)
    close(only(run1(lambda a: mb.pixel_unshuffle(x=a, downscale_factor=np.uint32(2)), y)), F.pixel_unshuffle(T(y), 2))
    close(only(run1(lambda a: mb.tile(x=a, reps=[1, 2, 1, 3]), y)), T(y).repeat(1, 2, 1, 3))


def test_einsum():
    a, b = rand(2, 3, 4, 5), rand(2, 5, 4, 6)  # the form MIL's einsum takes: nchw,nwhu->nchu
    close(only(run2(lambda x, y: mb.einsum(values=(x, y), equation="nchw,nwhu->nchu"), a, b)),
          torch.einsum("nchw,nwhu->nchu", T(a), T(b)), atol=1e-5)


# -- dtypes and quantisation ---------------------------------------------------------

def test_fp16_ops_round_every_result():
    x = rand(2, 3, 8)

    def build(a):
        h = mb.cast(x=a, dtype="fp16")
        h = mb.mul(x=h, y=np.float16(1.0 / 3.0))
        h = mb.add(x=h, y=np.float16(1000.0))
        return mb.cast(x=h, dtype="fp32")

    out = only(run1(build, x))
    h = T(x).half()
    expected = ((h * torch.tensor(1.0 / 3.0).half()) + torch.tensor(1000.0).half()).float()
    close(out, expected, atol=0, rtol=0)
    assert np.all(out == out.astype(np.float16).astype(np.float32))


def test_quantize_dequantize_per_tensor_and_per_channel():
    x = rand(2, 4, 5)
    out = only(run1(lambda a: mb.dequantize(input=mb.quantize(input=a, scale=np.float32(0.02),
                                                              zero_point=np.int8(3), output_dtype="int8"),
                                            scale=np.float32(0.02), zero_point=np.int8(3)), x))
    expected = torch.dequantize(torch.quantize_per_tensor(T(x), 0.02, 3, torch.qint8))
    close(out, expected, atol=1e-6)
    scale = np.array([0.01, 0.02, 0.03, 0.05], np.float32)
    out = only(run1(lambda a: mb.dequantize(input=mb.quantize(input=a, scale=scale, axis=1, output_dtype="uint8",
                                                              zero_point=np.full(4, 128, np.uint8)),
                                            scale=scale, axis=1, zero_point=np.full(4, 128, np.uint8)), x))
    expected = torch.dequantize(torch.quantize_per_channel(T(x), T(scale).double(), torch.full((4,), 128),
                                                           1, torch.quint8))
    close(out, expected, atol=1e-6)


def test_constexpr_decompression_matches_manual_dequantisation():
    weight_q = RNG.integers(-128, 127, size=(6, 4), dtype=np.int8)
    scale = RNG.uniform(0.01, 0.1, size=6).astype(np.float32)
    zero = RNG.integers(-3, 3, size=6).astype(np.int8)
    expected_w = (weight_q.astype(np.float32) - zero[:, None]) * scale[:, None]
    x = rand(3, 4)

    def build16(a):
        w = mb.constexpr_affine_dequantize(quantized_data=weight_q, scale=scale, zero_point=zero, axis=0)
        return mb.linear(x=a, weight=w)

    close(only(run1(build16, x, opset=ct.target.iOS16)), x @ expected_w.T, atol=1e-5)

    def build18(a):
        w = mb.constexpr_blockwise_shift_scale(data=weight_q, scale=scale[:, None], offset=zero[:, None])
        return mb.linear(x=a, weight=w)

    close(only(run1(build18, x, opset=ct.target.iOS18)), x @ expected_w.T, atol=1e-5)

    lut = RNG.uniform(-1, 1, size=(1, 1, 4, 1)).astype(np.float32)
    indices = RNG.integers(0, 4, size=(6, 4)).astype(types.np_uint2_dtype)

    def build_lut(a):
        return mb.linear(x=a, weight=mb.constexpr_lut_to_dense(indices=indices, lut=lut))

    close(only(run1(build_lut, x, opset=ct.target.iOS18)), x @ lut[0, 0, :, 0][indices.astype(int)].T, atol=1e-5)


def test_unknown_op_is_a_clear_error():
    with pytest.raises(UnsupportedOpError, match="'cumsum'"):
        run1(lambda a: mb.cumsum(x=a, axis=0), rand(3, 4))


def test_every_op_of_edgesr_exports_is_supported():
    needed = {"add", "avg_pool", "cast", "clip", "concat", "conv", "expand_dims", "gather", "gelu",
              "layer_norm", "leaky_relu", "linear", "matmul", "mul", "pad", "pixel_shuffle", "pow",
              "real_div", "reduce_mean", "reshape", "sigmoid", "slice_by_index", "softmax", "split",
              "sqrt", "squeeze", "stack", "sub", "transpose", "upsample_bilinear",
              "constexpr_affine_dequantize", "constexpr_blockwise_shift_scale", "constexpr_lut_to_dense",
              "quantize", "dequantize"}
    assert needed <= set(supported_ops())


# -- whole models ----------------------------------------------------------------------

@contextlib.contextmanager
def _alias_as_identity():
    """torch.export's aten.alias as a no-op for coremltools (until the HiT rewrites land)."""
    from coremltools.converters.mil.frontend.torch import ops
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    if "alias" in _TORCH_OPS_REGISTRY:
        yield
        return

    def alias(context, node):
        context.add(ops._get_inputs(context, node)[0], node.name)

    _TORCH_OPS_REGISTRY["alias"] = alias
    try:
        yield
    finally:
        del _TORCH_OPS_REGISTRY["alias"]


def _nonzero(model):
    """Random weights with no all-zero tensor (zero-initialised gates have no activation range)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.abs().max() == 0:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model


@pytest.fixture(scope="module")
def srconvnet_exports(tmp_path_factory):
    from edgesr.export.pipeline import export
    from edgesr.models.loading import create

    torch.manual_seed(0)
    model = _nonzero(create("srconvnet", 2, dim=16, num_blocks=1, num_heads=2, num_kernels=4))
    out = tmp_path_factory.mktemp("coreml_eval")
    reports = {precision: export(model, "coreml", input_size=(24, 32), precision=precision, out_dir=out,
                                 delegate_ready=False)
               for precision in ("fp32", "fp16")}
    return model, reports


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_srconvnet_export_passes_parity_with_the_evaluator(srconvnet_exports, precision):
    _, reports = srconvnet_exports
    report = reports[precision]
    assert report.status == "passed", report.parity
    for check in report.parity["checks"]:
        assert check["runtime"] == REFERENCE_RUNTIME == "reference evaluation of the ML program (not Apple's runtime)"
        if precision == "fp32":
            assert check["max_abs"] <= 1e-4
        else:
            assert check["psnr"] >= 45.0


def _reference_output(model, batch):
    from edgesr.models.contract import with_unit_range

    with torch.inference_mode():
        return with_unit_range(model).eval()(torch.from_numpy(batch)).numpy()


def _psnr(a, b):
    return 10 * math.log10(1.0 / max(float(np.mean((a.astype(np.float64) - b) ** 2)), 1e-30))


def test_weight_quantised_programs(srconvnet_exports, tmp_path):
    import coremltools.optimize.coreml as cto

    model, reports = srconvnet_exports
    fp32 = ct.models.MLModel(reports["fp32"].artifact, skip_model_load=True)
    batch = np.random.default_rng(3).random((1, 3, 24, 32), dtype=np.float32)
    expected = _reference_output(model, batch)
    w8 = cto.linear_quantize_weights(fp32, cto.OptimizationConfig(
        global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8")))
    lut = cto.palettize_weights(fp32, cto.OptimizationConfig(
        global_config=cto.OpPalettizerConfig(mode="uniform", nbits=6)))
    for name, quantized, op_type, floor in (("w8", w8, "constexpr_affine_dequantize", 35.0),
                                            ("lut6", lut, "constexpr_lut_to_dense", 25.0)):
        path = tmp_path / f"{name}.mlpackage"
        quantized.save(str(path))
        compiled = load(path)
        assert op_type in compiled.evaluator.op_types
        out = evaluate_mlpackage(path, {"input": batch})["output"]
        assert _psnr(out, expected) >= floor, name
        # ... and not the float weights: quantisation error is visible.
        assert np.abs(out - expected).max() > 1e-6


def test_w8a8_program_calibrated_on_linux(srconvnet_exports, tmp_path):
    import coremltools.optimize.coreml as cto
    from coremltools.optimize.coreml.experimental import OpActivationLinearQuantizerConfig

    from edgesr.coreml_eval.calibration import reference_calibration

    model, reports = srconvnet_exports
    fp16 = ct.models.MLModel(reports["fp16"].artifact, skip_model_load=True)
    samples = [{"input": np.random.default_rng(i).random((1, 3, 24, 32), dtype=np.float32)} for i in range(2)]
    with reference_calibration():
        a8 = cto.linear_quantize_activations(fp16, cto.OptimizationConfig(
            global_config=OpActivationLinearQuantizerConfig(mode="linear_symmetric")), samples)
    w8a8 = cto.linear_quantize_weights(a8, cto.OptimizationConfig(
        global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8")))
    path = tmp_path / "w8a8.mlpackage"
    w8a8.save(str(path))
    compiled = load(path)
    assert {"quantize", "dequantize"} <= compiled.evaluator.op_types
    batch = np.random.default_rng(7).random((1, 3, 24, 32), dtype=np.float32)
    out = compiled.predict({"input": batch})["output"]
    assert _psnr(out, _reference_output(model, batch)) >= 25.0


def test_a_wrong_conversion_is_caught(tmp_path, small_srconvnet):
    """pixel_shuffle converted as depth_to_space: same shapes, channels in the wrong order."""
    from coremltools.converters.mil.frontend.torch import ops
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    from edgesr.errors import EdgeSRError
    from edgesr.export.pipeline import export

    def wrong_pixel_shuffle(context, node):
        inputs = ops._get_inputs(context, node, expected=2)
        context.add(mb.depth_to_space(x=inputs[0], block_size=inputs[1].val, name=node.name))

    original = _TORCH_OPS_REGISTRY["pixel_shuffle"]
    _TORCH_OPS_REGISTRY["pixel_shuffle"] = wrong_pixel_shuffle
    try:
        with pytest.raises(EdgeSRError, match="parity check failed for coreml"):
            export(_nonzero(small_srconvnet), "coreml", input_size=(16, 16), out_dir=tmp_path,
                   delegate_ready=False)
    finally:
        _TORCH_OPS_REGISTRY["pixel_shuffle"] = original
    assert not list(tmp_path.glob("*.mlpackage"))


def test_small_hit_srf_fp32(tmp_path):
    from edgesr.export.pipeline import export
    from edgesr.models.loading import create

    model = create("hit-srf", 2, embed_dim=16, depths=[1, 1], num_heads=[2, 2])
    with _alias_as_identity():
        report = export(model, "coreml", input_size=(32, 32), out_dir=tmp_path, delegate_ready=False)
    assert report.status == "passed", report.parity
    assert all(c["max_abs"] <= 1e-4 for c in report.parity["checks"])
