"""The libguestfs reader on the test images, compared with the native reader.

libguestfs runs its appliance under TCG on machines where KVM is broken (launch ~20 s each), so
each image is scanned once per reader and every assertion reuses those results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from expect import IMAGES, finding_keys, missing_planted, reported_decoys, scan

from imgscan.image import ReaderKind
from imgscan.model import ScanResult

pytestmark = pytest.mark.guestfs

_cache: dict[tuple[str, ReaderKind], ScanResult] = {}


def _scan(images: Path, image: dict[str, Any], reader: ReaderKind) -> ScanResult:
    key = (image["name"], reader)
    if key not in _cache:
        _cache[key] = scan(images, image, reader, jobs=2)
    return _cache[key]


@pytest.mark.parametrize("name", IMAGES)
def test_guestfs_finds_planted_and_no_decoy(
    images: Path, manifest: dict[str, Any], name: str
) -> None:
    image = manifest[name]
    result = _scan(images, image, ReaderKind.GUESTFS)
    assert result.reader.name == "guestfs"
    assert result.reader.accel in ("kvm", "tcg")
    assert missing_planted(result, image) == []
    assert reported_decoys(result, image) == []
    assert result.complete is image["coverage_complete"]


@pytest.mark.parametrize("name", IMAGES)
def test_readers_agree(images: Path, manifest: dict[str, Any], name: str) -> None:
    image = manifest[name]
    native = _scan(images, image, ReaderKind.NATIVE)
    guest = _scan(images, image, ReaderKind.GUESTFS)
    assert finding_keys(guest) == finding_keys(native)

    def volumes(result: ScanResult) -> list[tuple[Any, ...]]:
        return [
            (v.device, v.fstype, v.mountpoint, v.status, v.files, v.bytes) for v in result.volumes
        ]

    assert volumes(guest) == volumes(native)
    assert guest.skipped == native.skipped
    assert guest.os == native.os
