"""HiT-SR's window position bias as a compact constant, expanded in the graph.

``WindowPositionBias`` runs a small MLP over every (dy, dx) offset of a window, box-
filters the table over key cells and gathers an ``(area, cells)`` matrix per head.
Everything depends on the weights only, so an exporter constant-folds it, and what
it folds to is large: the gathered bias of a 64x64 window is 6 x 4096 x 64 floats
(6.3 MB) per block, 47 MB for the official HiT-SR (3.5 MB of weights); the index
tables the official code bakes in are larger still.

Structure: with cells of ``ch x cw`` pixels on a ``gh x gw`` key grid,
``bias[h, (qy, qx), (ky, kx)] = T[h, qy - ch*ky + win_h - ch, qx - cw*kx + win_w - cw]``
where ``T`` is the box-filtered table, ``(2*win_h - ch) x (2*win_w - cw)`` per head:
for each key row ``ky`` the query rows read a contiguous run of ``T``'s rows (an
unfold with stride ``ch``), likewise for columns. So only ``T`` is stored (58 kB per
head for a 64x64 window) and the bias is rebuilt per run by two small-index gathers
(``gh*win_h`` rows, then ``gw*win_w`` columns), a rank-5 reshape and a permute to
``(heads, cells, area)``.

The expansion is tied to the runtime input by adding a zero derived from it
(``anchor``, see ``runtime_zero``): without that, onnxsim and the TFLite converter
fold the expansion back into the large constant (52 MB TFLite file for HiT-SRF).
``T + 0`` is exact.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgesr.models.hit_common import WindowPositionBias


def runtime_zero(x: torch.Tensor) -> torch.Tensor:
    """A ``(1, 1, 1)`` zero that depends on ``x``'s values, so that constant folders
    leave the bias expansion in the graph: ``clip(e*e, -1, 0)`` of one element ``e``.

    Zero for every non-NaN ``e`` (infinities included). ``e * 0`` or ``e - e`` would
    not do: the TFLite converter simplifies both to a constant zero (measured) and
    then folds the expanded bias back in. Both bounds are given because ORT's mobile
    checker counts a Clip with an empty bound as dynamic and splits the graph there."""
    element = x.reshape(-1)[:1].reshape(1, 1, 1)
    return torch.clamp(element * element, min=-1.0, max=0.0)


def box_filtered_table(pos: WindowPositionBias) -> torch.Tensor:
    """``(heads, 2*win_h - ch, 2*win_w - cw)``: the original's ``cell_means`` before its
    gather, computed with the same float32 operations."""
    with torch.no_grad():
        table = pos.pos3(pos.pos2(pos.pos1(pos.pos_proj(pos.offsets))))
        win_h, win_w = pos.window_size
        table = table.T.reshape(1, -1, 2 * win_h - 1, 2 * win_w - 1)
        return F.avg_pool2d(table, pos.cell_size, stride=1)[0].contiguous()


def unfold_index(window: int, cell: int) -> torch.Tensor:
    """Row (or column) of ``T`` read by query ``q`` for key cell ``k``, ordered ``[k, q]``."""
    grid = window // cell
    k = torch.arange(grid)[:, None]
    q = torch.arange(window)[None, :]
    return (q - cell * k + window - cell).reshape(-1)


class FoldedWindowBias(nn.Module):
    """``WindowPositionBias``'s ``(heads, area, cells)`` bias, transposed to ``(heads,
    cells, area)`` (the layout ``FoldedCorrelation`` multiplies with), from a stored
    box-filtered table and two small gathers.

    Holds no parameters (the correlation that uses it keeps the original ``pos`` so
    state dicts keep the official keys). ``forward(anchor)`` takes a zero tied to the
    input (``runtime_zero``).
    """

    def __init__(self, pos: WindowPositionBias) -> None:
        super().__init__()
        self.window_size = tuple(pos.window_size)
        self.cell_size = tuple(pos.cell_size)
        self.key_grid = (self.window_size[0] // self.cell_size[0], self.window_size[1] // self.cell_size[1])
        table = box_filtered_table(pos)
        self.heads = table.shape[0]
        self.register_buffer("table", table, persistent=False)
        device = table.device
        self.register_buffer("rows", unfold_index(self.window_size[0], self.cell_size[0]).to(device),
                             persistent=False)
        self.register_buffer("cols", unfold_index(self.window_size[1], self.cell_size[1]).to(device),
                             persistent=False)

    def forward(self, anchor: torch.Tensor) -> torch.Tensor:
        table = self.table + anchor
        return self.cells_by_pixels(table.index_select(1, self.rows).index_select(2, self.cols))

    def cells_by_pixels(self, expanded: torch.Tensor) -> torch.Tensor:
        """``(heads, gh*wh, gw*ww) -> (heads, cells, area)``: the permute keeps window rows
        (``ww`` floats) whole."""
        (win_h, win_w), (grid_h, grid_w) = self.window_size, self.key_grid
        expanded = expanded.view(self.heads, grid_h, win_h, grid_w, win_w).permute(0, 1, 3, 2, 4)
        return expanded.reshape(self.heads, grid_h * grid_w, win_h * win_w)

    def extra_repr(self) -> str:
        return f"window={self.window_size}, cell={self.cell_size}, table={tuple(self.table.shape)}"


def dense_bias(pos: WindowPositionBias) -> torch.Tensor:
    """The original's output (for tests and small windows)."""
    with torch.no_grad():
        return pos()
