"""Pull: a registry's image into the local store.

The manifest (Docker schema 2 or OCI; an index or manifest list first picks the one
for the wanted platform) is fetched and checked against its digest; then the config
and layers are streamed into the blob store, several at once, each verified against
its digest as it streams (a corrupt blob raises and leaves nothing behind). A
connection that drops mid-blob is resumed with a Range request from the last byte
received. Only when every blob is in does the image get registered and tagged.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cache.digest import CHUNK, digest_bytes
from cache.store import DigestMismatch
from pybuild.image import mediatypes as mt
from pybuild.image.types import Descriptor, Index, InvalidImageDocument, Manifest, Platform
from pybuild.registry.client import RegistryClient, repo_scope
from pybuild.registry.httpxlib import httpx  # without its CLI and trio
from pybuild.registry.errors import (BlobVerificationError, ManifestNotFound, RegistryError,
                                     RegistryUnreachable)
from pybuild.registry.records import BLOB_SOURCE, INDEX_CHOICE, PULLED_TAG  # noqa: F401
from pybuild.registry.reference import Reference, parse_ref

MANIFEST_ACCEPT = ", ".join((mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST, mt.OCI_MANIFEST,
                             mt.DOCKER_MANIFEST))
MANIFEST_LIMIT = 4 << 20  # the distribution spec's limit for a manifest


@dataclass(frozen=True)
class PullResult:
    """What a pull got: the manifest (and index) digests, the platform, and what it fetched."""

    ref: str                 # normalized reference pulled
    manifest_digest: str
    index_digest: str        # "" when the reference named a manifest
    platform: str
    blobs_fetched: int
    bytes_fetched: int


# --------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest or index from a registry: its digest, media type and bytes (none for HEAD)."""

    digest: str
    media_type: str
    data: bytes


def fetch_manifest(client: RegistryClient, ref: Reference, reference: str | None = None,
                   method: str = "GET") -> FetchedManifest:
    """GET (or HEAD) one manifest or index by tag or digest, verified when a digest is known."""
    target = reference or ref.digest or ref.tag
    try:
        with client.stream(method, f"/v2/{ref.path}/manifests/{target}",
                           repo_scope(ref.path), headers={"Accept": MANIFEST_ACCEPT},
                           ok=(200, 404)) as r:
            if r.status_code == 404:
                raise ManifestNotFound(f"{ref.domain}/{ref.path}:{target}: manifest unknown to "
                                       f"the registry")
            data = b"" if method == "HEAD" else _read_limited(r, MANIFEST_LIMIT)
            header_digest = r.headers.get("docker-content-digest", "")
            media_type = r.headers.get("content-type", "").split(";")[0].strip()
    except httpx.TransportError as e:
        raise RegistryUnreachable(f"reading the manifest of {ref}: {e.__class__.__name__}") \
            from None
    if method == "HEAD":
        return FetchedManifest(header_digest, media_type, b"")
    digest = digest_bytes(data)
    expected = target if target.startswith("sha256:") else header_digest
    if expected.startswith("sha256:") and expected != digest:
        raise BlobVerificationError(
            f"the manifest of {ref} hashes to {digest}, not {expected}: refusing it")
    try:
        body_type = json.loads(data).get("mediaType") or ""
    except (ValueError, AttributeError):
        raise InvalidImageDocument(f"the manifest of {ref} is not JSON") from None
    if media_type not in mt.MANIFESTS | mt.INDEXES:
        media_type = body_type or (mt.OCI_INDEX if b'"manifests"' in data else mt.OCI_MANIFEST)
    return FetchedManifest(digest, media_type, data)


def _read_limited(r: httpx.Response, limit: int) -> bytes:
    out = bytearray()
    for chunk in r.iter_bytes():
        out += chunk
        if len(out) > limit:
            raise RegistryError(f"{r.url}: manifest larger than {limit} bytes")
    return bytes(out)


def choose_platform(index: Index, platform: Platform, what: str) -> Descriptor:
    """The manifest of `index` for `platform` (exact variant first, then a compatible one)."""
    images = [m for m in index.manifests if m.media_type in mt.MANIFESTS | mt.INDEXES
              or not m.media_type]
    exact = [m for m in images if m.platform is not None and m.platform.os == platform.os
             and m.platform.architecture == platform.architecture
             and m.platform.variant == platform.variant]
    compatible = [m for m in images if m.platform is not None and platform.matches(m.platform)]
    chosen = exact or compatible or [m for m in images if m.platform is None]
    if not chosen:
        have = ", ".join(sorted({str(m.platform) for m in images if m.platform})) or "none"
        raise ManifestNotFound(f"{what}: no image for platform {platform} (it has: {have})")
    return chosen[0]


# --------------------------------------------------------------------------- blobs


class ResumingBlobReader:
    """A file-like `read()` over a blob download that survives dropped connections: it
    asks again with `Range: bytes=<received>-` and carries on (skipping the start if the
    server ignores Range). It refuses more bytes than the descriptor's size, and stops
    after `attempts` drops in a row without progress."""

    def __init__(self, client: RegistryClient, repo: str, desc: Descriptor, attempts: int = 5):
        self._client = client
        self._repo = repo
        self._desc = desc
        self._attempts = attempts
        self.received = 0
        self.resumes = 0
        self._ctx = None
        self._iter = None
        self._buffer = b""

    def _open(self) -> None:
        headers = {"Accept-Encoding": "identity"}
        if self.received:
            headers["Range"] = f"bytes={self.received}-"
        ctx = self._client.stream("GET", f"/v2/{self._repo}/blobs/{self._desc.digest}",
                                  repo_scope(self._repo), headers=headers, ok=(200, 206))
        r = ctx.__enter__()
        self._ctx = ctx
        skip = self.received if r.status_code == 200 else 0
        it = r.iter_raw(CHUNK) if r.headers.get("content-encoding", "identity") == "identity" \
            else r.iter_bytes(CHUNK)
        self._iter = _skipping(it, skip)

    def _close(self) -> None:
        ctx, self._ctx, self._iter = self._ctx, None, None
        if ctx is not None:
            try:
                ctx.__exit__(None, None, None)
            except (httpx.HTTPError, RegistryError):
                pass

    def read(self, n: int = CHUNK) -> bytes:
        failures = 0
        while True:
            if self._buffer:
                data, self._buffer = self._buffer[:n], self._buffer[n:]
                return data
            if self.received >= self._desc.size + 1:
                return b""
            try:
                if self._iter is None:
                    self._open()
                chunk = next(self._iter, None)
            except (httpx.TransportError, RegistryUnreachable) as e:
                self._close()
                failures += 1
                if failures >= self._attempts:
                    raise RegistryUnreachable(
                        f"downloading {self._desc.digest} from {self._client.endpoint.domain}/"
                        f"{self._repo}: {e.__class__.__name__} after {self.received} of "
                        f"{self._desc.size} bytes") from None
                self.resumes += 1
                time.sleep(self._client.retry.delay(failures - 1))
                continue
            if chunk is None:  # the server closed the body
                self._close()
                if self.received >= self._desc.size:
                    return b""
                failures += 1  # short body: a dropped connection that looked clean
                if failures >= self._attempts:
                    raise RegistryUnreachable(
                        f"downloading {self._desc.digest}: the registry sent only "
                        f"{self.received} of {self._desc.size} bytes")
                self.resumes += 1
                continue
            if not chunk:
                continue
            failures = 0
            # one byte past the size is enough for the digest check to fail
            chunk = chunk[:self._desc.size + 1 - self.received]
            self.received += len(chunk)
            self._buffer = chunk

    def close(self) -> None:
        self._close()


def _skipping(it, skip: int):
    for chunk in it:
        if skip:
            if len(chunk) <= skip:
                skip -= len(chunk)
                continue
            chunk, skip = chunk[skip:], 0
        yield chunk


def fetch_blob(client: RegistryClient, repo: str, desc: Descriptor, blobs) -> int:
    """Stream one blob into the store, verified. Returns the bytes fetched (0 if present)."""
    if blobs.has(desc.digest):
        return 0
    reader = ResumingBlobReader(client, repo, desc)
    try:
        blobs.put_stream(reader, desc.digest)
    except DigestMismatch:
        raise BlobVerificationError(
            f"blob {desc.digest} from {client.endpoint.domain}/{repo} is corrupt (its bytes "
            "hash to another digest): nothing was stored") from None
    finally:
        reader.close()
    if reader.received != desc.size:  # right digest, wrong size in the manifest
        blobs.delete(desc.digest)
        raise BlobVerificationError(f"blob {desc.digest}: the manifest says {desc.size} bytes, "
                                    f"the registry sent {reader.received}")
    return reader.received


def note_blob_source(index, digest: str, repository: str) -> None:
    """Remember that `repository` (`domain/path`) holds `digest`: push mounts from there."""
    rec = index.get(BLOB_SOURCE, digest, touch=False)
    repos = list(rec.value.get("repos", [])) if rec else []
    if repository not in repos:
        index.put(BLOB_SOURCE, digest, {"repos": (repos + [repository])[-8:]})


# --------------------------------------------------------------------------- pull


def pull(root, ref: str, *, platform: Platform | str | None = None,
         client: RegistryClient | None = None, insecure=(), jobs: int = 4,
         tag: bool = True) -> PullResult:
    """Pull `ref` into the store at `root` (a StoreRoot); tag it unless `tag` is false."""
    parsed = parse_ref(ref)
    want = Platform.parse(platform) if isinstance(platform, str) else (platform or Platform.host())
    own_client = client is None
    client = client or RegistryClient(parsed.domain, insecure=insecure)
    try:
        top = fetch_manifest(client, parsed)
        index_digest = ""
        fetched = top
        for _ in range(4):  # nested indexes are legal, if rare
            if fetched.media_type not in mt.INDEXES:
                break
            index = Index.from_json(fetched.data)
            root.blobs.put_bytes(fetched.data)
            index_digest = index_digest or fetched.digest
            desc = choose_platform(index, want, str(parsed))
            fetched = fetch_manifest(client, parsed, desc.digest)
        else:
            raise InvalidImageDocument(f"{parsed}: image indexes nested too deeply")
        manifest = Manifest.from_json(fetched.data)
        blobs = [manifest.config, *manifest.layers]
        unique = list({d.digest: d for d in blobs}.values())
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            sizes = list(pool.map(lambda d: fetch_blob(client, parsed.path, d, root.blobs),
                                  unique))
        image = root.images.register(fetched.data)
        repository = f"{parsed.domain}/{parsed.path}"
        for d in blobs:
            note_blob_source(root.index, d.digest, repository)
        if index_digest:
            root.index.put(INDEX_CHOICE, f"{index_digest} {want}",
                           {"manifest": image.manifest_digest})
        if tag and parsed.tag:
            name = f"{repository}:{parsed.tag}"
            root.images.tag(name, image.manifest_digest)
            root.index.put(PULLED_TAG, name, {"manifest": image.manifest_digest})
        cfg = image.config
        return PullResult(str(parsed), image.manifest_digest, index_digest,
                          str(cfg.platform), sum(1 for s in sizes if s), sum(sizes))
    finally:
        if own_client:
            client.close()
