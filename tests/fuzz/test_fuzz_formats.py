"""Fuzzing image-format detection: `detect_format` on files of any content, mutations of valid
qcow2 (v2, v3, with a backing file, an external data file, allocated and compressed clusters),
vmdk (sparse, stream-optimized, descriptor with extents), VHD, VHDX, VDI images and OVAs.

Whatever the file holds, detection returns a FormatInfo or raises ImageError naming the file;
it opens no file but the image (extents are only looked at, never read), and with external
files not allowed it never accepts an image that names one: a qcow2 header with a backing file
offset is refused whatever the offset points at.
"""

from __future__ import annotations

import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgscan.errors import ImageError
from imgscan.image.formats import QCOW2_MAGIC, FormatInfo, detect_format

from .fuzzing import (
    OpenedFiles,
    Seeds,
    corpus_cases,
    examples,
    fuzz,
    mutated,
    seed_files,
    time_limit,
)
from .seeds import image_seeds, tar_of

IMAGE_TOKENS = [
    QCOW2_MAGIC, b"KDMV", b"# Disk DescriptorFile\n", b"vhdxfile", b"conectix", b"\x7f\x10\xda\xbe",
    b'createType="monolithicSparse"\n', b'createType="vmfs"\n', b"createType\n", b"RW ",
    b" SPARSE ", b" FLAT ", b'"', b'"disk-flat.vmdk"', b'"disk-escape.vmdk"', b'"beside.vmdk"',
    b'"../disk.img"', b'"/etc/passwd"', b"\n", b"\x00", b"ustar\x0000", b".ovf", b"\xb2",
    b"9" * 5000,
]  # fmt: skip
# The files next to the image (disk.img): an extent a descriptor may name, and a symlink out of
# the folder, both named as extents of this image are.
BESIDE = "disk-flat.vmdk"
ESCAPE = "disk-escape.vmdk"


@pytest.fixture(scope="module")
def valid_images(tmp_path_factory: pytest.TempPathFactory) -> Seeds:
    """Valid images of every format: the corpus's, the ones too big to keep (made by qemu-img
    now) and an OVA of two of them."""
    made = image_seeds(tmp_path_factory.mktemp("seeds"))
    kept = [data for name, data in seed_files("formats") if name.startswith("valid")]
    found = kept + list(made.values())
    ova = tar_of({"appliance.ovf": b"<Envelope/>", "disk1.qcow2": kept[0], "disk2.vmdk": found[-1]})
    return Seeds("valid images", [*found, ova])


@pytest.fixture(scope="module")
def seeds(valid_images: list[bytes]) -> Seeds:
    """What the mutations start from: the valid images and the inputs that found bugs."""
    bugs = [data for name, data in seed_files("formats") if name.startswith("bug")]
    return Seeds("valid images and corpus/formats/bug-*", [*valid_images, *bugs])


def _qcow2_backing_offset(data: bytes) -> int:
    """What a qcow2 header says about its backing file (0: none), read independently."""
    if not data.startswith(QCOW2_MAGIC) or len(data) < 20:
        return 0
    version, offset = struct.unpack_from(">IQ", data, 4)
    return offset if version in (2, 3) else 0


def check_detect(data: bytes, allow_external: bool) -> FormatInfo | None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        (folder / BESIDE).write_bytes(b"\0" * 512)
        (folder / ESCAPE).symlink_to(Path(tmp) / "outside")
        (Path(tmp) / "outside").write_bytes(b"\0" * 512)
        path = folder / "disk.img"
        path.write_bytes(data)
        info: FormatInfo | None = None
        with OpenedFiles.recording() as opened:
            try:
                with time_limit(10):
                    info = detect_format(path, allow_external)
            except ImageError as exc:
                assert str(path) in str(exc)
        assert {Path(name).resolve() for name in opened} <= {path.resolve()}, opened
    if info is None:
        return None
    assert isinstance(info, FormatInfo) and info.disks
    for disk in info.disks:
        assert disk.offset >= 0 and disk.offset + disk.size <= len(data)
    if not allow_external:
        assert info.external == ()
        if info.format == "qcow2":
            assert _qcow2_backing_offset(data) == 0
    elif info.format == "qcow2" and _qcow2_backing_offset(data):
        assert any(ref.startswith("backing file") for ref in info.external)
    return info


@pytest.mark.parametrize("data", corpus_cases("formats"))
def test_formats_corpus(data: bytes) -> None:
    check_detect(data, allow_external=False)
    check_detect(data, allow_external=True)


def test_valid_images_are_detected(valid_images: list[bytes]) -> None:
    """The valid seeds are what the mutations start from: each must be detected."""
    for data in valid_images:
        info = check_detect(data, allow_external=True)
        assert info is not None and info.format != "raw"


@fuzz
@given(st.data(), st.booleans())
def test_detect_format(seeds: list[bytes], data: st.DataObject, allow_external: bool) -> None:
    image = data.draw(mutated(seeds, tokens=IMAGE_TOKENS, max_size=4 << 20), label="image")
    check_detect(image, allow_external)


@dataclass(frozen=True)
class Qcow2Tables:
    """A qcow2 v3 image whose L1 table entries point at L2 tables anywhere in the file, many
    at the same one (the table walk that checks a truncated image must stay linear). A spec,
    so that a failing example prints in a few lines."""

    bits: int
    clusters: int
    l1_cluster: int
    l1_size: int
    entries: tuple[int, ...]  # the first L1 entries, in clusters; the rest are `shared`
    shared: int
    filled: int  # the cluster filled with `filler`
    filler: bytes

    def image(self) -> bytes:
        cluster = 1 << self.bits
        header = QCOW2_MAGIC + struct.pack(
            ">IQIIQI", 3, 0, 0, self.bits, self.clusters * cluster, 0
        )
        header += struct.pack(">IQQII", self.l1_size, self.l1_cluster * cluster, cluster, 1, 0)
        header += struct.pack(">QQQQII", 0, 0, 0, 0, 4, 104)
        image = bytearray(self.clusters * cluster)
        image[: len(header)] = header
        entries = [*self.entries, *[self.shared] * (self.l1_size - len(self.entries))]
        table = b"".join(struct.pack(">Q", e * cluster) for e in entries)
        image[self.l1_cluster * cluster : self.l1_cluster * cluster + len(table)] = table
        start = self.filled * cluster
        image[start : start + cluster] = (self.filler * (cluster // len(self.filler)))[
            : len(image) - start
        ]
        return bytes(image)


@st.composite
def _qcow2_tables(draw: st.DrawFn) -> Qcow2Tables:
    bits = draw(st.sampled_from([9, 12, 16]))
    clusters = draw(st.integers(3, min(128, (8 << 20) >> bits)))
    l1_cluster = draw(st.integers(1, clusters - 1))
    room = ((clusters - l1_cluster) << bits) // 8
    l1_size = min(draw(st.sampled_from([1, 2, 64, room]) | st.integers(0, room)), room)
    target = st.integers(0, clusters)
    return Qcow2Tables(
        bits,
        clusters,
        l1_cluster,
        l1_size,
        tuple(draw(st.lists(target, max_size=min(l1_size, 16)))),
        draw(target),
        draw(target),
        draw(st.sampled_from([b"\0", b"\x00\x00\x00\x00\x00\x01\x00\x00", b"\x40" + b"\0" * 7])),
    )


@fuzz
@settings(max_examples=examples(30))
@given(_qcow2_tables(), st.booleans())
def test_qcow2_table_walk_is_bounded(spec: Qcow2Tables, allow_external: bool) -> None:
    check_detect(spec.image(), allow_external)
