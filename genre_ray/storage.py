"""Where files live: local and network paths, and URIs (``s3://``, ``gs://``, ``hdfs://``, ``file://``).

Every location a search reads or writes (the audio, the feature cache, Tune's storage) may be a
plain path or a URI. URIs go through :mod:`pyarrow.fs`, so whatever
:meth:`pyarrow.fs.FileSystem.from_uri` understands works, query options included:
``s3://bucket/cache?region=eu-west-1&endpoint_override=minio:9000&scheme=http``.

A path built from a URI keeps the URI's query (its filesystem options) and is percent-encoded,
so a file name with a space, ``#`` or ``?`` survives the round trip. No Ray, torch or MLflow here.
"""

from __future__ import annotations

import functools
import io
import os
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs

__all__ = ["HEADER_BUFFER", "READ_BUFFER", "SHARED_FILESYSTEMS", "describe", "disk_usage", "exists", "filesystem",
           "is_uri", "join", "node_local", "open_input", "put_file", "remove"]

# "scheme://", with a scheme of two or more characters: "C://x" is a Windows drive, not a URI.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")

#: Mount types whose files other nodes can see too (network and cluster filesystems).
#: 9p and virtiofs are not here: they share one host's disk with its VMs or sandboxes (WSL2
#: drives, gVisor's root), not a disk across the nodes of a cluster.
SHARED_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "ceph", "glusterfs", "beegfs", "afs",
    "ocfs2", "gfs2", "panfs", "wekafs", "orangefs", "pvfs2", "cvmfs", "davfs", "autofs",
})
#: FUSE drivers of network storage, seen as ``fuse.<driver>`` (or as the device of a bare ``fuse``).
_SHARED_FUSE = frozenset({
    "s3fs", "gcsfuse", "sshfs", "juicefs", "rclone", "goofys", "geesefs", "mountpoint-s3", "blobfuse",
    "blobfuse2", "ceph-fuse", "glusterfs", "beegfs", "alluxio-fuse", "cvmfs2", "s3ql", "objectivefs",
    "lizardfs", "mfs", "seaweedfs", "davfs2", "weed",
})
#: Remote files are read through a buffer this large: libsndfile reads a few KB at a time, and on
#: an object store every unbuffered read would be one HTTP range request. Not larger: a long song
#: read only where its clips are (decode_clips) refills the buffer once per clip.
READ_BUFFER = 1 << 20
#: Enough for the header of any common audio format, in one request.
HEADER_BUFFER = 64 << 10
_SECRET_QUERY = ("access_key", "secret_key", "session_token")


def is_uri(location: str | os.PathLike[str]) -> bool:
    """True for ``scheme://...`` (``file://`` included); False for paths and Windows drives."""
    return isinstance(location, str) and bool(_URI.match(location))


@functools.lru_cache(maxsize=32)
def _root(scheme: str, netloc: str, query: str) -> tuple[pafs.FileSystem, str]:
    """One filesystem per (scheme, bucket or host, options): made once, then shared by every path.

    Making an S3 filesystem can cost a request (to find the bucket's region), so it must not
    happen per file.
    """
    fs, path = pafs.FileSystem.from_uri(urlunsplit((scheme, netloc, "/", query, "")))
    return fs, path.rstrip("/")


def filesystem(location: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of ``location`` and the path within it.

    Args:
        location: a local or network path (``~`` is expanded, the path made absolute), or a URI
            that :meth:`pyarrow.fs.FileSystem.from_uri` understands.

    Returns:
        ``(filesystem, path)``: a :class:`~pyarrow.fs.LocalFileSystem` and an absolute path for a
        path, else the URI's filesystem and e.g. ``bucket/key`` for ``s3://bucket/key``.

    Raises:
        ValueError: a URI whose scheme pyarrow does not know.
    """
    if not is_uri(location):
        return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())
    parts = urlsplit(str(location))
    fs, root = _root(parts.scheme.lower(), parts.netloc, parts.query)
    path = (root + unquote(parts.path)).rstrip("/")
    return fs, path or "/"


def join(location: str | os.PathLike[str], *names: str) -> str:
    """``location`` / ``names``: a URI stays a URI (names percent-encoded, query kept), a path a path."""
    if not is_uri(location):
        return os.path.join(location, *names)
    parts = urlsplit(str(location))
    path = "/".join([parts.path.rstrip("/"), *(quote(n.strip("/")) for n in names)])
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def describe(location: str | os.PathLike[str]) -> str:
    """``location`` for a message: credentials in the URI (user info, keys in the query) removed."""
    if not is_uri(location):
        return str(location)
    parts = urlsplit(str(location))
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in _SECRET_QUERY], safe=":/")
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, query, ""))


def open_input(location: str | os.PathLike[str], buffer_size: int = READ_BUFFER) -> io.BufferedReader:
    """A seekable binary file object for reading ``location``; a remote file is read in blocks of
    ``buffer_size`` bytes (less suits reading only a header).

    Raises:
        OSError: the file is missing or cannot be read (FileNotFoundError when it is absent).
    """
    if not is_uri(location):
        return open(Path(location).expanduser(), "rb")  # noqa: SIM115 - the caller closes it
    fs, path = filesystem(location)
    if isinstance(fs, pafs.LocalFileSystem):
        return open(path, "rb")  # noqa: SIM115
    return io.BufferedReader(_ArrowRaw(fs.open_input_file(path)), buffer_size=buffer_size)


class _ArrowRaw(io.RawIOBase):
    """A pyarrow random-access file as a raw stream, so :class:`io.BufferedReader` can buffer it."""

    def __init__(self, f: pa.NativeFile) -> None:
        self._f = f

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._f.read(len(b))
        b[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


def file_lock(path: str | os.PathLike[str], timeout: float = 900.0) -> Any:
    """A lock that every process of this machine (or of a shared disk) takes on ``<path>.lock``.

    Two searches started at once in one results folder serialise through it where they would
    otherwise race: creating the MLflow SQLite store, moving the champion alias, generating the
    demo collection.
    """
    from filelock import FileLock

    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lock), timeout=timeout)


def put_file(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write a small file whole or not at all: a reader sees the old file, or no file, or all of it.

    It is written under a temporary name beside ``path`` and then renamed over it: on a local or
    network disk with ``os.replace`` (one atomic rename), on an object store with the
    filesystem's move (a server-side copy, and an object appears only once complete).
    """
    parent, name = path.rsplit("/", 1)
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex[:12]}-{name}"
    fs.create_dir(parent, recursive=True)
    try:
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        if isinstance(fs, pafs.LocalFileSystem):
            os.replace(tmp, path)
        else:
            fs.move(tmp, path)
    finally:
        remove(fs, tmp)


def remove(fs: pafs.FileSystem, path: str) -> None:
    """Delete the file, or the folder and all it holds, at ``path``; nothing when it is absent."""
    kind = fs.get_file_info(path).type
    try:
        if kind == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif kind == pafs.FileType.File:
            fs.delete_file(path)
    except FileNotFoundError:  # removed meanwhile by someone else
        pass


def exists(location: str | os.PathLike[str]) -> bool:
    """Whether a file or folder is at ``location`` (a path or a URI)."""
    fs, path = filesystem(location)
    return bool(fs.get_file_info(path).type != pafs.FileType.NotFound)


def disk_usage(location: str | os.PathLike[str]) -> int:
    """Total bytes of the files under the folder (or the one file) at ``location``; 0 if absent."""
    fs, path = filesystem(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return int(info.size or 0)
    if info.type != pafs.FileType.Directory:
        return 0
    found = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return sum(int(f.size or 0) for f in found if f.type == pafs.FileType.File)


def node_local(location: str | os.PathLike[str], mounts: str | os.PathLike[str] = "/proc/mounts") -> bool:
    """True when ``location`` is on this node's own disk, so other nodes of a cluster cannot see it.

    A URI other than ``file://`` is never node-local. A path is node-local unless the mount
    that holds it (the longest mount point above it, symbolic links followed; a path need not
    exist yet) is a network or cluster filesystem: NFS, SMB, Lustre, GPFS,
    CephFS, GlusterFS, BeeGFS and others (:data:`SHARED_FILESYSTEMS`), or a FUSE mount of
    network storage (s3fs, gcsfuse, sshfs, JuiceFS, rclone...). Without a mount table (not
    Linux), a path counts as node-local.

    Args:
        location: a path or URI.
        mounts: the mount table to read, in ``/proc/mounts`` format.
    """
    if is_uri(location):
        if urlsplit(str(location)).scheme.lower() != "file":
            return False
        location = filesystem(location)[1]
    # Symbolic links in the existing part are followed; a part not made yet is kept as written.
    path = os.path.realpath(Path(location).expanduser())
    try:
        table = Path(mounts).read_text()
    except OSError:
        return True
    kind = _mount_of(path, table)
    return kind is None or not _shared(*kind)


def _mount_of(path: str, table: str) -> tuple[str, str] | None:
    """``(device, type)`` of the mount that holds ``path``: the longest mount point above it."""
    best: tuple[int, str, str] | None = None
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        device, point, fstype = (_unescape(f) for f in fields[:3])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):  # later lines mount over earlier ones
            best = (len(point), device, fstype)
    return None if best is None else (best[1], best[2])


def _unescape(field: str) -> str:
    """/proc/mounts writes a space as ``\\040``, a tab ``\\011``, a backslash ``\\134``."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _shared(device: str, fstype: str) -> bool:
    fstype = fstype.lower()
    if fstype in SHARED_FILESYSTEMS or fstype.split(".")[0] in SHARED_FILESYSTEMS:  # nfs4.x, ceph...
        return True
    if fstype.startswith("fuse."):
        return fstype[5:] in _SHARED_FUSE
    if fstype in ("fuse", "fuseblk"):  # a bare fuse mount names its driver as the device
        return device.rsplit("/", 1)[-1].split(":")[0].lower() in _SHARED_FUSE
    return False
