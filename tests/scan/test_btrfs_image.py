"""A Linux root on btrfs subvolumes: fstab's subvol=, subvolid= and nested subvolumes place
every file where the booted guest sees it; unmounted subvolumes stay under /@dev/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from expect import missing_planted, reported_decoys, scan, volume_mismatches

from imgscan.image import ReaderKind

pytestmark = pytest.mark.guestfs


def test_subvolumes_are_placed_by_the_guests_fstab(
    btrfs_images: Path, btrfs_manifest: dict[str, Any]
) -> None:
    image = btrfs_manifest["btrfs-root-qcow2"]
    result = scan(btrfs_images, image, ReaderKind.AUTO)
    assert missing_planted(result, image) == []
    assert reported_decoys(result, image) == []
    assert volume_mismatches(result, image) == []
    assert result.complete is True
    btrfs = next(v for v in result.volumes if v.fstype == "btrfs")
    want = next(v for v in image["volumes"] if v["fstype"] == "btrfs")
    assert btrfs.reader == "guestfs"  # the native reader has no btrfs
    assert sorted(btrfs.subvolumes) == sorted(
        (s["path"], s["mountpoint"]) for s in want["subvolumes"]
    )
    assert result.os is not None
    assert (result.os.distro, result.os.version, result.os.hostname) == (
        image["os"]["distro"],
        image["os"]["version"],
        image["os"]["hostname"],
    )
    assert [(u.name, u.uid, u.home) for u in result.os.users] == [
        (u["name"], u["uid"], u["home"]) for u in image["os"]["users"]
    ]
