"""Solving `graph.HttpSource`: `ADD https://...` downloads, content-addressed.

The cache key of a download is the checksum of what the server sends (BuildKit's HTTP
source does the same), so a rebuild hits the cache as long as the content is the same,
whatever the URL. To avoid re-downloading unchanged content, the ETag and Last-Modified
of the last download of a URL are kept in the cache index and sent back
(`If-None-Match`); a 304 reuses the blob already in the store. With `--checksum` the key
is known without any request at all, and the download must match it.

The file lands at `/<filename>` of the source's own one-layer filesystem, mode 0600 and
owned by 0:0, with the mtime from `Last-Modified` (BuildKit's behaviour); the COPY that
reads it applies --chmod/--chown and the destination.
"""
from __future__ import annotations

import email.utils
import hashlib
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from cache.digest import CHUNK, digest_json
from pybuild import graph
from pybuild.errors import PybuildError

__all__ = ["HttpSourceError", "Download", "HttpSources"]

RECORD_KIND = "http"
USER_AGENT = "pybuild"
TIMEOUT = 60  # seconds without progress on one socket operation
_CHECKSUM = re.compile(r"^(sha256|sha384|sha512):([0-9a-f]+)$")
_HEX_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}


class HttpSourceError(PybuildError):
    """A download failed, or did not match its --checksum."""


@dataclass(frozen=True)
class Download:
    """A URL's content, in the blob store under `digest` (sha256)."""

    digest: str
    mtime: float | None  # from Last-Modified; None: the server sent none


def redact(url: str) -> str:
    """The URL without a password, for messages."""
    u = urlsplit(url)
    if u.password is None:
        return url
    netloc = f"{u.username}:xxxxx@{u.hostname}" + (f":{u.port}" if u.port else "")
    return urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))


def parse_checksum(text: str) -> tuple[str, str]:
    """`sha256:<hex>` (or sha384/sha512) -> (algorithm, hex)."""
    m = _CHECKSUM.match(text)
    if m is None or len(m.group(2)) != _HEX_LEN[m.group(1)]:
        raise HttpSourceError(f"invalid checksum {text!r}: expected sha256:<64 hex digits> "
                              "(or sha384:/sha512:)")
    return m.group(1), m.group(2)


def _mtime(last_modified: str) -> float | None:
    if not last_modified:
        return None
    try:
        return email.utils.parsedate_to_datetime(last_modified).timestamp()
    except (TypeError, ValueError, IndexError):
        return None  # an unparsable date is ignored, as Go's http.ParseTime failing is


class HttpSources:
    """Resolves and materializes the HTTP sources of one solve (thread-safe per op)."""

    def __init__(self, root):
        self.root = root  # pybuild.storeroot.StoreRoot
        self._downloads: dict[str, Download] = {}  # op digest -> what its key was made from

    # ------------------------------------------------------------------ cache key
    def cache_key(self, op: graph.HttpSource) -> str:
        key: dict = {"v": 1, "kind": "http", "filename": op.filename, "mode": 0o600}
        if op.checksum:
            parse_checksum(op.checksum)
            key["checksum"] = op.checksum  # known before any request, like BuildKit
            return digest_json(key)
        download = self.fetch(op)
        key["content"] = download.digest
        key["mtime"] = download.mtime
        return digest_json(key)

    # ------------------------------------------------------------------ download
    def fetch(self, op: graph.HttpSource) -> Download:
        done = self._downloads.get(op.digest)
        if done is not None:
            return done
        index, blobs = self.root.index, self.root.blobs
        record = index.get(RECORD_KIND, op.url)
        previous = record.value if record is not None else None
        request = urllib.request.Request(op.url, headers={"User-Agent": USER_AGENT})
        if previous and previous.get("etag") and blobs.has(previous["digest"]):
            request.add_header("If-None-Match", previous["etag"])
        algo, want = parse_checksum(op.checksum) if op.checksum else ("", "")
        try:
            response = urllib.request.urlopen(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as e:
            if e.code == 304 and previous:
                download = Download(previous["digest"], _mtime(previous.get("last_modified", "")))
                self._verify(op, download, algo, want)
                self._downloads[op.digest] = download
                return download
            raise HttpSourceError(f"failed to download {redact(op.url)}: HTTP {e.code} "
                                  f"{e.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise HttpSourceError(f"failed to download {redact(op.url)}: {reason}") from None
        with response:
            hasher = hashlib.new(algo) if algo else None
            try:
                with blobs.writer() as w:
                    while chunk := response.read(CHUNK):
                        w.write(chunk)
                        if hasher is not None:
                            hasher.update(chunk)
                    if hasher is not None and hasher.hexdigest() != want:
                        raise HttpSourceError(
                            f"checksum mismatch for {redact(op.url)}: expected {op.checksum}, "
                            f"got {algo}:{hasher.hexdigest()}")
                    digest = w.commit()
            except (OSError, ValueError) as e:  # a connection dropped mid-body
                raise HttpSourceError(f"failed to download {redact(op.url)}: {e}") from None
            etag = response.headers.get("ETag", "")
            last_modified = response.headers.get("Last-Modified", "")
        index.put(RECORD_KIND, op.url, {"digest": digest, "etag": etag,
                                        "last_modified": last_modified})
        download = Download(digest, _mtime(last_modified))
        self._downloads[op.digest] = download
        return download

    def _verify(self, op: graph.HttpSource, download: Download, algo: str, want: str) -> None:
        if not algo:
            return
        h = hashlib.new(algo)
        with self.root.blobs.open(download.digest) as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        if h.hexdigest() != want:
            raise HttpSourceError(f"checksum mismatch for {redact(op.url)}: expected "
                                  f"{op.checksum}, got {algo}:{h.hexdigest()}")

    # ------------------------------------------------------------------ filesystem
    def materialize(self, op: graph.HttpSource, dest_dir: str) -> None:
        """Write the downloaded file into the empty directory `dest_dir`."""
        name = op.filename
        if not name or "/" in name or name in (".", ".."):
            raise HttpSourceError(f"invalid file name {name!r} for {redact(op.url)}")
        download = self.fetch(op)
        path = os.path.join(dest_dir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "wb") as out, self.root.blobs.open(download.digest) as src:
            while chunk := src.read(CHUNK):
                out.write(chunk)
        os.chmod(path, 0o600)  # whatever the umask
        if download.mtime is not None:
            os.utime(path, (download.mtime, download.mtime))
