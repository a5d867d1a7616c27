"""A bounded read-ahead: the next pages are fetched while the caller processes the current one (issue 14, goal 4).

:func:`prefetched` runs an iterator in a worker thread and hands its items over through a queue of ``depth``
places, so at most ``depth + 2`` items exist at once (the queue, the one the worker is producing, the one the
caller holds). Items keep their order; whatever the iterator raises (``SourceError``...) is raised in the caller at
that point of the sequence; a caller that stops early (an error while processing, ``close()``) stops the worker.
``depth`` 0 is the plain iterator, in the caller's thread (the code path before the read-ahead).

Waiting for the network releases the GIL, so MISP computing and sending page N+1 overlaps our parsing of page N.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

_T = TypeVar("_T")
_POLL_SECONDS = 0.1  # how often a blocked worker looks whether the caller has gone


class _Done:
    """The worker's last item: the end, or what ended it."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


def prefetched(items: Iterator[_T], depth: int) -> Iterator[_T]:
    """``items`` read ahead by up to ``depth`` items in a worker thread (``depth`` 0: read in the caller)."""
    if depth <= 0:
        yield from items
        return
    handover: queue.Queue[_T | _Done] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: _T | _Done) -> bool:
        while not stop.is_set():
            try:
                handover.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the caller, raised there
            put(_Done(exc))
        else:
            put(_Done(None))
        finally:
            close = getattr(items, "close", None)
            if stop.is_set() and close is not None:
                close()

    worker = threading.Thread(target=work, name="falco-misp-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            got = handover.get()
            if isinstance(got, _Done):
                if got.error is not None:
                    raise got.error
                return
            yield got
    finally:
        stop.set()
        worker.join()
