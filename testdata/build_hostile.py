#!/usr/bin/env python3
"""Build the hostile-image suite: images made to make a scanner fail, hang, lie or read files of
the host it runs on.

Every case is one image file made by a function here from host tools (qemu-img, mke2fs -d,
debugfs, cryptsetup) and byte patches, and one entry in ``manifest.json`` that says what a scan
of it must end with: the exit codes allowed, whether it is refused with a one-line error (and a
word that error must contain), whether coverage must be incomplete, a word the report's reasons
must contain, and extra scan options. tests/hostile/test_hostile.py scans every case under a
time and memory bound.

Host files a hostile image points at: ``host-secret.raw`` (regular file holding ``MARKER``, a
random value written at build time: it must never appear in any output) and ``host-fifo`` (a
FIFO: a scanner that opens it to read blocks forever, so the time bound catches it) sit next to
the images; absolute references name ``/etc/shadow``. Output ``<cache>/hostile-<key>/``, cached
like the other builders'. Usage: ``python testdata/build_hostile.py [--out DIR] [--force]``;
tests call :func:`build_hostile`.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import os
import secrets
import shutil
import struct
import sys
import tarfile
import tempfile
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import build as base
import build_windows as small
import zstandard

KEY_PREFIX = "hostile-"
MIB = base.MIB
SECTOR = 512
HOST_SECRET = "host-secret.raw"
HOST_FIFO = "host-fifo"


@dataclass(frozen=True)
class Case:
    """One hostile image and what a scan of it must end with."""

    name: str
    file: str
    about: str
    exits: tuple[int, ...]  # the exit codes allowed
    error: str | None = None  # refused: a one-line error containing this
    incomplete: bool = False  # a report, with coverage incomplete
    reason: str | None = None  # a word the report's reasons (volumes, skipped, warnings) hold
    finds: bool = False  # the image's planted secret must be reported (exit 1 or 2)
    args: tuple[str, ...] = ()
    escapes: bool = False  # file names that must come out escaped in every format
    # Issue 20 metadata: places some finding's path must be (checked in every format), and
    # values that must appear in no output.
    places: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()


@dataclass
class Build:
    """What case builders share: the staging directory, the command runner, the values."""

    stage: Path
    run: base.Runner
    work: Path
    marker: str
    password: str
    cases: list[Case] = field(default_factory=list)

    def tree(self, name: str) -> Path:
        """A fresh tree with one planted secret (``etc/app.conf``: ``password = ...``)."""
        root = self.work / name
        shutil.rmtree(root, ignore_errors=True)
        (root / "etc").mkdir(parents=True)
        (root / "etc" / "app.conf").write_text(f"[db]\nuser = app\npassword = {self.password}\n")
        return root

    def ext4(self, image: str, tree: Path, size_mib: int, *extra: str) -> Path:
        """A bare ext4 file system image of ``tree`` (raw, no partition table)."""
        path = self.stage / image
        self.run(
            "mke2fs", "-q", "-F", "-t", "ext4", "-E", "root_owner=0:0", *extra,
            "-d", str(tree), str(path), f"{size_mib}M",
        )  # fmt: skip
        return path


CaseBuilder = Callable[[Build], None]
BUILDERS: list[CaseBuilder] = []


def case(fn: CaseBuilder) -> CaseBuilder:
    BUILDERS.append(fn)
    return fn


# ------------------------------------------------------------------------------------------
# Images that name files of the host
# ------------------------------------------------------------------------------------------


def _qcow2_backed(b: Build, image: str, backing: str) -> None:
    # -u: the backing file is not opened (it need not exist, and host-fifo would block).
    b.run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", backing, image, "64M")


@case
def qcow2_backing(b: Build) -> None:
    for name, backing in (
        ("qcow2-backing-absolute", "/etc/shadow"),
        ("qcow2-backing-relative", HOST_SECRET),
        ("qcow2-backing-fifo", HOST_FIFO),
        (
            "qcow2-backing-json",
            'json:{"file": {"driver": "file", "filename": "' + HOST_SECRET + '"}}',
        ),
    ):
        _qcow2_backed(b, f"{name}.qcow2", backing)
        b.cases.append(
            Case(
                name,
                f"{name}.qcow2",
                f"a qcow2 whose backing file is {backing}",
                (2,),
                error="--allow-external-files",
            )
        )


@case
def qcow2_data_file(b: Build) -> None:
    image = "qcow2-data-file.qcow2"
    b.run(
        "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=external-data.raw",
        image, "64M",
    )  # fmt: skip
    # The data file becomes a FIFO: opening it to read would block for ever.
    (b.stage / "external-data.raw").unlink()
    os.mkfifo(b.stage / "external-data.raw")
    b.cases.append(
        Case(
            "qcow2-data-file",
            image,
            "a qcow2 whose external data file is a FIFO next to it",
            (2,),
            error="--allow-external-files",
        )
    )


@case
def format_confusion(b: Build) -> None:
    # A file named .raw (and one named .img) whose bytes are a qcow2 naming a host file: the
    # format comes from the bytes, so it is a qcow2 with a backing file, and refused.
    _qcow2_backed(b, "confused.raw", HOST_SECRET)
    b.cases.append(
        Case(
            "raw-name-qcow2-bytes",
            "confused.raw",
            "a .raw file that is a qcow2 with a backing file",
            (2,),
            error="--allow-external-files",
        )
    )
    descriptor = (
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\nRW 2048 FLAT "/etc/shadow" 0\n'
    )
    (b.stage / "confused-vmdk.img").write_text(descriptor)
    b.cases.append(
        Case(
            "img-name-vmdk-descriptor",
            "confused-vmdk.img",
            "a .img file that is a vmdk descriptor whose extent is /etc/shadow",
            (2,),
            error="--allow-external-files",
        )
    )


@case
def vmdk_extents(b: Build) -> None:
    for name, extent in (
        ("vmdk-extent-absolute", "/etc/shadow"),
        ("vmdk-extent-relative", HOST_SECRET),
        ("vmdk-extent-dotdot", "../../../../../../etc/passwd"),
        ("vmdk-extent-fifo", HOST_FIFO),
    ):
        (b.stage / f"{name}.vmdk").write_text(
            "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
            f'createType="monolithicFlat"\nRW 2048 FLAT "{extent}" 0\n'
        )
        b.cases.append(
            Case(
                name,
                f"{name}.vmdk",
                f"a vmdk descriptor whose extent is {extent}",
                (2,),
                error="--allow-external-files",
            )
        )


@case
def ova_tricks(b: Build) -> None:
    # An OVA whose disk member is a symlink to a host file, and one whose member names climb
    # out of any directory it might be extracted to.
    ovf = b"<?xml version='1.0'?><Envelope><References/></Envelope>\n"
    disk = b.ext4("ova-disk.raw", b.tree("ova"), 8)
    ova_members: tuple[tuple[str, list[tuple[str, bytes | str | Path]]], ...] = (
        ("ova-symlink-member", [("box.ovf", ovf), ("disk1.vmdk", "/etc/shadow")]),
        ("ova-dotdot-member", [("box.ovf", ovf), ("../../../tmp/imgscan-escape.raw", disk)]),
    )
    for name, members in ova_members:
        with tarfile.open(b.stage / f"{name}.ova", "w", format=tarfile.USTAR_FORMAT) as tar:
            for member, content in members:
                info = tarfile.TarInfo(member)
                info.mtime = base.FIXED_MTIME
                if isinstance(content, str):
                    info.type, info.linkname = tarfile.SYMTYPE, content
                    tar.addfile(info)
                elif isinstance(content, Path):
                    info.size = content.stat().st_size
                    with content.open("rb") as fh:
                        tar.addfile(info, fh)
                else:
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content))
    disk.unlink()
    b.cases.append(
        Case(
            "ova-symlink-member",
            "ova-symlink-member.ova",
            "an OVA whose only disk member is a symlink to /etc/shadow",
            (2,),
            error="no disk",
        )
    )
    b.cases.append(
        Case(
            "ova-dotdot-member",
            "ova-dotdot-member.ova",
            "an OVA whose disk member is named ../../../tmp/imgscan-escape.raw",
            (1, 2),
            finds=True,
        )
    )


# ------------------------------------------------------------------------------------------
# Broken containers
# ------------------------------------------------------------------------------------------


def _qcow2_of(b: Build, name: str) -> Path:
    """A qcow2 (no compression) of an ext4 image with the planted secret and some bulk."""
    tree = b.tree(name)
    (tree / "var").mkdir()
    (tree / "var" / "bulk.txt").write_text("log line of no interest\n" * 200_000)
    raw = b.ext4(f"{name}.ext4", tree, 32)
    image = b.stage / f"{name}.qcow2"
    b.run("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(image))
    raw.unlink()
    return image


def _patch(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(data)


@case
def qcow2_broken(b: Build) -> None:
    truncated = _qcow2_of(b, "qcow2-truncated")
    os.truncate(truncated, truncated.stat().st_size * 2 // 5)
    b.cases.append(
        Case("qcow2-truncated", truncated.name, "a qcow2 cut at 40 % of its length", (2,))
    )

    l1 = _qcow2_of(b, "qcow2-l1-outside")
    _patch(l1, 40, struct.pack(">Q", 1 << 40))  # l1_table_offset: 1 TiB into a 1 MiB file
    b.cases.append(Case("qcow2-l1-outside", l1.name, "L1 table offset past the end", (2,)))

    huge_l1 = _qcow2_of(b, "qcow2-l1-huge")
    _patch(huge_l1, 36, struct.pack(">I", 0x7FFFFFFF))  # l1_size: a 16 GiB L1 table
    b.cases.append(
        Case("qcow2-l1-huge", huge_l1.name, "an L1 table of 2^31 entries (16 GiB)", (2,))
    )

    l2 = _qcow2_of(b, "qcow2-l2-outside")
    with l2.open("r+b") as fh:
        header = fh.read(72)
        cluster_bits = struct.unpack_from(">I", header, 20)[0]
        (l1_offset,) = struct.unpack_from(">Q", header, 40)
        fh.seek(l1_offset)
        l2_offset = struct.unpack(">Q", fh.read(8))[0] & 0x00FFFFFFFFFFFE00
        # Every allocated cluster of the first L2 table points 1 TiB past the end.
        for index in range((1 << cluster_bits) // 8):
            fh.seek(l2_offset + 8 * index)
            entry = struct.unpack(">Q", fh.read(8))[0]
            if entry:
                fh.seek(l2_offset + 8 * index)
                fh.write(struct.pack(">Q", (entry & 0x8000000000000000) | (1 << 40)))
    b.cases.append(Case("qcow2-l2-outside", l2.name, "L2 entries pointing past the end", (2,)))

    huge = _qcow2_of(b, "qcow2-huge-size")
    _patch(huge, 24, struct.pack(">Q", 1 << 62))  # virtual size: 4 EiB
    b.cases.append(Case("qcow2-huge-size", huge.name, "a virtual size of 4 EiB", (0, 1, 2)))

    version = _qcow2_of(b, "qcow2-version-99")
    _patch(version, 4, struct.pack(">I", 99))
    b.cases.append(Case("qcow2-version-99", version.name, "qcow2 version 99", (2,)))


@case
def other_containers_broken(b: Build) -> None:
    source = _qcow2_of(b, "containers-source")
    stream = b.stage / "vmdk-stream-truncated.vmdk"
    b.run(
        "qemu-img", "convert", "-q", "-f", "qcow2", "-O", "vmdk",
        "-o", "subformat=streamOptimized", str(source), str(stream),
    )  # fmt: skip
    os.truncate(stream, stream.stat().st_size // 2)
    b.cases.append(
        Case("vmdk-stream-truncated", stream.name, "a streamOptimized vmdk cut in half", (2,))
    )
    vhd = b.stage / "vhd-bat-outside.vhd"
    b.run("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "vpc", str(source), str(vhd))
    with vhd.open("r+b") as fh:
        fh.seek(512 + 16)  # dynamic header: table offset
        (bat_offset,) = struct.unpack(">Q", fh.read(8))
        fh.seek(512 + 28)
        (entries,) = struct.unpack(">I", fh.read(4))
        fh.seek(bat_offset)
        bat = list(struct.unpack(f">{entries}I", fh.read(4 * entries)))
        # Every allocated block's sector number moved 1 TiB past the end.
        bat = [(1 << 31) if e != 0xFFFFFFFF else e for e in bat]
        fh.seek(bat_offset)
        fh.write(struct.pack(f">{entries}I", *bat))
    b.cases.append(
        Case("vhd-bat-outside", vhd.name, "a dynamic VHD whose blocks lie past the end", (2,))
    )
    source.unlink()


def _converted(b: Build, source: Path, name: str, *options: str) -> Path:
    image = b.stage / name
    b.run("qemu-img", "convert", "-q", "-f", "qcow2", *options, str(source), str(image))
    return image


def _compressed_clusters(path: Path) -> list[tuple[int, int, int]]:
    """(L2 entry's file offset, data offset, data length) of every compressed cluster of a
    qcow2 whose L1 and L2 tables are intact."""
    found = []
    with path.open("rb") as fh:
        header = fh.read(72)
        cluster_bits = struct.unpack_from(">I", header, 20)[0]
        l1_size, l1_offset = struct.unpack_from(">IQ", header, 36)
        bits = 62 - (cluster_bits - 8)
        fh.seek(l1_offset)
        for (l1,) in struct.iter_unpack(">Q", fh.read(8 * l1_size)):
            table = l1 & 0x00FFFFFFFFFFFE00
            if not table:
                continue
            fh.seek(table)
            for index, (l2,) in enumerate(struct.iter_unpack(">Q", fh.read(1 << cluster_bits))):
                if l2 & (1 << 62):
                    offset = l2 & ((1 << bits) - 1)
                    sectors = ((l2 >> bits) & ((1 << (cluster_bits - 8)) - 1)) + 1
                    found.append((table + 8 * index, offset, sectors * 512 - offset % 512))
    return found


@case
def served_containers_broken(b: Build) -> None:
    """Containers the native reader reads through qemu-nbd (compressed qcow2, VDI), broken:
    qemu's drivers meet them, within the same bounds as every other case."""
    source = _qcow2_of(b, "served-source")
    cut = _converted(b, source, "qcow2z-truncated.qcow2", "-O", "qcow2", "-c")
    os.truncate(cut, cut.stat().st_size * 3 // 5)
    b.cases.append(Case("qcow2z-truncated", cut.name, "a zlib-compressed qcow2 cut at 60 %", (2,)))

    for kind, options in (("zlib", ()), ("zstd", ("-o", "compression_type=zstd"))):
        garbage = _converted(
            b, source, f"qcow2-{kind}-garbage.qcow2", "-O", "qcow2", "-c", *options
        )
        for _, offset, length in _compressed_clusters(garbage):
            _patch(garbage, offset, _random_bytes(length))
        about = f"a {kind}-compressed qcow2 whose compressed clusters are random bytes"
        b.cases.append(Case(f"qcow2-{kind}-garbage", garbage.name, about, (2,)))

    # Every compressed cluster the head of a deflate stream of 256 MiB of zeros: far more
    # than a cluster, which is all qemu inflates.
    bomb = _converted(b, source, "qcow2z-inflate-bomb.qcow2", "-O", "qcow2", "-c")
    deflate = zlib.compressobj(9, zlib.DEFLATED, -12)
    zeros = bytes(MIB)
    stream = b"".join(deflate.compress(zeros) for _ in range(256)) + deflate.flush()
    for _, offset, length in _compressed_clusters(bomb):
        _patch(bomb, offset, stream[:length])
    about = "a qcow2 whose compressed clusters each inflate far beyond a cluster"
    b.cases.append(Case("qcow2z-inflate-bomb", bomb.name, about, (0, 1, 2)))

    # The last compressed cluster claims the most sectors its descriptor can: past the end.
    long = _converted(b, source, "qcow2z-length-past-end.qcow2", "-O", "qcow2", "-c")
    clusters = _compressed_clusters(long)
    entry = max(clusters, key=lambda c: c[1])[0]
    with long.open("r+b") as fh:
        fh.seek(entry)
        (l2,) = struct.unpack(">Q", fh.read(8))
        fh.seek(entry)
        fh.write(struct.pack(">Q", l2 | (((1 << 8) - 1) << (62 - 8))))  # 64 KiB clusters
    about = "a qcow2 whose last compressed cluster runs past the end of the file"
    b.cases.append(Case("qcow2z-length-past-end", long.name, about, (0, 1, 2)))

    vdi = _converted(b, source, "vdi-blocks-outside.vdi", "-O", "vdi")
    with vdi.open("r+b") as fh:
        fh.seek(0x154)
        (bmap,) = struct.unpack("<I", fh.read(4))
        fh.seek(0x180)
        (blocks,) = struct.unpack("<I", fh.read(4))
        fh.seek(bmap)
        table = list(struct.unpack(f"<{blocks}I", fh.read(4 * blocks)))
        # Every allocated block moved 1 TiB (in 1 MiB blocks) past the end.
        table = [e if e >= 0xFFFFFFFE else (1 << 20) + i for i, e in enumerate(table)]
        fh.seek(bmap)
        fh.write(struct.pack(f"<{blocks}I", *table))
    about = "a VDI whose blocks lie past the end"
    b.cases.append(Case("vdi-blocks-outside", vdi.name, about, (2,)))

    huge = _converted(b, source, "vdi-huge-header.vdi", "-O", "vdi")
    _patch(huge, 0x170, struct.pack("<Q", 1 << 62))  # disk size: 4 EiB
    _patch(huge, 0x180, struct.pack("<I", 0xFFFFFFFF))  # blocks in image
    about = "a VDI of 4 EiB and 2^32 blocks"
    b.cases.append(Case("vdi-huge-header", huge.name, about, (2,)))

    cut_vdi = _converted(b, source, "vdi-truncated.vdi", "-O", "vdi")
    os.truncate(cut_vdi, cut_vdi.stat().st_size // 2)
    b.cases.append(Case("vdi-truncated", cut_vdi.name, "a VDI cut in half", (2,)))
    source.unlink()


@case
def not_images(b: Build) -> None:
    (b.stage / "empty.img").write_bytes(b"")
    (b.stage / "tiny.img").write_bytes(b"\0" * 100)
    (b.stage / "garbage.img").write_bytes(_random_bytes(16 * MIB))
    for name, about in (
        ("empty.img", "a file of 0 bytes"),
        ("tiny.img", "a file of 100 bytes"),
        ("garbage.img", "16 MiB of random bytes"),
    ):
        b.cases.append(Case(name.removesuffix(".img"), name, about, (2,), error=""))


def _random_bytes(size: int) -> bytes:
    # Seeded: the image (and so the cache key's result) is the same on every build.
    import random

    return random.Random(f"imgscan-hostile-{size}").randbytes(size)


# ------------------------------------------------------------------------------------------
# Partition tables
# ------------------------------------------------------------------------------------------

LINUX_FS = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")


def write_gpt(path: Path, sectors: int, parts: list[tuple[int, int]], entries: int = 128) -> None:
    """A protective MBR and primary and backup GPT on ``path`` (``sectors`` long), with
    ``parts`` as (first LBA, last LBA) of Linux file system partitions, even where they overlap
    or lie past the end: sfdisk and sgdisk refuse to write such tables."""
    table = bytearray(entries * 128)
    for index, (first, last) in enumerate(parts):
        name = f"p{index + 1}".encode("utf-16-le")
        struct.pack_into(
            "<16s16sQQQ72s",
            table,
            index * 128,
            LINUX_FS.bytes_le,
            uuid.UUID(int=index + 1).bytes_le,
            first,
            last,
            0,
            name,
        )
    table_sectors = (len(table) + SECTOR - 1) // SECTOR
    last_lba = sectors - 1
    first_usable, last_usable = 2 + table_sectors, last_lba - 1 - table_sectors

    def header(current: int, backup: int, table_lba: int) -> bytes:
        fields = [
            b"EFI PART", 0x00010000, 92, 0, 0, current, backup, first_usable, last_usable,
            uuid.UUID(int=0x1D15EA5E).bytes_le, table_lba, entries, 128, zlib.crc32(table),
        ]  # fmt: skip
        raw = bytearray(struct.pack("<8sIIIIQQQQ16sQIII", *fields))
        struct.pack_into("<I", raw, 16, zlib.crc32(raw))
        return bytes(raw).ljust(SECTOR, b"\0")

    mbr = bytearray(SECTOR)
    struct.pack_into("<B3sB3sII", mbr, 446, 0, b"\0\2\0", 0xEE, b"\xff\xff\xff", 1,
                     min(sectors - 1, 0xFFFFFFFF))  # fmt: skip
    mbr[510:512] = b"\x55\xaa"
    with path.open("r+b") as fh:
        fh.write(mbr)
        fh.write(header(1, last_lba, 2))
        fh.write(table)
        fh.seek((last_lba - table_sectors) * SECTOR)
        fh.write(table)
        fh.write(header(last_lba, 1, last_lba - table_sectors))


def _disk_with_fs(b: Build, name: str, size_mib: int, fs_at: int) -> Path:
    """A raw disk of ``size_mib`` with an ext4 (the planted secret) at sector ``fs_at``."""
    fs = b.ext4(f"{name}.part", b.tree(name), 8)
    disk = b.stage / f"{name}.raw"
    with disk.open("wb") as out:
        out.truncate(size_mib * MIB)
        out.seek(fs_at * SECTOR)
        out.write(fs.read_bytes())
    fs.unlink()
    return disk


@case
def gpt_tables(b: Build) -> None:
    overlap = _disk_with_fs(b, "gpt-overlap", 40, 2048)
    write_gpt(overlap, 40 * MIB // SECTOR, [(2048, 2048 + 16383), (2048 + 8192, 2048 + 24575)])
    b.cases.append(
        Case("gpt-overlap", overlap.name, "two GPT partitions that overlap", (1, 2), finds=True)
    )
    many = b.stage / "gpt-10000.raw"
    with many.open("wb") as fh:
        fh.truncate(16 * MIB)
    start = 2 + 10_000 * 128 // SECTOR + 8
    write_gpt(many, 16 * MIB // SECTOR, [(start + i, start + i) for i in range(10_000)], 10_000)
    b.cases.append(
        Case("gpt-10000-partitions", many.name, "10,000 one-sector GPT partitions", (0, 2))
    )
    beyond = _disk_with_fs(b, "gpt-beyond", 16, 2048)
    write_gpt(beyond, 16 * MIB // SECTOR, [(2048, 2048 + 16383), (1 << 40, (1 << 40) + 100)])
    b.cases.append(
        Case(
            "gpt-partition-past-end",
            beyond.name,
            "a GPT partition 512 TiB past the end of a 16 MiB disk",
            (2,),
        )
    )


@case
def mbr_ebr_loop(b: Build) -> None:
    disk = _disk_with_fs(b, "mbr-ebr-loop", 16, 4096)
    mbr = bytearray(SECTOR)
    # p1: Linux at 4096; p2: extended at 2048 whose EBR links back to itself.
    struct.pack_into("<B3sB3sII", mbr, 446, 0, b"\0\0\0", 0x83, b"\0\0\0", 4096, 16384)
    struct.pack_into("<B3sB3sII", mbr, 462, 0, b"\0\0\0", 0x05, b"\0\0\0", 2048, 2048)
    mbr[510:512] = b"\x55\xaa"
    ebr = bytearray(SECTOR)
    struct.pack_into("<B3sB3sII", ebr, 446, 0, b"\0\0\0", 0x83, b"\0\0\0", 1, 8)
    struct.pack_into("<B3sB3sII", ebr, 462, 0, b"\0\0\0", 0x05, b"\0\0\0", 0, 2048)  # itself
    ebr[510:512] = b"\x55\xaa"
    _patch(disk, 0, bytes(mbr))
    _patch(disk, 2048 * SECTOR, bytes(ebr))
    b.cases.append(
        Case(
            "mbr-ebr-loop",
            disk.name,
            "an extended partition whose EBR chain links back to itself",
            (1, 2),
            finds=True,
        )
    )


# ------------------------------------------------------------------------------------------
# File systems
# ------------------------------------------------------------------------------------------


def _lvm_crc(data: bytes) -> int:
    """LVM2's checksum: CRC-32 from 0xf597a6cf without the final inversion (zlib's crc32
    inverts on the way in and out)."""
    return zlib.crc32(data, 0xF597A6CF ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def _lvm_id(seed: int) -> str:
    """An LVM object id: 32 characters in LVM's 6-4-4-4-4-4-6 grouping."""
    raw = uuid.UUID(int=seed).hex.upper()[:32]
    groups = (6, 4, 4, 4, 4, 4, 6)
    parts, at = [], 0
    for size in groups:
        parts.append(raw[at : at + size])
        at += size
    return "-".join(parts)


_MDA_AT, _MDA_SIZE = 4096, 1020 * 1024
_PE_START = 2048  # sectors: the first extent at 1 MiB


def _lvm_pv(
    path: Path, size_mib: int, lvs: str, fs: bytes | None, locn: tuple[int, int] | None = None
) -> None:
    """A whole-disk LVM2 physical volume of volume group vg0, written by hand (pvcreate needs
    a block device and refuses metadata like this): label, metadata area and the metadata text
    with `lvs` as its logical_volumes section, checksums right so that LVM itself reads it;
    `fs` is written at the first extent. `locn` overrides where the metadata text is said to
    be (offset in the metadata area, size)."""
    sectors = size_mib * MIB // SECTOR
    text = (
        "vg0 {\n"
        f'id = "{_lvm_id(1)}"\nseqno = 1\nformat = "lvm2"\n'
        'status = ["RESIZEABLE", "READ", "WRITE"]\nflags = []\n'
        "extent_size = 8192\nmax_lv = 0\nmax_pv = 0\nmetadata_copies = 0\n"
        "physical_volumes {\npv0 {\n"
        f'id = "{_lvm_id(2)}"\ndevice = "/dev/sda"\nstatus = ["ALLOCATABLE"]\nflags = []\n'
        f"dev_size = {sectors}\npe_start = {_PE_START}\n"
        f"pe_count = {(sectors - _PE_START) // 8192}\n}}\n}}\n"
        f"logical_volumes {{\n{lvs}}}\n}}\n"
        'contents = "Text Format Volume Group"\nversion = 1\ndescription = ""\n'
        'creation_host = "hostile"\ncreation_time = 1700000000\n'
    ).encode()
    text_at = _MDA_AT + SECTOR
    label = bytearray(SECTOR)
    struct.pack_into("<8sQII8s", label, 0, b"LABELONE", 1, 0, 32, b"LVM2 001")
    struct.pack_into(
        "<32sQQQQQQQQQ", label, 32, _lvm_id(2).replace("-", "").encode(), size_mib * MIB,
        _PE_START * SECTOR, 0, 0, 0, _MDA_AT, _MDA_SIZE, 0, 0,
    )  # fmt: skip
    struct.pack_into("<I", label, 16, _lvm_crc(bytes(label[20:])))
    offset, length = locn if locn is not None else (text_at - _MDA_AT, len(text))
    mda = bytearray(SECTOR)
    struct.pack_into(
        "<I16sIQQQQII", mda, 0, 0, b" LVM2 x[5A%r0N*>", 1, _MDA_AT, _MDA_SIZE,
        offset, length, _lvm_crc(text), 0,
    )  # fmt: skip
    struct.pack_into("<I", mda, 0, _lvm_crc(bytes(mda[4:])))
    with path.open("wb") as fh:
        fh.truncate(size_mib * MIB)
        fh.seek(SECTOR)
        fh.write(label)
        fh.seek(_MDA_AT)
        fh.write(mda)
        fh.seek(text_at)
        fh.write(text)
        if fs is not None:
            fh.seek(_PE_START * SECTOR)
            fh.write(fs)


def _lv(name: str, seed: int, extents: int, target: str, first: int) -> str:
    """An LV of one linear segment of `extents` extents on `target` (a PV or, in a loop, another
    LV) from its extent `first`."""
    return (
        f'{name} {{\nid = "{_lvm_id(seed)}"\nstatus = ["READ", "WRITE", "VISIBLE"]\n'
        "flags = []\nsegment_count = 1\nsegment1 {\nstart_extent = 0\n"
        f'extent_count = {extents}\ntype = "striped"\nstripe_count = 1\n'
        f'stripes = ["{target}", {first}]\n}}\n}}\n'
    )


@case
def lvm_loops(b: Build) -> None:
    fs = b.ext4("lvm-root.part", b.tree("lvm-loops"), 8)
    # A good LV (root, the planted secret) beside LVs built on each other in a circle and an
    # LV built on itself: LVM stacks an LV on another for mirrors and thin pools, so the text
    # format allows it, and a reader resolving the stack naively never ends.
    looped = b.stage / "lvm-lv-loop.raw"
    lvs = (
        _lv("root", 10, 2, "pv0", 0)
        + _lv("ring_a", 11, 1, "ring_b", 0)
        + _lv("ring_b", 12, 1, "ring_a", 0)
        + _lv("itself", 13, 1, "itself", 0)
    )
    _lvm_pv(looped, 24, lvs, fs.read_bytes())
    b.cases.append(
        Case(
            "lvm-lv-loop",
            looped.name,
            "LVM logical volumes stacked on each other in a circle, and one on itself",
            (2,),
            incomplete=True,
            reason="LVM",
        )
    )
    # Metadata said to be four times the size of its circular area, starting near its end:
    # a reader that follows the wrap-around without a bound reads round and round.
    wrap = b.stage / "lvm-metadata-wrap.raw"
    _lvm_pv(
        wrap, 16, _lv("root", 10, 1, "pv0", 0), fs.read_bytes(), (_MDA_SIZE - 64, 4 * _MDA_SIZE)
    )
    fs.unlink()
    b.cases.append(
        Case(
            "lvm-metadata-wrap",
            wrap.name,
            "LVM metadata whose size is four times its circular area, wrapping round it",
            (2,),
            incomplete=True,
            reason="LVM",
        )
    )


@case
def ext4_dir_cycle(b: Build) -> None:
    tree = b.tree("ext4-dir-cycle")
    (tree / "d1" / "d2").mkdir(parents=True)
    (tree / "d1" / "d2" / "f.conf").write_text(f"password = {b.password}\n")
    image = b.ext4("ext4-dir-cycle.ext4", tree, 8)
    # A hard link to a directory inside itself: /d1/d2/up is /d1 (debugfs allows what the
    # kernel never would).
    b.run("debugfs", "-w", "-R", "link /d1 /d1/d2/up", str(image))
    b.cases.append(
        Case(
            "ext4-dir-cycle",
            image.name,
            "a directory hard-linked inside itself (/d1/d2/up is /d1)",
            (2,),
            incomplete=True,
            reason="directory loop",
            finds=True,
        )
    )


@case
def ext4_corrupt_inodes(b: Build) -> None:
    tree = b.tree("ext4-corrupt-inodes")
    for i in range(200):
        (tree / "etc" / f"file{i:03d}.conf").write_text(f"setting_{i} = {i}\n" * 50)
    image = b.ext4("ext4-corrupt-inodes.ext4", tree, 16, "-b", "4096", "-I", "256")
    dump = b.run("dumpe2fs", str(image)).stdout
    line = next(x for x in dump.splitlines() if "Inode table at" in x)
    block = int(line.split("Inode table at", 1)[1].split("-")[0].strip())
    # Inodes 1-16 (the root directory and reserved ones) stay; the next 300 are random bytes.
    _patch(image, block * 4096 + 16 * 256, _random_bytes(300 * 256))
    b.cases.append(
        Case(
            "ext4-corrupt-inodes",
            image.name,
            "an ext4 whose inode table holds random bytes after the first 16 inodes",
            (2,),
            incomplete=True,
        )
    )


@case
def ext4_sparse_1t(b: Build) -> None:
    tree = b.tree("ext4-sparse")
    with (tree / "var-huge.img").open("wb") as fh:
        fh.truncate(1 << 40)
    image = b.ext4("ext4-sparse-1t.ext4", tree, 16, "-b", "4096")
    b.cases.append(
        Case(
            "ext4-sparse-1t",
            image.name,
            "a 1 TiB sparse file",
            (2,),
            incomplete=True,
            reason="size limit",
            finds=True,
        )
    )


@case
def ext4_million_files(b: Build) -> None:
    # The tree lives in memory where the host has /dev/shm: a million file creations on a
    # disk file system cost minutes of system time.
    shm = Path("/dev/shm")
    scratch = Path(tempfile.mkdtemp(prefix="imgscan-million-", dir=shm if shm.is_dir() else None))
    tree = scratch / "tree"
    tree.mkdir()
    count = 1_000_000
    # 100 files a directory: mke2fs -d inserts entries into linear directories, so large
    # directories cost it quadratic time.
    for d in range(count // 100):
        folder = tree / "many" / f"d{d // 100:03d}" / f"e{d % 100:02d}"
        folder.mkdir(parents=True)
        fd = os.open(folder, os.O_RDONLY)
        try:
            for i in range(100):
                os.close(os.open(f"f{i:02d}", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
        finally:
            os.close(fd)
    try:
        (tree / "etc").mkdir()
        (tree / "etc" / "app.conf").write_text(f"password = {b.password}\n")
        inodes = str(count + count // 50)  # the files, their 10,100 directories, some room
        image = b.ext4("ext4-million-files.ext4", tree, 600, "-N", inodes, "-I", "256")
    finally:
        shutil.rmtree(scratch)
    b.cases.append(
        Case(
            "ext4-million-files",
            image.name,
            "a million empty files",
            (1,),
            finds=True,
        )
    )


@case
def ext4_links_and_specials(b: Build) -> None:
    tree = b.tree("ext4-symlinks")
    for name, target in (
        ("shadow", "/etc/shadow"),
        ("environ", "/proc/self/environ"),
        ("host-secret", f"/proc/self/cwd/{HOST_SECRET}"),
        ("climb", f"../../../../../../{HOST_SECRET}"),
        ("loop-a", "loop-b"),
        ("loop-b", "loop-a"),
        ("self-dir", "."),
        ("root-dir", "/"),
    ):
        (tree / name).symlink_to(target)
    image = b.ext4("ext4-symlinks.ext4", tree, 8)
    b.cases.append(
        Case(
            "ext4-symlinks",
            image.name,
            "symlinks to host files, to /, to itself, and in a loop",
            (1,),
            finds=True,
        )
    )
    tree = b.tree("ext4-specials")
    os.mkfifo(tree / "fifo")
    os.mknod(tree / "mem", 0o600 | 0o020000, os.makedev(1, 1))  # char: /dev/mem
    os.mknod(tree / "zero", 0o600 | 0o020000, os.makedev(1, 5))  # char: /dev/zero
    os.mknod(tree / "sda", 0o600 | 0o060000, os.makedev(8, 0))  # block: the host's first disk
    image = b.ext4("ext4-specials.ext4", tree, 8)
    b.cases.append(
        Case(
            "ext4-device-nodes",
            image.name,
            "a FIFO and device nodes (/dev/mem, /dev/zero, sda) inside the image",
            (1,),
            finds=True,
        )
    )


# File names aimed at terminals, JSON, SARIF and HTML viewers. Each holds the planted secret.
HOSTILE_NAMES = (
    b"new\nline.conf",
    b"\x1b[31mred\x1b[0m\x1b]0;title\x07.conf",
    b"<script>window.pwned=1;<!--.conf",  # no "/": a file name cannot hold one
    b'"><img src=x onerror=alert(1)>.conf',
    b"bad-\xff\xfe-utf8.conf",
    b"tab\tand\rreturn.conf",
)


@case
def ext4_hostile_names(b: Build) -> None:
    tree = b.tree("ext4-names")
    fd = os.open(tree, os.O_RDONLY)
    try:
        for name in HOSTILE_NAMES:
            out = os.open(name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
            os.write(out, f"password = {b.password}\n".encode())
            os.close(out)
    finally:
        os.close(fd)
    # A path of over 4,000 bytes: 16 directories of 250 characters and the file.
    fd = os.open(tree, os.O_RDONLY)
    for level in range(16):
        folder = f"{level:02d}" + "x" * 248
        os.mkdir(folder, dir_fd=fd)
        inner = os.open(folder, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    out = os.open("deep.conf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
    os.write(out, f"password = {b.password}\n".encode())
    os.close(out)
    os.close(fd)
    image = b.ext4("ext4-hostile-names.ext4", tree, 8)
    b.cases.append(
        Case(
            "ext4-hostile-names",
            image.name,
            "file names with newlines, ANSI escapes, markup, invalid UTF-8; a 4,000-byte path",
            (1,),
            finds=True,
            escapes=True,
        )
    )


# ------------------------------------------------------------------------------------------
# Content: bombs and monsters
# ------------------------------------------------------------------------------------------


def _zip_of_zeros(path: Path, member: str, size: int) -> None:
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf,
        zf.open(member, "w", force_zip64=True) as out,
    ):
        chunk = b"\0" * MIB
        for _ in range(size // MIB):
            out.write(chunk)


def _tar_zst_bomb(path: Path, member_size: int) -> None:
    """A zstd-compressed tar whose first member is `member_size` bytes of zeros, followed by a
    small member: one 64 MiB frame of zeros repeated (zstd reads across frames), so 64 GiB
    take 2 MiB. A scanner that skips the member still decompresses it to reach the next."""
    zstd = zstandard.ZstdCompressor(level=19)
    frame = zstd.compress(b"\0" * (64 * MIB))
    info = tarfile.TarInfo("zeros.bin")
    info.size = member_size
    tail = tarfile.TarInfo("etc/after-the-bomb.conf")
    tail.size = 0
    with path.open("wb") as out:
        out.write(zstd.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
        for _ in range(member_size // (64 * MIB)):
            out.write(frame)
        end = b"\0" * (-member_size % 512) + tail.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024
        out.write(zstd.compress(end))


@case
def bombs(b: Build) -> None:
    tree = b.tree("bombs")
    _zip_of_zeros(tree / "bomb.zip", "zeros.bin", 4 << 30)
    # 42.zip's shape: 8 zips of 8 zips of 64 MiB of zeros (4 GiB), well under 200x per level.
    inner = b.work / "inner.zip"
    _zip_of_zeros(inner, "zeros.bin", 64 * MIB)
    middle = b.work / "middle.zip"
    with zipfile.ZipFile(middle, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(8):
            zf.write(inner, f"inner{i}.zip")
    with zipfile.ZipFile(tree / "nested.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(8):
            zf.write(middle, f"middle{i}.zip")
    with gzip.open(tree / "zeros.gz", "wb", compresslevel=9) as gz:
        chunk = b"\0" * MIB
        for _ in range(4096):
            gz.write(chunk)
    _tar_zst_bomb(tree / "logs.tar.zst", 64 << 30)
    image = b.ext4("bombs.ext4", tree, 64)
    b.cases.append(
        Case(
            "archive-bombs",
            image.name,
            "a 4 GiB zip bomb, a 42.zip-shaped nested zip, a 4 GiB gzip bomb and a tar.zst"
            " whose 64 GiB member must be skipped without decompressing it",
            (2,),
            incomplete=True,
            reason="decompression bomb",
            finds=True,
        )
    )


@case
def long_line(b: Build) -> None:
    tree = b.tree("long-line")
    with (tree / "one-line.txt").open("wb") as fh:
        chunk = b"A" * MIB
        for _ in range(2048):
            fh.write(chunk)
    image = b.ext4("long-line-2g.ext4", tree, 2200, "-b", "4096")
    shutil.rmtree(tree)
    b.cases.append(
        Case(
            "file-2g-no-newline",
            image.name,
            "a 2 GiB file with no newline, scanned (--max-file-size 3G)",
            (1,),
            finds=True,
            args=("--max-file-size", "3G"),
        )
    )


@case
def luks_without_key(b: Build) -> None:
    disk = b.stage / "luks-no-key.raw"
    with disk.open("wb") as fh:
        fh.truncate(40 * MIB)
    passphrase = b.work / "passphrase"
    passphrase.write_text(secrets.token_hex(16))  # thrown away: nobody has the key
    b.run(
        "cryptsetup", "luksFormat", "--batch-mode", "--type=luks2", "--pbkdf=pbkdf2",
        "--pbkdf-force-iterations=1000", f"--key-file={passphrase}", str(disk),
    )  # fmt: skip
    passphrase.unlink()
    b.cases.append(
        Case(
            "luks-without-key",
            disk.name,
            "a LUKS2 volume and no key for it",
            (2,),
            incomplete=True,
            reason="LUKS",
        )
    )


# ------------------------------------------------------------------------------------------
# Unbounded work per file and per finding (issue 20): dense lines, globs, baselines, locations
# ------------------------------------------------------------------------------------------


@case
def dense_findings(b: Build) -> None:
    # Per-hit work must not grow with the line's length, and findings per file are capped:
    # a one-line .env and an ansible inventory of a few MiB of assignments, and 120,000
    # distinct shape-valid AWS key ids. Each is read whole (coverage complete); the report
    # says the findings were capped.
    tree = b.tree("dense-findings")
    (tree / "srv" / "app").mkdir(parents=True)
    (tree / "srv" / "app" / ".env").write_bytes(b"client_secret=Rb7nQw2Lx9Kp4Zt2\t" * 90_000)
    (tree / "etc" / "ansible").mkdir()
    (tree / "etc" / "ansible" / "hosts").write_bytes(
        b"web1 ansible_become_pass=Vx8kLq2Zp " * 60_000
    )
    keys = " ".join(base.aws_key_id() for _ in range(120_000))
    (tree / "srv" / "keys.txt").write_text(keys + "\n")
    image = b.ext4("dense-findings.ext4", tree, 48)
    shutil.rmtree(tree)
    b.cases.append(
        Case(
            "dense-findings",
            image.name,
            "a 2.7 MiB one-line .env, a 2 MiB one-line ansible inventory and 120,000 AWS key"
            " ids: bounded work per finding, findings capped per file and per rule",
            (1,),
            reason="capped",
            finds=True,
        )
    )


@case
def file_time_budget(b: Build) -> None:
    # 96 MiB of placeholder assignments: every line is a candidate that the validators drop,
    # so no cap applies and the file takes tens of seconds; --file-timeout 1 lists it as
    # skipped (coverage incomplete) and the scan goes on.
    tree = b.tree("file-time-budget")
    (tree / "srv").mkdir()
    with (tree / "srv" / "placeholders.conf").open("wb") as fh:
        block = b"password = changeme\n" * (MIB // 20)
        for _ in range(96):
            fh.write(block)
    image = b.ext4("file-time-budget.ext4", tree, 160)
    shutil.rmtree(tree)
    b.cases.append(
        Case(
            "file-time-budget",
            image.name,
            "a 96 MiB file of candidates the validators drop, with --file-timeout 1",
            (2,),
            incomplete=True,
            reason="time budget",
            finds=True,
            args=("--file-timeout", "1"),
        )
    )


# Segments of the deep directory of glob_backtracking: every one is a place where `**/` can
# start or stop, which is what makes a backtracking matcher take exponential time.
_GLOB_SEGMENTS = ("vendor", "tests", "spec", "vendor", "lib")


@case
def glob_backtracking(b: Build) -> None:
    # A guest path of 3,900 bytes made of short directories, ignore and policy globs with
    # several `**` that do not match it: matching must take time linear in the path.
    tree = b.tree("glob-backtracking")
    fd = os.open(tree, os.O_RDONLY)
    depth = 0
    length = 0
    while length < 3_880:
        folder = _GLOB_SEGMENTS[depth % len(_GLOB_SEGMENTS)]
        os.mkdir(folder, dir_fd=fd)
        inner = os.open(folder, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
        depth += 1
        length += len(folder) + 1
    for index in range(12):
        out = os.open(f"c{index}.conf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
        os.write(out, f"password = {base.rand_password(20)}\n".encode())
        os.close(out)
    os.close(fd)
    image = b.ext4("glob-backtracking.ext4", tree, 16)
    globs = (
        "**/vendor/**/tests/**/*.pem",
        "**/vendor/**/spec/**/vendor/**/*.key",
        "/vendor/**/lib/**/tests/**/spec/**/x*.conf",
        "**/tests/**/**/**/**/vendor/**/c*.crt",
    )
    ignore = "".join(
        f'[[ignore]]\npath = "{glob}"\nreason = "glob {n} of the backtracking case"\n\n'
        for n, glob in enumerate(globs, start=1)
    )
    (b.stage / "glob-backtracking-ignore.toml").write_text(ignore)
    policy = "".join(
        f'[[rule]]\naction = "allow"\npath = ["{glob}", "{glob}/*"]\nreason = "glob {n}"\n\n'
        for n, glob in enumerate(globs, start=1)
    )
    (b.stage / "glob-backtracking-policy.toml").write_text(policy)
    b.cases.append(
        Case(
            "glob-backtracking",
            image.name,
            f"a {length}-byte guest path of {depth} short directories, ignore and policy globs"
            " with several ** that backtrack in a regex",
            (1,),
            finds=True,
            args=(
                "--ignore",
                "{dir}/glob-backtracking-ignore.toml",
                "--policy",
                "{dir}/glob-backtracking-policy.toml",
            ),
        )
    )


@case
def baseline_bounds(b: Build) -> None:
    # A baseline of 2,200,000 fingerprints (about 390 MB): loaded as a whole it needs over a
    # GiB; only its fingerprints are kept. And one nested 100,000 deep: a one-line error.
    tree = b.tree("baseline-bounds")
    image = b.ext4("baseline-bounds.ext4", tree, 8)
    shutil.rmtree(tree)
    with (b.stage / "huge-baseline.json").open("w") as fh:
        fh.write('{"schema": "imgscan.baseline/v1", "tool": {"name": "imgscan"},\n "findings": [')
        for index in range(2_200_000):
            fp = secrets.token_hex(16) if index % 1000 else f"not-a-version-{index}"
            path = f"/srv/app/releases/{index:08d}/config/settings/production/database.yml"
            fh.write(
                f'{"," if index else ""}\n  {{"fingerprint": "fp1:{fp}",'
                f' "rule": "generic-password-assignment", "path": "{path}"}}'
            )
        fh.write('\n ],\n "image": "disk.qcow2"}\n')
    depth = 100_000
    (b.stage / "deep-baseline.json").write_text(
        '{"schema": "imgscan.baseline/v1", "findings": ' + "[" * depth + "]" * depth + "}"
    )
    b.cases.append(
        Case(
            "baseline-huge",
            image.name,
            "a 390 MB baseline of 2,200,000 fingerprints",
            (1,),
            finds=True,
            args=("--baseline", "{dir}/huge-baseline.json"),
        )
    )
    b.cases.append(
        Case(
            "baseline-deep",
            image.name,
            "a baseline whose findings are arrays nested 100,000 deep",
            (2,),
            error="deep-baseline.json",
            args=("--baseline", "{dir}/deep-baseline.json"),
        )
    )


@case
def credential_locations(b: Build) -> None:
    # Live credentials in directories named like test data: a path segment is no evidence of a
    # fixture, so with --fail-on high they still fail the gate (none of them is demoted to info).
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    tree = b.work / "credential-locations"
    shutil.rmtree(tree, ignore_errors=True)
    aws = tree / "home" / "bob" / ".aws" / "spec"
    aws.mkdir(parents=True)
    (aws / "credentials").write_text(
        "[default]\n"
        f"aws_access_key_id = {base.aws_key_id()}\n"
        f"aws_secret_access_key = {base.rand_chars(base.B64, 40)}\n"
    )
    ssh = tree / "root" / "fixtures" / ".ssh"
    ssh.mkdir(parents=True)
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    (ssh / "id_ecdsa").write_bytes(key)
    image = b.ext4("credential-locations.ext4", tree, 8)
    shutil.rmtree(tree)
    b.cases.append(
        Case(
            "credential-locations",
            image.name,
            "an AWS key pair in /home/bob/.aws/spec/credentials and an unencrypted SSH key in"
            " /root/fixtures/.ssh/id_ecdsa, gated with --fail-on high",
            (1,),
            args=("--fail-on", "high"),
        )
    )


# ------------------------------------------------------------------------------------------
# What a copy carries besides the live tree (issue 20, round 2): unreplayed journals, qcow2
# internal snapshots, names, link targets and extended attributes
# ------------------------------------------------------------------------------------------


# The planted file of `Build.tree` as the image's blocks hold it once the journal is dirty:
# the same length as the real one, with a value every rule drops.
def _stale_conf(password: str) -> str:
    return f"[db]\nuser = app\npassword = {'x' * len(password)}\n"


def _dirty_journal(b: Build, name: str, fstype: str, *, commit: bool = True) -> Path:
    """An ext3/ext4 image whose /etc/app.conf holds a placeholder in place while the journal
    holds a committed transaction with the real content of its block (`debugfs -w`: jo, jw,
    jc): the superblock says needs_recovery, and the guest's kernel replays it at mount.
    Without `commit`, only the needs_recovery flag is set and the log stays empty."""
    tree = b.tree(name)
    real = (tree / "etc" / "app.conf").read_text()
    (tree / "etc" / "app.conf").write_text(_stale_conf(b.password))
    path = b.stage / f"{name}.{fstype}"
    b.run(
        "mke2fs", "-q", "-F", "-t", fstype, "-b", "1024", "-E", "root_owner=0:0",
        "-d", str(tree), str(path), "16M",
    )  # fmt: skip
    shutil.rmtree(tree)
    if not commit:
        b.run("debugfs", "-w", "-R", "feature needs_recovery", str(path))
        return path
    block = b.run("debugfs", "-R", "bmap /etc/app.conf 0", str(path)).stdout.strip()
    content = b.work / f"{name}.block"
    content.write_bytes(real.encode().ljust(1024, b"\0"))
    b.run("debugfs", "-w", "-f", "-", str(path), stdin=f"jo\njw -b {block} {content}\njc\n")
    content.unlink()
    return path


@case
def dirty_journal(b: Build) -> None:
    # The secret is only in the journal: a reader that reads blocks in place finds a
    # placeholder. libguestfs replays the journal in its overlay (exit 1, the secret found);
    # the native reader hands such a volume to it (auto) or says it did not read it (native).
    for fstype in ("ext4", "ext3"):
        name = f"{fstype}-dirty-journal"
        image = _dirty_journal(b, name, fstype)
        about = f"an {fstype} whose /etc/app.conf has its secret only in an unreplayed journal"
        for reader in ("auto", "guestfs"):
            b.cases.append(
                Case(
                    name if reader == "auto" else f"{name}-{reader}",
                    image.name,
                    about + ("" if reader == "auto" else f" ({reader} reader)"),
                    (1,),
                    finds=True,
                    args=("--reader", reader),
                )
            )
        b.cases.append(
            Case(
                f"{name}-native",
                image.name,
                about + " (native reader: not read, said so)",
                (2,),
                incomplete=True,
                reason="needs_recovery",
                args=("--reader", "native"),
            )
        )
    # needs_recovery with an empty log (a file system copied while mounted): nothing to
    # replay, so the native reader reads it, coverage complete.
    image = _dirty_journal(b, "ext4-recover-empty-log", "ext4", commit=False)
    b.cases.append(
        Case(
            "ext4-recover-empty-log",
            image.name,
            "an ext4 that says needs_recovery with an empty journal (native reader)",
            (0,),
            args=("--reader", "native"),
        )
    )


def _xfs_log_head_flags(image: Path) -> int:
    """The byte offset, in an XFS image, of the flags of the first operation of its log's
    newest record (the unmount record a clean unmount writes last)."""
    with image.open("rb") as fh:
        sb = fh.read(512)
        (blocksize,) = struct.unpack_from(">I", sb, 4)
        (logstart,) = struct.unpack_from(">Q", sb, 48)
        (agblocks,) = struct.unpack_from(">I", sb, 84)
        (logblocks,) = struct.unpack_from(">I", sb, 96)
        agblklog = sb[124]
        start = ((logstart >> agblklog) * agblocks + (logstart & ((1 << agblklog) - 1))) * blocksize
        fh.seek(start)
        log = fh.read(logblocks * blocksize)
    heads: list[tuple[int, int]] = [
        (int(struct.unpack_from(">Q", log, at + 16)[0]), at)
        for at in range(0, len(log), 512)
        if log[at : at + 4] == b"\xfe\xed\xba\xbe"
    ]
    _, head = max(heads)
    return int(start + head + 512 + 9)  # one header block, then tid (4), len (4), clientid (1)


@case
def dirty_xfs_and_ntfs(b: Build) -> None:
    # XFS and NTFS logs: a volume not cleanly unmounted may have changes only its log holds.
    # XFS: the newest log record is not the unmount record (its flags rewritten as a commit):
    # the native reader does not read it in place and hands it to libguestfs, whose kernel
    # replays the log at mount (this log, rewritten by hand, makes the mount fail: not read).
    tree = b.tree("xfs-dirty-log")
    proto = b.work / "xfs.proto"
    proto.write_text(
        f"/dummy\n0 0\nd--755 0 0\netc d--755 0 0\napp.conf ---644 0 0 {tree}/etc/app.conf\n$\n$\n"
    )
    image = b.stage / "xfs-dirty-log.xfs"
    # mkfs.xfs refuses file systems under 300 MB unless run as fstests runs it.
    b.run(
        "env", "TEST_DIR=/tmp", "TEST_DEV=1", "QA_CHECK_FS=xfs", "mkfs.xfs", "-q", "-f",
        "-p", str(proto), "-d", f"file,name={image},size=300m",
    )  # fmt: skip
    clean = b.stage / "xfs-clean.xfs"
    shutil.copyfile(image, clean)
    flags = _xfs_log_head_flags(image)
    with image.open("r+b") as fh:
        fh.seek(flags)
        value = fh.read(1)[0]
        fh.seek(flags)
        fh.write(bytes([(value & ~0x20) | 0x02]))  # XLOG_UNMOUNT_TRANS off, a commit
    shutil.rmtree(tree)
    proto.unlink()
    b.cases.append(
        Case("xfs-clean-native", clean.name, "a cleanly unmounted XFS (native reader)", (1,),
             finds=True, args=("--reader", "native"))
    )  # fmt: skip
    for reader, reason in (("native", "XFS log"), ("auto", "xfs"), ("guestfs", "xfs")):
        b.cases.append(
            Case(
                f"xfs-dirty-log-{reader}",
                image.name,
                f"an XFS whose log's newest record is no unmount record ({reader} reader)",
                (2,),
                incomplete=True,
                reason=reason,
                args=("--reader", reader),
            )
        )
    # NTFS: the dirty flag of $VOLUME_INFORMATION, which Windows clears on a clean shutdown;
    # no reader here replays $LogFile (ntfs-3g does not), so no reader may call it read.
    from imgscan.image.fslogs import ntfs_dirty_flag_offset

    tree = b.tree("ntfs-dirty")
    image = b.stage / "ntfs-dirty.ntfs"
    image.write_bytes(b"")
    os.truncate(image, 32 << 20)
    b.run("mkntfs", "-q", "-F", "-f", str(image))
    b.run("ntfscp", "-q", str(image), str(tree / "etc" / "app.conf"), "app.conf")
    shutil.rmtree(tree)
    with image.open("r+b") as fh:

        def read(offset: int, size: int) -> bytes:
            fh.seek(offset)
            return fh.read(size)

        where = ntfs_dirty_flag_offset(read)
        if where is None:
            raise base.BuildError("mkntfs made a $Volume record imgscan cannot place")
        (value,) = struct.unpack("<H", read(where, 2))
        fh.seek(where)
        fh.write(struct.pack("<H", value | 0x0001))
    for reader in ("auto", "native", "guestfs"):
        b.cases.append(
            Case(
                f"ntfs-dirty-{reader}",
                image.name,
                f"an NTFS marked dirty, holding a secret ({reader} reader)",
                (2,),
                incomplete=True,
                reason="marked dirty",
                args=("--reader", reader),
            )
        )


def _snapshotted(b: Build, name: str, snapshots: tuple[str, ...]) -> Path:
    """A qcow2 of an ext4 holding the planted secret, with internal snapshots taken, after
    which the secret's block is overwritten in the active layer (qemu-io)."""
    tree = b.tree(name)
    raw = b.ext4(f"{name}.ext4", tree, 8, "-b", "1024")
    shutil.rmtree(tree)
    block = int(b.run("debugfs", "-R", "bmap /etc/app.conf 0", str(raw)).stdout.strip())
    image = b.stage / f"{name}.qcow2"
    b.run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(image))
    raw.unlink()
    for snapshot in snapshots:
        b.run("qemu-img", "snapshot", "-c", snapshot, str(image))
    b.run(
        "qemu-io", "-f", "qcow2", "-c", f"write -P 0x23 {block * 1024} 512", str(image)
    )  # fmt: skip
    return image


@case
def qcow2_snapshots(b: Build) -> None:
    # The active layer holds no secret; the snapshots hold the disk as it was, secret and all.
    # Neither reader reads internal snapshots: each is listed as not read, by name.
    for name, snapshots, word in (
        ("qcow2-internal-snapshot", ("pre",), "'pre'"),
        ("qcow2-internal-snapshots-named", ("before upgrade", "nightly-2026"), "before upgrade"),
    ):
        image = _snapshotted(b, name, snapshots)
        for reader in ("auto", "native", "guestfs"):
            b.cases.append(
                Case(
                    name if reader == "auto" else f"{name}-{reader}",
                    image.name,
                    f"a qcow2 with internal snapshots {', '.join(snapshots)} holding a secret"
                    " overwritten in the active layer"
                    + ("" if reader == "auto" else f" ({reader} reader)"),
                    (2,),
                    incomplete=True,
                    reason=word,
                    args=("--reader", reader),
                )
            )


@case
def metadata_secrets(b: Build) -> None:
    # Secrets outside file contents: a user.* attribute on a file, a trusted.* attribute on a
    # directory, a symbolic link whose target is a database URL with its password, a file and
    # a directory whose names are credentials. Each is found at <path>#<where>; the secret in
    # a name never appears in any report (an access key ID, an identifier, is shown whole).
    tree = b.tree("ext4-metadata")
    name_key = base.aws_key_id()
    dir_token = base.github_token()
    (tree / "srv" / "drop" / f"token={dir_token}").mkdir(parents=True)
    (tree / "srv" / f"aws_access_key_id={name_key}").write_text("\n")
    url = f"postgresql://app:{base.rand_password(16)}@db.internal:5432/prod"
    (tree / "srv" / "db-link").symlink_to(url)
    image = b.ext4("ext4-metadata.ext4", tree, 8)
    shutil.rmtree(tree)
    script = (
        f"ea_set /etc/app.conf user.deploy aws_access_key_id={base.aws_key_id()}\n"
        f"ea_set /srv trusted.ci {base.github_token()}\n"
    )
    b.run("debugfs", "-w", "-f", "-", str(image), stdin=script)
    for reader in ("auto", "native", "guestfs"):
        b.cases.append(
            Case(
                "ext4-metadata" if reader == "auto" else f"ext4-metadata-{reader}",
                image.name,
                "secrets in a user.* and a trusted.* attribute, a symlink target, a file name"
                " and a directory name" + ("" if reader == "auto" else f" ({reader} reader)"),
                (1,),
                finds=True,
                args=("--reader", reader),
                places=(
                    "/etc/app.conf#xattr:user.deploy",
                    "/srv#xattr:trusted.ci",
                    "/srv/db-link#symlink-target",
                    # An access key ID is an identifier (shown whole, as AWS documents it);
                    # the token in the directory's name is a secret, shown by its preview.
                    f"/srv/aws_access_key_id={name_key}#name",
                    "/srv/drop/token=ghp_…(40)#name",
                ),
                hidden=(dir_token,),
            )
        )


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of VHDX headers."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def vhdx_with_log(path: Path, log_guid: uuid.UUID, *, entry: bool) -> None:
    """Patch the VHDX qemu-img made at `path`: both headers name a log (LogGuid set,
    checksums redone), and with `entry` the log starts with an entry header of that GUID,
    as a VHDX copied while its writer had log entries not yet applied holds."""
    data = bytearray(path.read_bytes())
    for at in (64 << 10, 128 << 10):
        data[at + 48 : at + 64] = log_guid.bytes_le
        data[at + 4 : at + 8] = bytes(4)
        struct.pack_into("<I", data, at + 4, _crc32c(bytes(data[at : at + 4096])))
    if entry:
        (offset,) = struct.unpack_from("<Q", data, (64 << 10) + 72)
        header = b"loge" + bytes(4) + struct.pack("<IIQII", 4096, 0, 1, 0, 0) + log_guid.bytes_le
        data[offset : offset + len(header)] = header
    path.write_bytes(bytes(data))


@case
def vhdx_log(b: Build) -> None:
    # A VHDX whose log holds entries is what its writer left before applying them: qemu
    # replays it only when it may write the image, libvhdi not at all. Refused, whatever the
    # reader. A log GUID with no entry of it is an empty log: read as usual.
    tree = b.tree("vhdx-log")
    raw = b.ext4("vhdx-log.ext4", tree, 8)
    shutil.rmtree(tree)
    for name, entry in (("vhdx-log-pending", True), ("vhdx-log-empty", False)):
        image = b.stage / f"{name}.vhdx"
        b.run("qemu-img", "convert", "-f", "raw", "-O", "vhdx", str(raw), str(image))
        vhdx_with_log(image, uuid.UUID(int=0x5EED + entry), entry=entry)
        for reader in ("auto", "native", "guestfs"):
            label = "" if reader == "auto" else f" ({reader} reader)"
            b.cases.append(
                Case(
                    name if reader == "auto" else f"{name}-{reader}",
                    image.name,
                    (
                        "a VHDX whose log holds an entry not yet replayed"
                        if entry
                        else "a VHDX whose header names a log that holds no entry"
                    )
                    + label,
                    (2,) if entry else (1,),
                    error="log holds writes" if entry else None,
                    finds=not entry,
                    args=("--reader", reader),
                )
            )
    raw.unlink()


# ------------------------------------------------------------------------------------------
# Images that name other files, round 2 (issue 17): delta vmdks, differencing VHD, VHDX and
# VDI, and a monolithicSparse vmdk whose descriptor names a neighbour extent
# ------------------------------------------------------------------------------------------

# Where each case's reference points: a host file by absolute path, one up the tree, and an
# image beside the hostile one whose content must not be reported as the hostile image's.
PARENT_VARIANTS = (
    ("absolute", "/etc/shadow"),
    ("dotdot", "../../../../../../etc/passwd"),
    ("neighbour", None),  # the tenant image of the format, beside the hostile one
)


def _vhd_checksum(data: bytes | bytearray, at: int) -> bytes:
    """The VHD checksum of a footer or dynamic header: the one's complement of the sum of
    its bytes, the checksum field (4 bytes at `at`) counted as zero."""
    total = sum(data[:at]) + sum(data[at + 4 :])
    return struct.pack(">I", ~total & 0xFFFFFFFF)


def differencing_vhd(path: Path, parent: str, parent_id: bytes = bytes(16)) -> None:
    """Rewrite the empty dynamic VHD qemu-img made at `path` (footer, dynamic header, one
    sector of BAT, footer) as a differencing VHD (disk type 4) whose parent is `parent`: the
    parent's unicode name in the dynamic header and a relative (W2ru) and an absolute (W2ku)
    parent locator, both `parent` in UTF-16LE, in a sector of their own before the BAT."""
    data = path.read_bytes()
    footer = bytearray(data[:512])
    header = bytearray(data[512:1536])
    (bat_entries,) = struct.unpack_from(">I", header, 28)
    bat_bytes = (bat_entries * 4 + 511) // 512 * 512
    footer[60:64] = struct.pack(">I", 4)
    footer[64:68] = _vhd_checksum(footer, 64)
    locator = parent.encode("utf-16-le")[:512]
    header[16:24] = struct.pack(">Q", 2048)  # the BAT moves one sector down
    header[40:56] = parent_id
    header[64:576] = parent.encode("utf-16-be")[:510].ljust(512, b"\0")
    for index, code in enumerate((b"W2ru", b"W2ku")):
        entry = code + struct.pack(">IIIQ", 512, len(locator), 0, 1536)
        header[576 + 24 * index : 600 + 24 * index] = entry
    header[36:40] = _vhd_checksum(header, 36)
    bat = b"\xff" * bat_bytes  # empty: every block comes from the parent
    path.write_bytes(
        bytes(footer) + bytes(header) + locator.ljust(512, b"\0") + bat + bytes(footer)
    )


_VHDX_PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
_VHDX_FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
_VHDX_LOCATOR_TYPE = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")


def differencing_vhdx(path: Path, parent: str, *, flag: bool = True, locator: bool = True) -> None:
    """Patch the VHDX qemu-img made at `path` into a differencing VHDX: the has-parent flag of
    its file parameters (`flag`) and a parent locator metadata item naming `parent` as its
    relative path (`locator`), in every metadata table its region tables locate."""
    data = bytearray(path.read_bytes())
    for table_at in (192 << 10, 256 << 10):
        (count,) = struct.unpack_from("<I", data, table_at + 8)
        for index in range(count):
            entry = table_at + 16 + 32 * index
            if uuid.UUID(bytes_le=bytes(data[entry : entry + 16])) != uuid.UUID(
                "8B7CA206-4790-4B9A-B8FE-575F050F886E"
            ):
                continue
            region, _length = struct.unpack_from("<QI", data, entry + 16)
            (items,) = struct.unpack_from("<H", data, region + 10)
            end = 64 << 10  # items start at 64 KiB into the region; the new one goes last
            for item in range(items):
                row = region + 32 + 32 * item
                kind = uuid.UUID(bytes_le=bytes(data[row : row + 16]))
                at, length = struct.unpack_from("<II", data, row + 16)
                end = max(end, at + length)
                if kind == _VHDX_FILE_PARAMETERS and flag:
                    (flags,) = struct.unpack_from("<I", data, region + at + 4)
                    struct.pack_into("<I", data, region + at + 4, flags | 2)
                if kind == _VHDX_PARENT_LOCATOR:
                    locator = False  # already patched through the other region table
            if not locator:
                continue
            keys = [
                ("parent_linkage", "{" + str(uuid.UUID(int=1)) + "}"),
                ("relative_path", parent),
            ]
            strings = b""
            rows = b""
            base_at = 20 + 12 * len(keys)
            for key, value in keys:
                k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
                rows += struct.pack(
                    "<IIHH", base_at + len(strings), base_at + len(strings) + len(k), len(k), len(v)
                )
                strings += k + v
            item_bytes = (
                _VHDX_LOCATOR_TYPE.bytes_le + struct.pack("<HH", 0, len(keys)) + rows + strings
            )
            at = (end + 7) // 8 * 8
            data[region + at : region + at + len(item_bytes)] = item_bytes
            row = region + 32 + 32 * items
            data[row : row + 32] = _VHDX_PARENT_LOCATOR.bytes_le + struct.pack(
                "<IIII", at, len(item_bytes), 0b110, 0
            )
            struct.pack_into("<H", data, region + 10, items + 1)
    path.write_bytes(bytes(data))


def differencing_vdi(path: Path, parent: uuid.UUID) -> None:
    """Patch the VDI qemu-img made at `path` into a differencing image (type 4) of `parent`."""
    _patch(path, 0x4C, struct.pack("<I", 4))
    _patch(path, 0x1A8, parent.bytes_le)


def _rewrite_vmdk_descriptor(path: Path, edit: Callable[[str], str]) -> None:
    """Apply `edit` to the embedded descriptor of the sparse vmdk at `path` (the descriptor
    area keeps its size; the rest stays NUL)."""
    with path.open("r+b") as fh:
        head = fh.read(512)
        offset, size = struct.unpack_from("<QQ", head, 28)
        fh.seek(offset * 512)
        text = edit(fh.read(size * 512).split(b"\0", 1)[0].decode())
        fh.seek(offset * 512)
        fh.write(text.encode().ljust(size * 512, b"\0"))


def sparse_vmdk_naming(path: Path, extent: str) -> None:
    """Make the embedded descriptor of the monolithicSparse vmdk at `path` name `extent` as
    its only extent."""
    _rewrite_vmdk_descriptor(path, lambda text: text.replace(f'"{path.name}"', f'"{extent}"'))


def delta_vmdk_naming(path: Path, parent: str) -> None:
    """Make the delta vmdk at `path` (made by qemu-img create -b) name `parent` as its parent
    file, as a hand-edited or hostile descriptor would (qemu-img opens the parent it is
    given, so it cannot write a host file's name itself)."""

    def edit(text: str) -> str:
        lines = text.split("\n")
        return "\n".join(
            f'parentFileNameHint="{parent}"' if line.startswith("parentFileNameHint") else line
            for line in lines
        )

    _rewrite_vmdk_descriptor(path, edit)


def _tenant(b: Build, name: str, fmt: str, *options: str) -> Path:
    """A neighbour image of format `fmt` (qemu-img's name) holding the planted secret."""
    raw = b.ext4(f"{name}.ext4", b.tree(name), 8)
    image = b.stage / name
    b.run("qemu-img", "convert", "-q", "-f", "raw", "-O", fmt, *options, str(raw), str(image))
    raw.unlink()
    return image


def _allowed(b: Build, name: str, file: str, about: str, reader: str) -> None:
    """A case that names another file and, with --allow-external-files, reads it: the tenant's
    secret is reported (exit 1)."""
    b.cases.append(
        Case(
            name,
            file,
            f"{about}, with --allow-external-files ({reader})",
            (1,),
            finds=True,
            args=("--allow-external-files", "--reader", reader),
        )
    )


def _refused(b: Build, name: str, file: str, about: str) -> None:
    """A case refused before any reader opens it, once per reader."""
    for reader in ("auto", "native", "guestfs"):
        b.cases.append(
            Case(
                f"{name}-{reader}" if reader != "auto" else name,
                file,
                about + ("" if reader == "auto" else f" ({reader} reader)"),
                (2,),
                error="--allow-external-files",
                args=() if reader == "auto" else ("--reader", reader),
            )
        )


@case
def vmdk_delta(b: Build) -> None:
    tenant = _tenant(b, "tenant.vmdk", "vmdk")
    for variant, parent in PARENT_VARIANTS:
        name = f"vmdk-delta-{variant}"
        target = parent or tenant.name
        b.run(
            "qemu-img", "create", "-q", "-f", "vmdk", "-F", "vmdk", "-b", tenant.name,
            f"{name}.vmdk",
        )  # fmt: skip
        delta_vmdk_naming(b.stage / f"{name}.vmdk", target)
        _refused(b, name, f"{name}.vmdk", f"a delta vmdk whose parent is {target}")
    # The same as a descriptor file: its own extent is allowed, its parent hint is not.
    (b.stage / "vmdk-desc-delta-flat.vmdk").write_bytes(bytes(8 * MIB))
    (b.stage / "vmdk-desc-delta.vmdk").write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=12345678\n"
        f'createType="monolithicFlat"\nparentFileNameHint="{tenant.name}"\n'
        'RW 16384 FLAT "vmdk-desc-delta-flat.vmdk" 0\n'
    )
    _refused(b, "vmdk-desc-delta", "vmdk-desc-delta.vmdk", "a descriptor with a parent hint")
    # Allowed, the delta reads its parent: libguestfs reports the tenant's secret.
    _allowed(
        b,
        "vmdk-delta-allowed",
        "vmdk-delta-neighbour.vmdk",
        "a delta vmdk of the tenant image",
        "guestfs",
    )


@case
def vmdk_sparse_neighbour_extent(b: Build) -> None:
    clean = _tenant(b, "clean.vmdk", "vmdk")
    for variant, extent in PARENT_VARIANTS:
        name = f"vmdk-sparse-extent-{variant}"
        image = b.stage / f"{name}.vmdk"
        b.run("qemu-img", "create", "-q", "-f", "vmdk", str(image), "8M")
        sparse_vmdk_naming(image, extent or clean.name)
        _refused(
            b, name, image.name, f"a monolithicSparse vmdk whose extent is {extent or clean.name}"
        )


@case
def vhd_differencing(b: Build) -> None:
    tenant = _tenant(b, "tenant.vhd", "vpc")
    with tenant.open("rb") as fh:
        tenant_id = fh.read(512)[68:84]
    for variant, parent in PARENT_VARIANTS:
        name = f"vhd-differencing-{variant}"
        image = b.stage / f"{name}.vhd"
        b.run("qemu-img", "create", "-q", "-f", "vpc", str(image), "8M")
        differencing_vhd(image, parent or tenant.name, tenant_id)
        _refused(
            b,
            name,
            image.name,
            f"an empty differencing VHD whose parent is {parent or tenant.name}",
        )
    _allowed(
        b,
        "vhd-differencing-allowed",
        "vhd-differencing-neighbour.vhd",
        "a differencing VHD of the tenant image",
        "native",
    )


@case
def vhdx_differencing(b: Build) -> None:
    _tenant(b, "tenant.vhdx", "vhdx")
    for variant, parent in PARENT_VARIANTS:
        name = f"vhdx-differencing-{variant}"
        image = b.stage / f"{name}.vhdx"
        b.run("qemu-img", "create", "-q", "-f", "vhdx", str(image), "8M")
        differencing_vhdx(image, parent or "tenant.vhdx")
        _refused(
            b, name, image.name, f"a differencing VHDX whose parent is {parent or 'tenant.vhdx'}"
        )
    for name, flag, locator in (
        ("vhdx-parent-flag-only", True, False),
        ("vhdx-parent-locator-only", False, True),
    ):
        image = b.stage / f"{name}.vhdx"
        b.run("qemu-img", "create", "-q", "-f", "vhdx", str(image), "8M")
        differencing_vhdx(image, HOST_SECRET, flag=flag, locator=locator)
        _refused(
            b,
            name,
            image.name,
            "a VHDX with " + ("only the has-parent flag" if flag else "only a parent locator"),
        )


@case
def vdi_differencing(b: Build) -> None:
    image = b.stage / "vdi-differencing.vdi"
    b.run("qemu-img", "create", "-q", "-f", "vdi", str(image), "8M")
    differencing_vdi(image, uuid.UUID(int=0x1234))
    _refused(b, "vdi-differencing", image.name, "a differencing VDI (parent by UUID)")


# ------------------------------------------------------------------------------------------
# Round 2 (issue 17): data outside every partition, and partition tables that disagree
# ------------------------------------------------------------------------------------------


def _partitioned(b: Build, name: str, label: str, parts: str) -> Path:
    """A 96 MiB disk whose partition table (`label`: gpt or dos) sfdisk writes from `parts`
    (its script lines); every partition holds a clean ext4 (no secret)."""
    disk = b.stage / f"{name}.raw"
    with disk.open("wb") as fh:
        fh.truncate(96 * MIB)
    b.run("sfdisk", "-q", str(disk), stdin=f"label: {label}\n{parts}")
    table = b.run("sfdisk", "--json", str(disk)).stdout
    clean = b.ext4(f"{name}.clean", _tree_without_conf(b, f"{name}-clean"), 8)
    for part in json.loads(table)["partitiontable"]["partitions"]:
        if part["type"] not in ("5", "f", "85"):  # an extended partition holds the EBRs
            _patch(disk, part["start"] * SECTOR, clean.read_bytes())
    clean.unlink()
    return disk


def _secret_fs_at(b: Build, disk: Path, name: str, offset: int) -> None:
    """An ext4 holding the planted secret, written at byte `offset` of `disk`."""
    fs = b.ext4(f"{name}.hidden", b.tree(f"{name}-hidden"), 8)
    _patch(disk, offset, fs.read_bytes())
    fs.unlink()


def _each_reader(
    b: Build,
    name: str,
    file: str,
    about: str,
    reason: str,
    exits: tuple[int, ...],
    guestfs: bool = True,
) -> None:
    """The case once per reader (the libguestfs one only where `guestfs`: an appliance start
    costs the suite ~30 s)."""
    for reader in ("auto", "native", "guestfs")[: 3 if guestfs else 2]:
        b.cases.append(
            Case(
                name if reader == "auto" else f"{name}-{reader}",
                file,
                f"{about} ({reader} reader)",
                exits,
                incomplete=2 in exits and exits != (1,),
                reason=reason if exits == (2,) else None,
                args=("--reader", reader),
            )
        )


@case
def data_outside_partitions(b: Build) -> None:
    one = "start=2048, size=65536, type=linux\n"  # one 32 MiB partition at 1 MiB
    for name, label, offset, about in (
        (
            "gpt-data-after-partition",
            "gpt",
            64 * MIB,
            "a GPT disk with an ext4 at 64 MiB, past its one partition",
        ),
        (
            "mbr-data-after-partition",
            "dos",
            64 * MIB,
            "an MBR disk with an ext4 at 64 MiB, past its one partition",
        ),
    ):
        disk = _partitioned(b, name, label, one)
        _secret_fs_at(b, disk, name, offset)
        _each_reader(b, name, disk.name, about, "unpartitioned", (2,))
    # Before the first partition (past the first MiB, where boot loaders live).
    name = "gpt-data-before-partition"
    disk = _partitioned(b, name, "gpt", "start=32768, size=32768, type=linux\n")
    _secret_fs_at(b, disk, name, 2 * MIB)
    _each_reader(
        b,
        name,
        disk.name,
        "a GPT disk with an ext4 at 2 MiB, before its partition at 16 MiB",
        "unpartitioned",
        (2,),
        guestfs=False,
    )
    # Free space inside an extended partition, between logical partitions.
    name = "mbr-data-in-extended"
    disk = _partitioned(
        b,
        name,
        "dos",
        "start=2048, size=16384, type=linux\nstart=20480, size=172032, type=extended\n"
        "start=22528, size=16384, type=linux\n",
    )
    _secret_fs_at(b, disk, name, 64 * MIB)
    _each_reader(
        b,
        name,
        disk.name,
        "an MBR disk with an ext4 in free space of its extended partition",
        "unpartitioned",
        (2,),
        guestfs=False,
    )
    # Control: the same layout with nothing outside the partitions is complete.
    name = "gpt-nothing-outside"
    disk = _partitioned(b, name, "gpt", one)
    _each_reader(b, name, disk.name, "a GPT disk with zeros outside its one partition", "", (0,))


@case
def partition_tables_disagree(b: Build) -> None:
    # A valid GPT (one clean ext4 at 1 MiB) and an MBR whose entry names a second ext4 with
    # the secret at 64 MiB: without a protective entry (Linux then reads the MBR), and with
    # one beside it (a hybrid MBR whose extra entry is not one of the GPT's partitions).
    for name, protective, about in (
        ("gpt-mbr-disagree", False, "a valid GPT and a non-protective MBR naming another ext4"),
        ("gpt-hybrid-mbr-extra", True, "a GPT whose hybrid MBR names an ext4 the GPT lacks"),
    ):
        disk = _partitioned(b, name, "gpt", "start=2048, size=65536, type=linux\n")
        _secret_fs_at(b, disk, name, 64 * MIB)
        mbr = bytearray(disk.read_bytes()[:SECTOR])
        mbr[446:510] = bytes(64)
        slot = 0
        if protective:
            struct.pack_into("<B3sB3sII", mbr, 446, 0, b"\0\2\0", 0xEE, b"\xff\xff\xff", 1, 2047)
            slot = 1
        struct.pack_into(
            "<B3sB3sII", mbr, 446 + 16 * slot, 0, b"\0\0\0", 0x83, b"\0\0\0", 131072, 16384
        )
        _patch(disk, 0, bytes(mbr))
        _each_reader(b, name, disk.name, about, "disagree", (2,), guestfs=not protective)


# ------------------------------------------------------------------------------------------
# Round 2 (issue 17): archives whose structure costs more than their size says
# ------------------------------------------------------------------------------------------


def _tree_without_conf(b: Build, name: str) -> Path:
    """A tree whose only secret is the one a case hides in an archive."""
    tree = b.tree(name)
    (tree / "etc" / "app.conf").unlink()
    (tree / "etc" / "motd").write_text("welcome\n")
    return tree


@case
def zip_directory_named_member(b: Build) -> None:
    # unzip -p prints a member named like a directory that holds bytes: it is a file.
    conf = f"[db]\npassword = {b.password}\n"
    for name, method, nested in (
        ("zip-dir-named-member", zipfile.ZIP_STORED, False),
        ("zip-dir-named-member-nested", zipfile.ZIP_DEFLATED, True),
    ):
        tree = _tree_without_conf(b, name)
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w", method) as zf:
            zf.writestr("config/", b"")  # a real directory entry beside it
            zf.writestr("config/app.conf/", conf)
        data = inner.getvalue()
        if nested:
            outer = io.BytesIO()
            with zipfile.ZipFile(outer, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("lib/bundle.jar", data)
            data = outer.getvalue()
        (tree / "opt").mkdir()
        (tree / "opt" / "bundle.zip").write_bytes(data)
        image = b.ext4(f"{name}.ext4", tree, 8)
        about = "a zip member named like a directory (app.conf/) that holds the secret"
        b.cases.append(
            Case(
                name, image.name, about + (", in a nested jar" if nested else ""), (1,), finds=True
            )
        )


def _zip_many_entries(path: Path, entries: int, declared: int) -> None:
    """A zip of one stored member whose central directory lists it `entries` times (47 bytes
    a record), with zip64 end records declaring `declared` entries: zipfile parses every
    record whatever the count says."""
    name = b"a"
    body = b"x"
    crc = zlib.crc32(body)
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, 1, 1, 1, 0)
    record = struct.pack(
        "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 45, 20, 0, 0, 0, 0, crc, 1, 1, 1, 0, 0, 0, 0,
        0o644 << 16, 0,
    ) + name  # fmt: skip
    with path.open("wb") as fh:
        fh.write(local + name + body)
        directory_at = fh.tell()
        batch = record * 10_000
        for _ in range(entries // 10_000):
            fh.write(batch)
        fh.write(record * (entries % 10_000))
        size = fh.tell() - directory_at
        end64_at = fh.tell()
        fh.write(
            struct.pack(
                "<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, declared, declared, size,
                directory_at,
            )
        )  # fmt: skip
        fh.write(struct.pack("<4sIQI", b"PK\x06\x07", 0, end64_at, 1))
        fh.write(
            struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                        0xFFFFFFFF, 0)
        )  # fmt: skip


@case
def zip_central_directory(b: Build) -> None:
    for name, entries, declared, about in (
        ("zip-2m-entries", 2_000_000, 2_000_000, "a 94 MB zip listing 2 million entries"),
        (
            "zip-entry-count-lies",
            700_000,
            1,
            "a zip whose 700,000-record central directory is declared to hold one entry",
        ),
    ):
        tree = b.tree(name)
        _zip_many_entries(tree / "many.zip", entries, declared)
        image = b.ext4(f"{name}.ext4", tree, entries * 47 // MIB + 24)
        b.cases.append(
            Case(name, image.name, about, (2,), incomplete=True, reason="members", finds=True)
        )


def _xz_declaring(path: Path, dictionary_byte: int, content: Callable[[], Iterator[bytes]]) -> None:
    """An xz file of `content` whose LZMA2 filter declares the dictionary size code
    `dictionary_byte` (40: 4 GiB), the block header's CRC-32 made right again."""
    encoder = lzma.LZMACompressor(lzma.FORMAT_XZ, filters=[{"id": lzma.FILTER_LZMA2, "preset": 1}])
    with path.open("wb") as fh:
        for chunk in content():
            fh.write(encoder.compress(chunk))
        fh.write(encoder.flush())
    with path.open("r+b") as fh:
        fh.seek(12)  # after the stream header: the first block header
        size = (fh.read(1)[0] + 1) * 4
        fh.seek(12)
        header = bytearray(fh.read(size))
        if header[1] & 0xC0 or header[2:4] != b"\x21\x01":
            raise base.BuildError(f"unexpected xz block header {header.hex()}")
        header[4] = dictionary_byte
        struct.pack_into("<I", header, size - 4, zlib.crc32(bytes(header[: size - 4])))
        fh.seek(12)
        fh.write(header)


def _gib_of_mostly_zeros() -> Iterator[bytes]:
    # 4 MiB of random bytes, so the file is ~5 MB and may expand 200 times (1 GiB).
    yield _random_bytes(4 * MIB)
    zeros = bytes(MIB)
    for _ in range(1020):
        yield zeros


@case
def lzma_dictionaries(b: Build) -> None:
    tree = b.tree("xz-4g-dictionary")
    _xz_declaring(tree / "dump.xz", 40, _gib_of_mostly_zeros)
    image = b.ext4("xz-4g-dictionary.ext4", tree, 24)
    b.cases.append(
        Case(
            "xz-4g-dictionary",
            image.name,
            "a 5 MB .xz declaring a 4 GiB dictionary, expanding to 1 GiB",
            (2,),
            incomplete=True,
            reason="memory",
            finds=True,
        )
    )
    tree = b.tree("zip-lzma-4g-dictionary")
    archive = tree / "bundle.zip"
    with (
        zipfile.ZipFile(archive, "w", zipfile.ZIP_LZMA) as zf,
        zf.open("zeros.bin", "w", force_zip64=True) as out,
    ):
        for chunk in _gib_of_mostly_zeros():
            out.write(chunk)
    with archive.open("r+b") as fh:
        local = fh.read(30)
        name, extra = struct.unpack_from("<HH", local, 26)
        fh.seek(30 + name + extra + 5)  # LZMA's version and properties size, then props
        fh.write(struct.pack("<I", 0xFFFFFFFF))
    image = b.ext4("zip-lzma-4g-dictionary.ext4", tree, 24)
    b.cases.append(
        Case(
            "zip-lzma-4g-dictionary",
            image.name,
            "a zip whose LZMA member declares a 4 GiB dictionary",
            (2,),
            incomplete=True,
            reason="dictionary",
            finds=True,
        )
    )


# ------------------------------------------------------------------------------------------
# Round 2 (issue 17): qcow2 mapping tables declared huge
# ------------------------------------------------------------------------------------------


def _qcow2_grown_l1(b: Build, name: str, cluster_bits: int, l1_entries: int) -> Path:
    """A qcow2 (clusters of 2^cluster_bits, the planted secret) whose L1 table is moved to the
    end of the file and grown to `l1_entries`: the image's own entries, then entries naming
    distinct L2 tables in a sparse stretch after it (holes: they read as empty tables). Past
    qemu's 32 MiB of L1 the new table is left sparse too."""
    tree = b.tree(name)
    raw = b.ext4(f"{name}.ext4", tree, 8)
    image = b.stage / f"{name}.qcow2"
    b.run(
        "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2",
        "-o", f"cluster_size={1 << cluster_bits}", str(raw), str(image),
    )  # fmt: skip
    raw.unlink()
    cluster = 1 << cluster_bits
    with image.open("r+b") as fh:
        header = fh.read(48)
        old_size, old_offset = struct.unpack_from(">IQ", header, 36)
        fh.seek(old_offset)
        own = fh.read(old_size * 8)
        end = fh.seek(0, os.SEEK_END)
        l1_at = (end + cluster - 1) // cluster * cluster
        tables_at = l1_at + (l1_entries * 8 + cluster - 1) // cluster * cluster
        fh.seek(l1_at)
        fh.write(own)
        if l1_entries * 8 <= 32 * MIB:
            chunk = 1 << 16
            for first in range(old_size, l1_entries, chunk):
                count = min(chunk, l1_entries - first)
                fh.write(
                    struct.pack(
                        f">{count}Q",
                        *(tables_at + i * cluster for i in range(first, first + count)),
                    )
                )
        fh.truncate(tables_at + (l1_entries * cluster if l1_entries * 8 <= 32 * MIB else 0))
        fh.seek(36)
        fh.write(struct.pack(">IQ", l1_entries, l1_at))
    return image


@case
def qcow2_tables_declared_huge(b: Build) -> None:
    # An L1 table of 2^28 entries (2 GiB) and one of 2^24 (128 MiB): past qemu's 32 MiB,
    # refused before they are read.
    for name, bits, entries in (
        ("qcow2-l1-2e28", 16, 1 << 28),
        ("qcow2-l1-2e24-512b", 9, 1 << 24),
    ):
        image = _qcow2_grown_l1(b, name, bits, entries)
        b.cases.append(
            Case(
                name,
                image.name,
                f"a qcow2 (sparse) declaring an L1 table of {entries} entries",
                (2,),
                error="L1 table",
            )
        )
    # 512-byte clusters and 2^22 distinct L2 tables (32 MiB of L1, which qemu accepts): 2 GiB
    # of tables to check, 268 million entries.
    image = _qcow2_grown_l1(b, "qcow2-4m-l2-tables", 9, 1 << 22)
    b.cases.append(
        Case(
            "qcow2-4m-l2-tables",
            image.name,
            "a qcow2 of 512-byte clusters mapping 2^22 L2 tables (in holes)",
            (1,),
            finds=True,
        )
    )


# ------------------------------------------------------------------------------------------
# Round 2 (issue 17): LUKS key derivation that never ends, and --timeout
# ------------------------------------------------------------------------------------------

LUKS_PASSPHRASE = "luks-passphrase.txt"  # beside the images: the key these cases are given


def _luks2_rewrite(path: Path, at: int, edit: Callable[[dict[str, object]], None]) -> None:
    """Edit the LUKS2 metadata (JSON) of the volume at byte `at` of `path`, in both header
    copies, with their checksums (SHA-256 over the header area, checksum zeroed) made right:
    cryptsetup computes a key slot's KDF when it writes one, so a cost that never ends can
    only be written by hand."""
    import hashlib

    with path.open("r+b") as fh:
        fh.seek(at)
        primary = fh.read(4096)
        (size,) = struct.unpack_from(">Q", primary, 8)
        for copy in (at, at + size):
            fh.seek(copy)
            area = bytearray(fh.read(size))
            metadata = json.loads(bytes(area[4096:]).split(b"\0", 1)[0])
            edit(metadata)
            text = json.dumps(metadata, separators=(",", ":")).encode()
            area[4096:] = text.ljust(size - 4096, b"\0")
            area[448 : 448 + 64] = bytes(64)
            area[448 : 448 + 32] = hashlib.sha256(area).digest()
            fh.seek(copy)
            fh.write(area)


def _luks_volume(b: Build, name: str, *options: str) -> tuple[Path, int]:
    """A 48 MiB disk (MBR) whose one partition, at 1 MiB, is a LUKS volume, its key
    LUKS_PASSPHRASE (it stays empty: these cases are about what trying the key costs).
    Returns the disk and the volume's offset."""
    volume = b.work / f"{name}.luks"
    with volume.open("wb") as fh:
        fh.truncate(40 * MIB)
    key = b.stage / LUKS_PASSPHRASE
    b.run(
        "cryptsetup", "luksFormat", "--batch-mode", *options, f"--key-file={key}", str(volume),
    )  # fmt: skip
    disk = b.stage / f"{name}.raw"
    with disk.open("wb") as fh:
        fh.truncate(48 * MIB)
    b.run("sfdisk", "-q", str(disk), stdin="label: dos\nstart=2048, size=81920, type=83\n")
    with disk.open("r+b") as out, volume.open("rb") as src:
        out.seek(MIB)
        shutil.copyfileobj(src, out)
    volume.unlink()
    return disk, MIB


@case
def luks_kdf_unbounded(b: Build) -> None:
    (b.stage / LUKS_PASSPHRASE).write_text("correct horse battery staple")
    key_args = ("--key-file", "{dir}/" + LUKS_PASSPHRASE)
    fast_argon = ("--type=luks2", "--pbkdf=argon2id", "--pbkdf-force-iterations=4",
                  "--pbkdf-memory=32", "--pbkdf-parallel=1")  # fmt: skip

    def argon(field: str, value: int) -> Callable[[dict[str, object]], None]:
        def edit(metadata: dict[str, object]) -> None:
            keyslots = metadata["keyslots"]
            assert isinstance(keyslots, dict)
            for slot in keyslots.values():
                slot["kdf"][field] = value

        return edit

    def pbkdf2(metadata: dict[str, object]) -> None:
        keyslots = metadata["keyslots"]
        assert isinstance(keyslots, dict)
        for slot in keyslots.values():
            slot["kdf"]["iterations"] = 0xFFFFFFFF

    for name, options, edit, about in (
        ("luks2-argon2-time", fast_argon, argon("time", 0xFFFFFFFF), "argon2id time cost 2^32-1"),
        ("luks2-argon2-memory", fast_argon, argon("memory", 4 << 20), "argon2id memory 4 GiB"),
        (
            "luks2-pbkdf2-iterations",
            ("--type=luks2", "--pbkdf=pbkdf2", "--pbkdf-force-iterations=1000"),
            pbkdf2,
            "PBKDF2 with 2^32-1 iterations",
        ),
    ):
        disk, at = _luks_volume(b, name, *options)
        _luks2_rewrite(disk, at, edit)
        for reader in ("auto", "guestfs"):
            b.cases.append(
                Case(
                    name if reader == "auto" else f"{name}-guestfs",
                    disk.name,
                    f"a LUKS2 volume whose key slot asks for {about}, a passphrase given"
                    + ("" if reader == "auto" else " (libguestfs reader)"),
                    (2,),
                    incomplete=True,
                    reason="not unlocked",
                    args=(*key_args, "--reader", reader),
                )
            )
    # LUKS1: the iteration count of key slot 0 (offset 208 + 4) patched to 2^32-1.
    disk, at = _luks_volume(
        b, "luks1-pbkdf2-iterations", "--type=luks1", "--pbkdf-force-iterations=1000"
    )
    _patch(disk, at + 212, struct.pack(">I", 0xFFFFFFFF))
    b.cases.append(
        Case(
            "luks1-pbkdf2-iterations",
            disk.name,
            "a LUKS1 volume whose key slot asks for 2^32-1 PBKDF2 iterations, a passphrase given",
            (2,),
            incomplete=True,
            reason="not unlocked",
            args=(*key_args,),
        )
    )


@case
def scan_timeout(b: Build) -> None:
    # --timeout stops a scan that takes longer (a million files; the appliance alone takes
    # longer to start than allowed) with one line, exit 2, no report and nothing left running.
    for reader in ("native", "guestfs"):
        b.cases.append(
            Case(
                f"scan-timeout-{reader}",
                "ext4-million-files.ext4",  # made by ext4_million_files
                f"a scan given --timeout shorter than it takes ({reader} reader)",
                (2,),
                error="--timeout",
                args=("--timeout", "5", "--reader", reader),
            )
        )


# ------------------------------------------------------------------------------------------
# Round 2 (issue 17): one directory of a million entries
# ------------------------------------------------------------------------------------------


def _linear_directory(names: int, own: int, parent: int, target: int, block: int) -> bytes:
    """The blocks of a linear ext4 directory (inode `own`, in `parent`): ".", "..", then
    `names` entries f0000000, ... all naming regular file `target`. A record: inode u32,
    record length u16, name length u8, file type u8, the name padded to 4 bytes; the last
    record of a block spans to the block's end."""
    records = [(own, b".", 2), (parent, b"..", 2)]
    records += [(target, b"f%07d" % i, 1) for i in range(names)]
    out = bytearray()
    current = bytearray()
    last = 0
    for inode, name, kind in records:
        size = (8 + len(name) + 3) // 4 * 4
        if len(current) + size > block:
            struct.pack_into("<H", current, last + 4, block - last)
            out += current.ljust(block, b"\0")
            current = bytearray()
        last = len(current)
        current += struct.pack("<IHBB", inode, size, len(name), kind) + name.ljust(size - 8, b"\0")
    struct.pack_into("<H", current, last + 4, block - last)
    out += current.ljust(block, b"\0")
    return bytes(out)


def _inode_of(b: Build, image: Path, path: str) -> int:
    stat = b.run("debugfs", "-R", f"stat {path}", str(image)).stdout
    return int(stat.split("Inode:", 1)[1].split()[0])


@case
def ext4_million_entry_directory(b: Build) -> None:
    # mke2fs -d (and debugfs) insert entries into a linear directory one by one, in quadratic
    # time: the directory's blocks are written here instead. /big is made as a regular file
    # of the right size, its blocks filled with directory records, then its mode made a
    # directory's. No metadata_csum: a directory block would need a checksum tail.
    count, block = 1_000_000, 4096
    tree = b.tree("ext4-million-entries")
    (tree / "empty").write_bytes(b"")
    # Placeholder inode numbers for now (not zeros: mke2fs -d would leave holes).
    placeholder = _linear_directory(count, 1, 1, 1, block)
    size = len(placeholder)
    (tree / "big").write_bytes(placeholder)
    image = b.ext4(
        "ext4-million-entries.ext4",
        tree,
        size // MIB + 16,
        "-b",
        str(block),
        "-O",
        "^metadata_csum",
    )
    own, target = _inode_of(b, image, "/big"), _inode_of(b, image, "/empty")
    blocks = [int(x) for x in b.run("debugfs", "-R", "blocks /big", str(image)).stdout.split()]
    content = _linear_directory(count, own, 2, target, block)
    with image.open("r+b") as fh:
        for index, number in enumerate(blocks):
            fh.seek(number * block)
            fh.write(content[index * block : (index + 1) * block])
    b.run("debugfs", "-w", "-R", "sif /big mode 040755", str(image))
    b.run("debugfs", "-w", "-R", "sif /big links_count 2", str(image))
    # The native reader's walk (the auto reader reads ext4 natively); libguestfs lists a
    # million files for minutes under TCG, past the suite's time bound, like
    # ext4-million-files.
    for reader in ("auto", "native"):
        b.cases.append(
            Case(
                "ext4-million-entry-dir" + ("" if reader == "auto" else f"-{reader}"),
                image.name,
                f"one directory of a million entries ({reader} reader)",
                (2,),
                incomplete=True,
                reason="entries",
                finds=True,
                args=("--reader", reader),
            )
        )


# ------------------------------------------------------------------------------------------


def build_steps(stage: Path, key: str, run: base.Runner) -> None:
    """Make every case in ``stage`` and write the manifest last."""
    work = stage / "work"
    work.mkdir()
    marker = "imgscan-host-marker-" + secrets.token_hex(12)
    (stage / HOST_SECRET).write_text(f"{marker}\n" * 1000)
    os.mkfifo(stage / HOST_FIFO)
    b = Build(stage, run, work, marker, base.rand_password(20))
    for builder in BUILDERS:
        builder(b)
    # The guest's own kernel reads these through libguestfs: it must not follow the links out
    # of the appliance, open the device nodes, or walk the loop for ever either; and the LVM
    # tools in the appliance must not make a group they rejected look covered.
    for name in (
        "ext4-dir-cycle",
        "ext4-symlinks",
        "ext4-device-nodes",
        "lvm-lv-loop",
        "lvm-metadata-wrap",
    ):
        same = next(c for c in b.cases if c.name == name)
        b.cases.append(
            replace(
                same,
                name=f"{name}-guestfs",
                about=same.about + " (libguestfs reader)",
                reason=None,  # the kernel says it its own way ("tar_out failed")
                args=("--reader", "guestfs"),
            )
        )
    shutil.rmtree(work)
    names = [c.name for c in b.cases]
    if len(set(names)) != len(names):
        raise base.BuildError(f"duplicate case names: {names}")
    manifest = {
        "key": key,
        "marker": marker,
        "password": b.password,
        "hostile_names": [n.decode("utf-8", "surrogateescape") for n in HOSTILE_NAMES],
        "cases": [asdict(c) for c in b.cases],
    }
    (stage / base.MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=True) + "\n")


def source_key() -> str:
    """``hostile-`` and 16 hex digits of sha256 over the shared builders and this file."""
    return small.key_over(KEY_PREFIX, [Path(__file__).resolve()])


def build_hostile(out: Path | None = None, *, force: bool = False) -> Path:
    """Build the hostile suite (or reuse the cached build) and return its directory."""
    return base.cached(out, source_key(), small.logged(build_steps), force)


if __name__ == "__main__":
    sys.exit(small.cli("build_hostile.py", __doc__, build_hostile, sys.argv[1:]))
