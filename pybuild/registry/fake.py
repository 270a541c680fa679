"""An in-process registry for tests, with faults to inject (go-containerregistry ships one too).

It speaks enough of the OCI distribution API for pull and push (blobs with Range,
monolithic/chunked uploads, cross-repository mounts, manifests by tag and digest), keeps
everything in memory, listens on 127.0.0.1 only, and can:

- demand Bearer tokens from its own token endpoint (`/token`, Basic-authenticated when
  `users` is given), checking the scope of each token;
- drop the connection part-way through a blob (`drop_after`), serve a corrupted blob
  (`corrupt`), or answer 503 a few times first (`fail_next`);
- count requests (`requests`), so tests can see what a client did.

    with FakeRegistry(bearer=True, users={"u": "p"}) as reg:
        reg.host  # "127.0.0.1:PORT"
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Faults:
    """Faults the fake registry injects into its responses (tests set them)."""

    drop_after: dict[str, int] = field(default_factory=dict)   # digest -> bytes, once
    corrupt: set[str] = field(default_factory=set)             # digests served flipped
    fail_next: int = 0                                        # refusals before serving
    fail_status: int = 503                                    # ... with this status
    ignore_range: bool = False


class FakeRegistry:
    def __init__(self, *, bearer: bool = False, users: dict[str, str] | None = None,
                 service: str = "fake-registry"):
        self.blobs: dict[tuple[str, str], bytes] = {}       # (repo, digest) -> bytes
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}  # (repo, ref) -> (type, bytes)
        self.uploads: dict[str, bytearray] = {}
        self.tokens: dict[str, set[str]] = {}               # token -> granted scopes
        self.faults = Faults()
        self.requests: list[tuple[str, str]] = []
        self.bearer = bearer
        self.users = users
        self.service = service
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FakeRegistry":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> "FakeRegistry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p in self.requests if m == method and re.search(pattern, p))

    # seeding, for pull tests
    def put_blob(self, repo: str, data: bytes) -> str:
        d = _digest(data)
        self.blobs[(repo, d)] = data
        return d

    def put_manifest(self, repo: str, ref: str, media_type: str, data: bytes) -> str:
        d = _digest(data)
        self.manifests[(repo, d)] = (media_type, data)
        if ref != d:
            self.manifests[(repo, ref)] = (media_type, data)
        return d


_ROUTE = re.compile(r"^/v2/(?P<repo>.+?)/(?P<kind>blobs/uploads|blobs|manifests)/?(?P<rest>[^/]*)$")


def _handler(reg: FakeRegistry):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        # -------------------------------------------------------------- plumbing
        def _send(self, status: int, body: bytes = b"", headers: dict | None = None,
                  head: bool = False) -> None:
            self.send_response(status)
            hdrs = {"Content-Length": str(len(body)), **(headers or {})}
            for k, v in hdrs.items():
                self.send_header(k, v)
            self.end_headers()
            if body and not head:
                self.wfile.write(body)

        def _error(self, status: int, code: str, headers: dict | None = None) -> None:
            body = json.dumps({"errors": [{"code": code, "message": code.lower()}]}).encode()
            self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _authorized(self, repo: str, action: str, extra: list[tuple[str, str]]) -> bool:
            if not reg.bearer:
                return True
            auth = self.headers.get("Authorization", "")
            granted = reg.tokens.get(auth[7:], set()) if auth.startswith("Bearer ") else set()
            need = [(repo, action)] + extra
            if all(f"repository:{r}:{a}" in granted for r, a in need):
                return True
            scope = " ".join(f"repository:{r}:{'pull,push' if a == 'push' else a}"
                             for r, a in need)
            self._error(401, "UNAUTHORIZED", {"WWW-Authenticate":
                        f'Bearer realm="http://{reg.host}/token",service="{reg.service}",'
                        f'scope="{scope}"'})
            return False

        def _token(self, query: dict) -> None:
            if reg.users is not None:
                auth = self.headers.get("Authorization", "")
                try:
                    user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                except ValueError:
                    user, pw = "", ""
                if not auth.startswith("Basic ") or reg.users.get(user) != pw:
                    return self._error(401, "UNAUTHORIZED")
            granted: set[str] = set()
            for scope in query.get("scope", []):
                for one in scope.split(" "):
                    kind, _, rest = one.partition(":")
                    name, _, actions = rest.rpartition(":")
                    for a in actions.split(","):
                        granted.add(f"{kind}:{name}:{a}")
            token = secrets.token_hex(16)
            reg.tokens[token] = granted
            self._send(200, json.dumps({"token": token}).encode(),
                       {"Content-Type": "application/json"})

        # -------------------------------------------------------------- dispatch
        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            with reg.lock:
                reg.requests.append((method, url.path))
                if reg.faults.fail_next > 0 and url.path != "/token":
                    reg.faults.fail_next -= 1
                    self._body()
                    return self._error(reg.faults.fail_status, "UNAVAILABLE",
                                       {"Retry-After": "0"})
            if url.path == "/token":
                return self._token(query)
            if url.path in ("/v2/", "/v2"):
                if reg.bearer and not self.headers.get("Authorization", "").startswith("Bearer "):
                    return self._error(401, "UNAUTHORIZED", {"WWW-Authenticate":
                                       f'Bearer realm="http://{reg.host}/token",'
                                       f'service="{reg.service}"'})
                return self._send(200, b"{}", {"Content-Type": "application/json"})
            m = _ROUTE.match(url.path)
            if not m:
                return self._error(404, "NOT_FOUND")
            repo, kind, rest = m.group("repo"), m.group("kind"), m.group("rest")
            write = method in ("PUT", "POST", "PATCH", "DELETE")
            extra = []
            if kind == "blobs/uploads" and "from" in query:
                extra = [(query["from"][0], "pull")]
            if not self._authorized(repo, "push" if write else "pull", extra):
                self._body()
                return
            getattr(self, "_" + kind.replace("/", "_"))(method, repo, rest, query)

        def do_GET(self): self._dispatch("GET")
        def do_HEAD(self): self._dispatch("HEAD")
        def do_PUT(self): self._dispatch("PUT")
        def do_POST(self): self._dispatch("POST")
        def do_PATCH(self): self._dispatch("PATCH")

        # -------------------------------------------------------------- blobs
        def _blobs(self, method: str, repo: str, digest: str, query) -> None:
            data = reg.blobs.get((repo, digest))
            if data is None:
                return self._error(404, "BLOB_UNKNOWN")
            if method == "HEAD":
                return self._send(200, b"", {"Content-Length": str(len(data)),
                                             "Docker-Content-Digest": digest}, head=True)
            if digest in reg.faults.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            start = 0
            rng = self.headers.get("Range", "")
            mr = re.match(r"bytes=(\d+)-$", rng)
            status, headers = 200, {"Docker-Content-Digest": digest,
                                    "Content-Type": "application/octet-stream"}
            if mr and not reg.faults.ignore_range:
                start = int(mr.group(1))
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            drop = reg.faults.drop_after.pop(digest, None)
            if drop is not None and drop < len(body):
                self.send_response(status)
                headers["Content-Length"] = str(len(body))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body[:drop])
                self.wfile.flush()
                self.close_connection = True
                import socket
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._send(status, body, headers)

        def _blobs_uploads(self, method: str, repo: str, upload_id: str, query) -> None:
            if method == "POST" and not upload_id:
                self._body()
                if "mount" in query and "from" in query:
                    digest, source = query["mount"][0], query["from"][0]
                    if (source, digest) in reg.blobs:
                        reg.blobs[(repo, digest)] = reg.blobs[(source, digest)]
                        return self._send(201, b"", {"Location": f"/v2/{repo}/blobs/{digest}",
                                                     "Docker-Content-Digest": digest})
                uid = uuid.uuid4().hex
                reg.uploads[uid] = bytearray()
                return self._send(202, b"", {"Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=x",
                                             "Range": "0-0", "Docker-Upload-UUID": uid})
            buf = reg.uploads.get(upload_id)
            if buf is None:
                self._body()
                return self._error(404, "BLOB_UPLOAD_UNKNOWN")
            if method == "PATCH":
                cr = self.headers.get("Content-Range")
                if cr and int(cr.split("-")[0]) != len(buf):
                    self._body()
                    return self._error(416, "BLOB_UPLOAD_INVALID")
                buf += self._body()
                return self._send(202, b"", {"Location": f"/v2/{repo}/blobs/uploads/{upload_id}",
                                             "Range": f"0-{len(buf) - 1}"})
            if method == "PUT":
                buf += self._body()
                digest = query.get("digest", [""])[0]
                if _digest(bytes(buf)) != digest:
                    return self._error(400, "DIGEST_INVALID")
                reg.blobs[(repo, digest)] = bytes(buf)
                del reg.uploads[upload_id]
                return self._send(201, b"", {"Location": f"/v2/{repo}/blobs/{digest}",
                                             "Docker-Content-Digest": digest})
            self._error(405, "UNSUPPORTED")

        # -------------------------------------------------------------- manifests
        def _manifests(self, method: str, repo: str, ref: str, query) -> None:
            if method == "PUT":
                data = self._body()
                media_type = self.headers.get("Content-Type", "")
                digest = _digest(data)
                if ref.startswith("sha256:") and ref != digest:
                    return self._error(400, "DIGEST_INVALID")
                reg.put_manifest(repo, ref, media_type, data)
                return self._send(201, b"", {"Docker-Content-Digest": digest,
                                             "Location": f"/v2/{repo}/manifests/{digest}"})
            got = reg.manifests.get((repo, ref))
            if got is None:
                return self._error(404, "MANIFEST_UNKNOWN")
            media_type, data = got
            self._send(200, data, {"Content-Type": media_type,
                                   "Docker-Content-Digest": _digest(data)},
                       head=(method == "HEAD"))

    return Handler
