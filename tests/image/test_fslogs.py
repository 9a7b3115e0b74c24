"""XFS and NTFS log state from real file systems (mkfs.xfs, mkntfs), and from bytes a hostile
image chooses: clean, dirty, or not judged, never an exception or an unbounded read."""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

from imgscan.image.fslogs import (
    MAX_XFS_LOG,
    LogState,
    ntfs_dirty_flag_offset,
    ntfs_log_state,
    xfs_log_state,
)


def _reader(data: bytes | bytearray, log: list[int] | None = None) -> Callable[[int, int], bytes]:
    def read(offset: int, size: int) -> bytes:
        if log is not None:
            log.append(size)
        return bytes(data[offset : offset + size])

    return read


def test_xfs_clean_then_dirty(tmp_path: Path) -> None:
    image = tmp_path / "x.xfs"
    env = {**os.environ, "TEST_DIR": "/tmp", "TEST_DEV": "1", "QA_CHECK_FS": "xfs"}
    subprocess.run(
        ["mkfs.xfs", "-q", "-f", "-d", f"file,name={image},size=300m"], check=True, env=env
    )
    data = bytearray(image.read_bytes())
    assert xfs_log_state(bytes(data[:512]), _reader(data)) is LogState.CLEAN
    # The newest record's first operation: no longer an unmount record.
    flags = data.find(b"\xfe\xed\xba\xbe", 512)
    assert flags > 0
    data[flags + 512 + 9] = 0x02
    assert xfs_log_state(bytes(data[:512]), _reader(data)) is LogState.DIRTY


def test_xfs_hostile_superblocks_are_not_judged() -> None:
    sb = bytearray(512)
    sb[:4] = b"XFSB"
    struct.pack_into(">I", sb, 4, 4096)
    struct.pack_into(">Q", sb, 48, 1)  # log at block 1
    struct.pack_into(">I", sb, 84, 1000)
    sb[124] = 10
    struct.pack_into(">I", sb, 96, 0xFFFFFFFF)  # a 16 TiB log: not read at all
    reads: list[int] = []
    assert xfs_log_state(bytes(sb), _reader(sb, reads)) is LogState.UNKNOWN
    assert reads == [] and MAX_XFS_LOG < 0xFFFFFFFF * 4096
    struct.pack_into(">I", sb, 96, 16)  # a log of random bytes: no record in it
    junk = bytes(sb) + os.urandom(1 << 20)
    assert xfs_log_state(bytes(sb), _reader(junk)) is LogState.UNKNOWN
    assert xfs_log_state(b"not xfs", _reader(b"")) is LogState.UNKNOWN


def test_ntfs_clean_then_dirty_and_hostile(tmp_path: Path) -> None:
    image = tmp_path / "n.ntfs"
    with image.open("wb") as fh:
        fh.truncate(16 << 20)
    subprocess.run(["mkntfs", "-q", "-F", "-f", str(image)], check=True, capture_output=True)
    data = bytearray(image.read_bytes())
    assert ntfs_log_state(_reader(data)) is LogState.CLEAN
    where = ntfs_dirty_flag_offset(_reader(data))
    assert where is not None
    data[where] |= 0x01
    assert ntfs_log_state(_reader(data)) is LogState.DIRTY
    # A boot sector that says NTFS over garbage, absurd geometry, a torn record.
    assert ntfs_log_state(_reader(data[:512] + os.urandom(1 << 16))) is LogState.UNKNOWN
    bad = bytearray(data)
    bad[0x0B:0x0D] = b"\x00\x00"
    assert ntfs_log_state(_reader(bad)) is LogState.UNKNOWN
    torn = bytearray(data)
    torn[where - (where % 512) + 510] ^= 0xFF  # the sector's fixup no longer matches
    assert ntfs_log_state(_reader(torn)) is LogState.UNKNOWN
    assert ntfs_log_state(_reader(b"")) is LogState.UNKNOWN
