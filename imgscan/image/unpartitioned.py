"""Data outside every partition, and partition tables that disagree.

A reader walks the partitions of one table. Bytes outside all of them (a file system written
past the last partition, a volume only an MBR entry names while the reader follows the GPT)
would otherwise go unread while the scan says complete. This module reads the tables from the
disk's own bytes (MBR, its chain of extended boot records, GPT) and returns what no partition
of the table in use covers, as regions a reader reports as not read (coverage incomplete):

- an MBR entry (primary or logical) that is not also a GPT partition, when both tables are
  there: the tables disagree, and the reader follows only one of them;
- unpartitioned space that is not all zeros. The partition tables themselves (the MBR and
  extended boot records, both GPT headers and entry arrays) are not unpartitioned space, nor is
  the disk's first MiB (BOOT_AREA), where boot loaders (GRUB's core image) live on every BIOS
  disk: data hidden there is not seen. The check reads the gaps in large blocks, skipping holes
  of a raw image file, and stops at a budget; what lies past the budget is "not checked".
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

SECTOR = 512
BOOT_AREA = 1 << 20
_BLOCK = 4 << 20
_ZEROS = bytes(_BLOCK)
_MAX_LOGICAL = 128  # extended boot records followed (Linux reads at most a few dozen)
_MAX_GPT_ENTRY_BYTES = 4 << 20
_EXTENDED = (0x05, 0x0F, 0x85)
_PROTECTIVE = 0xEE

#: Reads `length` bytes at `offset` of the disk (fewer at its end).
ReadAt = Callable[[int, int], bytes]
#: The first offset at or after the given one that may hold data (a raw file's holes read as
#: zeros without being read), or None when unknown.
NextData = Callable[[int], int]


@dataclass(frozen=True)
class Outside:
    """A region of the disk no partition of the table in use covers, and why it matters."""

    start: int
    end: int
    reason: str


def _uncovered(size: int, covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The stretches of [0, size) that no range of `covered` holds (one sort, one sweep)."""
    gaps, at = [], 0
    for start, end in sorted(covered):
        if start > at:
            gaps.append((at, min(start, size)))
        at = max(at, end)
        if at >= size:
            break
    if at < size:
        gaps.append((at, size))
    return [(start, end) for start, end in gaps if start < end]


@dataclass
class _Tables:
    mbr: list[tuple[int, int]]  # byte ranges of MBR primary (not extended) and logical entries
    gpt: list[tuple[int, int]] | None  # of GPT partitions, when a valid GPT header is there
    metadata: list[tuple[int, int]]  # the tables' own sectors


def _read_tables(read_at: ReadAt, size: int) -> _Tables:
    metadata = [(0, SECTOR)]
    mbr: list[tuple[int, int]] = []
    boot = read_at(0, SECTOR)
    if len(boot) == SECTOR and boot[510:512] == b"\x55\xaa":
        for slot in range(4):
            kind, first, count = struct.unpack_from("<4xB3xII", boot, 446 + 16 * slot)
            if not kind or not count or kind == _PROTECTIVE:
                continue
            if kind in _EXTENDED:
                mbr += _logical(read_at, first, metadata)
            else:
                mbr.append((first * SECTOR, (first + count) * SECTOR))
    return _Tables(mbr, _gpt(read_at, size, metadata), metadata)


def _logical(
    read_at: ReadAt, extended: int, metadata: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Logical partitions along the chain of extended boot records (bounded, loops cut)."""
    found: list[tuple[int, int]] = []
    seen: set[int] = set()
    ebr = extended
    while ebr not in seen and len(seen) < _MAX_LOGICAL:
        seen.add(ebr)
        record = read_at(ebr * SECTOR, SECTOR)
        if len(record) < SECTOR or record[510:512] != b"\x55\xaa":
            break
        metadata.append((ebr * SECTOR, (ebr + 1) * SECTOR))
        kind, first, count = struct.unpack_from("<4xB3xII", record, 446)
        if kind and count:
            found.append(((ebr + first) * SECTOR, (ebr + first + count) * SECTOR))
        kind, first, count = struct.unpack_from("<4xB3xII", record, 462)
        if kind not in _EXTENDED or not first:
            break
        ebr = extended + first
    return found


def _gpt(
    read_at: ReadAt, size: int, metadata: list[tuple[int, int]]
) -> list[tuple[int, int]] | None:
    header = read_at(SECTOR, 92)
    if len(header) < 92 or not header.startswith(b"EFI PART"):
        return None
    entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
    table = count * entry_size
    if entry_size < 128 or table > _MAX_GPT_ENTRY_BYTES:
        return None
    table_sectors = (table + SECTOR - 1) // SECTOR
    metadata.append((SECTOR, 2 * SECTOR))
    metadata.append((entries_lba * SECTOR, (entries_lba + table_sectors) * SECTOR))
    # The backup header and its entry array before it: at the disk's last sector, or where
    # the header says (a disk image grown after partitioning keeps its old backup mid-disk).
    (alternate,) = struct.unpack_from("<Q", header, 32)
    for last in {size // SECTOR - 1, alternate}:
        metadata.append(((last - table_sectors) * SECTOR, (last + 1) * SECTOR))
    raw = read_at(entries_lba * SECTOR, table)
    parts = []
    for at in range(0, len(raw) - entry_size + 1, entry_size):
        if raw[at : at + 16] == bytes(16):
            continue
        first, final = struct.unpack_from("<QQ", raw, at + 32)
        if final >= first:
            parts.append((first * SECTOR, (final + 1) * SECTOR))
    return parts


def outside_partitions(
    read_at: ReadAt, size: int, budget: int, next_data: NextData | None = None
) -> list[Outside]:
    """The regions of a partitioned disk of `size` bytes that no partition of the table in use
    (the GPT when there is a valid one, else the MBR) covers and that are not known empty:
    MBR entries the GPT lacks, and unpartitioned stretches holding data (or past `budget`
    bytes read, not checked). Empty for a disk without a partition table."""
    tables = _read_tables(read_at, size)
    used = tables.gpt if tables.gpt is not None else tables.mbr
    if not used:
        return []
    found: list[Outside] = []
    disagree: list[tuple[int, int]] = []
    if tables.gpt is not None:
        in_gpt = set(tables.gpt)
        for start, end in tables.mbr:
            if (start, end) not in in_gpt and end > start:
                disagree.append((start, end))
                found.append(
                    Outside(
                        start,
                        end,
                        "partition tables disagree: an MBR partition (bytes "
                        f"{start}-{end}) is not a GPT partition; not read",
                    )
                )
    covered = [(s, min(e, size)) for s, e in used] + disagree + tables.metadata
    covered.append((0, BOOT_AREA))
    left = budget
    for start, end in _uncovered(size, covered):
        where, left = _first_data(read_at, start, end, left, next_data)
        if where is None:
            continue
        if where < 0:
            reason = (
                f"unpartitioned space (bytes {start}-{end}) not checked: past the "
                f"{budget}-byte budget of the check; not read"
            )
        else:
            reason = (
                f"unpartitioned space (bytes {start}-{end}) holds data (not all zeros, from "
                f"byte {where}); not read"
            )
        found.append(Outside(start, end, reason))
    return found


def _first_data(
    read_at: ReadAt, start: int, end: int, budget: int, next_data: NextData | None
) -> tuple[int | None, int]:
    """(The offset of the first block holding a non-zero byte in [start, end), None when all
    are zeros, or -1 when the budget ran out first; the budget left)."""
    at = start
    while at < end:
        if next_data is not None:
            at = max(at, min(next_data(at), end))
            if at >= end:
                break
        length = min(_BLOCK - at % _BLOCK, end - at)
        if budget < length:
            return -1, 0
        chunk = read_at(at, length)
        budget -= length
        if not chunk:
            return at, budget  # cut short: the disk ends before its tables say
        if chunk != _ZEROS[: len(chunk)]:
            return at, budget
        at += len(chunk)
    return None, budget
