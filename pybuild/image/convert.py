"""Exported images: an image of the store turned into the one an output asks for.

`convert_image` applies `ImageOptions` (compression, level, force-compression, media
types, rewrite-timestamp) and returns a new image whose blobs are in the store (its
manifest is not registered: `ImageStore.register` it to list or tag it). Nothing changes
when nothing has to: a gzip export of a gzip image is the very same manifest.

Layers are converted in parallel (one task per layer; gzip blocks and zstd frames use
every core too) and never twice: every blob we compress is remembered in the cache index
under its diff_id and variant (`LAYER_BLOBS`: diff_id -> {"gzip": {...}, "zstd-19": ...}),
and every timestamp rewrite under (diff_id, epoch) (`LAYER_REWRITES`), so the next export
with the same options only looks records up. A remembered blob is one *we* wrote with
exactly that variant, so an export's bytes never depend on what else the store holds.

rewrite-timestamp follows BuildKit: file mtimes later than SOURCE_DATE_EPOCH are clamped
to it in the layers the build added; the base image's layers are left alone.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

from cache.store import BlobNotFound
from pybuild.errors import PybuildError
from pybuild.image import mediatypes as mt
from pybuild.image.compression import layer_writer, open_uncompressed
from pybuild.image.outputs import ImageOptions
from pybuild.image.store import ImageStore, StoredImage
from pybuild.image.types import Descriptor, LayerRecord, Manifest

LAYER_BLOBS = "layer-blobs"        # diff_id -> {variant: {"digest", "size"}}
LAYER_REWRITES = "layer-rewrite"   # "<diff_id>@<epoch>" -> {"diff_id": rewritten diff_id}


class ConversionError(PybuildError):
    pass


@dataclass(frozen=True)
class ConvertStats:
    """What a `convert_image` call did with the image's layers."""
    layers: int     # layers in the image
    compressed: int  # layers compressed (or rewritten) by this call
    reused: int     # layers taken from an earlier conversion


def variant(compression: str, level: int | None) -> str:
    return compression if level is None else f"{compression}-{level}"


def convert_image(store: ImageStore, image: StoredImage, options: ImageOptions, *,
                  source_date_epoch: int | None = None, keep_layers: int = 0,
                  jobs: int | None = None) -> tuple[StoredImage, ConvertStats]:
    """`image` as `options` describe it. `keep_layers` bottom layers (the base image)
    are never timestamp-rewritten."""
    epoch = None
    if options.rewrite_timestamp:
        if source_date_epoch is None:
            raise ConversionError("rewrite-timestamp=true needs SOURCE_DATE_EPOCH (set the "
                                  "environment variable or --build-arg SOURCE_DATE_EPOCH=...)")
        epoch = source_date_epoch
    converter = _LayerConverter(store, options, epoch)
    work = {}  # one task per distinct layer
    for i, layer in enumerate(image.layers):
        rewrite = epoch is not None and i >= keep_layers
        work.setdefault((layer.digest, rewrite), layer)
    # layers kept as stored need no thread (a plain `save` of a built image: all of them)
    done = {key: layer for key, layer in work.items() if converter.as_stored(layer, key[1])}
    work = {key: layer for key, layer in work.items() if key not in done}
    if work:
        from concurrent.futures import ThreadPoolExecutor  # lazily: ~5 ms of start-up

        n = jobs or max(1, min(len(work), os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=max(1, n), thread_name_prefix="export") as pool:
            futures = {key: pool.submit(converter.convert, layer, key[1])
                       for key, layer in work.items()}
            done.update({key: fut.result() for key, fut in futures.items()})
    new_layers = [done[(layer.digest, epoch is not None and i >= keep_layers)]
                  for i, layer in enumerate(image.layers)]
    stats = ConvertStats(len(image.layers), converter.compressed, converter.reused)
    return _with_layers(store, image, new_layers, options.oci_mediatypes), stats


class _LayerConverter:
    def __init__(self, store: ImageStore, options: ImageOptions, epoch: int | None):
        self.store = store
        self.options = options
        self.epoch = epoch
        self.variant = variant(options.compression, options.compression_level)
        self.compressed = 0
        self.reused = 0

    def as_stored(self, layer: LayerRecord, rewrite: bool) -> bool:
        """The layer goes out as it is: `convert` would return it unchanged."""
        return not rewrite and layer.compression == self.options.compression \
            and not self.options.force_compression

    def convert(self, layer: LayerRecord, rewrite: bool) -> LayerRecord:
        if rewrite:
            return self._rewritten(layer)
        if self.as_stored(layer, rewrite):
            return layer
        known = self._known_blob(layer.diff_id)
        if known is not None:
            self.reused += 1
            return known
        with open_uncompressed(self.store.blobs, layer) as src:
            record = self._compress(src)
        if record.diff_id != layer.diff_id:
            raise ConversionError(f"layer {layer.digest} unpacks to {record.diff_id}, not its "
                                  f"diff_id {layer.diff_id}: the store is corrupt")
        return record

    def _rewritten(self, layer: LayerRecord) -> LayerRecord:
        from pybuild.snapshot.diff import TarRewriteError, rewrite_layer_tar

        index = self.store.index
        key = f"{layer.diff_id}@{self.epoch}"
        rec = index.get(LAYER_REWRITES, key)
        if rec is not None:
            known = self._known_blob(rec.value["diff_id"])
            if known is not None:
                self.reused += 1
                return known
        with open_uncompressed(self.store.blobs, layer) as src, \
                layer_writer(self.store.blobs, self.options.compression,
                             self.options.compression_level) as sink:
            try:
                rewrite_layer_tar(src, sink, clamp_mtime=self.epoch)  # type: ignore[arg-type]
            except TarRewriteError as e:
                raise ConversionError(f"layer {layer.digest}: {e}") from None
        record = sink.record
        assert record is not None
        index.put(LAYER_REWRITES, key, {"diff_id": record.diff_id})
        self._remember(record)
        self.compressed += 1
        return record

    def _compress(self, src) -> LayerRecord:
        from cache.digest import CHUNK

        with layer_writer(self.store.blobs, self.options.compression,
                          self.options.compression_level) as sink:
            while chunk := src.read(CHUNK):
                sink.write(chunk)
        record = sink.record
        assert record is not None
        self._remember(record)
        self.compressed += 1
        return record

    def _known_blob(self, diff_id: str) -> LayerRecord | None:
        rec = self.store.index.get(LAYER_BLOBS, diff_id)
        entry = (rec.value if rec is not None else {}).get(self.variant)
        if not entry or not self.store.blobs.has(entry["digest"]):
            return None  # never made, or pruned since
        return LayerRecord(entry["digest"], diff_id, int(entry["size"]),
                           mt.LAYER_BY_COMPRESSION[self.options.compression])

    def _remember(self, record: LayerRecord) -> None:
        index = self.store.index
        rec = index.get(LAYER_BLOBS, record.diff_id, touch=False)
        value = dict(rec.value) if rec is not None else {}
        value[self.variant] = {"digest": record.digest, "size": record.size}
        index.put(LAYER_BLOBS, record.diff_id, value)


def _layer_media_type(layer: LayerRecord, oci: bool) -> str:
    if oci:
        return mt.to_oci(layer.media_type)
    if layer.media_type == mt.OCI_LAYER_NONDIST_GZIP:
        return mt.DOCKER_LAYER_FOREIGN_GZIP
    return mt.DOCKER_LAYER_BY_COMPRESSION[layer.compression]


def _with_layers(store: ImageStore, image: StoredImage, layers: list[LayerRecord],
                 oci: bool) -> StoredImage:
    """`image` with `layers` and the chosen media types; the original when nothing
    changed (its exact bytes and digest)."""
    old = image.manifest
    diff_ids = tuple(layer.diff_id for layer in layers)
    if diff_ids != image.config.diff_ids:
        config_bytes = replace(image.config, diff_ids=diff_ids).to_json()
        config_digest, config_size = store.blobs.put_bytes(config_bytes), len(config_bytes)
    else:  # the image's own config blob, in the store already: nothing to hash or write
        config_digest = image.config_digest
        config_size = store.blobs.size(config_digest)
    config_desc = Descriptor(mt.OCI_CONFIG if oci else mt.DOCKER_CONFIG, config_digest,
                             config_size, old.config.annotations)
    descs = []
    for layer, old_desc in zip(layers, old.layers):
        media_type = _layer_media_type(layer, oci)
        if layer.digest == old_desc.digest:  # keep its annotations and urls
            descs.append(replace(old_desc, media_type=media_type))
        else:
            descs.append(Descriptor(media_type, layer.digest, layer.size))
    manifest = Manifest(config_desc, tuple(descs), old.annotations,
                        mt.OCI_MANIFEST if oci else mt.DOCKER_MANIFEST,
                        old.subject if oci else None, old.artifact_type if oci else "")
    if manifest == old:
        return image
    data = manifest.to_json()
    digest = store.blobs.put_bytes(data)
    try:
        return store.get(digest)
    except BlobNotFound as e:  # pragma: no cover - every blob was just checked or written
        raise ConversionError(str(e)) from None
