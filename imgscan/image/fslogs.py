"""Whether an XFS or NTFS volume was left with changes only its log holds.

A file system that was not cleanly unmounted (a copy of a running guest's disk, a crash) may
hold, in its log, changes the guest's kernel applies at mount and that are not yet in place.
Read as its blocks lie, such a volume can show stale content: the ext3/ext4 equivalent is in
imgscan/image/superblock.py. These checks read the few fixed structures that say so:

- XFS: the internal log (its place and size from the superblock) is a ring of log records,
  each starting on a 512-byte block with the magic 0xFEEDBABE and carrying its log sequence
  number. The newest record (highest LSN) is the head. A clean unmount writes an unmount
  record last (its first operation header has XLOG_UNMOUNT_TRANS set), so a head that is not
  one means transactions may wait to be replayed, as xfsprogs' own check (`xlog_is_dirty`)
  decides. The Linux kernel replays the log at mount, read-only included, so such a volume
  can be read by libguestfs (its overlay takes the writes).
- NTFS: the $Volume file's $VOLUME_INFORMATION attribute has a dirty flag that Windows sets
  while the volume is mounted and clears on a clean shutdown (and sets when it wants chkdsk).
  Changes may then be in $LogFile only, and no reader here replays an NTFS log (ntfs-3g does
  not), so such a volume cannot be read as Windows would see it.

`read(offset, size)` reads the volume's own bytes; every parser here is bounded (the XFS log
is read at most `MAX_XFS_LOG` bytes, a bigger one is not judged) and trusts nothing it reads.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from enum import StrEnum

Read = Callable[[int, int], bytes]

XFS_MAGIC = b"XFSB"
_XLOG_MAGIC = b"\xfe\xed\xba\xbe"
_BB = 512  # XFS "basic block"
_XLOG_UNMOUNT_TRANS = 0x20
_XLOG_HEADER_CYCLE_SIZE = 32 * 1024  # bytes of log data whose cycle words one header holds
# The biggest internal log read to find its head (mkfs makes them 64 MiB to 2 GiB; most are
# small); a bigger one is not judged, and the volume is taken as not cleanly unmounted.
MAX_XFS_LOG = 1 << 30
_CHUNK = 4 << 20


# Why a volume is not read in place (VolumeInfo.reason), for both readers.
XFS_DIRTY_LOG = (
    "the XFS log may hold changes not yet replayed (the volume was not cleanly unmounted): the "
    "guest's kernel applies them at mount, the native reader does not; use --reader guestfs "
    "(its read-only mount replays the log in a throw-away overlay)"
)
NTFS_DIRTY = (
    "the NTFS volume is marked dirty (not cleanly shut down, or Windows asked for chkdsk): "
    "changes may be in its $LogFile only, and no reader here replays an NTFS log; scan a copy "
    "that Windows shut down cleanly"
)


class LogState(StrEnum):
    """What a volume's log says about the blocks in place."""

    CLEAN = "clean"  # cleanly unmounted: the blocks in place are what the guest reads
    DIRTY = "dirty"  # changes may be in the log only
    UNKNOWN = "unknown"  # the log could not be judged (external, too big, malformed)


def xfs_log_state(superblock: bytes, read: Read) -> LogState:
    """The state of an XFS volume's internal log, from its superblock (the volume's first
    512 bytes) and the volume's bytes."""
    if len(superblock) < 128 or superblock[:4] != XFS_MAGIC:
        return LogState.UNKNOWN
    (blocksize,) = struct.unpack_from(">I", superblock, 4)
    (logstart,) = struct.unpack_from(">Q", superblock, 48)
    (agblocks,) = struct.unpack_from(">I", superblock, 84)
    (logblocks,) = struct.unpack_from(">I", superblock, 96)
    agblklog = superblock[124]
    if logstart == 0 or not 512 <= blocksize <= 65536 or not 0 < agblklog < 32:
        return LogState.UNKNOWN  # an external log (another device), or a nonsense superblock
    agno, agbno = logstart >> agblklog, logstart & ((1 << agblklog) - 1)
    offset = (agno * agblocks + agbno) * blocksize
    size = logblocks * blocksize
    if size == 0 or size > MAX_XFS_LOG:
        return LogState.UNKNOWN
    head: tuple[int, int] | None = None  # (LSN, byte offset in the log) of the newest record
    done = 0
    while done < size:
        chunk = read(offset + done, min(_CHUNK, size - done))
        if not chunk:
            return LogState.UNKNOWN
        for match in re.finditer(re.escape(_XLOG_MAGIC), chunk):
            where = match.start()
            if where % _BB or where + 48 > len(chunk):
                continue
            (lsn,) = struct.unpack_from(">Q", chunk, where + 16)
            if head is None or lsn > head[0]:
                head = (lsn, done + where)
        done += len(chunk)
    if head is None:
        return LogState.UNKNOWN
    header = read(offset + head[1], _BB)
    if len(header) < 324:
        return LogState.UNKNOWN
    (version,) = struct.unpack_from(">I", header, 8)
    (iclog,) = struct.unpack_from(">I", header, 320)
    # A v2 log's iclogs bigger than 32 KiB have extra header blocks before the data.
    blocks = 1
    if version & 2 and iclog > _XLOG_HEADER_CYCLE_SIZE:
        blocks = -(-iclog // _XLOG_HEADER_CYCLE_SIZE)
    data = read(offset + (head[1] + blocks * _BB) % size, 12)
    if len(data) < 12:
        return LogState.UNKNOWN
    # The first operation header: tid (4, cycle-stamped), len (4), clientid (1), flags (1).
    return LogState.CLEAN if data[9] & _XLOG_UNMOUNT_TRANS else LogState.DIRTY


_VOLUME_MFT_RECORD = 3  # $Volume
_VOLUME_INFORMATION = 0x70
_VOLUME_IS_DIRTY = 0x0001
_FIXUP_STRIDE = 512


def ntfs_log_state(read: Read) -> LogState:
    """The state of an NTFS volume, by the dirty flag of its $VOLUME_INFORMATION."""
    boot = read(0, 512)
    if len(boot) < 512 or boot[3:11] != b"NTFS    ":
        return LogState.UNKNOWN
    (sector,) = struct.unpack_from("<H", boot, 0x0B)
    per_cluster = boot[0x0D]
    (mft,) = struct.unpack_from("<Q", boot, 0x30)
    (per_record,) = struct.unpack_from("<b", boot, 0x40)
    cluster = sector * per_cluster
    record_size = per_record * cluster if per_record > 0 else 1 << -per_record
    if not 256 <= sector <= 4096 or not cluster or not 512 <= record_size <= 65536:
        return LogState.UNKNOWN
    record = bytearray(read(mft * cluster + _VOLUME_MFT_RECORD * record_size, record_size))
    if len(record) < record_size or record[:4] != b"FILE":
        return LogState.UNKNOWN
    usa_offset, usa_count = struct.unpack_from("<HH", record, 4)
    if usa_offset + 2 * usa_count > record_size or (usa_count - 1) * _FIXUP_STRIDE > record_size:
        return LogState.UNKNOWN
    usn = bytes(record[usa_offset : usa_offset + 2])
    for index in range(1, usa_count):
        end = index * _FIXUP_STRIDE - 2
        if bytes(record[end : end + 2]) != usn:
            return LogState.UNKNOWN  # a torn write: the record is not what it says
        record[end : end + 2] = record[usa_offset + 2 * index : usa_offset + 2 * index + 2]
    (at,) = struct.unpack_from("<H", record, 0x14)
    for _ in range(64):  # $Volume has a handful of attributes
        if at + 24 > record_size:
            return LogState.UNKNOWN
        kind, length = struct.unpack_from("<II", record, at)
        if kind == 0xFFFFFFFF or length < 24 or at + length > record_size:
            return LogState.UNKNOWN
        if kind == _VOLUME_INFORMATION and record[at + 8] == 0:  # resident, as it always is
            size, value = struct.unpack_from("<IH", record, at + 0x10)
            if size < 12 or at + value + size > at + length:
                return LogState.UNKNOWN
            (flags,) = struct.unpack_from("<H", record, at + value + 10)
            return LogState.DIRTY if flags & _VOLUME_IS_DIRTY else LogState.CLEAN
        at += length
    return LogState.UNKNOWN


def ntfs_dirty_flag_offset(read: Read) -> int | None:
    """The byte offset, in the volume, of the $VOLUME_INFORMATION flags (for tests that set
    the dirty flag); None when the structures do not parse."""
    boot = read(0, 512)
    (sector,) = struct.unpack_from("<H", boot, 0x0B)
    cluster = sector * boot[0x0D]
    (mft,) = struct.unpack_from("<Q", boot, 0x30)
    (per_record,) = struct.unpack_from("<b", boot, 0x40)
    record_size = per_record * cluster if per_record > 0 else 1 << -per_record
    start = mft * cluster + _VOLUME_MFT_RECORD * record_size
    record = read(start, record_size)
    (at,) = struct.unpack_from("<H", record, 0x14)
    while at + 24 <= record_size:
        kind, length = struct.unpack_from("<II", record, at)
        if kind == 0xFFFFFFFF or length < 24:
            return None
        if kind == _VOLUME_INFORMATION:
            (value,) = struct.unpack_from("<H", record, at + 0x14)
            where = at + value + 10
            return None if (where + 2) % _FIXUP_STRIDE == 0 else start + where
        at += length
    return None
