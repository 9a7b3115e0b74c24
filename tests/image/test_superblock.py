"""Journal state read from ext and jbd2 superblocks (imgscan/image/superblock.py), on file
systems made and dirtied by e2fsprogs."""

from __future__ import annotations

import subprocess
from pathlib import Path

from imgscan.image.superblock import EXT_SUPERBLOCK_OFFSET, ext_needs_recovery, jbd2_log_empty


def _ext4(tmp_path: Path) -> Path:
    image = tmp_path / "j.ext4"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", str(image), "8M"], check=True)
    return image


def _journal_head(image: Path) -> bytes:
    out = subprocess.run(
        ["debugfs", "-R", "cat <8>", str(image)], capture_output=True, check=True
    ).stdout
    return out[:1024]


def _superblock(image: Path) -> bytes:
    with image.open("rb") as fh:
        fh.seek(EXT_SUPERBLOCK_OFFSET)
        return fh.read(1024)


def test_clean_flagged_and_dirty(tmp_path: Path) -> None:
    image = _ext4(tmp_path)
    assert not ext_needs_recovery(_superblock(image))
    assert jbd2_log_empty(_journal_head(image))
    # A transaction committed to the journal and not replayed.
    block = tmp_path / "block"
    block.write_bytes(b"x" * 1024)
    subprocess.run(
        ["debugfs", "-w", "-f", "-", str(image)],
        input=f"jo\njw -b 300 {block}\njc\n".encode(),
        capture_output=True,
        check=True,
    )
    assert ext_needs_recovery(_superblock(image))
    assert not jbd2_log_empty(_journal_head(image))


def test_not_a_journal_is_not_empty() -> None:
    assert not jbd2_log_empty(bytes(1024))
    assert not jbd2_log_empty(b"")
    assert not ext_needs_recovery(b"")
