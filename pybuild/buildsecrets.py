"""What a build is given besides its context: secrets (`--secret`) and SSH agents (`--ssh`).

    --secret id=npmrc,src=$HOME/.npmrc     a file's content
    --secret id=token,env=GITHUB_TOKEN     an environment variable's value
    --secret id=token                      env if a variable named `token` exists, else the file `token`
    --ssh default                          the agent at $SSH_AUTH_SOCK
    --ssh id=/path/to/agent.sock           an agent socket
    --ssh id=/path/to/id_ed25519           a private key (served by an ssh-agent started per step)

Values are read once, here, into memory; they travel to the sandbox through a pipe and
are never written to the store, a layer, a cache key, the history or the progress log.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from pybuild.errors import PybuildError

__all__ = ["BuildSecretError", "SecretSource", "SshSource", "parse_secret", "parse_ssh",
           "load_secrets", "load_ssh", "MAX_SECRET_SIZE"]

# BuildKit refuses secrets over 500 KiB: they are meant to be tokens and keys, not data
MAX_SECRET_SIZE = 500 * 1024


class BuildSecretError(PybuildError):
    """A --secret or --ssh value is malformed or names something that cannot be read."""


@dataclass(frozen=True)
class SecretSource:
    """A `--secret`: its id and where its value comes from (a file or an env variable)."""

    id: str
    type: str  # file | env
    source: str  # a path (file) or a variable name (env)


@dataclass(frozen=True)
class SshSource:
    """An `--ssh` entry: its id and the agent sockets or key files it stands for."""

    id: str
    paths: tuple[str, ...] = field(default=())  # agent sockets or private key files


def parse_secret(text: str, environ: Mapping[str, str] | None = None) -> SecretSource:
    """One `--secret` value (docker buildx syntax)."""
    env = os.environ if environ is None else environ
    attrs: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep:
            raise BuildSecretError(f"invalid --secret {text!r}: {part!r} is not key=value "
                                   "(use id=NAME,src=FILE or id=NAME,env=VAR)")
        if key not in ("id", "type", "src", "source", "env"):
            raise BuildSecretError(f"invalid --secret {text!r}: unknown key {key!r} "
                                   "(use id, src, env or type)")
        attrs["src" if key == "source" else key] = value
    sid = attrs.get("id", "")
    kind = attrs.get("type", "")
    if kind not in ("", "file", "env"):
        raise BuildSecretError(f"invalid --secret {text!r}: type must be file or env")
    if "env" in attrs and "src" in attrs:
        raise BuildSecretError(f"invalid --secret {text!r}: give src= or env=, not both")
    if "env" in attrs:
        kind, source = "env", attrs["env"]
    elif "src" in attrs:
        source = attrs["src"]
        kind = kind or "file"
    else:
        source = sid
        kind = kind or ("env" if sid in env else "file")
    if not sid:
        # buildx: without id, a file secret is named after the file
        sid = os.path.basename(source) if kind == "file" else source
    if not sid or not source:
        raise BuildSecretError(f"invalid --secret {text!r}: an id is required")
    return SecretSource(sid, kind, source)


def load_secrets(specs: Sequence[str | SecretSource],
                 environ: Mapping[str, str] | None = None) -> dict[str, bytes]:
    """Read the secrets named by `--secret` values: id -> bytes."""
    env = os.environ if environ is None else environ
    out: dict[str, bytes] = {}
    for spec in specs:
        src = spec if isinstance(spec, SecretSource) else parse_secret(spec, env)
        if src.type == "env":
            if src.source not in env:
                raise BuildSecretError(f"secret {src.id}: environment variable {src.source} "
                                       "is not set")
            data = os.fsencode(env[src.source])
        else:
            try:
                with open(src.source, "rb") as f:
                    data = f.read(MAX_SECRET_SIZE + 1)
            except OSError as e:
                raise BuildSecretError(f"secret {src.id}: cannot read {src.source}: "
                                       f"{e.strerror}") from None
        if len(data) > MAX_SECRET_SIZE:
            raise BuildSecretError(f"secret {src.id} is too big (over {MAX_SECRET_SIZE} bytes)")
        out[src.id] = data
    return out


def parse_ssh(text: str, environ: Mapping[str, str] | None = None) -> SshSource:
    """One `--ssh` value: `default`, `ID`, or `ID=PATH[,PATH...]`."""
    env = os.environ if environ is None else environ
    sid, sep, rest = text.partition("=")
    sid = sid.strip()
    if not sid:
        raise BuildSecretError(f"invalid --ssh {text!r}: expected ID[=SOCKET|KEY[,KEY...]]")
    paths = tuple(p for p in rest.split(",") if p) if sep else ()
    if not paths:
        sock = env.get("SSH_AUTH_SOCK", "")
        if not sock:
            raise BuildSecretError(f"--ssh {text}: no path given and SSH_AUTH_SOCK is not set "
                                   "(start an ssh-agent or pass --ssh ID=/path/to/socket)")
        paths = (sock,)
    return SshSource(sid, tuple(os.path.abspath(os.path.expanduser(p)) for p in paths))


def load_ssh(specs: Sequence[str | SshSource],
             environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, ...]]:
    """`--ssh` values -> id -> paths, checked to exist now rather than in the middle of a build."""
    out: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        src = spec if isinstance(spec, SshSource) else parse_ssh(spec, environ)
        for p in src.paths:
            if not os.path.exists(p):
                raise BuildSecretError(f"--ssh {src.id}: {p}: no such socket or key file")
        out[src.id] = src.paths
    return out
