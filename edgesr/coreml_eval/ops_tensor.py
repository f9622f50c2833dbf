"""Shape and data-movement MIL ops: reshape, transpose, slicing, gather, concat,
split, stack, pad, tile, pixel_shuffle, reductions, ... Where coremltools defines
the semantics in a helper (slice_by_index's mask handling) it is reused."""
from __future__ import annotations

import numpy as np
from coremltools.converters.mil.mil.ops.defs._utils import (
    get_squeeze_axes,
    solve_slice_by_index_slice,
)

from edgesr.coreml_eval.registry import axis_list, f32, kernel, scalar


def _ints(value) -> list[int]:
    return [int(v) for v in np.atleast_1d(np.asarray(value)).tolist()]


@kernel("reshape")
def reshape(args, op):
    x = np.asarray(args["x"])
    shape = _ints(args["shape"])
    if 0 in shape:
        # iOS17 semantics (also covers iOS15, where len(shape) == rank): a 0 copies the
        # input dim it lines up with from the right; without one it is 1.
        offset = x.ndim - len(shape)
        shape = [(x.shape[i + offset] if 0 <= i + offset < x.ndim else 1) if s == 0 else s
                 for i, s in enumerate(shape)]
    return x.reshape(shape)


@kernel("reshape_like")
def reshape_like(args, op):
    return np.asarray(args["x"]).reshape([int(d) for d in op.outputs[0].shape])


@kernel("expand_dims")
def expand_dims(args, op):
    x = np.asarray(args["x"])
    rank = x.ndim + len(_ints(args["axes"]))
    axes = sorted(a % rank for a in _ints(args["axes"]))
    for axis in axes:
        x = np.expand_dims(x, axis)
    return x


@kernel("squeeze")
def squeeze(args, op):
    x = np.asarray(args["x"])
    if args.get("axes") is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=axis_list(args["axes"], x.ndim))


@kernel("transpose")
def transpose(args, op):
    return np.transpose(np.asarray(args["x"]), _ints(args["perm"]))


@kernel("reverse")
def reverse(args, op):
    x = np.asarray(args["x"])
    return np.flip(x, axis=axis_list(args.get("axes"), x.ndim))


@kernel("slice_by_index")
def slice_by_index(args, op):
    x = np.asarray(args["x"])

    def given(name):
        value = args.get(name)
        return None if value is None else np.atleast_1d(np.asarray(value))

    squeeze_mask = given("squeeze_mask")
    slices = solve_slice_by_index_slice(
        x.shape, given("begin"), given("end"), given("stride"), given("begin_mask"),
        given("end_mask"), squeeze_mask)
    result = x[tuple(slices)]
    axes = get_squeeze_axes(squeeze_mask, x.ndim)
    if axes:
        result = np.squeeze(result, axis=tuple(axes))
    return result


@kernel("slice_by_size")
def slice_by_size(args, op):
    x = np.asarray(args["x"])
    begin, size = _ints(args["begin"]), _ints(args["size"])
    index = tuple(slice(b % x.shape[i] if x.shape[i] else 0,
                        x.shape[i] if s == -1 else (b % x.shape[i]) + s)
                  for i, (b, s) in enumerate(zip(begin, size)))
    return x[index]


@kernel("concat")
def concat(args, op):
    values = [np.asarray(v) for v in args["values"]]
    axis = int(scalar(args["axis"]))
    if args.get("interleave"):
        # [a0 b0 a1 b1 ...] along axis: stack on a new axis after it, then merge.
        rank = values[0].ndim
        axis %= rank
        stacked = np.stack(values, axis=axis + 1)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


@kernel("stack")
def stack(args, op):
    return np.stack([np.asarray(v) for v in args["values"]], axis=int(scalar(args["axis"])))


@kernel("split")
def split(args, op):
    x = np.asarray(args["x"])
    axis = int(scalar(args["axis"])) % x.ndim
    if args.get("split_sizes") is not None:
        sizes = _ints(args["split_sizes"])
    else:
        count = int(scalar(args["num_splits"]))
        # MIL: every piece ceil(n / num_splits) long, the last one what remains.
        step = -(-x.shape[axis] // count)
        sizes = [min(step, x.shape[axis] - i * step) for i in range(count)]
    points = np.cumsum(sizes)[:-1]
    return tuple(np.split(x, points, axis=axis))


@kernel("tile")
def tile(args, op):
    return np.tile(np.asarray(args["x"]), _ints(args["reps"]))


@kernel("gather")
def gather(args, op):
    x = np.asarray(args["x"])
    indices = np.asarray(args["indices"]).astype(np.int64)
    axis = int(scalar(args.get("axis") if args.get("axis") is not None else 0)) % x.ndim
    batch_dims = int(scalar(args.get("batch_dims") or 0))
    # Negative indices count from the end (MIL allows them in iOS17).
    indices = np.where(indices < 0, indices + x.shape[axis], indices)
    if batch_dims == 0:
        return np.take(x, indices, axis=axis)
    # Shared leading batch dims: gather row by row.
    batch_shape = x.shape[:batch_dims]
    xs = x.reshape((-1,) + x.shape[batch_dims:])
    ids = indices.reshape((-1,) + indices.shape[batch_dims:])
    out = np.stack([np.take(xs[b], ids[b], axis=axis - batch_dims) for b in range(xs.shape[0])])
    return out.reshape(batch_shape + out.shape[1:])


@kernel("gather_along_axis")
def gather_along_axis(args, op):
    x = np.asarray(args["x"])
    axis = int(scalar(args.get("axis") or 0)) % x.ndim
    indices = np.asarray(args["indices"]).astype(np.int64)
    indices = np.where(indices < 0, indices + x.shape[axis], indices)
    return np.take_along_axis(x, indices, axis=axis)


@kernel("gather_nd")
def gather_nd(args, op):
    x = np.asarray(args["x"])
    indices = np.asarray(args["indices"]).astype(np.int64)
    batch_dims = int(scalar(args.get("batch_dims") or 0))
    if batch_dims:
        xs = x.reshape((-1,) + x.shape[batch_dims:])
        ids = indices.reshape((-1,) + indices.shape[batch_dims:])
        out = np.stack([xs[b][tuple(np.moveaxis(ids[b], -1, 0))] for b in range(xs.shape[0])])
        return out.reshape(x.shape[:batch_dims] + out.shape[1:])
    return x[tuple(np.moveaxis(indices, -1, 0))]


@kernel("pad")
def pad(args, op):
    x = np.asarray(args["x"])
    amounts = _ints(args["pad"])
    count = len(amounts) // 2
    widths = [(0, 0)] * (x.ndim - count) + [(amounts[2 * i], amounts[2 * i + 1]) for i in range(count)]
    mode = args.get("mode") or "constant"
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=scalar(args.get("constant_val") or 0.0))
    if mode == "reflect":
        return np.pad(x, widths, mode="reflect")
    if mode == "replicate":
        return np.pad(x, widths, mode="edge")
    raise ValueError(f"pad: unknown mode {mode!r}")


@kernel("pixel_shuffle")
def pixel_shuffle(args, op):
    x = np.asarray(args["x"])
    r = int(scalar(args["upscale_factor"]))
    n, c, h, w = x.shape
    out = x.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
    return out.reshape(n, c // (r * r), h * r, w * r)


@kernel("pixel_unshuffle")
def pixel_unshuffle(args, op):
    x = np.asarray(args["x"])
    r = int(scalar(args["downscale_factor"]))
    n, c, h, w = x.shape
    out = x.reshape(n, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4)
    return out.reshape(n, c * r * r, h // r, w // r)


@kernel("depth_to_space")
def depth_to_space(args, op):  # DCR order
    x = np.asarray(args["x"])
    r = int(scalar(args["block_size"]))
    n, c, h, w = x.shape
    out = x.reshape(n, r, r, c // (r * r), h, w).transpose(0, 3, 4, 1, 5, 2)
    return out.reshape(n, c // (r * r), h * r, w * r)


@kernel("space_to_depth")
def space_to_depth(args, op):
    x = np.asarray(args["x"])
    r = int(scalar(args["block_size"]))
    n, c, h, w = x.shape
    out = x.reshape(n, c, h // r, r, w // r, r).transpose(0, 3, 5, 1, 2, 4)
    return out.reshape(n, c * r * r, h // r, w // r)


@kernel("shape")
def shape(args, op):
    return np.asarray(np.shape(args["x"]), dtype=np.int32)


@kernel("fill")
def fill(args, op):
    return np.full(_ints(args["shape"]), scalar(args.get("value") or 0.0))


@kernel("fill_like")
def fill_like(args, op):
    return np.full(np.shape(args["ref_tensor"]), scalar(args.get("value") or 0.0))


@kernel("range_1d")
def range_1d(args, op):
    return np.arange(scalar(args["start"]), scalar(args["end"]), scalar(args["step"]))


@kernel("band_part")
def band_part(args, op):
    x = np.asarray(args["x"])
    lower, upper = int(scalar(args.get("lower") or 0)), int(scalar(args.get("upper") or 0))
    rows, cols = x.shape[-2:]
    i, j = np.arange(rows)[:, None], np.arange(cols)[None, :]
    keep = ((lower < 0) | (i - j <= lower)) & ((upper < 0) | (j - i <= upper))
    return np.where(keep, x, 0)


# Reductions -------------------------------------------------------------------------

def _reduction(fn):
    def run(args, op):
        x = np.asarray(args["x"])
        axes = axis_list(args.get("axes"), x.ndim)
        keep = bool(args.get("keep_dims") or False)
        return fn(x, axes, keep)
    return run


_REDUCTIONS = {
    "reduce_mean": lambda x, a, k: np.mean(f32(x), axis=a, keepdims=k),
    "reduce_sum": lambda x, a, k: np.sum(x, axis=a, keepdims=k),
    "reduce_max": lambda x, a, k: np.max(x, axis=a, keepdims=k),
    "reduce_min": lambda x, a, k: np.min(x, axis=a, keepdims=k),
    "reduce_prod": lambda x, a, k: np.prod(x, axis=a, keepdims=k),
    "reduce_l1_norm": lambda x, a, k: np.sum(np.abs(f32(x)), axis=a, keepdims=k),
    "reduce_l2_norm": lambda x, a, k: np.sqrt(np.sum(np.square(f32(x)), axis=a, keepdims=k)),
    "reduce_sum_square": lambda x, a, k: np.sum(np.square(f32(x)), axis=a, keepdims=k),
    "reduce_log_sum": lambda x, a, k: np.log(np.sum(f32(x), axis=a, keepdims=k)),
    "reduce_log_sum_exp": lambda x, a, k: _logsumexp(f32(x), a, k),
}
for _name, _fn in _REDUCTIONS.items():
    kernel(_name)(_reduction(_fn))


def _logsumexp(x, axes, keep):
    peak = np.max(x, axis=axes, keepdims=True)
    out = np.log(np.sum(np.exp(x - peak), axis=axes, keepdims=True)) + peak
    return out if keep else np.squeeze(out, axis=axes)


def _arg_reduction(fn):
    def run(args, op):
        x = np.asarray(args["x"])
        axis = int(scalar(args.get("axis") if args.get("axis") is not None else -1)) % x.ndim
        out = fn(x, axis=axis)
        return np.expand_dims(out, axis) if args.get("keep_dims") else out
    return run


kernel("reduce_argmax")(_arg_reduction(np.argmax))
kernel("reduce_argmin")(_arg_reduction(np.argmin))


@kernel("einsum")
def einsum(args, op):
    return np.einsum(str(args["equation"]), *[f32(v) for v in args["values"]], optimize=True)
