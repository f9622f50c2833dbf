"""Graph-shape helpers shared by the rewrites."""
from __future__ import annotations

import torch


def matmul_without_broadcast(matrices: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``torch.matmul(matrices, x)`` for ``matrices`` (G, R, K) and ``x`` (*lead, G, K, T),
    as one matmul per g with the lead and T axes side by side in its columns.

    The same products, in a graph without the broadcast of ``matrices`` over the lead axes:
    litert-torch lowers that broadcast with a BROADCAST_TO, which XNNPACK does not take.
    """
    *lead, groups, inner, tail = x.shape
    n = len(lead)
    columns = x.permute(n, n + 1, *range(n), n + 2).reshape(groups, inner, -1)
    out = torch.matmul(matrices, columns).reshape(groups, matrices.shape[1], *lead, tail)
    return out.permute(*range(2, n + 2), 0, 1, n + 2)
