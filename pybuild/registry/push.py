"""Push: images from the local store to a registry.

For each blob: HEAD first (the registry may have it already); else a cross-repository
mount when the store knows another repository of the same registry holds it; else an
upload, monolithic (POST, then one PUT with the bytes) for small blobs and chunked
(PATCH after PATCH, then PUT) for large ones. Layers go up several at once, the config
after them, the manifest last (by digest, then under each tag), so a tag never names an
image whose blobs are missing. Several images pushed as one name get an OCI index.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit, parse_qsl

from cache.digest import CHUNK, digest_bytes
from pybuild.image import mediatypes as mt
from pybuild.image.types import Descriptor, Index
from pybuild.registry.client import RegistryClient, repo_scope
from pybuild.registry.errors import RegistryError
from pybuild.registry.pull import BLOB_SOURCE, note_blob_source
from pybuild.registry.reference import Reference, parse_ref

MONOLITHIC_MAX = 16 << 20   # blobs up to this size go up in one PUT
CHUNK_SIZE = 8 << 20        # PATCH size for larger ones


@dataclass(frozen=True)
class PushResult:
    """What a push did: the digest the tag now names and how each blob got there."""

    ref: str
    digest: str              # what the tag now names: a manifest, or an index
    uploaded: int            # blobs whose bytes were sent
    mounted: int             # blobs mounted from another repository
    existing: int            # blobs the registry had already
    bytes_uploaded: int


@dataclass
class _Counts:
    """Running tallies of a push: blobs uploaded, mounted or already there, bytes sent."""

    uploaded: int = 0
    mounted: int = 0
    existing: int = 0
    bytes: int = 0


class Pusher:
    def __init__(self, root, client: RegistryClient, dest: Reference, *, jobs: int = 4,
                 monolithic_max: int = MONOLITHIC_MAX, chunk_size: int = CHUNK_SIZE):
        self.root = root
        self.client = client
        self.dest = dest
        self.jobs = jobs
        self.monolithic_max = monolithic_max
        self.chunk_size = chunk_size
        self.counts = _Counts()
        self._lock = threading.Lock()  # counts are bumped from the upload threads
        self.repository = f"{dest.domain}/{dest.path}"

    @property
    def scope(self) -> str:
        return repo_scope(self.dest.path, "pull,push")

    # ------------------------------------------------------------------ blobs

    def push_blob(self, desc: Descriptor) -> None:
        path = self.dest.path
        r = self.client.request("HEAD", f"/v2/{path}/blobs/{desc.digest}", self.scope,
                                ok=(200, 404))
        if r.status_code == 200:
            with self._lock:
                self.counts.existing += 1
            return
        location = None
        for source in self._mount_sources(desc.digest):
            scope = f"{self.scope} {repo_scope(source, 'pull')}"
            r = self.client.request("POST", f"/v2/{path}/blobs/uploads/", scope,
                                    params={"mount": desc.digest, "from": source},
                                    ok=(201, 202))
            if r.status_code == 201:
                with self._lock:
                    self.counts.mounted += 1
                return
            location = r.headers.get("location")  # 202: an upload session instead
            break
        if location is None:
            r = self.client.request("POST", f"/v2/{path}/blobs/uploads/", self.scope,
                                    ok=(202,))
            location = r.headers.get("location")
        if not location:
            raise RegistryError(f"{self.repository}: the registry started an upload without "
                                "a Location")
        if desc.size <= self.monolithic_max:
            self._put(location, desc, body=lambda: self._read(desc.digest, 0, desc.size))
        else:
            location = self._patch_chunks(location, desc)
            self._put(location, desc, body=b"")
        with self._lock:
            self.counts.uploaded += 1
            self.counts.bytes += desc.size

    def _mount_sources(self, digest: str) -> list[str]:
        """Other repositories of this registry that hold `digest`, as far as we know."""
        rec = self.root.index.get(BLOB_SOURCE, digest, touch=False)
        out = []
        for repo in (rec.value.get("repos", []) if rec else []):
            domain, _, path = repo.partition("/")
            if domain == self.dest.domain and path != self.dest.path:
                out.append(path)
        return out[-1:]  # the most recent is the likeliest still there

    def _read(self, digest: str, start: int, length: int) -> Iterator[bytes]:
        with self.root.blobs.open(digest) as f:
            f.seek(start)
            left = length
            while left > 0:
                data = f.read(min(CHUNK, left))
                if not data:
                    raise RegistryError(f"blob {digest} is shorter than its descriptor says")
                left -= len(data)
                yield data

    def _url(self, location: str) -> str:
        return urljoin(self.client.base + "/", location)

    def _put(self, location: str, desc: Descriptor, body) -> None:
        parts = urlsplit(self._url(location))
        query = parse_qsl(parts.query, keep_blank_values=True) + [("digest", desc.digest)]
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
        length = 0 if body == b"" else desc.size
        self.client.request("PUT", url, self.scope, body=body, ok=(201, 204),
                            headers={"Content-Type": "application/octet-stream",
                                     "Content-Length": str(length)})

    def _patch_chunks(self, location: str, desc: Descriptor) -> str:
        offset = 0
        while offset < desc.size:
            n = min(self.chunk_size, desc.size - offset)
            # replayed on 5xx or a drop like any request: a registry that kept part of
            # it refuses the repeated range (416) and the push fails cleanly
            r = self.client.request(
                "PATCH", self._url(location), self.scope, ok=(202,),
                body=lambda o=offset, n=n: self._read(desc.digest, o, n),
                headers={"Content-Type": "application/octet-stream",
                         "Content-Length": str(n),
                         "Content-Range": f"{offset}-{offset + n - 1}"})
            location = r.headers.get("location") or location
            offset += n
        return location

    # ------------------------------------------------------------------ manifests

    def put_manifest(self, data: bytes, media_type: str, reference: str) -> str:
        r = self.client.request("PUT", f"/v2/{self.dest.path}/manifests/{reference}",
                                self.scope, body=data, ok=(201, 204),
                                headers={"Content-Type": media_type})
        return r.headers.get("docker-content-digest", "")

    def push_image(self, image) -> Descriptor:
        """Blobs then manifest (by digest) of one StoredImage; its descriptor."""
        layers = list({d.digest: d for d in image.manifest.layers}.values())
        with ThreadPoolExecutor(max_workers=max(1, self.jobs)) as pool:
            list(pool.map(self.push_blob, layers))
        self.push_blob(image.manifest.config)
        data = self.root.blobs.read(image.manifest_digest)
        self.put_manifest(data, image.manifest.media_type, image.manifest_digest)
        for d in (image.manifest.config, *layers):
            note_blob_source(self.root.index, d.digest, self.repository)
        return Descriptor(image.manifest.media_type, image.manifest_digest, len(data),
                          platform=image.config.platform)


def _result(pusher: Pusher, ref: Reference, digest: str) -> PushResult:
    c = pusher.counts
    return PushResult(str(ref), digest, c.uploaded, c.mounted, c.existing, c.bytes)


def push(root, image, dest: str, *, client: RegistryClient | None = None, insecure=(),
         jobs: int = 4, monolithic_max: int = MONOLITHIC_MAX,
         chunk_size: int = CHUNK_SIZE) -> PushResult:
    """Push the StoredImage `image` as `dest` (`host/repo:tag` or `host/repo`)."""
    return push_images(root, [image], dest, client=client, insecure=insecure, jobs=jobs,
                       monolithic_max=monolithic_max, chunk_size=chunk_size)


def push_images(root, images: Sequence, dest: str, *, client: RegistryClient | None = None,
                insecure=(), jobs: int = 4, monolithic_max: int = MONOLITHIC_MAX,
                chunk_size: int = CHUNK_SIZE) -> PushResult:
    """One image: its manifest under the tag. Several (one per platform, say): every
    manifest by digest, then an OCI index of them under the tag."""
    if not images:
        raise RegistryError("nothing to push")
    ref = parse_ref(dest)
    own = client is None
    client = client or RegistryClient(ref.domain, insecure=insecure)
    try:
        pusher = Pusher(root, client, ref, jobs=jobs, monolithic_max=monolithic_max,
                        chunk_size=chunk_size)
        descs = [pusher.push_image(image) for image in images]
        if len(descs) == 1:
            data = root.blobs.read(descs[0].digest)
            media_type = descs[0].media_type
        else:
            data = Index(tuple(descs)).to_json()
            media_type = mt.OCI_INDEX
            root.blobs.put_bytes(data)
        digest = digest_bytes(data)
        if ref.digest and ref.digest != digest:
            raise RegistryError(f"{dest} names digest {ref.digest} but the image is {digest}")
        if len(descs) > 1:
            pusher.put_manifest(data, media_type, digest)
        if ref.tag:
            got = pusher.put_manifest(data, media_type, ref.tag)
            if got and got != digest:
                raise RegistryError(f"{ref}: the registry stored the manifest as {got}, "
                                    f"not {digest}")
        return _result(pusher, ref, digest)
    finally:
        if own:
            client.close()
