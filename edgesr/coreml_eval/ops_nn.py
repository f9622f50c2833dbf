"""Neural-network MIL ops: conv, linear, matmul, normalisations, softmax, pooling
and resampling. Convolutions run as im2col + one float32 GEMM per group (BLAS), or
tap by tap for depthwise ones, so a whole network evaluates at PyTorch-like speed."""
from __future__ import annotations

import math

import numpy as np

from edgesr.coreml_eval.registry import axis_list, f32, kernel, scalar


def _ints(value) -> list[int]:
    return [int(v) for v in np.atleast_1d(np.asarray(value)).tolist()]


def _same_pads(size: int, kernel_size: int, stride: int, dilation: int, lower: bool) -> tuple[int, int]:
    effective = (kernel_size - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    small, large = total // 2, total - total // 2
    return (large, small) if lower else (small, large)


def _spatial_pads(pad_type: str, pad, spatial: tuple[int, ...], kernel_sizes, strides, dilations):
    """[(before, after)] per spatial dim for MIL's pad_type."""
    count = len(spatial)
    if pad_type == "valid":
        return [(0, 0)] * count
    if pad_type == "custom":
        values = _ints(pad) if pad is not None else [0] * (2 * count)
        return [(values[2 * i], values[2 * i + 1]) for i in range(count)]
    if pad_type in ("same", "same_lower"):
        return [_same_pads(spatial[i], kernel_sizes[i], strides[i], dilations[i], pad_type == "same_lower")
                for i in range(count)]
    raise ValueError(f"unknown pad_type {pad_type!r}")


def _as_2d(x: np.ndarray, weight_rank: int) -> tuple[np.ndarray, bool]:
    """Conv1d inputs (N, C, L) as (N, C, 1, L)."""
    if x.ndim == 3:
        return x[:, :, None, :], True
    if x.ndim != 4:
        raise ValueError(f"only 1-D and 2-D convolutions/pools are implemented (input rank {x.ndim})")
    return x, False


def _windows(xp: np.ndarray, kh: int, kw: int, oh: int, ow: int, strides, dilations):
    """Yield (i, j, view) of the padded input seen by each kernel tap."""
    sh, sw = strides
    dh, dw = dilations
    for i in range(kh):
        for j in range(kw):
            top, left = i * dh, j * dw
            yield i, j, xp[:, :, top:top + sh * (oh - 1) + 1:sh, left:left + sw * (ow - 1) + 1:sw]


def conv2d(x: np.ndarray, weight: np.ndarray, bias, strides, pads, dilations, groups: int) -> np.ndarray:
    n, c, _, _ = x.shape
    out_channels, per_group, kh, kw = weight.shape
    if any(p for pair in pads for p in pair):
        x = np.pad(x, [(0, 0), (0, 0), tuple(pads[0]), tuple(pads[1])])
    hp, wp = x.shape[2:]
    oh = (hp - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (wp - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    if groups > 1 and per_group == 1 and out_channels % c == 0 and groups == c:
        # Depthwise (channel multiplier out_channels // c): one multiply-add per tap.
        multiplier = out_channels // c
        source = np.repeat(x, multiplier, axis=1) if multiplier > 1 else x
        out = np.zeros((n, out_channels, oh, ow), np.float32)
        for i, j, view in _windows(source, kh, kw, oh, ow, strides, dilations):
            out += view * weight[:, 0, i, j][None, :, None, None]
    else:
        out_per_group = out_channels // groups
        results = []
        for g in range(groups):
            xg = x[:, g * per_group:(g + 1) * per_group]
            wg = weight[g * out_per_group:(g + 1) * out_per_group].reshape(out_per_group, -1)
            if kh == kw == 1 and strides == [1, 1] and (oh, ow) == (hp, wp):
                cols = xg.reshape(n, per_group, oh * ow)
            else:
                cols = np.empty((n, per_group, kh, kw, oh, ow), np.float32)
                for i, j, view in _windows(xg, kh, kw, oh, ow, strides, dilations):
                    cols[:, :, i, j] = view
                cols = cols.reshape(n, per_group * kh * kw, oh * ow)
            results.append(np.matmul(wg, cols).reshape(n, out_per_group, oh, ow))
        out = results[0] if groups == 1 else np.concatenate(results, axis=1)
    if bias is not None:
        out += f32(bias).reshape(1, -1, 1, 1)
    return out


@kernel("conv")
def conv(args, op):
    x, squeezed = _as_2d(f32(args["x"]), 0)
    weight = f32(args["weight"])
    if weight.ndim == 3:
        weight = weight[:, :, None, :]
    kernel_sizes = list(weight.shape[2:])
    strides = _ints(args["strides"]) if args.get("strides") is not None else [1] * (4 - 2)
    dilations = _ints(args["dilations"]) if args.get("dilations") is not None else [1, 1]
    pad = args.get("pad")
    if squeezed:
        strides, dilations = [1] + strides[-1:], [1] + dilations[-1:]
        if pad is not None:
            pad = [0, 0] + _ints(pad)[-2:]
    pads = _spatial_pads(args.get("pad_type") or "valid", pad, x.shape[2:], kernel_sizes, strides, dilations)
    if squeezed and (args.get("pad_type") in ("same", "same_lower")):
        pads[0] = (0, 0)
    out = conv2d(x, weight, args.get("bias"), strides, pads, dilations, int(scalar(args.get("groups") or 1)))
    return out[:, :, 0, :] if squeezed else out


@kernel("conv_transpose")
def conv_transpose(args, op):
    x, squeezed = _as_2d(f32(args["x"]), 0)
    weight = f32(args["weight"])  # (C_in, C_out / groups, kh, kw)
    if weight.ndim == 3:
        weight = weight[:, :, None, :]
    groups = int(scalar(args.get("groups") or 1))
    if groups != 1:
        raise NotImplementedError("conv_transpose with groups > 1 is not implemented")
    strides = _ints(args["strides"]) if args.get("strides") is not None else [1, 1]
    dilations = _ints(args["dilations"]) if args.get("dilations") is not None else [1, 1]
    if squeezed:
        strides, dilations = [1] + strides[-1:], [1] + dilations[-1:]
    n, c, h, w = x.shape
    _, out_channels, kh, kw = weight.shape
    full_h = (h - 1) * strides[0] + (kh - 1) * dilations[0] + 1
    full_w = (w - 1) * strides[1] + (kw - 1) * dilations[1] + 1
    full = np.zeros((n, out_channels, full_h, full_w), np.float32)
    flat = x.reshape(n, c, h * w)
    for i in range(kh):
        for j in range(kw):
            contribution = np.matmul(weight[:, :, i, j].T, flat).reshape(n, out_channels, h, w)
            top, left = i * dilations[0], j * dilations[1]
            full[:, :, top:top + strides[0] * (h - 1) + 1:strides[0],
                 left:left + strides[1] * (w - 1) + 1:strides[1]] += contribution
    out_shape = [int(d) for d in op.outputs[0].shape[-2:]] if not squeezed else [1, int(op.outputs[0].shape[-1])]
    pad_type = args.get("pad_type") or "valid"
    if pad_type == "custom" and args.get("pad") is not None:
        values = _ints(args["pad"])
        top, left = (values[0], values[2]) if not squeezed else (0, values[0])
    elif pad_type in ("same", "same_lower"):
        top, left = (full_h - out_shape[0]) // 2, (full_w - out_shape[1]) // 2
    else:
        top = left = 0
    out = np.zeros((n, out_channels, *out_shape), np.float32)
    region = full[:, :, top:top + out_shape[0], left:left + out_shape[1]]
    out[:, :, :region.shape[2], :region.shape[3]] = region
    if args.get("bias") is not None:
        out += f32(args["bias"]).reshape(1, -1, 1, 1)
    return out[:, :, 0, :] if squeezed else out


@kernel("linear")
def linear(args, op):
    x = f32(args["x"])
    out = np.matmul(x, f32(args["weight"]).T)
    if args.get("bias") is not None:
        out += f32(args["bias"])
    return out


@kernel("matmul")
def matmul(args, op):
    x, y = f32(args["x"]), f32(args["y"])
    if args.get("transpose_x") and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if args.get("transpose_y") and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


@kernel("softmax")
def softmax(args, op):
    x = f32(args["x"])
    axis = int(scalar(args.get("axis") if args.get("axis") is not None else -1))
    shifted = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return shifted / np.sum(shifted, axis=axis, keepdims=True)


def _broadcast_to_axes(value, shape, axes) -> np.ndarray:
    """gamma/beta of shape x.shape[axes] placed on those axes."""
    value = f32(value)
    target = [shape[i] if i in axes else 1 for i in range(len(shape))]
    return value.reshape(target) if value.size == int(np.prod(target)) else value


@kernel("layer_norm")
def layer_norm(args, op):
    x = f32(args["x"])
    axes = axis_list(args.get("axes"), x.ndim)
    mean = np.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    variance = np.mean(centred * centred, axis=axes, keepdims=True)
    out = centred / np.sqrt(variance + np.float32(scalar(args.get("epsilon") or 1e-5)))
    if args.get("gamma") is not None:
        out = out * _broadcast_to_axes(args["gamma"], x.shape, axes)
    if args.get("beta") is not None:
        out = out + _broadcast_to_axes(args["beta"], x.shape, axes)
    return out


def _channel(value, rank: int) -> np.ndarray:
    return f32(value).reshape((1, -1) + (1,) * (rank - 2))


@kernel("batch_norm")
def batch_norm(args, op):
    x = f32(args["x"])
    epsilon = np.float32(scalar(args.get("epsilon") or 1e-5))
    out = (x - _channel(args["mean"], x.ndim)) / np.sqrt(_channel(args["variance"], x.ndim) + epsilon)
    if args.get("gamma") is not None:
        out = out * _channel(args["gamma"], x.ndim)
    if args.get("beta") is not None:
        out = out + _channel(args["beta"], x.ndim)
    return out


@kernel("instance_norm")
def instance_norm(args, op):
    x = f32(args["x"])
    axes = tuple(range(2, x.ndim))
    mean = np.mean(x, axis=axes, keepdims=True)
    variance = np.mean((x - mean) ** 2, axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(variance + np.float32(scalar(args.get("epsilon") or 1e-5)))
    if args.get("gamma") is not None:
        out = out * _channel(args["gamma"], x.ndim)
    if args.get("beta") is not None:
        out = out + _channel(args["beta"], x.ndim)
    return out


# Pooling -----------------------------------------------------------------------------

def _pool(args, reduce: str) -> np.ndarray:
    x, squeezed = _as_2d(f32(args["x"]), 0)
    kernel_sizes = _ints(args["kernel_sizes"])
    strides = _ints(args["strides"]) if args.get("strides") is not None else [1] * len(kernel_sizes)
    if squeezed:
        kernel_sizes, strides = [1] + kernel_sizes[-1:], [1] + strides[-1:]
    pad = args.get("pad")
    if squeezed and pad is not None:
        pad = [0, 0] + _ints(pad)[-2:]
    pads = _spatial_pads(args.get("pad_type") or "valid", pad, x.shape[2:], kernel_sizes, strides, [1, 1])
    ceil_mode = bool(args.get("ceil_mode") or False)
    sizes = []
    for axis in range(2):
        span = x.shape[2 + axis] + sum(pads[axis]) - kernel_sizes[axis]
        count = (-(-span // strides[axis]) if ceil_mode else span // strides[axis]) + 1
        if ceil_mode and (count - 1) * strides[axis] >= x.shape[2 + axis] + pads[axis][0]:
            count -= 1  # the last window must start inside the input or its left padding
        sizes.append(count)
    # Extra padding at the end for ceil_mode: never counted, never the max.
    extra = [max((sizes[a] - 1) * strides[a] + kernel_sizes[a] - (x.shape[2 + a] + sum(pads[a])), 0)
             for a in range(2)]
    widths = [(0, 0), (0, 0), (pads[0][0], pads[0][1] + extra[0]), (pads[1][0], pads[1][1] + extra[1])]
    n, c = x.shape[:2]
    if reduce == "max":
        xp = np.pad(x, widths, constant_values=-np.inf)
        out = np.full((n, c, *sizes), -np.inf, np.float32)
        for _, _, view in _windows(xp, *kernel_sizes, *sizes, strides, [1, 1]):
            np.maximum(out, view, out=out)
    else:
        power = reduce == "l2"
        xp = np.pad(x * x if power else x, widths)
        out = np.zeros((n, c, *sizes), np.float32)
        for _, _, view in _windows(xp, *kernel_sizes, *sizes, strides, [1, 1]):
            out += view
        if power:
            out = np.sqrt(out)
        else:
            exclude = bool(args.get("exclude_padding_from_average") or False)
            ones = np.zeros((1, 1, *xp.shape[2:]), np.float32)
            if exclude:
                ones[:, :, pads[0][0]:pads[0][0] + x.shape[2], pads[1][0]:pads[1][0] + x.shape[3]] = 1
            else:  # explicit padding counts, ceil_mode's extra does not
                ones[:, :, :xp.shape[2] - extra[0], :xp.shape[3] - extra[1]] = 1
            counts = np.zeros((1, 1, *sizes), np.float32)
            for _, _, view in _windows(ones, *kernel_sizes, *sizes, strides, [1, 1]):
                counts += view
            out /= np.maximum(counts, 1)
    return out[:, :, 0, :] if squeezed else out


kernel("avg_pool")(lambda args, op: _pool(args, "avg"))
kernel("max_pool")(lambda args, op: _pool(args, "max"))
kernel("l2_pool")(lambda args, op: _pool(args, "l2"))


# Resampling --------------------------------------------------------------------------

def _lerp_axis(x: np.ndarray, axis: int, source: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``x`` along ``axis`` at fractional ``source`` positions."""
    size = x.shape[axis]
    source = np.clip(source, 0.0, size - 1)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    fraction = (source - low).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = -1
    fraction = fraction.reshape(shape)
    a, b = np.take(x, low, axis=axis), np.take(x, high, axis=axis)
    return a + (b - a) * fraction


def _grid(size_in: int, size_out: int, mode: str) -> np.ndarray:
    i = np.arange(size_out, dtype=np.float64)
    if mode == "align_corners":
        return i * ((size_in - 1) / (size_out - 1)) if size_out > 1 else np.zeros(size_out)
    if mode == "half_pixel":
        return (i + 0.5) * (size_in / size_out) - 0.5
    if mode == "asymmetric":
        return i * (size_in / size_out)
    if mode == "offset_corners":
        delta = max(1, size_in - 1) / size_out
        return 0.5 * delta + i * delta
    raise ValueError(mode)


def _bilinear(x: np.ndarray, out_h: int, out_w: int, mode: str) -> np.ndarray:
    x = f32(x)
    rows = _lerp_axis(x, x.ndim - 2, _grid(x.shape[-2], out_h, mode))
    return _lerp_axis(rows, x.ndim - 1, _grid(x.shape[-1], out_w, mode))


@kernel("upsample_bilinear")
def upsample_bilinear(args, op):
    x = f32(args["x"])
    out_h = int(math.floor(float(scalar(args.get("scale_factor_height") or 1)) * x.shape[-2]))
    out_w = int(math.floor(float(scalar(args.get("scale_factor_width") or 1)) * x.shape[-1]))
    align = bool(scalar(args["align_corners"])) if args.get("align_corners") is not None else True
    half = args.get("half_pixel_centers")
    half = (not align) if half is None else bool(scalar(half))
    mode = "align_corners" if align else ("half_pixel" if half else "asymmetric")
    return _bilinear(x, out_h, out_w, mode)


_RESIZE_MODES = {"STRICT_ALIGN_CORNERS": "align_corners", "ALIGN_CORNERS": "align_corners",
                 "DEFAULT": "asymmetric", "UNALIGN_CORNERS": "half_pixel",
                 "OFFSET_CORNERS": "offset_corners"}


@kernel("resize_bilinear")
def resize_bilinear(args, op):
    x = f32(args["x"])
    mode = str(args.get("sampling_mode") or "DEFAULT")
    if mode not in _RESIZE_MODES:
        raise ValueError(f"resize_bilinear: unknown sampling_mode {mode!r}")
    return _bilinear(x, int(scalar(args["target_size_height"])), int(scalar(args["target_size_width"])),
                     _RESIZE_MODES[mode])


def _nearest(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    rows = np.minimum(np.floor(np.arange(out_h) * (x.shape[-2] / out_h)).astype(np.int64), x.shape[-2] - 1)
    cols = np.minimum(np.floor(np.arange(out_w) * (x.shape[-1] / out_w)).astype(np.int64), x.shape[-1] - 1)
    return np.take(np.take(x, rows, axis=x.ndim - 2), cols, axis=x.ndim - 1)


@kernel("upsample_nearest_neighbor")
def upsample_nearest_neighbor(args, op):
    x = np.asarray(args["x"])
    out_h = int(math.floor(float(scalar(args.get("scale_factor_height") or 1)) * x.shape[-2]))
    out_w = int(math.floor(float(scalar(args.get("scale_factor_width") or 1)) * x.shape[-1]))
    return _nearest(x, out_h, out_w)


@kernel("resize_nearest_neighbor")
def resize_nearest_neighbor(args, op):
    x = np.asarray(args["x"])
    return _nearest(x, int(scalar(args["target_size_height"])), int(scalar(args["target_size_width"])))
