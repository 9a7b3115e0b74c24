"""The qcow2 mapping-table check: every L2 table and data cluster an image maps lies inside
the file (qemu reads a cluster past the end of a truncated file as zeros, so a truncated image
would look partly empty and complete).

The walk is bounded whatever the header declares: an L1 table larger than qemu accepts
(QCOW_MAX_L1_SIZE, 32 MiB) is refused before it is read; L2 tables are read in windows of at
most a few MiB, each distinct table once, windows in holes of a sparse file not at all (they
read as zeros: nothing mapped), and their entries checked in bulk (C loops over arrays, not a
Python step per entry); compressed entries, whose offsets need one step each,
are checked up to a budget, past which the image is refused as too costly to check.
"""

from __future__ import annotations

import errno
import os
import sys
from array import array
from bisect import bisect_right
from itertools import groupby
from pathlib import Path

# qemu's QCOW_MAX_L1_SIZE: it refuses an image whose L1 table is larger.
MAX_L1_BYTES = 32 << 20
# Bytes of L2 tables read at once: tables that lie close together share one read.
_WINDOW = 8 << 20
# Compressed L2 entries checked one by one: 16 million is a terabyte of 64 KiB clusters.
MAX_COMPRESSED_ENTRIES = 16_000_000

OFFSET_MASK = 0x00FFFFFFFFFFFE00
COMPRESSED = 1 << 62
# Byte maps for the first (most significant) byte of a big-endian entry: drop bit 63 (the
# "copied" flag), and keep only bit 62 (compressed).
_DROP_COPIED = bytes(b & 0x7F for b in range(256))
_ONLY_COMPRESSED = bytes(b & 0x40 for b in range(256))
# And for the last byte: drop bits 0-8's lowest (v3's "reads as zeros" flag) so that an
# offset-less entry with only that flag counts as unallocated.
_DROP_ZERO_FLAG = bytes(b & 0xFE for b in range(256))


def _entries(raw: bytes | bytearray) -> array[int]:
    """The big-endian 64-bit entries of `raw` as integers."""
    values = array("Q")
    values.frombytes(bytes(raw[: len(raw) // 8 * 8]))
    if sys.byteorder == "little":
        values.byteswap()
    return values


def tables_problem(
    path: Path,
    base: int,
    size: int,
    cluster_bits: int,
    l1_offset: int,
    l1_size: int,
    entry_size: int,
) -> tuple[str | None, bool]:
    """Check the qcow2 mapping tables of the image at byte `base` of `path` (`size` bytes).

    Returns (the first problem found or None, whether any cluster is compressed). `entry_size`
    is 8, or 16 for extended L2 entries (the second half is a subcluster bitmap).
    """
    cluster = 1 << cluster_bits
    if l1_size * 8 > MAX_L1_BYTES:
        return f"L1 table of {l1_size} entries exceeds qemu's limit of {MAX_L1_BYTES} bytes", False
    if l1_offset % cluster or l1_offset + l1_size * 8 > size:
        return "L1 table offset is invalid", False
    with path.open("rb") as fh:
        fh.seek(base + l1_offset)
        l1 = bytearray(fh.read(l1_size * 8))
        l1[0::8] = l1[0::8].translate(_DROP_COPIED)
        # Each L2 table once, in file order: a hostile L1 pointing every entry at one table
        # would otherwise cost (file size / 8) squared steps.
        tables = [table for table, _ in groupby(sorted(_entries(l1))) if table]
        del l1
        if tables and tables[-1] + cluster > size:
            return f"L2 table at {tables[-1]} lies beyond the end of the file ({size})", False
        misaligned = next((table for table in tables if table % cluster), None)
        if misaligned is not None:
            return f"L2 table at {misaligned} is not aligned to a cluster", False
        budget = [MAX_COMPRESSED_ENTRIES]
        compressed = False
        at = 0
        while at < len(tables):
            # The tables within one window of the first are read together (a cluster is at
            # most 2 MiB, so the window holds the first whole).
            start = tables[at]
            end = bisect_right(tables, start + _WINDOW - cluster, lo=at)
            stop = tables[end - 1] + cluster
            if _is_hole(fh.fileno(), base + start, base + stop):
                at = end  # tables in a hole read as zeros: nothing mapped
                continue
            fh.seek(base + start)
            window = fh.read(stop - start)
            if end - at == (stop - start) // cluster:
                chosen = bytearray(window)  # consecutive tables: the window is all tables
            else:
                chosen = bytearray()
                for table in tables[at:end]:
                    chosen += window[table - start : table - start + cluster]
            del window
            problem, found = _check_l2(chosen, size, cluster_bits, entry_size, budget)
            compressed = compressed or found
            if problem:
                return problem, compressed
            at = end
    return None, compressed


def _is_hole(fd: int, start: int, stop: int) -> bool:
    """Whether the file holds no data from `start` to `stop` (a hole reads as zeros). False
    where the file system cannot tell."""
    try:
        return os.lseek(fd, start, os.SEEK_DATA) >= stop
    except OSError as exc:
        return exc.errno == errno.ENXIO  # no data at all past `start`


def _check_l2(
    raw: bytearray, size: int, cluster_bits: int, entry_size: int, budget: list[int]
) -> tuple[str | None, bool]:
    """Check a run of L2 entries (whole tables). Standard entries are checked in bulk: with
    the flag bits cleared, the largest offset must leave a whole cluster inside the file."""
    cluster = 1 << cluster_bits
    if raw.count(0) == len(raw):
        return None, False  # unallocated tables (a quick C scan)
    if entry_size == 16:  # keep the mapping half of each 16-byte entry
        raw = bytearray(memoryview(raw).cast("Q")[::2].tobytes())  # a C-level copy
    heads = raw[0::8]
    if heads.translate(_ONLY_COMPRESSED).strip(b"\0"):
        return _check_compressed(raw, size, cluster_bits, budget)
    raw[0::8] = heads.translate(_DROP_COPIED)
    raw[7::8] = raw[7::8].translate(_DROP_ZERO_FLAG)
    top = max(_entries(raw), default=0)
    if top & ~OFFSET_MASK:
        return "an L2 entry has reserved bits set", False
    if top and top + cluster > size:
        return f"data cluster at {top} lies beyond the end of the file ({size})", False
    return None, False


def _check_compressed(
    raw: bytearray, size: int, cluster_bits: int, budget: list[int]
) -> tuple[str | None, bool]:
    """Check entries one by one (compressed offsets have a width of their own), within the
    shared budget of compressed entries."""
    cluster = 1 << cluster_bits
    offset_bits = 62 - (cluster_bits - 8)
    entries = _entries(raw)
    budget[0] -= len(entries)
    if budget[0] < 0:
        return (
            f"more than {MAX_COMPRESSED_ENTRIES} compressed cluster entries to check",
            True,
        )
    for entry in entries:
        if entry & COMPRESSED:
            offset = entry & ((1 << offset_bits) - 1)
            if offset >= size:
                return f"compressed cluster at {offset} lies beyond the end of the file", True
            continue
        offset = entry & OFFSET_MASK
        if offset and offset + cluster > size:
            return f"data cluster at {offset} lies beyond the end of the file ({size})", True
    return None, True
