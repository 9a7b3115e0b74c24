"""An image's content digest: what the results store is keyed by.

What "content" means: the bytes of every file the readers open for the image, nothing else.

- A one-file image (qcow2, vmdk monolithicSparse or streamOptimized, VHD, VHDX, VDI, raw, and an
  OVA archive, whose disks are members of that one tar file): `sha256:` and the SHA-256 of the
  file's bytes, the same value `sha256sum FILE` prints. A renamed, moved or copied image keeps
  its digest and is not scanned again.
- A vmdk descriptor with extent files beside it (split or flat vmdk): `sha256set:` and the
  SHA-256 of a small manifest listing, for the descriptor and then each extent in descriptor
  order, its file name, its size and its own SHA-256. A change to any part changes the digest;
  the extents' names are in it because the descriptor refers to them by name.
- Files an image names outside its own directory layout (a qcow2 backing file, allowed only with
  `--allow-external-files`) are NOT part of the digest: a changed backing file under an
  unchanged overlay is not noticed; rescan such images with `--rescan`.

Hashing streams each file in 1 MiB blocks (bounded memory whatever the size). Each file's
SHA-256 is cached by its identity (resolved path, device, inode, size, mtime and ctime in ns):
a rerun over an unchanged store stats the files and hashes nothing. A file rewritten in place
changes its mtime and ctime (ctime cannot be set back by `touch`), so it is hashed again.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from imgscan.batch.discover import ImageFile

_BLOCK = 1 << 20


@dataclass(frozen=True)
class FileIdentity:
    """What says a file is unchanged since it was hashed, without reading it."""

    path: str  # resolved
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        """Raises OSError when the file cannot be stat'ed."""
        real = path.resolve()
        st = real.stat()
        return cls(str(real), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class HashCache(Protocol):
    """Where file hashes are remembered between runs (the results store)."""

    def cached_sha256(self, identity: FileIdentity) -> str | None: ...

    def remember_sha256(self, identity: FileIdentity, sha256: str) -> None: ...


class LookupOnly:
    """A HashCache that uses what another cache knows and remembers nothing (for queries,
    which do not write to the store)."""

    def __init__(self, cache: HashCache) -> None:
        self._cache = cache

    def cached_sha256(self, identity: FileIdentity) -> str | None:
        return self._cache.cached_sha256(identity)

    def remember_sha256(self, identity: FileIdentity, sha256: str) -> None:
        pass


def file_sha256(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """SHA-256 of the file's bytes, read in 1 MiB blocks; `progress` gets each block's size.
    Raises OSError, also when `path` is not a regular file."""
    digest = hashlib.sha256()
    # O_NONBLOCK and fstat on the open file: a part swapped for a FIFO after discovery would
    # block open() for ever, a device would read without end; neither is an image.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    with os.fdopen(fd, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
            if progress is not None:
                progress(len(block))
    return digest.hexdigest()


def image_digest(
    image: ImageFile, cache: HashCache, progress: Callable[[int], None] | None = None
) -> tuple[str, int]:
    """The image's content digest (see the module docstring) and how many bytes had to be read
    for it (0 when every part's hash was cached). Raises OSError when a part cannot be read."""
    hashed = 0
    rows = []
    for part in image.parts:
        identity = FileIdentity.of(part)
        sha = cache.cached_sha256(identity)
        if sha is None:
            sha = file_sha256(Path(identity.path), progress)
            hashed += identity.size
            cache.remember_sha256(identity, sha)
        rows.append((part.name, identity.size, sha))
    if len(rows) == 1:
        return f"sha256:{rows[0][2]}", hashed
    manifest = "imgscan image parts v1\n" + "".join(
        f"{name}\t{size}\t{sha}\n" for name, size, sha in rows
    )
    return f"sha256set:{hashlib.sha256(manifest.encode('utf-8', 'surrogateescape')).hexdigest()}", (
        hashed
    )
