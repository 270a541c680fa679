"""Typed errors. Every error a user can cause is a `PybuildError` whose message says what to
do; the CLI prints it without a traceback and exits 1."""
from __future__ import annotations


class PybuildError(Exception):
    """Base of every error pybuild raises on purpose."""


class DefinitionError(PybuildError):
    """A build definition (a Dockerfile, say) is wrong. Frontends subclass it.

    `filename`, `line` (1-based, 0 = unknown) and `source_lines` let the CLI print
    `Dockerfile:12: message` with the offending line below it.
    """

    def __init__(self, message: str, filename: str = "", line: int = 0,
                 source_lines: tuple[str, ...] = (), end_line: int = 0):
        super().__init__(message)
        self.message = message
        self.filename = filename
        self.line = line
        self.end_line = end_line or line
        self.source_lines = source_lines

    def __str__(self) -> str:
        where = f"{self.filename}:{self.line}: " if self.filename and self.line else (
            f"{self.filename}: " if self.filename else "")
        return where + self.message

    def render(self) -> str:
        """The message plus the offending lines, numbered, with a pointer."""
        out = [str(self)]
        for i, text in enumerate(self.source_lines):
            n = self.line + i
            out.append(f" {n:>4} | >>> {text}")
        return "\n".join(out)


class ImageNotFound(PybuildError):
    pass


class StoreError(PybuildError):
    pass


class StepFailed(PybuildError):
    """A RUN (or another step) failed: its command, exit status and the tail of its output."""

    def __init__(self, description: str, exit_code: int, output_tail: str = ""):
        self.description = description
        self.exit_code = exit_code
        self.output_tail = output_tail
        msg = f"{description} did not complete successfully: exit code: {exit_code}"
        if output_tail:
            msg += "\n" + output_tail.rstrip("\n")
        super().__init__(msg)


class SandboxError(PybuildError):
    pass


class ContextError(PybuildError):
    pass


class BuildCancelled(PybuildError):
    """A step was stopped because another step failed or the build was interrupted."""
