"""Archive expansion: the members of zip, tar and gzip files become files to scan.

A member is reported at `outer/path!/inner/path`; nested archives nest the marker. Expansion is
bounded (depth, member count, expanded bytes) and every member that hits a bound is returned as
Skipped with the reason, so coverage reports it.
"""

from __future__ import annotations

import gzip
import posixpath
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

from imgscan.model import Skipped

MAX_DEPTH = 3
MAX_MEMBERS = 10_000
MAX_EXPANDED = 1 << 30  # bytes of member content per outermost archive


@dataclass(frozen=True)
class Member:
    """One archive member, ready to scan: its report path, size (if known) and open stream."""

    path: str
    size: int | None
    stream: BinaryIO


def archive_kind(head: bytes) -> str | None:
    """The archive format that `head` (the first 512+ bytes of a file) starts with, if any."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def _member_path(outer: str, inner: str) -> str:
    inner = posixpath.normpath("/" + inner).lstrip("/")
    return f"{outer}!/{inner}"


def expand(
    stream: BinaryIO, path: str, kind: str, max_member_size: int
) -> Iterator[Member | Skipped]:
    """Members of the archive in `stream` (seekable) at report path `path`.

    Raises the archive module's own errors (zipfile.BadZipFile, tarfile.TarError, OSError) when
    the archive as a whole is corrupt; the caller records that as a skipped file.
    """
    count = 0
    if kind == "zip":
        with zipfile.ZipFile(stream) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                count += 1
                member_path = _member_path(path, info.filename)
                if count > MAX_MEMBERS:
                    yield Skipped(member_path, f"archive has more than {MAX_MEMBERS} members")
                    return
                if info.file_size > max_member_size:
                    yield Skipped(member_path, f"member larger than {max_member_size} bytes")
                    continue
                if info.flag_bits & 0x1:
                    yield Skipped(member_path, "encrypted zip member")
                    continue
                with archive.open(info) as member:
                    yield Member(member_path, info.file_size, member)  # type: ignore[arg-type]
    elif kind == "tar":
        yield from _tar_members(stream, path, "r|", max_member_size)
    elif kind == "gzip":
        start = stream.tell()
        try:
            yield from _tar_members(stream, path, "r|gz", max_member_size)
            return
        except tarfile.ReadError:
            stream.seek(start)  # not a tar inside: a single compressed file
        name = posixpath.basename(path)
        inner = name[:-3] if name.endswith(".gz") else name + ".out"
        with gzip.GzipFile(fileobj=stream) as member:
            yield Member(_member_path(path, inner), None, member)  # type: ignore[arg-type]


def _tar_members(
    stream: BinaryIO, path: str, mode: Literal["r|", "r|gz"], max_member_size: int
) -> Iterator[Member | Skipped]:
    count = 0
    with tarfile.open(fileobj=stream, mode=mode) as archive:
        for info in archive:
            if not info.isfile():
                continue
            count += 1
            member_path = _member_path(path, info.name)
            if count > MAX_MEMBERS:
                yield Skipped(member_path, f"archive has more than {MAX_MEMBERS} members")
                return
            if info.size > max_member_size:
                yield Skipped(member_path, f"member larger than {max_member_size} bytes")
                continue
            member = archive.extractfile(info)
            if member is not None:
                yield Member(member_path, info.size, member)  # type: ignore[arg-type]
