"""Where an image reference lives and how to reach it. Pure: no I/O but the environment.

Parsing and normalization are Docker's (distribution/reference) and live in one place,
`pybuild.image.store.parse_ref`; this module adds what only a registry client needs:
the API host of a registry domain (Docker Hub's `docker.io` is served by
`registry-1.docker.io`), the key its credentials have in `~/.docker/config.json`,
and whether plain HTTP may be spoken to it (only loopback hosts and registries the user
named insecure: TLS is verified everywhere else).
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Iterable, Mapping

from pybuild.image.store import (DEFAULT_DOMAIN, InvalidReference, Reference, familiar_name,
                                 normalize_ref, parse_ref)

__all__ = ["Reference", "InvalidReference", "parse_ref", "normalize_ref", "familiar_name",
           "RegistryEndpoint", "api_host", "credential_key", "is_loopback",
           "insecure_registries", "endpoint_for", "normalize_registry"]

DOCKER_HUB_API = "registry-1.docker.io"
# Docker keeps Hub credentials under this historical key, not under "docker.io".
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
INSECURE_ENV = "PYBUILD_INSECURE_REGISTRIES"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io",
                          "registry.hub.docker.com"})


@dataclass(frozen=True)
class RegistryEndpoint:
    """How to reach one registry: `domain` as references spell it, `host` the API host
    (with port), `insecure` true when plain HTTP is allowed."""

    domain: str
    host: str
    insecure: bool

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def api_host(domain: str) -> str:
    return DOCKER_HUB_API if domain in _HUB_ALIASES else domain


def host_name(domain: str) -> str:
    """The host part without port or IPv6 brackets: `[::1]:5000` -> `::1`."""
    if domain.startswith("["):
        return domain[1:domain.index("]")] if "]" in domain else domain[1:]
    if domain.count(":") == 1:
        return domain.split(":", 1)[0]
    return domain


def is_loopback(domain: str) -> bool:
    name = host_name(domain).lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def normalize_registry(text: str) -> str:
    """A registry as users write it (`docker.io`, `https://index.docker.io/v1/`,
    `http://127.0.0.1:5000`, `localhost:5000/`) -> the domain references use."""
    value = text.strip()
    for prefix in ("https://", "http://"):
        if value.lower().startswith(prefix):
            value = value[len(prefix):]
    value = value.split("/", 1)[0]
    if not value:
        raise InvalidReference(text, "no registry host")
    value = value.lower()
    return DEFAULT_DOMAIN if value in _HUB_ALIASES else value


def credential_key(domain: str) -> str:
    """The key of a registry's entry in config.json `auths` (and for credential helpers)."""
    return DOCKER_HUB_CONFIG_KEY if domain in _HUB_ALIASES else domain


def insecure_registries(extra: Iterable[str] = (),
                        env: Mapping[str, str] | None = None) -> frozenset[str]:
    """Registries given with `--insecure-registry` plus `$PYBUILD_INSECURE_REGISTRIES`
    (comma or space separated), normalized."""
    env = os.environ if env is None else env
    names = list(extra) + env.get(INSECURE_ENV, "").replace(",", " ").split()
    return frozenset(normalize_registry(n) for n in names if n.strip())


def endpoint_for(domain: str, insecure: Iterable[str] = ()) -> RegistryEndpoint:
    allowed = insecure_registries(insecure)
    return RegistryEndpoint(domain, api_host(domain),
                            is_loopback(domain) or normalize_registry(domain) in allowed)
