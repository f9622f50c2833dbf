"""Progress bars on stderr that stay quiet when output is not a terminal or JSON is asked for."""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

from edgesr.errors import stop_if_interrupted

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, enabled: bool = True, total: int | None = None) -> Iterator[T]:
    """The items, with a bar; before each one a pending interrupt stops the loop (a signal whose
    KeyboardInterrupt Python dropped in a finalizer, see ``edgesr.errors``)."""
    for item in tqdm(items, desc=desc, total=total, disable=not enabled, file=sys.stderr,
                     leave=False, dynamic_ncols=True):
        stop_if_interrupted()
        yield item
