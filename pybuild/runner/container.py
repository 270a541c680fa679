"""`pybuild run`: an image becomes a container.

The image's layers are mounted as overlay lowerdirs (the same unpacked snapshots the
builder uses) under a fresh writable layer, and ENTRYPOINT + CMD run in the same
namespaced sandbox as a RUN step. The exit code of the process is the result.
"""
from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass

from pybuild.errors import PybuildError


@dataclass(frozen=True)
class ContainerSpec:
    """What `pybuild run` starts: an image, and the command, env, workdir, user, network,
    entrypoint and hostname given for it (None: the image's own)."""

    image: object  # pybuild.image.store.StoredImage
    command: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    workdir: str | None = None
    user: str | None = None
    network: str = "none"
    entrypoint: str | None = None
    hostname: str = ""


def container_argv(config, command: tuple[str, ...] | None, entrypoint: str | None) -> tuple[str, ...]:
    """Docker's rule: ENTRYPOINT + (command given on the CLI, else CMD); a CLI
    --entrypoint replaces ENTRYPOINT and drops the image's CMD."""
    if entrypoint is not None:
        ep: tuple[str, ...] = (entrypoint,) if entrypoint else ()
        cmd = command or ()
    else:
        ep = tuple(config.entrypoint or ())
        cmd = command if command else tuple(config.cmd or ())
    argv = ep + tuple(cmd)
    if not argv:
        raise PybuildError("no command specified: the image has no ENTRYPOINT or CMD; "
                           "give one after the image name")
    return argv


def merged_env(config_env: tuple[str, ...], extra: tuple[str, ...]) -> tuple[str, ...]:
    env: dict[str, str] = {}
    for item in config_env:
        k, _, v = item.partition("=")
        env[k] = v
    for item in extra:
        k, sep, v = item.partition("=")
        if not sep:  # `-e NAME` passes the caller's value through, as docker does
            if k not in os.environ:
                continue
            v = os.environ[k]
        env[k] = v
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return tuple(f"{k}={v}" for k, v in env.items())


def run_container(store, spec: ContainerSpec, *, remove: bool = True,
                  inherit_stdio: bool = True, on_output=None) -> tuple[int, str]:
    from pybuild.sandbox.namespaces import SandboxSpec, run_sandboxed

    if spec.network not in ("none", "host"):
        raise PybuildError(f"unsupported network {spec.network!r} for run: use none or host")
    config = spec.image.config.config
    argv = container_argv(config, spec.command, spec.entrypoint)
    cid = secrets.token_hex(6)
    cdir = os.path.join(store.containers_dir, cid)
    upper, work = os.path.join(cdir, "u"), os.path.join(cdir, "w")
    os.makedirs(upper)
    os.makedirs(work)
    try:
        lowers = store.layer_dirs(spec.image.layers)
        sandbox = SandboxSpec(
            lowerdirs=tuple(lowers), upperdir=upper, workdir=work, args=argv,
            env=merged_env(config.env, spec.env),
            cwd=spec.workdir or config.working_dir or "/",
            user=spec.user if spec.user is not None else config.user,
            network=spec.network, hostname=spec.hostname or cid)
        result = run_sandboxed(sandbox, inherit_stdio=inherit_stdio and on_output is None,
                               on_output=on_output)
        return result.exit_code, cid
    finally:
        if remove:
            shutil.rmtree(cdir, ignore_errors=True)
