"""The HTTP conversation with one registry: scheme choice, auth, retries.

httpx gives keep-alive connections shared by the download threads, streaming bodies
and separate connect/read timeouts. On top of it this module does what the
distribution spec asks of a client:

- auth: try anonymously; on 401 read WWW-Authenticate and either send Basic
  credentials or fetch a Bearer token from the realm for the repository's scope
  (cached per scope), then try once more;
- retries: 429 and 5xx answers and dropped connections are retried with exponential
  backoff (Retry-After honoured, capped) when the request can be sent again;
- TLS is verified; plain HTTP only for loopback hosts and registries named insecure
  (a loopback registry is spoken to over HTTP straight away, as docker-registry
  serves by default; other insecure ones try HTTPS without verification first, as
  Docker does, then HTTP; that client then skips verification for their token
  service too, which the user asked for by naming the registry insecure).

Credentials live only in headers; URLs, errors and logs never carry them.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Union

from pybuild.registry.httpxlib import httpx, tls_context  # httpx without its CLI and trio

from pybuild.registry.auth import Challenge, Credentials, load_credentials, \
    parse_www_authenticate
from pybuild.registry.errors import (AuthenticationError, RegistryError, RegistryUnreachable)
from pybuild.registry.reference import RegistryEndpoint, endpoint_for

USER_AGENT = "pybuild/0.1"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
Body = Union[bytes, Callable[[], Iterable[bytes]], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a registry request (exponential backoff, capped;
    a `Retry-After` header wins)."""

    attempts: int = 5          # tries in all, the first included
    backoff: float = 0.25      # seconds before the second try; doubles each time
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), self.max_delay)
            except ValueError:
                pass
        return min(self.backoff * (2 ** attempt), self.max_delay)


class RegistryClient:
    """One registry, shared by threads. `scope` arguments are repository paths
    (`library/busybox`) with actions (`pull`, `pull,push`)."""

    def __init__(self, domain: str, *, credentials: Credentials | None = None,
                 insecure: Iterable[str] = (), retry: RetryPolicy = RetryPolicy(),
                 timeout: float = 60.0, connect_timeout: float = 15.0):
        self.endpoint: RegistryEndpoint = endpoint_for(domain, insecure)
        self._credentials = credentials
        self.retry = retry
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}
        self._challenge: Challenge | None = None
        self._base: str | None = None
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.http = self._make_http(verify=True)
        self._plain_http: httpx.Client | None = None

    def _make_http(self, verify: bool) -> httpx.Client:
        return httpx.Client(timeout=self._timeout, verify=tls_context() if verify else False,
                            follow_redirects=True, headers={"User-Agent": USER_AGENT},
                            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def credentials(self) -> Credentials:
        if self._credentials is None:
            self._credentials = load_credentials(self.endpoint.domain)
        return self._credentials

    # ------------------------------------------------------------------ base URL

    @property
    def base(self) -> str:
        """`scheme://host`, chosen once: HTTPS, or for insecure registries whatever answers."""
        if self._base is None:
            with self._lock:
                if self._base is None:
                    self._base = self._choose_base()
        return self._base

    def _choose_base(self) -> str:
        host = self.endpoint.host
        if not self.endpoint.insecure:
            return f"https://{host}"
        if self.endpoint.loopback:
            # a registry on this machine is a test or a local mirror: plain HTTP, as
            # docker-registry serves by default (no TLS handshake against a plain server)
            return f"http://{host}"
        probe = self._make_http(verify=False)
        try:
            probe.get(f"https://{host}/v2/")
            self.http.close()
            self.http = probe
            return f"https://{host}"
        except httpx.TransportError:
            probe.close()
            return f"http://{host}"

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base + path

    # ------------------------------------------------------------------ auth

    def _auth_header(self, scope: str) -> str | None:
        ch = self._challenge
        if ch is None:
            return None
        if ch.scheme == "basic":
            return self.credentials.basic_header() if self.credentials else None
        token = self._tokens.get(scope)
        return f"Bearer {token}" if token else None

    def _authenticate(self, response: httpx.Response, scope: str, sent_auth: bool = True) -> bool:
        """React to a 401. True when a retry has a chance (new credentials to show).
        `sent_auth`: whether the refused request carried credentials (a thread that sent
        its request anonymously while another learnt the challenge must retry too)."""
        challenges = parse_www_authenticate(response.headers.get("www-authenticate", ""))
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        with self._lock:
            if bearer is not None:
                had = self._tokens.get(scope)
                self._challenge = bearer
                token = self._fetch_token(bearer, scope)
                self._tokens[scope] = token
                return token != had or had is None
            if basic is not None:
                already = sent_auth and self._challenge is not None \
                    and self._challenge.scheme == "basic"
                self._challenge = basic
                if not self.credentials:
                    raise AuthenticationError(
                        f"{self.endpoint.domain} requires authentication: run "
                        f"`pybuild login {self.endpoint.domain}`")
                return not already
        return False

    def _fetch_token(self, challenge: Challenge, scope: str) -> str:
        realm = challenge.param("realm")
        if not realm.startswith(("https://", "http://")):
            raise AuthenticationError(f"{self.endpoint.domain} sent an unusable token realm")
        service = challenge.param("service")
        scopes = [s for s in scope.split(" ") if s] or (
            [challenge.param("scope")] if challenge.param("scope") else [])
        creds = self.credentials
        try:
            if creds.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                        "service": service, "client_id": "pybuild", "scope": " ".join(scopes)}
                r = self._send_raw("POST", realm, data=form)
            else:
                params = [("service", service)] if service else []
                params += [("scope", s) for s in scopes]
                headers = {"Authorization": creds.basic_header()} if creds else {}
                r = self._send_raw("GET", realm, params=params, headers=headers)
        except httpx.TransportError as e:
            raise RegistryUnreachable(
                f"cannot reach the token service of {self.endpoint.domain}: "
                f"{e.__class__.__name__}") from None
        if r.status_code in (401, 403):
            raise AuthenticationError(
                f"{self.endpoint.domain}: the token service refused "
                f"{'the stored credentials' if creds else 'anonymous access'} for {scope or 'the registry'}"
                + ("" if creds else f"; run `pybuild login {self.endpoint.domain}`"))
        if r.status_code != 200:
            raise AuthenticationError(
                f"{self.endpoint.domain}: the token service answered {r.status_code}")
        try:
            doc = r.json()
            token = doc.get("token") or doc.get("access_token")
        except ValueError:
            token = None
        if not token or not isinstance(token, str):
            raise AuthenticationError(f"{self.endpoint.domain}: the token service sent no token")
        return token

    def _send_raw(self, method: str, url: str, **kw) -> httpx.Response:
        # token endpoints: retried like registry requests, never authenticated with tokens
        for attempt in range(self.retry.attempts):
            try:
                r = self.http.request(method, url, **kw)
            except httpx.TransportError:
                if attempt + 1 >= self.retry.attempts:
                    raise
                time.sleep(self.retry.delay(attempt))
                continue
            if r.status_code in RETRY_STATUSES and attempt + 1 < self.retry.attempts:
                time.sleep(self.retry.delay(attempt, r.headers.get("retry-after")))
                continue
            return r
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ requests

    @contextmanager
    def stream(self, method: str, path: str, scope: str, *,
               headers: Mapping[str, str] | None = None, body: Body = None,
               params: Mapping[str, str] | None = None,
               ok: Iterable[int] = (200,)) -> Iterator[httpx.Response]:
        """Send a request (authenticated, retried) and yield the response unread.
        A status outside `ok` (after retries) raises RegistryError with the registry's
        own error message; 404 is passed through when `ok` includes it."""
        ok = frozenset(ok)
        replayable = body is None or isinstance(body, bytes) or callable(body)
        auth_tries = 0
        attempt = 0
        while True:
            hdrs = dict(headers or {})
            auth = self._auth_header(scope)
            if auth:
                hdrs["Authorization"] = auth
            content = body() if callable(body) else body
            try:
                req = self.http.build_request(method, self.url(path), headers=hdrs,
                                              content=content, params=params)
                r = self.http.send(req, stream=True)
            except httpx.TransportError as e:
                attempt += 1
                # a host that cannot be connected to (no DNS name, nothing listening) is
                # rarely there a second later: one more try, not the whole backoff ladder
                limit = min(self.retry.attempts, 2) if isinstance(e, httpx.ConnectError) \
                    else self.retry.attempts
                if attempt >= limit or not replayable:
                    raise RegistryUnreachable(
                        f"{method} {self._where(path)}: {_describe(e)}") from None
                time.sleep(self.retry.delay(attempt - 1))
                continue
            try:
                if r.status_code == 401 and auth_tries < 2:
                    r.read()
                    auth_tries += 1
                    if self._authenticate(r, scope, sent_auth=bool(auth)):
                        continue
                if r.status_code in RETRY_STATUSES and r.status_code not in ok:
                    attempt += 1
                    if attempt < self.retry.attempts and replayable:
                        r.read()
                        time.sleep(self.retry.delay(attempt - 1, r.headers.get("retry-after")))
                        continue
                if r.status_code not in ok:
                    r.read()
                    raise self._error(method, path, r, scope)
                yield r
                return
            finally:
                r.close()

    def request(self, method: str, path: str, scope: str, **kw) -> httpx.Response:
        """`stream()` with the body read: for manifests and small answers."""
        with self.stream(method, path, scope, **kw) as r:
            r.read()
            return r

    def _where(self, path: str) -> str:
        return self.url(path).split("?", 1)[0]

    def _error(self, method: str, path: str, r: httpx.Response, scope: str) -> RegistryError:
        detail = _registry_message(r)
        where = f"{method} {self._where(path)}"
        if r.status_code == 401:
            who = "the credentials were refused" if self.credentials else \
                f"authentication required: run `pybuild login {self.endpoint.domain}`"
            return AuthenticationError(f"{where}: {who}{detail}")
        if r.status_code == 403:
            return AuthenticationError(f"{where}: access denied{detail}")
        return RegistryError(f"{where}: {r.status_code} {r.reason_phrase}{detail}")

    def ping(self) -> None:
        """GET /v2/ with auth: proves the registry speaks the API and takes our credentials."""
        self.request("GET", "/v2/", "")


def _registry_message(r: httpx.Response) -> str:
    try:
        errors = r.json().get("errors") or []
        msgs = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
                for e in errors if isinstance(e, dict)]
        return (" (" + "; ".join(msgs) + ")") if msgs else ""
    except (ValueError, AttributeError):
        return ""


def _describe(e: Exception) -> str:
    text = str(e).strip()
    return f"{e.__class__.__name__}: {text}" if text else e.__class__.__name__


def repo_scope(path: str, actions: str = "pull") -> str:
    return f"repository:{path}:{actions}"
