"""The native reader on every test image: every planted secret found, no decoy, right volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from expect import IMAGES, finding_keys, missing_planted, reported_decoys, scan

from imgscan.image import ReaderKind
from imgscan.model import ScanResult


def _scan(images: Path, image: dict[str, Any], **kw: Any) -> ScanResult:
    return scan(images, image, ReaderKind.NATIVE, **kw)


@pytest.mark.parametrize("name", IMAGES)
def test_native_finds_planted_and_no_decoy(
    images: Path, manifest: dict[str, Any], name: str
) -> None:
    image = manifest[name]
    result = _scan(images, image, jobs=2)
    assert missing_planted(result, image) == []
    assert reported_decoys(result, image) == []
    assert result.complete is image["coverage_complete"]
    got = [(v.device, v.fstype, v.mountpoint, v.status.value) for v in result.volumes]
    want = [(v["device"], v["fstype"], v["mountpoint"], v["status"]) for v in image["volumes"]]
    assert got == want
    assert result.image.format == image["format"]
    assert result.os is not None
    want_os = image["os"]
    assert (result.os.distro, result.os.version, result.os.hostname) == (
        want_os["id"],
        want_os["version_id"],
        want_os["hostname"],
    )


def test_every_container_format_gives_identical_findings(
    images: Path, manifest: dict[str, Any]
) -> None:
    keys = {
        name: finding_keys(_scan(images, manifest[name], jobs=1))
        for name in ("server-raw", "server-qcow2", "server-vmdk", "server-stream-vmdk")
    }
    first = keys["server-raw"]
    assert first
    for name, value in keys.items():
        assert value == first, name


def test_jobs_one_and_two_give_identical_reports(images: Path, manifest: dict[str, Any]) -> None:
    one = _scan(images, manifest["server-qcow2"], jobs=1)
    two = _scan(images, manifest["server-qcow2"], jobs=2)
    assert one.findings == two.findings
    assert one.volumes == two.volumes
    assert one.skipped == two.skipped


def test_chunk_boundary_secrets_found_at_any_chunk_size(
    images: Path, manifest: dict[str, Any]
) -> None:
    image = manifest["server-qcow2"]
    boundary = [p for p in image["planted"] if p.get("boundary")]
    assert len(boundary) == 2
    for chunk in (1 << 20, 300_000, 1 << 16):
        result = _scan(images, image, jobs=1, chunk_size=chunk)
        secrets = {(f.path, f.secret, f.line) for f in result.findings}
        for item in boundary:
            assert (item["path"], item["secret"], item["line"]) in secrets, chunk
