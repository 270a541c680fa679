"""A bounded set of worker threads whose finished tasks come back on one queue.

What the solver needs of `concurrent.futures.ThreadPoolExecutor` plus `wait(...,
FIRST_COMPLETED)`, without importing it: concurrent.futures imports `logging` (with
traceback, string, ...), ~5.7 ms of every build's start here. Threads are started as
tasks arrive, up to `size`, and reused (each keeps its thread-local state, such as its
connection to the cache index).
"""
from __future__ import annotations

import queue
import threading

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import Callable


class Workers:
    """`submit(key, fn)` runs `fn()` on a worker; `finished()` waits for any submitted
    task to end and returns `(key, None)`, or `(key, exception)` if it raised. Submit no
    more than `size` tasks ahead of `finished()` calls, or the rest wait for a thread."""

    def __init__(self, size: int, name: str = "worker"):
        self._size = max(1, size)
        self._name = name
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()  # (key, fn), None: stop
        self._done: queue.SimpleQueue = queue.SimpleQueue()  # (key, exception or None)
        self._threads: list[threading.Thread] = []

    def submit(self, key, fn: Callable[[], object]) -> None:
        if len(self._threads) < self._size:
            t = threading.Thread(target=self._work, name=f"{self._name}_{len(self._threads)}")
            self._threads.append(t)
            t.start()
        self._tasks.put((key, fn))

    def finished(self) -> tuple:
        return self._done.get()  # Ctrl-C interrupts this wait, in the main thread

    def close(self) -> None:
        """Let the running tasks (and any still queued) end, and the threads with them."""
        for _ in self._threads:
            self._tasks.put(None)
        for t in self._threads:
            t.join()
        self._threads.clear()

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            key, fn = task
            try:
                fn()
            except BaseException as exc:  # noqa: B902  (reported to the caller, as a Future does)
                self._done.put((key, exc))
            else:
                self._done.put((key, None))
