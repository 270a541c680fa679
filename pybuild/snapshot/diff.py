"""The one tar writer of pybuild: directory trees and in-memory entries to deterministic
PAX tar streams.

`write_layer_tar` turns a directory into an OCI layer tar. Given an overlay upperdir it
translates overlay whiteouts into OCI ones: a 0:0 character device `x` becomes an empty
file `.wh.x`, and a directory marked opaque (`trusted.overlay.opaque=y` or
`user.overlay.opaque=y`) is followed by `dir/.wh..wh..opq`.

`write_tar_entries` writes a tar of explicit entries (bytes or host files), for image
layouts and archives.

Why a hand-written writer rather than `tarfile`: every byte must be a function of the
input only. The header layout is fixed here: entries sorted by name (bytes), integer
mtimes (clamped to SOURCE_DATE_EPOCH when given), uid/gid kept, uname/gname empty,
PAX records (sorted) only when a field does not fit ustar or for xattrs, and the stream
ends with two zero blocks (as Go's archive/tar does), no padding to a record size.
"""
from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass, field

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms of CLI start-up)
if TYPE_CHECKING:
    from typing import BinaryIO, Iterable

BLOCK = 512
_CHUNK = 1 << 20
_MAX_OCTAL_8 = 0o7777777          # fits an 8-byte octal field
_MAX_OCTAL_12 = 0o77777777777     # fits a 12-byte octal field

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_OVERLAY_XATTR_PREFIXES = (b"trusted.overlay.", b"user.overlay.")
_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")

# ustar type flags
REGTYPE, LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE = b"0", b"1", b"2", b"3", b"4", b"5", b"6"
PAXTYPE = b"x"


@dataclass(frozen=True)
class TarStats:
    """What `write_tar_entries` wrote."""
    entries: int   # entries written, PAX headers not counted
    size: int      # bytes written, end-of-archive blocks included


@dataclass(frozen=True)
class TarEntry:
    """One entry for `write_tar_entries`. Give the content as `data` or as a host file
    `path` (read when written; its size must not change). Directories take a name with or
    without a trailing "/"."""
    name: str
    kind: str = "file"                  # file | dir | symlink | hardlink
    data: bytes | None = None
    path: str | None = None
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    linkname: str = ""
    xattrs: tuple[tuple[str, bytes], ...] = field(default=())

    @staticmethod
    def file(name: str, data: bytes, mode: int = 0o644, mtime: int = 0) -> "TarEntry":
        return TarEntry(name, "file", data=data, mode=mode, mtime=mtime)

    @staticmethod
    def host_file(name: str, path: str, mode: int = 0o644, mtime: int = 0) -> "TarEntry":
        return TarEntry(name, "file", path=path, mode=mode, mtime=mtime)

    @staticmethod
    def directory(name: str, mode: int = 0o755, mtime: int = 0) -> "TarEntry":
        return TarEntry(name, "dir", mode=mode, mtime=mtime)


class _Header:
    __slots__ = ("name", "mode", "uid", "gid", "size", "mtime", "type", "linkname",
                 "devmajor", "devminor", "xattrs")

    def __init__(self, name: bytes, type_: bytes, mode: int = 0, uid: int = 0, gid: int = 0,
                 size: int = 0, mtime: int = 0, linkname: bytes = b"", devmajor: int = 0,
                 devminor: int = 0, xattrs: list[tuple[bytes, bytes]] | None = None):
        self.name, self.type, self.mode, self.uid, self.gid = name, type_, mode, uid, gid
        self.size, self.mtime, self.linkname = size, mtime, linkname
        self.devmajor, self.devminor, self.xattrs = devmajor, devminor, xattrs or []


def _octal(n: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, n)


def _is_ascii(b: bytes) -> bool:
    return b.isascii() and b"\0" not in b


def _pax_record(key: bytes, value: bytes) -> bytes:
    # "%d %s=%s\n" where the length counts itself
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return str(n).encode() + body


# the ustar header as one struct (fields in order; uname/gname stay empty on purpose):
# name mode uid gid size mtime chksum typeflag linkname magic+version uname gname
# devmajor devminor prefix+padding. Callers keep every value within its field (a longer
# one goes to PAX), so no field is ever truncated here.
_USTAR = struct.Struct("100s8s8s8s12s12s8s1s100s8s32s32s8s8s167s")
_NO_SUM = b"        "  # the checksum field counts as spaces while the sum is taken


def _ustar_block(h: _Header, name: bytes, linkname: bytes, size: int, mtime: int,
                 uid: int, gid: int) -> bytes:
    dev = h.type in (CHRTYPE, BLKTYPE)
    buf = _USTAR.pack(name, b"%07o\0" % (h.mode & 0o7777), b"%07o\0" % uid, b"%07o\0" % gid,
                      b"%011o\0" % size, b"%011o\0" % mtime, _NO_SUM, h.type, linkname,
                      b"ustar\x0000", b"", b"",
                      b"%07o\0" % h.devmajor if dev else b"",
                      b"%07o\0" % h.devminor if dev else b"", b"")
    return b"%s%06o\0 %s" % (buf[:148], sum(buf), buf[156:])


def _header_bytes(h: _Header) -> bytes:
    """The ustar block for `h`, preceded by a PAX header when a field needs one."""
    pax: list[tuple[bytes, bytes]] = []
    name, linkname, size, mtime, uid, gid = h.name, h.linkname, h.size, h.mtime, h.uid, h.gid
    binary = False
    if len(name) > 100 or not _is_ascii(name):
        pax.append((b"path", name))
        binary |= not _utf8(name)
        name = _ascii_stub(name)
    if len(linkname) > 100 or not _is_ascii(linkname):
        pax.append((b"linkpath", linkname))
        binary |= not _utf8(linkname)
        linkname = _ascii_stub(linkname)
    if size > _MAX_OCTAL_12:
        pax.append((b"size", b"%d" % size))
        size = 0
    if mtime < 0 or mtime > _MAX_OCTAL_12:
        pax.append((b"mtime", b"%d" % mtime))
        mtime = 0
    if uid > _MAX_OCTAL_8:
        pax.append((b"uid", b"%d" % uid))
        uid = 0
    if gid > _MAX_OCTAL_8:
        pax.append((b"gid", b"%d" % gid))
        gid = 0
    for key, value in h.xattrs:
        pax.append((b"SCHILY.xattr." + key, value))
    out = b""
    if pax:
        pax.sort()
        records = b"".join(_pax_record(k, v) for k, v in pax)
        if binary:
            records = _pax_record(b"hdrcharset", b"BINARY") + records
        ph = _Header(b"././@PaxHeader", PAXTYPE, mode=0o644)
        out = _ustar_block(ph, ph.name, b"", len(records), 0, 0, 0) + records + _pad(len(records))
    return out + _ustar_block(h, name, linkname, size, mtime, uid, gid)


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _ascii_stub(b: bytes) -> bytes:
    # what the ustar field holds when PAX carries the real value: an ASCII, truncated form
    return bytes(c if 32 <= c < 127 else 0x5F for c in b[:100])


def _pad(n: int) -> bytes:
    return b"\0" * (-n % BLOCK)


class _TarWriter:
    def __init__(self, out: BinaryIO):
        self.out = out
        self.entries = 0
        self.size = 0

    def _write(self, b: bytes) -> None:
        self.out.write(b)
        self.size += len(b)

    def add(self, h: _Header, data: bytes | None = None, fd: int | None = None,
            stream: BinaryIO | None = None) -> None:
        header = _header_bytes(h)
        self.entries += 1
        if h.type != REGTYPE or h.size == 0:
            self._write(header)
            return
        if fd is not None and h.size <= _WHOLE:
            data = _read_whole(fd, h.size, h.name)
        if data is not None and len(data) <= _WHOLE:
            # one write, not three: a layer of 20,000 small files spends its time per
            # call, not per byte
            self._write(header + data + _pad(h.size))
            return
        self._write(header)
        if data is not None:
            self._write(data)
        elif fd is not None or stream is not None:
            left = h.size
            while left:
                n = min(_CHUNK, left)
                chunk = os.read(fd, n) if fd is not None else stream.read(n)  # type: ignore[union-attr]
                if not chunk:
                    raise OSError(f"file shrank while it was being archived: {h.name!r}")
                self._write(chunk)
                left -= len(chunk)
            if fd is not None and os.read(fd, 1):
                raise OSError(f"file grew while it was being archived: {h.name!r}")
        self._write(_pad(h.size))

    def close(self) -> TarStats:
        self._write(b"\0" * (2 * BLOCK))
        return TarStats(self.entries, self.size)


_WHOLE = 1 << 16  # entries up to this size are read in one call and written with their header


def _read_whole(fd: int, size: int, name: bytes) -> bytes:
    """All `size` bytes of the file at `fd`; an error if it has more or fewer."""
    data = os.read(fd, size + 1)  # one byte more: a file that grew is caught here
    while len(data) < size:
        more = os.read(fd, size + 1 - len(data))
        if not more:
            raise OSError(f"file shrank while it was being archived: {name!r}")
        data += more
    if len(data) > size:
        raise OSError(f"file grew while it was being archived: {name!r}")
    return data


def _xattrs(path: bytes) -> tuple[list[tuple[bytes, bytes]], bool]:
    """(xattrs to record, opaque?) of `path`; overlay's own xattrs are never recorded."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return [], False
    out: list[tuple[bytes, bytes]] = []
    opaque = False
    for n in names:
        if n in _OPAQUE_XATTRS:
            try:
                opaque = opaque or os.getxattr(path, n, follow_symlinks=False) == b"y"
            except OSError:
                pass
            continue
        bn = n.encode("utf-8", "surrogateescape")
        if bn.startswith(_OVERLAY_XATTR_PREFIXES):
            continue
        try:
            out.append((bn, os.getxattr(path, n, follow_symlinks=False)))
        except OSError:
            continue
    out.sort()
    return out, opaque


def write_layer_tar(src_dir: str, out: BinaryIO, *, source_date_epoch: int | None = None,
                    overlay_whiteouts: bool = True) -> TarStats:
    """Write `src_dir`'s tree (not the directory itself) as a layer tar to `out`.

    Depth-first, names sorted bytewise within each directory; hardlinks inside the tree
    become link entries to the first name seen; sockets are skipped (docker does too).
    """
    w = _TarWriter(out)
    root = os.fsencode(os.path.abspath(src_dir))
    seen_inodes: dict[tuple[int, int], bytes] = {}

    def clamp(mtime_ns: int) -> int:
        t = mtime_ns // 1_000_000_000
        if source_date_epoch is not None and t > source_date_epoch:
            return source_date_epoch
        return t

    def walk(rel: bytes) -> None:
        dirpath = root + b"/" + rel if rel else root
        with os.scandir(dirpath) as it:
            names = sorted(e.name for e in it)
        for n in names:
            relname = rel + b"/" + n if rel else n
            path = dirpath + b"/" + n
            st = os.lstat(path)
            mode = st.st_mode
            mtime = clamp(st.st_mtime_ns)
            if stat.S_ISCHR(mode) and st.st_rdev == 0 and overlay_whiteouts:
                wh = rel + b"/" + WHITEOUT_PREFIX.encode() + n if rel else WHITEOUT_PREFIX.encode() + n
                w.add(_Header(wh, REGTYPE, mode=0, mtime=mtime))
                continue
            if stat.S_ISSOCK(mode):
                continue
            xattrs, opaque = _xattrs(path)
            common = dict(mode=stat.S_IMODE(mode), uid=st.st_uid, gid=st.st_gid, mtime=mtime,
                          xattrs=xattrs)
            if stat.S_ISDIR(mode):
                w.add(_Header(relname + b"/", DIRTYPE, **common))
                if opaque and overlay_whiteouts:
                    w.add(_Header(relname + b"/" + OPAQUE_MARKER.encode(), REGTYPE, mode=0, mtime=mtime))
                walk(relname)
                continue
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                first = seen_inodes.get(key)
                if first is not None:
                    w.add(_Header(relname, LNKTYPE, linkname=first, **common))
                    continue
                seen_inodes[key] = relname
            if stat.S_ISREG(mode):
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    w.add(_Header(relname, REGTYPE, size=st.st_size, **common), fd=fd)
                finally:
                    os.close(fd)
            elif stat.S_ISLNK(mode):
                w.add(_Header(relname, SYMTYPE, linkname=os.readlink(path), **common))
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                w.add(_Header(relname, CHRTYPE if stat.S_ISCHR(mode) else BLKTYPE,
                              devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev), **common))
            elif stat.S_ISFIFO(mode):
                w.add(_Header(relname, FIFOTYPE, **common))

    walk(b"")
    return w.close()


def write_tar_entries(entries: Iterable[TarEntry], out: BinaryIO, *, sort: bool = True) -> TarStats:
    """Write explicit entries as a deterministic tar (sorted by name unless `sort=False`)."""
    items = list(entries)
    if sort:
        items.sort(key=lambda e: e.name.rstrip("/").encode())
    w = _TarWriter(out)
    kinds = {"file": REGTYPE, "dir": DIRTYPE, "symlink": SYMTYPE, "hardlink": LNKTYPE}
    for e in items:
        if e.kind not in kinds:
            raise ValueError(f"unknown tar entry kind {e.kind!r}")
        name = e.name.lstrip("/")
        if e.kind == "dir":
            name = name.rstrip("/") + "/"
        xattrs = sorted((k.encode(), v) for k, v in e.xattrs)
        h = _Header(name.encode(), kinds[e.kind], mode=e.mode, uid=e.uid, gid=e.gid,
                    mtime=int(e.mtime), linkname=e.linkname.encode(), xattrs=xattrs)
        if e.kind != "file":
            w.add(h)
        elif e.path is not None:
            fd = os.open(e.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                h.size = os.fstat(fd).st_size
                w.add(h, fd=fd)
            finally:
                os.close(fd)
        else:
            data = e.data or b""
            h.size = len(data)
            w.add(h, data=data)
    return w.close()


class TarRewriteError(ValueError):
    """The input of `rewrite_layer_tar` is not a tar we can rewrite."""


def rewrite_layer_tar(src: BinaryIO, out: BinaryIO, *, clamp_mtime: int) -> TarStats:
    """Copy a layer tar stream entry by entry, in its order, with every mtime later than
    `clamp_mtime` set to it (BuildKit's `rewrite-timestamp`): the headers are re-written
    here, so the result has the same form as any tar of ours (integer mtimes, empty
    uname/gname, no atime/ctime PAX records); names, owners, modes, xattrs and contents
    are kept."""
    import tarfile

    kinds = {tarfile.REGTYPE: REGTYPE, tarfile.AREGTYPE: REGTYPE, tarfile.CONTTYPE: REGTYPE,
             tarfile.GNUTYPE_SPARSE: REGTYPE, tarfile.LNKTYPE: LNKTYPE,
             tarfile.SYMTYPE: SYMTYPE, tarfile.CHRTYPE: CHRTYPE, tarfile.BLKTYPE: BLKTYPE,
             tarfile.DIRTYPE: DIRTYPE, tarfile.FIFOTYPE: FIFOTYPE}
    w = _TarWriter(out)
    try:
        tf = tarfile.open(fileobj=src, mode="r|", encoding="utf-8", errors="surrogateescape")
    except tarfile.TarError as e:
        raise TarRewriteError(f"not a tar stream: {e}") from None

    def enc(text: str) -> bytes:
        return text.encode("utf-8", "surrogateescape")

    with tf:
        try:
            for m in tf:
                kind = kinds.get(m.type)
                if kind is None:
                    raise TarRewriteError(f"entry {m.name!r} has unsupported type {m.type!r}")
                name = enc(m.name)
                if kind == DIRTYPE:
                    name = name.rstrip(b"/") + b"/"
                xattrs = sorted((enc(k[len("SCHILY.xattr."):]), enc(v))
                                for k, v in m.pax_headers.items()
                                if k.startswith("SCHILY.xattr."))
                mtime = int(m.mtime)
                h = _Header(name, kind, mode=m.mode, uid=m.uid, gid=m.gid,
                            size=m.size if kind == REGTYPE else 0,
                            mtime=min(mtime, clamp_mtime), linkname=enc(m.linkname),
                            devmajor=m.devmajor, devminor=m.devminor, xattrs=xattrs)
                if kind == REGTYPE and m.size:
                    w.add(h, stream=tf.extractfile(m))
                else:
                    w.add(h)
        except tarfile.TarError as e:
            raise TarRewriteError(f"corrupt tar stream: {e}") from None
    return w.close()
