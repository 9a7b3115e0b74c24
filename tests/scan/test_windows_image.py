"""The Windows image: C:\\ paths, OS facts from the registry, both readers, both formats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from expect import finding_keys, missing_planted, reported_decoys, scan, volume_mismatches

from imgscan.image import ReaderKind
from imgscan.model import ScanResult

pytestmark = pytest.mark.guestfs

_cache: dict[tuple[str, ReaderKind], ScanResult] = {}


def _scan(folder: Path, image: dict[str, Any], reader: ReaderKind) -> ScanResult:
    if (image["name"], reader) not in _cache:
        _cache[(image["name"], reader)] = scan(folder, image, reader)
    return _cache[(image["name"], reader)]


@pytest.mark.parametrize("name", ["win-server-qcow2", "win-server-vhdx"])
def test_auto_reader(windows_images: Path, windows_manifest: dict[str, Any], name: str) -> None:
    image = windows_manifest[name]
    result = _scan(windows_images, image, ReaderKind.AUTO)
    assert missing_planted(result, image) == []
    assert reported_decoys(result, image) == []
    assert volume_mismatches(result, image) == []
    assert result.complete is True
    assert all(f.path.startswith(("C:\\", "/@dev/")) for f in result.findings)
    assert result.os is not None
    got = {
        "type": result.os.type,
        "distro": result.os.distro,
        "version": result.os.version,
        "name": result.os.name,
        "hostname": result.os.hostname,
        "users": [{"name": u.name, "uid": u.uid, "home": u.home} for u in result.os.users],
    }
    assert got == image["os"]


def test_formats_give_identical_findings(
    windows_images: Path, windows_manifest: dict[str, Any]
) -> None:
    qcow2, vhdx = (
        finding_keys(_scan(windows_images, windows_manifest[n], ReaderKind.AUTO))
        for n in ("win-server-qcow2", "win-server-vhdx")
    )
    assert qcow2 and qcow2 == vhdx


def test_native_and_guestfs_agree(windows_images: Path, windows_manifest: dict[str, Any]) -> None:
    image = windows_manifest["win-server-qcow2"]
    native = _scan(windows_images, image, ReaderKind.NATIVE)
    guest = _scan(windows_images, image, ReaderKind.GUESTFS)

    def volumes(result: ScanResult) -> list[tuple[Any, ...]]:
        return [
            (v.device, v.fstype, v.mountpoint, v.status, v.files, v.bytes) for v in result.volumes
        ]

    assert volumes(native) == volumes(guest)
    assert finding_keys(native) == finding_keys(guest)
    assert native.os == guest.os
