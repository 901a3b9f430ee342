"""A small callback event loop over ``selectors``: all a worker needs (its clients, call pipes, timers)."""

from __future__ import annotations

import heapq
import selectors
import time
import traceback


class EventLoop:
    """A small callback loop over ``selectors``: a worker's requests, pipes and timers (all it needs)."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._readers: dict[int, object] = {}
        self._writers: dict[int, object] = {}
        self._timers: list[list] = []  # heap of [when, seq, callback]; a cancelled timer's callback is None
        self._seq = 0
        self.stopping = False

    def _update(self, fd: int) -> None:
        events = (selectors.EVENT_READ if fd in self._readers else 0) | (
            selectors.EVENT_WRITE if fd in self._writers else 0
        )
        registered = fd in self.selector.get_map()
        if not events:
            if registered:
                self.selector.unregister(fd)
        elif registered:
            self.selector.modify(fd, events)
        else:
            self.selector.register(fd, events)

    def add_reader(self, fd: int, callback) -> None:
        self._readers[fd] = callback
        self._update(fd)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._update(fd)

    def add_writer(self, fd: int, callback) -> None:
        self._writers[fd] = callback
        self._update(fd)

    def remove_writer(self, fd: int) -> None:
        if self._writers.pop(fd, None) is not None:
            self._update(fd)

    def call_later(self, delay: float, callback) -> list:
        self._seq += 1
        timer = [time.monotonic() + delay, self._seq, callback]
        heapq.heappush(self._timers, timer)
        return timer

    @staticmethod
    def cancel(timer: list | None) -> None:
        if timer is not None:
            timer[2] = None

    @staticmethod
    def _call(callback) -> None:
        try:
            callback()
        except Exception:  # a bug in one call's handling must not take the daemon down
            traceback.print_exc()

    def run(self) -> None:
        while not self.stopping:
            timeout = 1.0
            while self._timers and self._timers[0][2] is None:
                heapq.heappop(self._timers)
            if self._timers:
                timeout = min(timeout, max(0.0, self._timers[0][0] - time.monotonic()))
            for key, mask in self.selector.select(timeout):
                if mask & selectors.EVENT_READ and key.fd in self._readers:
                    self._call(self._readers[key.fd])
                if mask & selectors.EVENT_WRITE and key.fd in self._writers:
                    self._call(self._writers[key.fd])
            now = time.monotonic()
            while self._timers and (self._timers[0][0] <= now or self._timers[0][2] is None):
                callback = heapq.heappop(self._timers)[2]
                if callback is not None:
                    self._call(callback)
