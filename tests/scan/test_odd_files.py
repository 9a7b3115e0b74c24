"""Names that are not UTF-8, hard links and swap: both readers see the same files."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from imgscan.image import ReaderKind
from imgscan.model import ScanResult
from imgscan.options import ScanOptions
from imgscan.scan.scanner import scan_image

# Generated per run: the repository holds no credential-shaped literal.
PASSWORD = secrets.token_hex(8)
SECRET = f"postgres://hr_app:{PASSWORD}@db.internal:5432/hr"
_cache: dict[ReaderKind, ScanResult] = {}


@pytest.fixture(scope="module")
def odd_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("odd")
    tree = root / "tree"
    (tree / "etc").mkdir(parents=True)
    latin1 = os.fsencode(str(tree / "etc")) + b"/caf\xe9.conf"
    with open(latin1, "wb") as out:
        out.write(f"DATABASE_URL={SECRET}\n".encode())
    (tree / "etc" / "app.conf").write_text(f"url = {SECRET}\n")
    os.link(tree / "etc" / "app.conf", tree / "etc" / "linked.conf")
    fs = root / "fs.img"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(fs), "8M"], check=True)
    disk = root / "disk.raw"
    with disk.open("wb") as out:
        out.truncate(32 << 20)
    script = "label: gpt\nstart=2048, size=16384, type=L\nstart=18432, size=8192, type=S\n"
    subprocess.run(["sfdisk", "-q", str(disk)], input=script, text=True, check=True)
    swap = root / "swap.img"
    with swap.open("wb") as out:
        out.truncate(8192 * 512)
    subprocess.run(["mkswap", "-q", str(swap)], check=True, capture_output=True)
    with disk.open("r+b") as out:
        out.seek(2048 * 512)
        out.write(fs.read_bytes())
        # A swap partition with a secret in its paged-out data.
        out.seek(18432 * 512)
        out.write(swap.read_bytes())
        out.seek(18432 * 512 + 100_000)
        out.write(f"\0\0export DATABASE_URL={SECRET}\n\0".encode())
    return disk


def _scan(image: Path, reader: ReaderKind) -> ScanResult:
    if reader not in _cache:
        _cache[reader] = scan_image(ScanOptions(image=image, reader=reader, show_secrets=True))
    return _cache[reader]


def test_native_reads_odd_names_links_and_swap(odd_image: Path) -> None:
    result = _scan(odd_image, ReaderKind.NATIVE)
    assert result.complete
    paths = {f.path for f in result.findings if f.secret and PASSWORD in f.secret}
    assert paths == {
        "/@dev/sda1/etc/caf\udce9.conf",
        "/@dev/sda1/etc/app.conf",
        "/@dev/sda1/etc/linked.conf",
        "/@dev/sda2",
    } or paths == {"/etc/caf\udce9.conf", "/etc/app.conf", "/etc/linked.conf", "/@dev/sda2"}
    swap = next(v for v in result.volumes if v.device == "/dev/sda2")
    assert (swap.fstype, swap.status.value, swap.files) == ("swap", "scanned", 1)


@pytest.mark.guestfs
def test_guestfs_agrees_on_odd_files(odd_image: Path) -> None:
    native = _scan(odd_image, ReaderKind.NATIVE)
    guest = _scan(odd_image, ReaderKind.GUESTFS)
    assert [(f.path, f.rule, f.line) for f in guest.findings] == [
        (f.path, f.rule, f.line) for f in native.findings
    ]
    assert [(v.device, v.fstype, v.files, v.bytes) for v in guest.volumes] == [
        (v.device, v.fstype, v.files, v.bytes) for v in native.volumes
    ]
