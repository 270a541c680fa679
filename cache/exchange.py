"""The shared build cache format: step records another machine can import.

A step's cache key is content-addressed and chain-aware (the solver's `cache_key`), so
it means the same thing on every machine. An exported cache is therefore just a table
{cache key -> the layer that step added, or none} plus the layer blobs themselves.
This module makes and reads that table; moving it (a registry, an OCI layout dir, an
image's config) is the caller's job. Pure: no I/O, nothing of pybuild.

Two encodings:

- the cache config (`CacheConfig`, media type `CACHE_CONFIG_MEDIA_TYPE`): the config
  blob of an OCI manifest whose layers are the cache's layer blobs, in the same order
  as `layers` here (docs/cache.md, "Shared cache format");
- the inline cache (`make_inline`/`parse_inline`): a compact table kept in an image's
  config (label `INLINE_LABEL`), naming the image's own layers by index.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from cache.digest import canonical_json, is_digest

CACHE_CONFIG_MEDIA_TYPE = "application/vnd.pybuild.cache.config.v1+json"
INLINE_LABEL = "io.pybuild.cache.v1"
FORMAT_VERSION = 1
# the solver's key scheme (its digest_json({"v": 1, ...})): a cache made by a pybuild
# whose keys mean something else must not be mistaken for this one's
KEY_SCHEME = "pybuild-step-v1"
MODES = ("min", "max")


class CacheFormatError(ValueError):
    """A cache config or inline cache that is not what this version writes."""


@dataclass(frozen=True)
class CacheLayer:
    """A layer blob as the cache names it: compressed digest and size, diff_id, type."""

    digest: str
    diff_id: str
    size: int
    media_type: str
    # when the step first made this layer (RFC 3339): the importer's image history gets
    # the same time, so a build from the cache gives the same image as the exporter's
    created: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"digest": self.digest, "diffID": self.diff_id, "size": self.size,
             "mediaType": self.media_type}
        if self.created is not None:
            d["created"] = self.created
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "CacheLayer":
        if not isinstance(d, dict):
            raise CacheFormatError("a cache layer is not a JSON object")
        digest, diff_id, size, media_type = (d.get("digest"), d.get("diffID"), d.get("size"),
                                             d.get("mediaType"))
        if not (isinstance(digest, str) and is_digest(digest) and isinstance(diff_id, str)
                and is_digest(diff_id) and isinstance(size, int) and size >= 0
                and isinstance(media_type, str) and media_type
                and isinstance(d.get("created"), (str, type(None)))):
            raise CacheFormatError(f"invalid cache layer {d!r}")
        return cls(digest, diff_id, size, media_type, d.get("created"))


@dataclass(frozen=True)
class CacheConfig:
    """The records of an exported cache. `steps` is (cache key, index into `layers` or
    None for a step that added no layer), sorted by key."""

    layers: tuple[CacheLayer, ...]
    steps: tuple[tuple[str, int | None], ...]
    mode: str = "min"

    def to_json(self) -> bytes:
        return canonical_json({
            "mediaType": CACHE_CONFIG_MEDIA_TYPE,
            "version": FORMAT_VERSION,
            "keyScheme": KEY_SCHEME,
            "mode": self.mode,
            "layers": [layer.to_dict() for layer in self.layers],
            "steps": [{"key": k, "layer": i} for k, i in self.steps],
        })

    @classmethod
    def from_json(cls, data: bytes) -> "CacheConfig":
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise CacheFormatError(f"the cache config is not JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("mediaType") != CACHE_CONFIG_MEDIA_TYPE:
            raise CacheFormatError("not a pybuild cache config")
        if doc.get("version") != FORMAT_VERSION or doc.get("keyScheme") != KEY_SCHEME:
            raise CacheFormatError(
                f"cache config version {doc.get('version')!r} ({doc.get('keyScheme')!r}) is "
                f"not the one this pybuild reads ({FORMAT_VERSION}, {KEY_SCHEME})")
        layers = tuple(CacheLayer.from_dict(x) for x in doc.get("layers") or ())
        steps = []
        for s in doc.get("steps") or ():
            if not isinstance(s, dict):
                raise CacheFormatError("a cache step is not a JSON object")
            steps.append((_key(s.get("key")), _index(s.get("layer"), len(layers))))
        mode = doc.get("mode") if doc.get("mode") in MODES else "min"
        return cls(layers, tuple(steps), mode)

    def table(self) -> dict[str, CacheLayer | None]:
        """cache key -> layer (None: the step added nothing)."""
        return {k: (self.layers[i] if i is not None else None) for k, i in self.steps}


def make_cache_config(records: Mapping[str, CacheLayer | None], mode: str) -> CacheConfig:
    """The config for {cache key -> layer or None}: each layer once, in the order the
    sorted keys first name it (the same records always give the same bytes)."""
    if mode not in MODES:
        raise CacheFormatError(f"unknown cache mode {mode!r}")
    layers: list[CacheLayer] = []
    where: dict[str, int] = {}
    steps = []
    for key in sorted(records):
        layer = records[key]
        if layer is None:
            steps.append((_key(key), None))
            continue
        if layer.digest not in where:
            where[layer.digest] = len(layers)
            layers.append(layer)
        steps.append((_key(key), where[layer.digest]))
    return CacheConfig(tuple(layers), tuple(steps), mode)


# --------------------------------------------------------------------------- inline


def make_inline(records: Mapping[str, int | None], layer_digests: Sequence[str]) -> str:
    """The inline cache of an image: {cache key -> index of the image layer the step
    added, or None}. Each entry also names the layer's digest, so an importer can tell
    when the image it reads was re-compressed since (then the entry is dropped)."""
    steps = []
    for key in sorted(records):
        i = records[key]
        steps.append({"key": _key(key), "layer": i,
                      "digest": layer_digests[i] if i is not None else None})
    return json.dumps({"v": FORMAT_VERSION, "keyScheme": KEY_SCHEME, "steps": steps},
                      sort_keys=True, separators=(",", ":"))


def parse_inline(text: str, layer_digests: Sequence[str]) -> dict[str, int | None]:
    """The usable entries of an inline cache read from an image whose layers (in the
    manifest) have `layer_digests`: {cache key -> layer index or None}."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise CacheFormatError(f"the inline cache is not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("v") != FORMAT_VERSION \
            or doc.get("keyScheme") != KEY_SCHEME:
        raise CacheFormatError("the inline cache is not one this pybuild reads")
    out: dict[str, int | None] = {}
    for s in doc.get("steps") or ():
        if not isinstance(s, dict):
            raise CacheFormatError("an inline cache step is not a JSON object")
        key = _key(s.get("key"))
        i = _index(s.get("layer"), len(layer_digests))
        if i is not None and s.get("digest") != layer_digests[i]:
            continue  # the image's layers were converted after the records were made
        out[key] = i
    return out


def _key(value: Any) -> str:
    if not isinstance(value, str) or not is_digest(value):
        raise CacheFormatError(f"invalid cache key {value!r}")
    return value


def _index(value: Any, n: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < n:
        raise CacheFormatError(f"cache layer index {value!r} out of range (0..{n - 1})")
    return value
