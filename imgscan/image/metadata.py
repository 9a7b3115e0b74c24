"""File-system metadata a copy carries besides file contents, handed to the scan as FileRefs:
entry names, symbolic link targets and extended attributes.

A secret can sit in a file's name (`aws_access_key_id=AKIA…`), in the string a symbolic link
points at (`postgresql://user:pw@host/db`) or in an extended attribute (`user.db` holding
`DB_PASSWORD=…`): the guest, and anyone holding the image, reads them back. Both readers turn
them into inline FileRefs, scanned by the same engine as file content, whose guest path ends
in a suffix that says where the bytes came from (as an NTFS stream is `path:stream`):

    <path>#name              the entry's own name (the part of <path> after its last "/")
    <path>#symlink-target    the string the symbolic link <path> points at
    <path>#xattr:<name>      the value of extended attribute <name> of <path>

Names are batched (one FileRef holds up to NAMES_BATCH names), and a finding in a batch is
placed on the entry whose name holds it (`name_at`); in that place the secret itself is
replaced by its redacted preview (scan/worker.py), since the path is what every report shows.
"""

from __future__ import annotations

import bisect

from imgscan.model import FileRef

NAME_SUFFIX = "#name"
NAMES_SUFFIX = "#names"  # a batch's own path (shown only if the batch itself is skipped)
LINK_SUFFIX = "#symlink-target"
XATTR_SUFFIX = "#xattr:"

NAMES = "names"
XATTR = "xattr"
SYMLINK = "symlink"

# A batch of names is one FileRef, so one task for a worker: this many names, or this many
# bytes of them, keeps a directory of a million entries to a few hundred tasks.
NAMES_BATCH = 4096
NAMES_BATCH_BYTES = 1 << 20
# Linux caps an extended attribute's value at 64 KiB; a crafted file system may claim more.
XATTR_MAX = 1 << 20
# Namespaces not scanned: security.* (SELinux labels, file capabilities, IMA digests: set on
# every file of some systems, and written by the system, not by whoever stores credentials)
# and system.* (POSIX ACLs in binary form, and ext4's inline data, which is the file's own
# content and read as such).
_UNSCANNED_XATTRS = ("security.", "system.")


def wants_xattr(name: str) -> bool:
    """Whether extended attribute `name` is scanned (user.*, trusted.* and any other namespace
    but security.* and system.*)."""
    return not name.startswith(_UNSCANNED_XATTRS)


def xattr_ref(volume: str, path: str, name: str, value: bytes) -> FileRef:
    """The value of extended attribute `name` of the entry at guest `path`."""
    return FileRef(
        volume=volume,
        path=f"{path}{XATTR_SUFFIX}{name}",
        size=len(value),
        locator="",
        inline=value,
        metadata=XATTR,
    )


def link_ref(volume: str, path: str, target: bytes) -> FileRef:
    """The target string of the symbolic link at guest `path`."""
    return FileRef(
        volume=volume,
        path=path + LINK_SUFFIX,
        size=len(target),
        locator="",
        inline=target,
        metadata=SYMLINK,
    )


class NameBatches:
    """Collects entry names (with their guest paths) into batches of NAMES_BATCH names.

    `add` returns a full batch when there is one; `flush` the rest at the end of a walk.
    A name is stored as its UTF-8 bytes (surrogate escapes back to the bytes they stand for),
    names separated by a newline so that no match runs from one name into the next.
    Entries without a name of their own (a volume's root, "." and "..") are not added.
    """

    def __init__(self, volume: str) -> None:
        self._volume = volume
        self._paths: list[str] = []
        self._names: list[bytes] = []
        self._size = 0

    def add(self, path: str, name: str) -> FileRef | None:
        if not name or name in (".", ".."):
            return None
        # A newline inside a name (legal on Linux) becomes a space: one name, one line.
        raw = name.encode("utf-8", "surrogateescape").replace(b"\n", b" ")
        self._paths.append(path)
        self._names.append(raw)
        self._size += len(raw) + 1
        if len(self._names) >= NAMES_BATCH or self._size >= NAMES_BATCH_BYTES:
            return self.flush()
        return None

    def flush(self) -> FileRef | None:
        if not self._names:
            return None
        content = b"\n".join(self._names)
        ref = FileRef(
            volume=self._volume,
            path=self._paths[0] + NAMES_SUFFIX,
            size=len(content),
            locator="",
            inline=content,
            metadata=NAMES,
            names=tuple(self._paths),
        )
        self._paths, self._names, self._size = [], [], 0
        return ref


def name_at(ref: FileRef, offset: int) -> str | None:
    """The guest path of the entry whose name holds byte `offset` of a names batch, or None
    when `ref` is not one (or the offset is outside it)."""
    if ref.metadata != NAMES or ref.inline is None or not ref.names:
        return None
    starts = [0]
    for line in ref.inline.split(b"\n")[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    index = bisect.bisect_right(starts, offset) - 1
    return ref.names[index] if 0 <= index < len(ref.names) else None
