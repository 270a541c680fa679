"""Credentials and challenges: `~/.docker/config.json`, credential helpers, WWW-Authenticate.

Credentials are read from (and `pybuild login` writes to) the file Docker uses, so a
`docker login` works for pybuild and the other way round: `auths.<registry>.auth` is
base64 `user:password`; `credHelpers.<registry>` or `credsStore` name a program
`docker-credential-<name>` that speaks JSON on stdin/stdout (`get`, `store`, `erase`).

A `Credentials` value never shows its secret in a repr, log or error message.
"""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from dataclasses import dataclass, field

from cache.atomicfile import write_atomically
from pybuild.registry.errors import CredentialHelperError, RegistryError
from pybuild.registry.reference import DOCKER_HUB_CONFIG_KEY, credential_key, normalize_registry

_HELPER_TIMEOUT = 30


@dataclass(frozen=True)
class Credentials:
    """What to log in to a registry with: a username and password, or an identity token."""

    username: str = ""
    password: str = field(default="", repr=False)
    # An OAuth2 refresh token some registries hand out instead of a password (a helper
    # returns it with the username "<token>").
    identity_token: str = field(default="", repr=False)

    def __bool__(self) -> bool:
        return bool(self.username or self.password or self.identity_token)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


ANONYMOUS = Credentials()


# --------------------------------------------------------------------------- config.json


def config_path() -> str:
    """`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (Docker's rule)."""
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(base, "config.json")


def _read_config(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise RegistryError(f"cannot read {path}: {e.__class__.__name__}") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{path} is not a JSON object")
    return doc


def _write_config(path: str, doc: dict) -> None:
    """Atomically, mode 0600: the file holds secrets."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    write_atomically(path, (json.dumps(doc, indent="\t") + "\n").encode("utf-8"), mode=0o600)


def _auth_keys(domain: str) -> list[str]:
    """Keys an `auths` entry may use for a registry: `host`, `https://host`, and for
    Docker Hub its historical URL."""
    key = credential_key(domain)
    return [key, f"https://{domain}", f"http://{domain}", f"https://{domain}/v1/",
            f"https://{domain}/v2/"] if key == domain else [key, domain]


def _helper_for(doc: dict, domain: str) -> str:
    helpers = doc.get("credHelpers") or {}
    for key in _auth_keys(domain):
        if isinstance(helpers, dict) and helpers.get(key):
            return str(helpers[key])
    return str(doc.get("credsStore") or "")


def _run_helper(helper: str, action: str, payload: str) -> str:
    prog = f"docker-credential-{helper}"
    try:
        p = subprocess.run([prog, action], input=payload, capture_output=True, text=True,
                           timeout=_HELPER_TIMEOUT)
    except FileNotFoundError:
        raise CredentialHelperError(
            f"credential helper {prog} is not installed (named in {config_path()})") from None
    except subprocess.TimeoutExpired:
        raise CredentialHelperError(f"credential helper {prog} {action} timed out") from None
    if p.returncode != 0:
        # helpers print "credentials not found in native keychain" on a miss
        out = (p.stdout + p.stderr).strip()
        if action == "get" and "not found" in out.lower():
            return ""
        raise CredentialHelperError(f"credential helper {prog} {action} failed "
                                    f"(exit {p.returncode})")
    return p.stdout


def load_credentials(domain: str, path: str | None = None) -> Credentials:
    """The credentials for `domain` (a reference's registry), or ANONYMOUS."""
    path = path or config_path()
    doc = _read_config(path)
    helper = _helper_for(doc, domain)
    if helper:
        out = _run_helper(helper, "get", credential_key(domain))
        if out.strip():
            try:
                got = json.loads(out)
                user, secret = str(got.get("Username", "")), str(got.get("Secret", ""))
            except (ValueError, AttributeError):
                raise CredentialHelperError(
                    f"credential helper docker-credential-{helper} printed invalid JSON") from None
            if user == "<token>":
                return Credentials(identity_token=secret)
            return Credentials(user, secret)
    auths = doc.get("auths") or {}
    for key in _auth_keys(domain):
        entry = auths.get(key) if isinstance(auths, dict) else None
        if not isinstance(entry, dict):
            continue
        if entry.get("identitytoken"):
            return Credentials(str(entry.get("username", "")),
                               identity_token=str(entry["identitytoken"]))
        if entry.get("auth"):
            try:
                user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                sep = ""
            if not sep:
                raise RegistryError(f"{path}: the auth entry for {key} is not base64 user:password")
            return Credentials(user, password)
        if entry.get("username"):
            return Credentials(str(entry["username"]), str(entry.get("password", "")))
    return ANONYMOUS


def store_credentials(registry: str, creds: Credentials, path: str | None = None) -> str:
    """What `pybuild login` does once the registry accepted `creds`. Returns where they went
    (a helper name or the file)."""
    domain = normalize_registry(registry)
    path = path or config_path()
    doc = _read_config(path)
    key = credential_key(domain)
    helper = _helper_for(doc, domain)
    if helper:
        _run_helper(helper, "store", json.dumps(
            {"ServerURL": key, "Username": creds.username, "Secret": creds.password}))
        doc.setdefault("auths", {}).setdefault(key, {})  # docker leaves an empty entry too
        _write_config(path, doc)
        return f"docker-credential-{helper}"
    auth = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    doc.setdefault("auths", {})[key] = {"auth": auth}
    _write_config(path, doc)
    return path


def erase_credentials(registry: str, path: str | None = None) -> bool:
    """What `pybuild logout` does. True when something was removed."""
    domain = normalize_registry(registry)
    path = path or config_path()
    doc = _read_config(path)
    removed = False
    helper = _helper_for(doc, domain)
    if helper:
        _run_helper(helper, "erase", credential_key(domain))
        removed = True
    auths = doc.get("auths") or {}
    for key in _auth_keys(domain):
        if isinstance(auths, dict) and key in auths:
            del auths[key]
            removed = True
    if removed and os.path.exists(path):
        _write_config(path, doc)
    return removed


# --------------------------------------------------------------------------- challenges


@dataclass(frozen=True)
class Challenge:
    """One challenge of a WWW-Authenticate header: `Bearer realm="...",service="..."`."""

    scheme: str  # lower case: "bearer" | "basic"
    params: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str:
        return dict(self.params).get(name, "")


_CHALLENGE_START = re.compile(r"\s*([A-Za-z][A-Za-z0-9_-]*)(?:\s+|$)")
_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^,\s]*)\s*,?')


def parse_www_authenticate(header: str) -> list[Challenge]:
    """RFC 7235 challenges, tolerant of what registries actually send."""
    out: list[Challenge] = []
    pos = 0
    while pos < len(header):
        m = _CHALLENGE_START.match(header, pos)
        if not m:
            break
        scheme, pos = m.group(1).lower(), m.end()
        params: list[tuple[str, str]] = []
        while pos < len(header):
            pm = _PARAM.match(header, pos)
            if not pm:
                break
            value = pm.group(3) if pm.group(3) is not None else pm.group(2)
            params.append((pm.group(1).lower(), re.sub(r"\\(.)", r"\1", value)))
            pos = pm.end()
        out.append(Challenge(scheme, tuple(params)))
        while pos < len(header) and header[pos] in ", ":
            pos += 1
    return out


__all__ = ["Credentials", "ANONYMOUS", "Challenge", "config_path", "load_credentials",
           "store_credentials", "erase_credentials", "parse_www_authenticate",
           "DOCKER_HUB_CONFIG_KEY"]
