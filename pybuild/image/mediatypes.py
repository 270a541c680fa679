"""Media types of the OCI image spec v1.1 and their Docker schema 2 counterparts.

One place for the strings, plus the two questions callers ask of a layer media type:
how is it compressed, and is it a layer at all.
"""
from __future__ import annotations

OCI_LAYOUT_VERSION = "1.0.0"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
# Non-distributable layers are deprecated in v1.1 but still met in the wild.
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
# schema 2's uncompressed layer (distribution's MediaTypeUncompressedLayer)
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
# docker-archive layers are plain tars; Docker has no registry media type for them,
# so they get the OCI one.
DOCKER_LAYER_TAR = OCI_LAYER

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"

MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
CONFIGS = frozenset({OCI_CONFIG, DOCKER_CONFIG})

_GZIP = frozenset({OCI_LAYER_GZIP, OCI_LAYER_NONDIST_GZIP, DOCKER_LAYER_GZIP,
                   DOCKER_LAYER_FOREIGN_GZIP})
_ZSTD = frozenset({OCI_LAYER_ZSTD, OCI_LAYER_NONDIST_ZSTD, DOCKER_LAYER_ZSTD})
_PLAIN = frozenset({OCI_LAYER, OCI_LAYER_NONDIST, DOCKER_LAYER})
LAYERS = _GZIP | _ZSTD | _PLAIN

# compression name -> OCI layer media type
LAYER_BY_COMPRESSION = {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "uncompressed": OCI_LAYER}
# the same with Docker schema 2 media types (`oci-mediatypes=false`, docker-archive)
DOCKER_LAYER_BY_COMPRESSION = {"gzip": DOCKER_LAYER_GZIP, "zstd": DOCKER_LAYER_ZSTD,
                               "uncompressed": DOCKER_LAYER}


def layer_compression(media_type: str) -> str:
    """'gzip', 'zstd' or 'uncompressed' for a layer media type; ValueError otherwise."""
    if media_type in _GZIP:
        return "gzip"
    if media_type in _ZSTD:
        return "zstd"
    if media_type in _PLAIN:
        return "uncompressed"
    raise ValueError(f"not a layer media type: {media_type!r}")


def is_layer(media_type: str) -> bool:
    return media_type in LAYERS


def to_oci(media_type: str) -> str:
    """The OCI media type standing for a Docker schema 2 one (identity for OCI types)."""
    return {
        DOCKER_MANIFEST: OCI_MANIFEST,
        DOCKER_MANIFEST_LIST: OCI_INDEX,
        DOCKER_CONFIG: OCI_CONFIG,
        DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
        DOCKER_LAYER_FOREIGN_GZIP: OCI_LAYER_NONDIST_GZIP,
        DOCKER_LAYER_ZSTD: OCI_LAYER_ZSTD,
        DOCKER_LAYER: OCI_LAYER,
    }.get(media_type, media_type)
