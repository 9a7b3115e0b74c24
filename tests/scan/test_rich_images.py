"""The issue-3 images with the default (auto) reader, and both readers compared.

Every container format, LVM, LUKS, MBR logical partitions, xfs, btrfs subvolumes, ntfs streams,
vfat, exfat and swap: planted secrets found at their guest paths, no decoy, the volumes, the OS
and the coverage verdict as the builder recorded them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from expect import missing_planted, reported_decoys, volume_mismatches

from imgscan.image import ReaderKind
from imgscan.model import ScanResult
from imgscan.options import ScanOptions
from imgscan.scan.scanner import scan_image

pytestmark = pytest.mark.guestfs

COPIES = [
    "lvm-server-qcow2",
    "lvm-server-vmdk",
    "lvm-server-stream-vmdk",
    "lvm-server-flat-vmdk",
    "lvm-server-split-vmdk",
    "lvm-server-vhd",
    "lvm-server-fixed-vhd",
    "lvm-server-vhdx",
    "lvm-server-vdi",
    "lvm-server-z-qcow2",
    "lvm-server-zstd-qcow2",
    "lvm-server-v2-qcow2",
    "lvm-server-ova",
]
OTHERS = ["mbr-logical-raw", "luks-qcow2", "luks-locked-qcow2", "fs-zoo-qcow2", "two-disk-ova"]
_cache: dict[tuple[str, ReaderKind], ScanResult] = {}


def _scan(folder: Path, image: dict[str, Any], reader: ReaderKind) -> ScanResult:
    key = (image["name"], reader)
    if key not in _cache:
        luks = image.get("luks")
        keys = (luks["passphrase"],) if luks else ()
        options = ScanOptions(
            image=folder / image["file"], reader=reader, show_secrets=True, luks_keys=keys
        )
        _cache[key] = scan_image(options)
    return _cache[key]


@pytest.mark.parametrize("name", COPIES + OTHERS)
def test_auto_reader(rich_images: Path, rich_manifest: dict[str, Any], name: str) -> None:
    image = rich_manifest[name]
    result = _scan(rich_images, image, ReaderKind.AUTO)
    assert missing_planted(result, image) == []
    assert reported_decoys(result, image) == []
    assert volume_mismatches(result, image) == []
    assert result.complete is image["coverage_complete"]
    if image.get("os"):
        assert result.os is not None
        assert (result.os.distro, result.os.version, result.os.hostname) == (
            image["os"]["distro"],
            image["os"]["version"],
            image["os"]["hostname"],
        )
        assert {u.name for u in result.os.users} == {u["name"] for u in image["os"]["users"]}


def test_every_container_format_gives_identical_findings(
    rich_images: Path, rich_manifest: dict[str, Any]
) -> None:
    def keys(name: str) -> list[tuple[str, int, str, str]]:
        result = _scan(rich_images, rich_manifest[name], ReaderKind.AUTO)
        return [(f.path, f.line, f.rule, f.fingerprint) for f in result.findings]

    reference = keys("lvm-server-qcow2")
    assert reference
    for name in COPIES[1:]:
        assert keys(name) == reference, name


def _by_volume(result: ScanResult, devices: set[str]) -> list[tuple[str, int, str, str]]:
    """Findings on the given volumes: each finding belongs to the longest mountpoint above it."""
    mounts = sorted(
        ((v.mountpoint, v.device) for v in result.volumes if v.mountpoint),
        key=lambda m: -len(m[0]),
    )
    kept = []
    for f in result.findings:
        for mountpoint, device in mounts:
            inside = (
                mountpoint == "/"
                or f.path == mountpoint
                or f.path.startswith(mountpoint.rstrip("/") + "/")
            )
            if inside:
                if device in devices:
                    kept.append((f.path, f.line, f.rule, f.fingerprint))
                break
    return kept


@pytest.mark.parametrize("name", COPIES)
def test_every_container_format_is_read_natively(
    rich_images: Path, rich_manifest: dict[str, Any], name: str
) -> None:
    """GPT, LVM, ext4, xfs, vfat and swap in every container, compressed qcow2 (zlib, zstd)
    and VDI included (qemu-nbd decodes those): every volume read by the native reader, so
    no appliance starts under the auto reader."""
    result = _scan(rich_images, rich_manifest[name], ReaderKind.AUTO)
    assert result.volumes
    assert [v.device for v in result.volumes if v.reader != "native"] == []


@pytest.mark.parametrize("name", COPIES + OTHERS)
def test_native_and_guestfs_agree(
    rich_images: Path, rich_manifest: dict[str, Any], name: str
) -> None:
    image = rich_manifest[name]
    native = _scan(rich_images, image, ReaderKind.NATIVE)
    guest = _scan(rich_images, image, ReaderKind.GUESTFS)
    both = {v.device for v in native.volumes if v.status.value == "scanned"} & {
        v.device for v in guest.volumes if v.status.value == "scanned"
    }
    assert both
    for device in sorted(both):
        n = next(v for v in native.volumes if v.device == device)
        g = next(v for v in guest.volumes if v.device == device)
        assert (n.fstype, n.mountpoint, n.files, n.bytes) == (
            g.fstype,
            g.mountpoint,
            g.files,
            g.bytes,
        ), device
    assert _by_volume(native, both) == _by_volume(guest, both)
    assert native.os == guest.os


def test_luks_from_the_command_line(rich_images: Path, rich_manifest: dict[str, Any]) -> None:
    import json
    import subprocess
    import sys

    image = rich_images / rich_manifest["luks-qcow2"]["file"]
    key_file = rich_images / rich_manifest["luks-qcow2"]["luks"]["key_file"]
    base = [sys.executable, "-m", "imgscan", "scan", str(image), "--format", "json"]
    locked = subprocess.run(base, capture_output=True, text=True, timeout=600)
    assert locked.returncode == 2  # encrypted volumes without a key: coverage incomplete
    report = json.loads(locked.stdout)
    encrypted = [v for v in report["coverage"]["volumes"] if v["fstype"] == "crypto_LUKS"]
    assert encrypted and all("no key" in v["reason"] for v in encrypted)
    opened = subprocess.run(
        [*base, "--key-file", str(key_file)], capture_output=True, text=True, timeout=600
    )
    assert opened.returncode == 1, opened.stderr
    assert json.loads(opened.stdout)["coverage"]["complete"] is True
    assert rich_manifest["luks-qcow2"]["luks"]["passphrase"] not in opened.stdout + opened.stderr
