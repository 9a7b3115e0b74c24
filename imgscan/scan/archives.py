"""Archive expansion: the members of zip (jar, war, ear, ...), tar and compressed files
(gzip, bzip2, xz, zstd; a compressed tar is a tar) become files to scan.

A member is reported at `outer/path!/inner/path`; nested archives nest the marker. Expansion is
bounded (depth, member count, expanded bytes: an absolute cap and a ratio to the outermost
archive's size) and every member that hits a bound is returned as Skipped with the reason, so
coverage reports it. Formats are recognised by their magic bytes, never by file name.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import posixpath
import struct
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Self, cast

import zstandard

from imgscan.model import Skipped

MAX_DEPTH = 3
# Members per archive: the JDK's ct.sym holds ~17,000 (a stock Java runtime must not make every
# scan incomplete); the expanded-bytes budget bounds the work, this bounds per-member overhead.
MAX_MEMBERS = 100_000
MAX_EXPANDED = 1 << 30  # bytes of member content per outermost archive
# Text and code compress 3-10x, very repetitive logs up to ~100x; a decompression bomb expands
# thousands of times. An archive may expand to MAX_RATIO times its size (but always to at
# least RATIO_FLOOR, and never beyond MAX_EXPANDED).
MAX_RATIO = 200
RATIO_FLOOR = 16 << 20

# zipfile reads the whole central directory and makes an object of every record (about 500
# bytes each, a record being 46 bytes and up) before a member can be counted: a few MiB of
# records per 10,000 members is generous for real archives (paths of a few hundred bytes),
# and bounds what a directory of millions of empty records costs.
MAX_CENTRAL_DIRECTORY = MAX_MEMBERS * 256
# liblzma's memory for decoding an xz stream is about its dictionary size; `xz -9` uses a
# 64 MiB dictionary. A header may declare up to 4 GiB, paged in as the output grows.
XZ_MEMORY_LIMIT = 256 << 20

# The zip compression methods zipfile can read.
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)

# Single-stream compressors: magic bytes, and the suffix their files usually carry.
_COMPRESSED = {"gzip": ".gz", "bzip2": ".bz2", "xz": ".xz", "zstd": ".zst"}


def expansion_limit(archive_size: int) -> int:
    """Bytes an outermost archive of `archive_size` bytes may expand to, all levels counted."""
    return min(MAX_EXPANDED, max(RATIO_FLOOR, MAX_RATIO * archive_size))


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
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] == b"\x31\x41\x59\x26\x53\x59":
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if _is_tar(head):
        return "tar"
    return None


def _is_tar(head: bytes) -> bool:
    return len(head) >= 262 and head[257:262] == b"ustar"


def _decompressed(stream: BinaryIO, kind: str) -> BinaryIO:
    """A reader of the decompressed content of `stream` (read forward only)."""
    if kind == "gzip":
        # mode "rb": GzipFile otherwise takes the mode of `stream`, and a spooled member (w+b)
        # would be opened for writing, so a gzip inside another archive was never expanded.
        return cast(BinaryIO, gzip.GzipFile(fileobj=stream, mode="rb"))
    if kind == "bzip2":
        return cast(BinaryIO, bz2.BZ2File(stream))
    if kind == "xz":
        return cast(BinaryIO, io.BufferedReader(_XzReader(stream)))
    # read_across_frames: zstd's CLI writes one frame per input, but concatenations exist.
    reader = zstandard.ZstdDecompressor().stream_reader(
        stream, read_across_frames=True, closefd=False
    )
    return cast(BinaryIO, reader)


class _XzReader(io.RawIOBase):
    """The decompressed content of an xz file (concatenated streams too, as xz reads them),
    decoded under XZ_MEMORY_LIMIT: lzma.LZMAFile takes no memory limit."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._decoder = lzma.LZMADecompressor(memlimit=XZ_MEMORY_LIMIT)
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        size = len(buffer)
        data = b""
        while not data and not self._done:
            if self._decoder.eof:
                # Another stream may follow, after padding of zero bytes.
                rest = self._decoder.unused_data.lstrip(b"\0")
                while not rest and not self._done:
                    chunk = self._stream.read(1 << 16)
                    rest = chunk.lstrip(b"\0")
                    self._done = not chunk
                if self._done:
                    break
                self._decoder = lzma.LZMADecompressor(memlimit=XZ_MEMORY_LIMIT)
                data = self._decode(rest, size)
                continue
            if self._decoder.needs_input:
                chunk = self._stream.read(1 << 16)
                if not chunk:
                    raise EOFError("xz stream ends before its end marker")
            else:
                chunk = b""
            data = self._decode(chunk, size)
        buffer[: len(data)] = data
        return len(data)

    def _decode(self, chunk: bytes, size: int) -> bytes:
        try:
            return self._decoder.decompress(chunk, size)
        except lzma.LZMAError as exc:
            if "memory" in str(exc).lower():
                raise lzma.LZMAError(
                    f"xz stream not read: decoding it needs more than {XZ_MEMORY_LIMIT} bytes"
                    " of memory (its dictionary)"
                ) from None
            raise


def _zip_directory_problem(stream: BinaryIO) -> str | None:
    """Why the zip in `stream` is not handed to zipfile, read from its end-of-central-directory
    records (zip64's too) before zipfile parses the central directory whole: too many entries
    or too large a directory. None when it looks bounded, or when the records are not found
    (zipfile then says what is wrong)."""
    stream.seek(0, io.SEEK_END)
    end = stream.tell()
    tail_at = max(0, end - (22 + 0xFFFF))
    stream.seek(tail_at)
    tail = stream.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return None
    entries, directory = struct.unpack_from("<HI", tail, at + 10)
    if at >= 20 and tail[at - 20 : at - 16] == b"PK\x06\x07":
        (record_at,) = struct.unpack_from("<Q", tail, at - 20 + 8)
        if record_at + 56 <= end:
            stream.seek(record_at)
            record = stream.read(56)
            if record[:4] == b"PK\x06\x06":
                entries, directory = struct.unpack_from("<QQ", record, 32)
    if entries > MAX_MEMBERS:
        return f"archive has more than {MAX_MEMBERS} members ({entries} declared)"
    if directory > MAX_CENTRAL_DIRECTORY:
        return (
            f"archive's central directory is larger than {MAX_CENTRAL_DIRECTORY} bytes"
            f" ({directory} declared): more than {MAX_MEMBERS} members"
        )
    return None


def _zip_lzma_dictionary(stream: BinaryIO, header_offset: int) -> int:
    """The dictionary size an LZMA zip member declares (zipfile decodes it in raw mode, which
    takes no memory limit): the local header, then LZMA's 4-byte header and 5-byte properties
    (the dictionary size little-endian in the last four)."""
    stream.seek(header_offset)
    local = stream.read(30)
    if len(local) < 30:
        return 0
    name, extra = struct.unpack_from("<HH", local, 26)
    stream.seek(header_offset + 30 + name + extra + 5)
    size = stream.read(4)
    return struct.unpack("<I", size)[0] if len(size) == 4 else 0


def _member_path(outer: str, inner: str) -> str:
    inner = posixpath.normpath("/" + inner).lstrip("/")
    return f"{outer}!/{inner}"


def bomb_reason(limit: int) -> str:
    """Why members past an expansion limit of `limit` bytes were not scanned."""
    return (
        f"archive expands beyond {limit} bytes (the limit is {MAX_RATIO}x the archive's size, "
        f"at most {MAX_EXPANDED}): a possible decompression bomb"
    )


def expand(
    stream: BinaryIO, path: str, kind: str, max_member_size: int, max_expanded: int = MAX_EXPANDED
) -> Iterator[Member | Skipped]:
    """Members of the archive in `stream` (seekable) at report path `path`.

    `max_expanded` bounds the bytes a tar stream may run through, members skipped included:
    tarfile reads (decompresses) a skipped member to reach the next header, so a compressed
    tar declaring a member of a terabyte of zeros would otherwise cost that much time. What
    lies beyond is returned as one Skipped with the decompression-bomb reason.

    Raises the archive module's own errors (zipfile.BadZipFile, tarfile.TarError, OSError) when
    the archive as a whole is corrupt; the caller records that as a skipped file.
    """
    count = 0
    if kind == "zip":
        problem = _zip_directory_problem(stream)
        if problem is not None:
            yield Skipped(path, problem)
            return
        stream.seek(0)
        with zipfile.ZipFile(stream) as archive:
            for info in archive.infolist():
                # A directory entry holds nothing; one named like a directory that carries
                # bytes (unzip -p prints them) is a file to scan, at its name without the "/".
                if info.filename.endswith("/") and not (info.file_size or info.compress_size):
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
                if info.compress_type not in _ZIP_METHODS:
                    # zipfile raises NotImplementedError on it (Deflate64, PPMd, ...), which
                    # would end the whole archive: skip this member only.
                    reason = f"zip compression method {info.compress_type} not supported"
                    yield Skipped(member_path, reason)
                    continue
                if (
                    info.compress_type == zipfile.ZIP_LZMA
                    and _zip_lzma_dictionary(stream, info.header_offset) > XZ_MEMORY_LIMIT
                ):
                    reason = f"LZMA member not read: its dictionary exceeds {XZ_MEMORY_LIMIT} bytes"
                    yield Skipped(member_path, reason)
                    continue
                with archive.open(info) as member:
                    yield Member(member_path, info.file_size, member)  # type: ignore[arg-type]
    elif kind == "tar":
        yield from _tar_members(stream, path, max_member_size, max_expanded)
    elif kind in _COMPRESSED:
        # A compressed tar is a tar; anything else is one compressed file. Peeking at the
        # decompressed head decides, then a fresh decompressor streams from the start.
        start = stream.tell()
        with _decompressed(stream, kind) as peek:
            is_tar = _is_tar(peek.read(512))
        stream.seek(start)
        with _decompressed(stream, kind) as content:
            if is_tar:
                yield from _tar_members(content, path, max_member_size, max_expanded)
                return
            name = posixpath.basename(path.rsplit("!/", 1)[-1])
            suffix = _COMPRESSED[kind]
            inner = (
                name[: -len(suffix)] if name.endswith(suffix) and name != suffix else name + ".out"
            )
            yield Member(_member_path(path, inner), None, content)


# tarfile reads the body of a long-name, long-link or pax header into memory at once: a header
# claiming gigabytes (a few KiB of zstd) would cost that much memory, twice over. Real ones
# hold a path or a few attributes.
_MAX_TAR_METADATA = 1 << 20
_TAR_METADATA_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses oversized metadata headers before tarfile reads their body."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        info = super().frombuf(buf, encoding, errors)
        if info.type in _TAR_METADATA_TYPES and info.size > _MAX_TAR_METADATA:
            # ReadError, not a HeaderError: tarfile takes some of those for the archive's end.
            raise tarfile.ReadError(f"tar metadata header of {info.size} bytes")
        return info


def _tar_members(
    stream: BinaryIO, path: str, max_member_size: int, max_expanded: int
) -> Iterator[Member | Skipped]:
    count = 0
    with tarfile.open(fileobj=stream, mode="r|", tarinfo=_BoundedTarInfo) as archive:
        for info in archive:
            # The member's end, counted in the (decompressed) tar stream: checked before any
            # member, skipped ones too, since reaching the next header reads through it.
            if info.offset_data + info.size > max_expanded:
                yield Skipped(_member_path(path, info.name), bomb_reason(max_expanded))
                return
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
