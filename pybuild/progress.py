"""Progress of a build: solver events, and the views that show them.

The solver emits `ProgressEvent`s to a `ProgressSink`. Views:
- `PlainView`: BuildKit-like numbered lines (`#3 [2/4] RUN make`, `#3 CACHED`,
  `#3 0.412 output`, `#3 DONE 0.4s`), for CI logs and pipes;
- `TtyView`: a rich live view (one line per step, timers, CACHED marks), on a terminal;
- `QuietView`: nothing but errors.
Every view ends with a summary line (steps run, steps cached, time), as ch-image does.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, TextIO


@dataclass(frozen=True)
class ProgressEvent:
    """One thing that happened in a build, as the solver tells a `ProgressSink`."""

    kind: str  # "start" | "cached" | "log" | "done" | "error" | "info"
    vertex: str  # the op digest (or "" for build-wide messages)
    name: str = ""
    data: bytes = b""
    duration: float = 0.0
    at: float = field(default_factory=time.monotonic)


ProgressSink = Callable[[ProgressEvent], None]


def null_sink(event: ProgressEvent) -> None:
    pass


class _Counter:
    """Numbers vertices in the order they are first seen (#1, #2, ...)."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self.lock = threading.Lock()

    def id(self, vertex: str) -> int:
        if vertex not in self._ids:
            self._ids[vertex] = len(self._ids) + 1
        return self._ids[vertex]


class BaseView:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.ran = 0
        self.cached = 0
        self.failed = 0

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "cached":
            self.cached += 1
        elif event.kind == "done":
            self.ran += 1
        elif event.kind == "error":
            self.failed += 1
        self.handle(event)

    def handle(self, event: ProgressEvent) -> None:
        raise NotImplementedError

    def summary(self) -> str:
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"{self.ran + self.cached + self.failed} steps: {self.ran} run, "
                f"{self.cached} cached{failed}, {time.monotonic() - self.started:.2f}s")

    def close(self) -> None:
        pass


class QuietView(BaseView):
    def handle(self, event: ProgressEvent) -> None:
        pass


class PlainView(BaseView):
    def __init__(self, out: TextIO | None = None) -> None:
        super().__init__()
        self.out = out or sys.stderr
        self.counter = _Counter()
        self._partial: dict[str, bytes] = {}

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def handle(self, e: ProgressEvent) -> None:
        with self.counter.lock:
            if e.kind == "info":
                self._line(e.name)
                return
            n = self.counter.id(e.vertex)
            if e.kind == "start":
                self._line(f"#{n} {e.name}")
            elif e.kind == "cached":
                self._line(f"#{n} {e.name}")
                self._line(f"#{n} CACHED")
            elif e.kind == "log":
                buf = self._partial.get(e.vertex, b"") + e.data
                *lines, rest = buf.split(b"\n")
                self._partial[e.vertex] = rest
                elapsed = e.at - self.started
                for line in lines:
                    self._line(f"#{n} {elapsed:.3f} {line.decode(errors='replace')}")
            elif e.kind in ("done", "error"):
                rest = self._partial.pop(e.vertex, b"")
                if rest:
                    self._line(f"#{n} {e.at - self.started:.3f} {rest.decode(errors='replace')}")
                word = "DONE" if e.kind == "done" else "ERROR"
                self._line(f"#{n} {word} {e.duration:.1f}s")

    def close(self) -> None:
        self._line(self.summary())


class TtyView(BaseView):
    """A rich live view: one line per step, running steps with a timer and their last log line."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.steps: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.live = Live(self._render(), console=self.console, refresh_per_second=8,
                         transient=False, get_renderable=self._render)
        self.live.start()

    def _render(self):
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 1))
        table.add_column(justify="right", style="dim")
        table.add_column()
        table.add_column(justify="right")
        now = time.monotonic()
        with self.lock if hasattr(self, "lock") else _nolock():
            for i, step in enumerate(self.steps.values(), 1):
                state = step["state"]
                if state == "cached":
                    mark = Text("CACHED", style="cyan")
                elif state == "done":
                    mark = Text(f"{step['duration']:.1f}s", style="green")
                elif state == "error":
                    mark = Text("ERROR", style="bold red")
                else:
                    mark = Text(f"{now - step['start']:.1f}s", style="yellow")
                table.add_row(f"#{i}", Text(step["name"]), mark)
                if state == "running" and step["last"]:
                    table.add_row("", Text("  " + step["last"][-120:], style="dim"), "")
        return table

    def handle(self, e: ProgressEvent) -> None:
        with self.lock:
            if e.kind == "info":
                self.console.print(e.name)
                return
            step = self.steps.setdefault(
                e.vertex, {"name": e.name, "state": "running", "start": e.at, "duration": 0.0, "last": ""})
            if e.kind == "cached":
                step["state"] = "cached"
            elif e.kind == "log":
                lines = [ln for ln in e.data.decode(errors="replace").splitlines() if ln.strip()]
                if lines:
                    step["last"] = lines[-1]
            elif e.kind in ("done", "error"):
                step["state"] = e.kind
                step["duration"] = e.duration

    def close(self) -> None:
        self.live.stop()
        self.console.print(self.summary(), style="bold")


class _nolock:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def make_view(mode: str = "auto") -> BaseView:
    """`auto` is the rich view on a terminal and plain lines elsewhere (CI, pipes)."""
    if mode == "auto":
        mode = "tty" if sys.stderr.isatty() else "plain"
    if mode == "tty":
        return TtyView()
    if mode == "plain":
        return PlainView()
    if mode == "quiet":
        return QuietView()
    raise ValueError(f"unknown progress mode {mode!r}: use auto, tty, plain or quiet")
