"""Format detection from the image's own bytes, and refusal of references to other files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from imgscan.errors import ImageError
from imgscan.image.formats import detect_format


@pytest.mark.parametrize(
    ("name", "fmt", "sub"),
    [
        ("server.qcow2", "qcow2", "v3"),
        ("server.vmdk", "vmdk", "monolithicSparse"),
        ("server-stream.vmdk", "vmdk", "streamOptimized"),
        ("server.raw", "raw", None),
        ("bare.raw", "raw", None),
    ],
)
def test_detects_test_images(images: Path, name: str, fmt: str, sub: str | None) -> None:
    info = detect_format(images / name)
    assert (info.format, info.subformat) == (fmt, sub)
    assert info.external == ()
    if fmt != "raw":
        assert info.virtual_size == 64 << 20


def test_raw_disguised_by_name_is_raw(images: Path, tmp_path: Path) -> None:
    # The name says qcow2, the bytes say raw: the bytes win.
    fake = tmp_path / "disk.qcow2"
    fake.write_bytes((images / "bare.raw").read_bytes())
    assert detect_format(fake).format == "raw"


def test_qcow2_backing_file_needs_permission(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(b"\0" * 65536)
    overlay = tmp_path / "o.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(overlay)],
        check=True,
    )
    with pytest.raises(ImageError, match="backing file"):
        detect_format(overlay)
    assert "backing file" in detect_format(overlay, allow_external=True).external[0]


def test_qcow2_external_data_file_refused(tmp_path: Path) -> None:
    image = tmp_path / "d.qcow2"
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            f"data_file={tmp_path / 'data.raw'}",
            str(image),
            "1M",
        ],
        check=True,
    )
    with pytest.raises(ImageError, match="data file"):
        detect_format(image)


@pytest.mark.parametrize(("content", "message"), [(b"", "empty file")])
def test_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.img"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message):
        detect_format(path)


def test_truncated_qcow2_header(tmp_path: Path) -> None:
    path = tmp_path / "t.qcow2"
    path.write_bytes(b"QFI\xfb\0\0\0\3")
    with pytest.raises(ImageError, match="truncated"):
        detect_format(path)


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        detect_format(tmp_path / "missing")
    with pytest.raises(ImageError, match="directory"):
        detect_format(tmp_path)


def _descriptor(folder: Path, extent: str) -> Path:
    path = folder / "disk.vmdk"
    path.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        f'createType="monolithicFlat"\nRW 2048 FLAT "{extent}" 0\n'
    )
    return path


def test_vmdk_extent_beside_the_descriptor_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "disk-flat.vmdk").write_bytes(b"\0" * (2048 * 512))
    info = detect_format(_descriptor(tmp_path, "disk-flat.vmdk"))
    assert (info.format, info.subformat, info.external) == ("vmdk", "monolithicFlat", ())


@pytest.mark.parametrize("extent", ["../outside.raw", "/etc/hostname", "link-flat.vmdk"])
def test_vmdk_extent_elsewhere_is_refused(tmp_path: Path, extent: str) -> None:
    inner = tmp_path / "images"
    inner.mkdir()
    (tmp_path / "outside.raw").write_bytes(b"\0" * 512)
    # A symlink beside the descriptor that points out of the directory counts as outside.
    (inner / "link-flat.vmdk").symlink_to(tmp_path / "outside.raw")
    with pytest.raises(ImageError, match="--allow-external-files"):
        detect_format(_descriptor(inner, extent))
