"""Archives inside files: every format, nesting, and the bounds that stop decompression bombs.

Each test builds its archive in memory at test time around a freshly generated secret and
hands it to the worker's FileScanner as inline file content, as a reader would.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import secrets
import tarfile
import zipfile
from collections.abc import Callable

import pytest
import zstandard

from imgscan.model import FileRef
from imgscan.scan.archives import MAX_DEPTH, RATIO_FLOOR, archive_kind
from imgscan.scan.worker import FileOutcome, FileScanner


def _secret() -> tuple[str, bytes]:
    password = secrets.token_urlsafe(15)
    return password, f"DATABASE_URL=postgres://hr_app:{password}@db.internal/hr\n".encode()


def _scan(scanner: FileScanner, path: str, data: bytes) -> FileOutcome:
    return scanner.scan(FileRef("/dev/sda1", path, len(data), "-", inline=data))


def _tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return buf.getvalue()


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "zst": zstandard.ZstdCompressor().compress,
}


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_a_compressed_file_is_expanded(inline_scanner: FileScanner, suffix: str) -> None:
    password, text = _secret()
    outcome = _scan(inline_scanner, f"/srv/app/env.{suffix}", COMPRESSORS[suffix](text))
    assert [(f.path, f.secret) for f in outcome.findings] == [
        (f"/srv/app/env.{suffix}!/env", password)
    ]


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_a_compressed_tar_is_a_tar(inline_scanner: FileScanner, suffix: str) -> None:
    password, text = _secret()
    data = COMPRESSORS[suffix](_tar("app/.env", text))
    outcome = _scan(inline_scanner, f"/backup/app.tar.{suffix}", data)
    assert [(f.path, f.secret) for f in outcome.findings] == [
        (f"/backup/app.tar.{suffix}!/app/.env", password)
    ]


def test_formats_are_known_by_their_bytes_not_their_names(inline_scanner: FileScanner) -> None:
    password, text = _secret()
    outcome = _scan(
        inline_scanner, "/opt/app/lib/billing.war", _zip("WEB-INF/app.properties", text)
    )
    assert [(f.path, f.secret) for f in outcome.findings] == [
        ("/opt/app/lib/billing.war!/WEB-INF/app.properties", password)
    ]
    assert archive_kind(lzma.compress(b"x")) == "xz"
    assert archive_kind(b"BZh9 not really") is None


def test_nesting_to_the_depth_limit(inline_scanner: FileScanner) -> None:
    password, text = _secret()
    inner = _zip("conf/.env", text)  # depth 3
    middle = lzma.compress(_tar("bundle.zip", inner))  # depth 2
    outer = _zip("release.tar.xz", middle)  # depth 1
    outcome = _scan(inline_scanner, "/srv/release.jar", outer)
    assert [(f.path, f.secret) for f in outcome.findings] == [
        ("/srv/release.jar!/release.tar.xz!/bundle.zip!/conf/.env", password)
    ]
    deeper = _zip("too-deep.jar", outer)
    outcome = _scan(inline_scanner, "/srv/wrapper.ear", deeper)
    assert MAX_DEPTH == 3
    assert [s.reason for s in outcome.skipped] == ["archive nested deeper than 3 levels"]


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_a_decompression_bomb_is_skipped_with_the_reason(
    inline_scanner: FileScanner, suffix: str
) -> None:
    bomb = COMPRESSORS[suffix](b"\0" * (RATIO_FLOOR + (1 << 20)))
    outcome = _scan(inline_scanner, f"/tmp/bomb.{suffix}", bomb)
    assert outcome.findings == ()
    assert len(outcome.skipped) == 1
    assert "possible decompression bomb" in outcome.skipped[0].reason
    assert outcome.skipped[0].path == f"/tmp/bomb.{suffix}!/bomb"


def test_a_zip_bomb_is_bounded(inline_scanner: FileScanner) -> None:
    password, text = _secret()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.env", text)
        for i in range(3):
            zf.writestr(f"zeros{i}.bin", b"\0" * (RATIO_FLOOR // 2))
    outcome = _scan(inline_scanner, "/tmp/bomb.zip", buf.getvalue())
    # Members within the bound are scanned; the one that crosses it and all after it are
    # listed with the reason, not read.
    assert [f.secret for f in outcome.findings] == [password]
    assert [s.path for s in outcome.skipped] == [
        "/tmp/bomb.zip!/zeros1.bin",
        "/tmp/bomb.zip!/zeros2.bin",
    ]


def test_a_compressed_tar_member_beyond_the_bound_is_not_decompressed(
    inline_scanner: FileScanner,
) -> None:
    # A tar.zst declaring a 1 TiB member: one frame of zeros repeated (zstd reads across
    # frames) stands for its first GiB; the stream then ends. Skipping the member would mean
    # decompressing it, so the scan stops at its header, before any of it is read.
    password, text = _secret()
    zstd = zstandard.ZstdCompressor()
    member = tarfile.TarInfo("a.env")
    member.size = len(text)
    head = member.tobuf(format=tarfile.GNU_FORMAT) + text.ljust(512, b"\0")
    bomb = tarfile.TarInfo("zeros.bin")
    bomb.size = 1 << 40
    frame = zstd.compress(b"\0" * (16 << 20))
    data = zstd.compress(head + bomb.tobuf(format=tarfile.GNU_FORMAT)) + frame * 64
    outcome = _scan(inline_scanner, "/var/log/old.tar.zst", data)
    assert [f.secret for f in outcome.findings] == [password]
    assert [s.path for s in outcome.skipped] == ["/var/log/old.tar.zst!/zeros.bin"]
    assert "possible decompression bomb" in outcome.skipped[0].reason


def test_a_corrupt_archive_is_skipped_and_its_bytes_still_scanned(
    inline_scanner: FileScanner,
) -> None:
    password, text = _secret()
    data = b"\xfd7zXZ\x00" + b"garbage" * 10 + b"\n" + text
    outcome = _scan(inline_scanner, "/var/tmp/broken.xz", data)
    assert [s.reason.split(":")[0] for s in outcome.skipped] == ["corrupt xz archive"]
    assert [f.secret for f in outcome.findings] == [password]
