"""Build outputs: parsing `--output` (BuildKit's exporter syntax) into typed values.

    type=oci,dest=app.tar,compression=zstd,compression-level=3,rewrite-timestamp=true
    type=docker,dest=app.tar            docker-archive (docker media types)
    type=image,name=app:1               tag into the local store (like `--load`)
    type=registry,name=host/app:1       push (`push=true` on type=image is the same)
    type=local,dest=DIR / type=tar,dest=FILE    the image's filesystem
    DIR                                 shorthand for type=local,dest=DIR

Only parsing and validation live here: a bad value is a `PybuildError` naming the key,
before anything is built. `ImageOptions` is what the image-producing outputs (oci,
docker, image, registry) agree on and what `pybuild.image.convert` applies.
"""
from __future__ import annotations

from dataclasses import dataclass

from pybuild.errors import PybuildError

OUTPUT_TYPES = ("image", "oci", "docker", "registry", "local", "tar")
IMAGE_TYPES = ("image", "oci", "docker", "registry")
FILE_TYPES = ("oci", "docker", "local", "tar")  # need dest=

_BOOL_KEYS = ("force-compression", "oci-mediatypes", "rewrite-timestamp", "push",
              "push-by-digest", "insecure", "registry.insecure", "unpack", "store",
              "name-canonical", "tar")
# accepted so that a command line written for buildx works; read by whoever needs them
_PASSTHROUGH_KEYS = ("dangling-name-prefix", "buildinfo", "attest", "platform-split")
_KNOWN_KEYS = ("type", "dest", "name", "compression", "compression-level",
               *_BOOL_KEYS, *_PASSTHROUGH_KEYS)


class InvalidOutput(PybuildError):
    """An `--output` value that cannot be honoured."""


@dataclass(frozen=True)
class ImageOptions:
    """How an exported image's manifest and layers are made."""

    compression: str = "gzip"            # gzip | zstd | uncompressed
    compression_level: int | None = None
    force_compression: bool = False      # recompress layers already in `compression`
    oci_mediatypes: bool = True          # False: Docker schema 2 media types
    rewrite_timestamp: bool = False      # clamp layer file mtimes to SOURCE_DATE_EPOCH

    @property
    def is_default(self) -> bool:
        return self == ImageOptions()


@dataclass(frozen=True)
class OutputSpec:
    """One `--output` value, parsed."""
    type: str  # image | oci | docker | registry | tar | local
    dest: str = ""
    # every key=value given except type and dest, sorted (names, registry options, ...)
    attrs: tuple[tuple[str, str], ...] = ()
    image: ImageOptions = ImageOptions()

    def attr(self, key: str, default: str = "") -> str:
        return dict(self.attrs).get(key, default)

    @property
    def names(self) -> tuple[str, ...]:
        """`name=a:1,b:2` is two names (BuildKit allows a comma list, quoted in CSV)."""
        return tuple(n for n in self.attr("name").split(",") if n)

    @property
    def push(self) -> bool:
        return self.type == "registry" or _bool("push", self.attr("push", "false"))

    @classmethod
    def parse(cls, text: str) -> "OutputSpec":
        """`type=oci,dest=app.tar,...`, or a bare path (`-o DIR`, a local export)."""
        text = text.strip()
        if not text:
            raise InvalidOutput("empty --output value")
        if "=" not in text:
            if text == "-":
                raise InvalidOutput("-o - (a tar to stdout) is not supported: give a file")
            return cls("local", text)
        attrs = split_attrs(text)
        kind = attrs.pop("type", "")
        if kind not in OUTPUT_TYPES:
            raise InvalidOutput(f"unsupported output type {kind!r} in {text!r}: "
                                f"use {', '.join(OUTPUT_TYPES)}")
        for key in attrs:
            if key not in _KNOWN_KEYS and not key.startswith("annotation"):
                raise InvalidOutput(f"unknown output option {key!r} in {text!r}: "
                                    f"known options are {', '.join(sorted(_KNOWN_KEYS))}")
        dest = attrs.pop("dest", "")
        if kind in FILE_TYPES and not dest:
            raise InvalidOutput(f"output type={kind} needs dest=PATH")
        if kind == "registry" and not attrs.get("name"):
            raise InvalidOutput("output type=registry needs name=REGISTRY/REPO:TAG")
        for key in _BOOL_KEYS:
            if key in attrs:
                _bool(key, attrs[key])
        image = _image_options(kind, attrs)
        if kind not in IMAGE_TYPES and not image.is_default:
            if image.rewrite_timestamp or image.force_compression or \
                    "compression" in attrs or "compression-level" in attrs:
                raise InvalidOutput(f"compression and timestamp options apply to image "
                                    f"outputs ({', '.join(IMAGE_TYPES)}), not type={kind}")
        return cls(kind, dest, tuple(sorted(attrs.items())), image)


def split_attrs(text: str, flag: str = "--output",
                error: type[PybuildError] | None = None) -> dict[str, str]:
    """A BuildKit-style `key=value,key=value` option (--output, --cache-to, ...) as a dict,
    keys lowercased. Split on commas; a value in double quotes may hold commas
    (`name="a:1,b:2"`, as in BuildKit's CSV form). Errors are `error` (InvalidOutput)."""
    import csv

    error = error or InvalidOutput
    try:
        fields = next(csv.reader([text]))
    except (csv.Error, StopIteration) as e:
        raise error(f"invalid {flag} value {text!r}: {e}") from None
    out: dict[str, str] = {}
    for part in fields:
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise error(f"invalid {flag} value {text!r}: {part!r} is not key=value")
        if key in out:
            raise error(f"invalid {flag} value {text!r}: {key} given twice")
        out[key] = value.strip()
    return out


def _bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1", "yes", "on", ""):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise InvalidOutput(f"output option {key} must be true or false, got {value!r}")


def _image_options(kind: str, attrs: dict[str, str]) -> ImageOptions:
    from pybuild.image.compression import COMPRESSIONS, CompressionError, check_level

    compression = attrs.get("compression", "gzip").lower() or "gzip"
    if compression not in COMPRESSIONS:
        raise InvalidOutput(f"unsupported compression {compression!r}: use "
                            f"{', '.join(COMPRESSIONS)}")
    level: int | None = None
    if attrs.get("compression-level", "") != "":
        try:
            level = int(attrs["compression-level"])
        except ValueError:
            raise InvalidOutput("compression-level must be an integer, got "
                                f"{attrs['compression-level']!r}") from None
        try:
            check_level(compression, level)
        except CompressionError as e:
            raise InvalidOutput(str(e)) from None
    # type=docker is a docker-archive: Docker media types unless asked otherwise; Docker
    # schema 2 has no zstd layer type, so zstd means OCI media types (as in BuildKit)
    oci_default = "false" if kind == "docker" and compression != "zstd" else "true"
    oci = _bool("oci-mediatypes", attrs.get("oci-mediatypes", oci_default))
    if compression == "zstd" and not oci:
        raise InvalidOutput("compression=zstd needs OCI media types: drop oci-mediatypes=false")
    return ImageOptions(
        compression=compression,
        compression_level=level,
        force_compression=_bool("force-compression", attrs.get("force-compression", "false")),
        oci_mediatypes=oci,
        rewrite_timestamp=_bool("rewrite-timestamp", attrs.get("rewrite-timestamp", "false")),
    )
