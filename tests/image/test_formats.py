"""Format detection from the image's own bytes, and refusal of references to other files."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from imgscan.errors import ImageError
from imgscan.image.formats import detect_format

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "testdata"))

import build_hostile  # testdata/build_hostile.py: the hostile images' patchers


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


# Round 2 (issue 17): every other container structure that names a file. The images are made
# by qemu-img and patched by testdata/build_hostile.py's helpers, as the hostile suite's are.


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", "create", "-q", *args], check=True)


def test_vmdk_delta_parent_needs_permission(tmp_path: Path) -> None:
    parent, delta = tmp_path / "parent.vmdk", tmp_path / "delta.vmdk"
    _qemu_img("-f", "vmdk", str(parent), "1M")
    _qemu_img("-f", "vmdk", "-F", "vmdk", "-b", parent.name, str(delta))
    with pytest.raises(ImageError, match=r"parent 'parent\.vmdk'.*--allow-external-files"):
        detect_format(delta)
    for target in ("/etc/hostname", "../outside.vmdk"):
        build_hostile.delta_vmdk_naming(delta, target)
        with pytest.raises(ImageError, match=f"parent '{re.escape(target)}'"):
            detect_format(delta)
    assert detect_format(delta, allow_external=True).external == ("parent '../outside.vmdk'",)


@pytest.mark.parametrize(
    "line",
    ['parentFileNameHint="../base.vmdk"', "PARENTFILENAMEHINT = /etc/hostname", "parentCID=1234"],
)
def test_vmdk_descriptor_parent_is_refused(tmp_path: Path, line: str) -> None:
    (tmp_path / "disk-flat.vmdk").write_bytes(b"\0" * (2048 * 512))
    path = tmp_path / "disk.vmdk"
    path.write_text(
        f"# Disk DescriptorFile\nversion=1\nCID=fffffffe\n{line}\n"
        'createType="monolithicFlat"\nRW 2048 FLAT "disk-flat.vmdk" 0\n'
    )
    with pytest.raises(ImageError, match="parent"):
        detect_format(path)


@pytest.mark.parametrize("line", ["rw 2048 FLAT /etc/hostname 0", 'RW 2048 FLAT "x"\r'])
def test_vmdk_extent_lines_read_loosely(tmp_path: Path, line: str) -> None:
    # Lower-case access, no quotes, CR line ends: still an extent naming another file.
    path = tmp_path / "disk.vmdk"
    path.write_bytes(
        b"# Disk DescriptorFile\rversion=1\rparentCID=ffffffff\r"
        b'createType="monolithicFlat"\r' + line.encode() + b"\n"
    )
    with pytest.raises(ImageError, match="extent"):
        detect_format(path)


def test_sparse_vmdk_naming_a_neighbour_extent_is_refused(tmp_path: Path) -> None:
    image, neighbour = tmp_path / "disk.vmdk", tmp_path / "clean.vmdk"
    _qemu_img("-f", "vmdk", str(image), "1M")
    _qemu_img("-f", "vmdk", str(neighbour), "1M")
    assert detect_format(image).external == ()  # names itself
    build_hostile.sparse_vmdk_naming(image, "old-name.vmdk")
    assert detect_format(image).external == ()  # renamed: names nothing that exists
    for extent in ("clean.vmdk", "../clean.vmdk", "/etc/hostname"):
        (image).unlink()
        _qemu_img("-f", "vmdk", str(image), "1M")
        build_hostile.sparse_vmdk_naming(image, extent)
        with pytest.raises(ImageError, match=f"extent '{re.escape(extent)}'"):
            detect_format(image)


def test_differencing_vhd_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "diff.vhd"
    _qemu_img("-f", "vpc", str(image), "8M")
    assert detect_format(image).external == ()
    build_hostile.differencing_vhd(image, "tenant.vhd")
    with pytest.raises(ImageError, match=r"parent 'tenant\.vhd'.*--allow-external-files"):
        detect_format(image)


def test_vhd_footer_copies_both_checked(tmp_path: Path) -> None:
    # libvhdi reads the footer at the end, qemu the copy at the start: a differencing type in
    # either is enough.
    image = tmp_path / "d.vhd"
    _qemu_img("-f", "vpc", str(image), "8M")
    size = image.stat().st_size
    with image.open("r+b") as fh:
        fh.seek(size - 512 + 60)
        fh.write((4).to_bytes(4, "big"))
    with pytest.raises(ImageError, match="differencing VHD"):
        detect_format(image)


@pytest.mark.parametrize(("flag", "locator"), [(True, True), (True, False), (False, True)])
def test_differencing_vhdx_is_refused(tmp_path: Path, flag: bool, locator: bool) -> None:
    image = tmp_path / "diff.vhdx"
    _qemu_img("-f", "vhdx", str(image), "8M")
    info = detect_format(image)
    assert (info.external, info.virtual_size) == ((), 8 << 20)
    build_hostile.differencing_vhdx(image, "../tenant.vhdx", flag=flag, locator=locator)
    with pytest.raises(ImageError, match="parent"):
        detect_format(image)


def test_vhdx_without_metadata_is_corrupt(tmp_path: Path) -> None:
    image = tmp_path / "broken.vhdx"
    _qemu_img("-f", "vhdx", str(image), "8M")
    with image.open("r+b") as fh:
        for at in (192 << 10, 256 << 10):
            fh.seek(at)
            fh.write(b"\0" * 16)
    with pytest.raises(ImageError, match="corrupt VHDX"):
        detect_format(image)


def test_differencing_vdi_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "diff.vdi"
    _qemu_img("-f", "vdi", str(image), "8M")
    assert detect_format(image).external == ()
    build_hostile.differencing_vdi(image, uuid.UUID(int=7))
    with pytest.raises(ImageError, match="parent image"):
        detect_format(image)


def test_vmdk_descriptor_with_several_extents_is_judged_by_each(tmp_path: Path) -> None:
    (tmp_path / "disk-f001.vmdk").write_bytes(b"\0" * (2048 * 512))
    (tmp_path / "disk-f002.vmdk").write_bytes(b"\0" * (2048 * 512))
    path = tmp_path / "disk.vmdk"
    lines = ['RW 2048 FLAT "disk-f001.vmdk" 0', 'RW 2048 FLAT "disk-f002.vmdk" 0']
    head = '# Disk DescriptorFile\nversion=1\nparentCID=ffffffff\ncreateType="twoGbMaxExtentFlat"\n'
    path.write_text(head + "\n".join(lines) + "\n")
    info = detect_format(path)
    assert (info.external, info.virtual_size) == ((), 2 * 2048 * 512)
    # One extent more, outside the directory: refused, and that one is named.
    path.write_text(head + "\n".join([*lines, 'RDONLY 2048 FLAT "../../etc/hostname" 0']) + "\n")
    with pytest.raises(ImageError, match=r"extent '\.\./\.\./etc/hostname'\)"):
        detect_format(path)


def test_qcow2_internal_snapshots_listed(tmp_path: Path) -> None:
    # Issue 20: the snapshot table is read (ids and names, a name with a space and a control
    # character made printable), inside OVA disks too through Disk.
    image = tmp_path / "s.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "4M"], check=True)
    assert detect_format(image).snapshots == ()
    for name in ("pre", "before upgrade", "bell\x07"):
        subprocess.run(["qemu-img", "snapshot", "-c", name, str(image)], check=True)
    info = detect_format(image)
    assert info.snapshots == (("1", "pre"), ("2", "before upgrade"), ("3", "bell?"))
    assert info.disks[0].snapshots == info.snapshots


def test_qcow2_snapshot_table_outside_the_file(tmp_path: Path) -> None:
    # A count with a table past the end: every claimed snapshot is still listed (as "?").
    image = tmp_path / "s.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "4M"], check=True)
    with image.open("r+b") as fh:
        fh.seek(60)
        fh.write((3).to_bytes(4, "big") + (1 << 40).to_bytes(8, "big"))
    assert detect_format(image).snapshots == (("?", "?"),) * 3


def test_vhdx_log_with_entries_refused(tmp_path: Path) -> None:
    # Issue 20: a log GUID with an entry of that GUID is a log to replay: refused; the same
    # GUID with no entry is an empty log.
    for entry in (False, True):
        image = tmp_path / f"log-{entry}.vhdx"
        subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", str(image), "8M"], check=True)
        build_hostile.vhdx_with_log(image, uuid.UUID(int=9), entry=entry)
        if entry:
            with pytest.raises(ImageError, match="log holds writes not yet replayed"):
                detect_format(image)
        else:
            assert detect_format(image).format == "vhdx"
