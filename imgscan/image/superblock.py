"""Filesystem identity read from a superblock: type, UUID and label.

/etc/fstab names volumes by UUID and LABEL, and the two readers must agree on the ext variant
(`ext2`, `ext3`, `ext4`) that libguestfs reports, so the native reader reads these few fields
itself. Only fixed-offset fields are read; nothing here follows a pointer from the image.
"""

from __future__ import annotations

import struct
import uuid as uuidlib
from dataclasses import dataclass

EXT_SUPERBLOCK_OFFSET = 1024
EXT_MAGIC = 0xEF53

# Feature bits that ext3 already had; anything beyond them makes the filesystem ext4 (as blkid).
_EXT3_INCOMPAT = 0x0002 | 0x0004 | 0x0008 | 0x0010  # filetype, recover, journal_dev, meta_bg
_EXT3_RO_COMPAT = 0x0001 | 0x0002 | 0x0004  # sparse_super, large_file, btree_dir
_COMPAT_HAS_JOURNAL = 0x0004


@dataclass(frozen=True)
class FsIdentity:
    fstype: str
    uuid: str | None
    label: str | None


def ext_identity(superblock: bytes) -> FsIdentity | None:
    """Identity of an ext2/3/4 filesystem from the 1 KiB superblock, or None if it is not one."""
    if len(superblock) < 0x88:
        return None
    (magic,) = struct.unpack_from("<H", superblock, 0x38)
    if magic != EXT_MAGIC:
        return None
    compat, incompat, ro_compat = struct.unpack_from("<III", superblock, 0x5C)
    if incompat & ~_EXT3_INCOMPAT or ro_compat & ~_EXT3_RO_COMPAT:
        fstype = "ext4"
    elif compat & _COMPAT_HAS_JOURNAL:
        fstype = "ext3"
    else:
        fstype = "ext2"
    raw_uuid = superblock[0x68:0x78]
    fs_uuid = str(uuidlib.UUID(bytes=raw_uuid)) if any(raw_uuid) else None
    label = superblock[0x78:0x88].split(b"\0", 1)[0].decode("utf-8", "replace") or None
    return FsIdentity(fstype, fs_uuid, label)


_INCOMPAT_RECOVER = 0x0004  # the journal holds transactions not yet written in place
JOURNAL_INODE = 8
_JBD2_MAGIC = 0xC03B3998


def ext_needs_recovery(superblock: bytes) -> bool:
    """Whether an ext3/4 superblock says its journal must be replayed before the file system
    is read as the guest would see it (the `needs_recovery` feature)."""
    if len(superblock) < 0x68:
        return False
    (incompat,) = struct.unpack_from("<I", superblock, 0x60)
    return bool(incompat & _INCOMPAT_RECOVER)


def jbd2_log_empty(journal_head: bytes) -> bool:
    """Whether a jbd2 journal superblock (the first block of the journal inode) says the log
    holds nothing to replay: `s_start` (big-endian, offset 0x1C) is 0 when it is empty. A
    block that is not a journal superblock is not called empty."""
    if len(journal_head) < 0x20:
        return False
    magic, block_type = struct.unpack_from(">II", journal_head, 0)
    if magic != _JBD2_MAGIC or block_type not in (3, 4):  # v1 and v2 superblocks
        return False
    (start,) = struct.unpack_from(">I", journal_head, 0x1C)
    return bool(start == 0)


SWAP_SIGNATURES = (b"SWAPSPACE2", b"SWAP-SPACE")


def is_swap(first_page: bytes) -> bool:
    """True for a Linux swap area: the signature ends the first (4 KiB) page, and, as blkid
    requires, the header says version 1 with a last page beyond the header."""
    if len(first_page) < 4096 or first_page[4086:4096] not in SWAP_SIGNATURES:
        return False
    version, last_page = struct.unpack_from("<II", first_page, 1024)
    return bool(version == 1 and last_page > 0)


def fat_plausible(boot: bytes) -> bool:
    """Whether a boot sector is a believable FAT BIOS parameter block.

    dfvfs' FAT signature is little more than the 0x55AA boot-sector mark, which every MBR and
    a sixteenth of a million random sectors carry; these fields rule most of them out.
    """
    if len(boot) < 512 or boot[510:512] != b"\x55\xaa":
        return False
    (bytes_per_sector,) = struct.unpack_from("<H", boot, 0x0B)
    sectors_per_cluster = boot[0x0D]
    (reserved,) = struct.unpack_from("<H", boot, 0x0E)
    fats = boot[0x10]
    media = boot[0x15]
    return (
        bytes_per_sector in (512, 1024, 2048, 4096)
        and sectors_per_cluster in (1, 2, 4, 8, 16, 32, 64, 128)
        and reserved >= 1
        and fats in (1, 2)
        and (media == 0xF0 or media >= 0xF8)
    )


def xfs_identity(superblock: bytes) -> FsIdentity | None:
    """Identity of an XFS filesystem from its first sector (magic XFSB, uuid, 12-byte label)."""
    if len(superblock) < 120 or superblock[:4] != b"XFSB":
        return None
    raw_uuid = superblock[32:48]
    label = superblock[108:120].split(b"\0", 1)[0].decode("utf-8", "replace") or None
    return FsIdentity("xfs", str(uuidlib.UUID(bytes=raw_uuid)) if any(raw_uuid) else None, label)


def _serial32(value: int) -> str:
    # blkid prints FAT and exFAT volume serial numbers as XXXX-XXXX.
    return f"{value >> 16:04X}-{value & 0xFFFF:04X}"


def fat_identity(boot: bytes) -> FsIdentity | None:
    """Identity of a FAT12/16/32 or exFAT filesystem from its boot sector."""
    if len(boot) < 512 or boot[510:512] != b"\x55\xaa":
        return None
    if boot[3:11] == b"EXFAT   ":
        (serial,) = struct.unpack_from("<I", boot, 0x64)
        return FsIdentity("exfat", _serial32(serial), None)
    if not fat_plausible(boot):
        return None
    (sectors_per_fat16,) = struct.unpack_from("<H", boot, 0x16)
    serial_at, label_at = (0x43, 0x47) if sectors_per_fat16 == 0 else (0x27, 0x2B)
    (serial,) = struct.unpack_from("<I", boot, serial_at)
    label = boot[label_at : label_at + 11].decode("latin-1").strip()
    return FsIdentity("vfat", _serial32(serial), label if label and label != "NO NAME" else None)


def ntfs_identity(boot: bytes) -> FsIdentity | None:
    """Identity of an NTFS filesystem from its boot sector (blkid's UUID is the 64-bit serial)."""
    if len(boot) < 0x50 or boot[3:11] != b"NTFS    ":
        return None
    (serial,) = struct.unpack_from("<Q", boot, 0x48)
    return FsIdentity("ntfs", f"{serial:016X}", None)
