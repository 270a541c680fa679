"""The runtime part of an image config (OCI `config` object), as a value.

Its own module so that reading and writing images (`pybuild/image/types.py`: save, load,
images, inspect) need not import the build graph; `pybuild.graph` re-exports both names.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms of CLI start-up)
if TYPE_CHECKING:
    from typing import Any


@dataclass(frozen=True)
class Healthcheck:
    """HEALTHCHECK of an image config (durations in nanoseconds, as Docker keeps them)."""
    test: tuple[str, ...]  # ("NONE",) | ("CMD", ...) | ("CMD-SHELL", "...")
    interval_ns: int = 0
    timeout_ns: int = 0
    start_period_ns: int = 0
    start_interval_ns: int = 0
    retries: int = 0

    def to_oci(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Test": list(self.test)}
        for key, value in (("Interval", self.interval_ns), ("Timeout", self.timeout_ns),
                           ("StartPeriod", self.start_period_ns),
                           ("StartInterval", self.start_interval_ns), ("Retries", self.retries)):
            if value:
                out[key] = value
        return out

    @classmethod
    def from_oci(cls, d: dict[str, Any]) -> "Healthcheck":
        return cls(tuple(d.get("Test") or ()), d.get("Interval", 0), d.get("Timeout", 0),
                   d.get("StartPeriod", 0), d.get("StartInterval", 0), d.get("Retries", 0))


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an image config (OCI `config` object), as a value."""

    env: tuple[str, ...] = ()
    user: str = ""
    working_dir: str = ""
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    labels: tuple[tuple[str, str], ...] = ()
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    stop_signal: str = ""
    shell: tuple[str, ...] | None = None
    healthcheck: Healthcheck | None = None
    on_build: tuple[str, ...] = ()
    args_escaped: bool = False

    def env_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.env:
            k, _, v = item.partition("=")
            out[k] = v
        return out

    def with_env(self, key: str, value: str) -> "ImageConfig":
        """Set one variable, keeping the order of first definition (as Docker does)."""
        items = list(self.env)
        for i, item in enumerate(items):
            if item.partition("=")[0] == key:
                items[i] = f"{key}={value}"
                break
        else:
            items.append(f"{key}={value}")
        return replace(self, env=tuple(items))

    def with_label(self, key: str, value: str) -> "ImageConfig":
        labels = dict(self.labels)
        labels[key] = value
        return replace(self, labels=tuple(sorted(labels.items())))

    def to_oci(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.user:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {p: {} for p in sorted(self.exposed_ports)}
        if self.env:
            out["Env"] = list(self.env)
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.volumes:
            out["Volumes"] = {v: {} for v in sorted(self.volumes)}
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.labels:
            out["Labels"] = dict(self.labels)
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        # Docker's extensions, kept by the OCI tools that read them
        if self.shell is not None:
            out["Shell"] = list(self.shell)
        if self.healthcheck is not None:
            out["Healthcheck"] = self.healthcheck.to_oci()
        if self.on_build:
            out["OnBuild"] = list(self.on_build)
        if self.args_escaped:
            out["ArgsEscaped"] = True
        return out

    @classmethod
    def from_oci(cls, d: dict[str, Any] | None) -> "ImageConfig":
        d = d or {}
        ep = d.get("Entrypoint")
        cmd = d.get("Cmd")
        shell = d.get("Shell")
        hc = d.get("Healthcheck")
        return cls(
            env=tuple(d.get("Env") or ()),
            user=d.get("User") or "",
            working_dir=d.get("WorkingDir") or "",
            entrypoint=tuple(ep) if ep is not None else None,
            cmd=tuple(cmd) if cmd is not None else None,
            labels=tuple(sorted((d.get("Labels") or {}).items())),
            exposed_ports=tuple(sorted(d.get("ExposedPorts") or {})),
            volumes=tuple(sorted(d.get("Volumes") or {})),
            stop_signal=d.get("StopSignal") or "",
            shell=tuple(shell) if shell is not None else None,
            healthcheck=Healthcheck.from_oci(hc) if hc else None,
            on_build=tuple(d.get("OnBuild") or ()),
            args_escaped=bool(d.get("ArgsEscaped")),
        )
