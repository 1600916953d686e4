"""Run an iterator ahead of its consumer in a reader thread, through a bounded queue.

The slide path reads and colour-normalises tiles in this thread while the caller's thread encodes the previous
batches: OpenSlide's ``read_region``, numpy and torch release the GIL, so reading and encoding overlap without
another process. The queue holds at most ``depth`` items (memory stays bounded); items come out in order; an
exception raised by the iterator is raised again in the consumer; when the consumer stops early (an error, or
closing the generator) the reader stops after the item it is producing.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from typing import TypeVar

T = TypeVar("T")
_DONE = object()
_POLL_S = 0.1
"""How often a reader blocked on a full queue checks whether the consumer has stopped."""


def prefetched(items: Iterable[T], depth: int = 2) -> Generator[T, None, None]:
    """``items`` in order, produced up to ``depth`` ahead of the consumer by a daemon reader thread."""
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as error:  # handed to the consumer, which raises it
            put(error)

    reader = threading.Thread(target=read, name="tile-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        reader.join()
