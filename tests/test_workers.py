"""pybuild/workers.py: the solver's thread pool."""
from __future__ import annotations

import threading
import time

from pybuild.workers import Workers


def test_results_and_exceptions_come_back_by_key():
    w = Workers(2)
    seen = []
    try:
        w.submit("a", lambda: seen.append("a"))
        w.submit("b", lambda: 1 / 0)
        got = dict(w.finished() for _ in range(2))
    finally:
        w.close()
    assert got["a"] is None and isinstance(got["b"], ZeroDivisionError)
    assert seen == ["a"]


def test_at_most_size_threads_run_at_once_and_are_reused():
    w = Workers(2, name="t")
    lock, now, peak, names = threading.Lock(), [0], [0], set()

    def task():
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
            names.add(threading.current_thread().name)
        time.sleep(0.05)
        with lock:
            now[0] -= 1

    try:
        running = 0
        for i in range(6):  # as the solver does: never more than `size` ahead
            if running == 2:
                w.finished()
                running -= 1
            w.submit(i, task)
            running += 1
        for _ in range(running):
            w.finished()
    finally:
        w.close()
    assert peak[0] == 2
    assert names == {"t_0", "t_1"}


def test_close_waits_for_running_tasks():
    w = Workers(1)
    ended = threading.Event()
    w.submit("slow", lambda: (time.sleep(0.1), ended.set()))
    w.close()
    assert ended.is_set()
    assert not [t for t in threading.enumerate() if t.name.startswith("worker_")]
