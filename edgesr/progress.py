"""Progress bars on stderr that stay quiet when output is not a terminal or JSON is asked for."""
from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, enabled: bool = True, total: int | None = None) -> Iterable[T]:
    return tqdm(items, desc=desc, total=total, disable=not enabled, file=sys.stderr,
                leave=False, dynamic_ncols=True)
