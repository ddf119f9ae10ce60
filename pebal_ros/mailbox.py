"""A one-frame mailbox between a subscription callback and a worker thread (:class:`LatestFrame`)
and what it carries (:class:`Frame`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class Frame:
    """A received message and when it arrived."""

    msg: object
    received: float
    """``time.perf_counter()`` at the subscription callback."""


class LatestFrame:
    """A one-slot mailbox: ``put`` replaces what is waiting, ``take`` blocks for the newest item."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: object | None = None
        self._closed = False

    def put(self, item: object) -> bool:
        """Store ``item``; True if it replaced one that was never taken (a dropped frame)."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
        return replaced

    def take(self, timeout: float | None = None) -> object | None:
        """The newest item (removing it), or None once closed or after ``timeout`` seconds."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            return None if self._closed else item

    @property
    def pending(self) -> int:
        with self._cond:
            return int(self._item is not None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
