"""Container-format detection from the image's own bytes.

imgscan decides the format itself and passes it explicitly to every reader: leaving it to
qemu's probing lets a raw image that starts with a qcow2 header be opened as qcow2, whose header
may then name a host file as backing store (the CVE-2010-3851 class of attack). For the same
reason the header is checked for references to other files (qcow2 backing and external data
files, vmdk extents) and such an image is refused unless the user allows it.
"""

from __future__ import annotations

import posixpath
import stat
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

from imgscan.errors import ImageError

QCOW2_MAGIC = b"QFI\xfb"
VMDK_SPARSE_MAGIC = b"KDMV"
VMDK_DESCRIPTOR_MARKER = b"# Disk DescriptorFile"
VHDX_MAGIC = b"vhdxfile"
VHD_COOKIE = b"conectix"
VDI_MAGIC = 0xBEDA107F

_QCOW2_EXT_DATA_FILE = 0x44415441  # header extension: external data file name
_QCOW2_INCOMPAT_DATA_FILE = 1 << 2
_QCOW2_INCOMPAT_COMPRESSION = 1 << 3


@dataclass(frozen=True)
class Disk:
    """One disk inside the image file: the whole file, or one member of an OVA archive.

    `offset` and `size` locate the disk's bytes in the image file; `member` is its name in the
    archive (None for a plain image).
    """

    member: str | None
    offset: int
    size: int
    format: str
    subformat: str | None
    virtual_size: int
    compressed: bool = False


@dataclass(frozen=True)
class FormatInfo:
    """What the header says. `external` lists every other file the image refers to; `disks`
    lists the disks the image holds (one, or each disk of an OVA)."""

    format: str  # qcow2 | vmdk | vhd | vhdx | vdi | raw | ova
    subformat: str | None
    virtual_size: int
    external: tuple[str, ...] = ()
    disks: tuple[Disk, ...] = ()
    compressed: bool = False  # qcow2 with compressed clusters (zlib or zstd)


@dataclass(frozen=True)
class _Source:
    """A byte range of the image file: the whole file, or one archive member."""

    path: Path
    offset: int
    size: int
    name: str  # file or member name, as a vmdk descriptor would name it
    label: str  # how messages name it: the path, or "image.ova!/member"

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset >= self.size:
            return b""
        with self.path.open("rb") as fh:
            fh.seek(self.offset + offset)
            return fh.read(min(length, self.size - offset))


def detect_format(path: Path, allow_external: bool = False) -> FormatInfo:
    """Detect the container format of `path` and refuse images that refer to other files.

    Raises ImageError with a one-line reason for a missing, empty, non-regular or truncated
    file, and for an image naming other files when `allow_external` is false.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot open: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{path}: is a directory, not a disk image")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise ImageError(f"{path}: empty file, not a disk image")
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
        if len(head) >= 262 and head[257:262] == b"ustar":
            info = _ova(path, st.st_size)
        else:
            source = _Source(path, 0, st.st_size, path.name, str(path))
            info = _with_disk(_classify(source, head), source)
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror}") from None
    if info.external and not allow_external:
        names = ", ".join(info.external)
        raise ImageError(
            f"{path}: {info.format} image refers to other files ({names}); "
            "pass --allow-external-files if you trust them"
        )
    return info


def _disk(info: FormatInfo, source: _Source, member: str | None) -> Disk:
    """The disk that `source` holds, as classified in `info`."""
    return Disk(
        member,
        source.offset,
        source.size,
        info.format,
        info.subformat,
        info.virtual_size,
        info.compressed,
    )


def _with_disk(info: FormatInfo, source: _Source) -> FormatInfo:
    disk = _disk(info, source, None)
    return FormatInfo(
        info.format, info.subformat, info.virtual_size, info.external, (disk,), info.compressed
    )


# OVA members that are not disks: the descriptor, manifest, certificate, ISO attachments.
_OVA_NON_DISKS = (".ovf", ".mf", ".cert", ".iso", ".nvram")


def _ova(path: Path, size: int) -> FormatInfo:
    """An OVA: a tar of an OVF descriptor and its disks. Every disk member is classified from
    its own bytes; a disk that refers to files outside itself is refused like any image."""
    disks: list[Disk] = []
    external: list[str] = []
    try:
        with tarfile.open(path, mode="r:") as archive:
            for member in archive:
                if not member.isfile() or member.name.lower().endswith(_OVA_NON_DISKS):
                    continue
                name = posixpath.basename(member.name)
                label = f"{path}!/{member.name}"
                source = _Source(path, member.offset_data, member.size, name, label)
                if source.offset + source.size > size:
                    raise ImageError(
                        f"{path}: truncated OVA: member {_show(member.name.encode())} "
                        "runs past the end of the file"
                    )
                info = _classify(source, source.read_at(0, 4096))
                external.extend(info.external)
                disks.append(_disk(info, source, member.name))
    except tarfile.TarError as exc:
        raise ImageError(f"{path}: corrupt OVA archive: {exc}") from None
    if not disks:
        raise ImageError(f"{path}: OVA archive holds no disk")
    virtual = sum(d.virtual_size for d in disks)
    return FormatInfo("ova", None, virtual, tuple(external), tuple(disks))


def _classify(src: _Source, head: bytes) -> FormatInfo:
    if head.startswith(QCOW2_MAGIC):
        return _qcow2(src, head)
    if head.startswith(VMDK_SPARSE_MAGIC):
        return _vmdk_sparse(src, head)
    if head.startswith(VMDK_DESCRIPTOR_MARKER):
        return _vmdk_descriptor(src)
    if head.startswith(VHDX_MAGIC):
        return FormatInfo("vhdx", None, 0)
    if len(head) >= 0x44 and struct.unpack_from("<I", head, 0x40)[0] == VDI_MAGIC:
        (disk_size,) = struct.unpack_from("<Q", head, 0x170) if len(head) >= 0x178 else (0,)
        return FormatInfo("vdi", None, disk_size)
    if head.startswith(VHD_COOKIE):
        return _vhd(head, "dynamic")
    footer = src.read_at(src.size - 512, 512) if src.size >= 512 else b""
    if footer.startswith(VHD_COOKIE):
        return _vhd(footer, "fixed")
    return FormatInfo("raw", None, src.size)


def _qcow2(src: _Source, head: bytes) -> FormatInfo:
    path, size = src.label, src.size
    if len(head) < 72:
        raise ImageError(f"{path}: truncated qcow2 header")
    version, backing_offset, backing_size = struct.unpack_from(">IQI", head, 4)
    (virtual_size,) = struct.unpack_from(">Q", head, 24)
    if version not in (2, 3):
        raise ImageError(f"{path}: unsupported qcow2 version {version}")
    if version == 3 and len(head) < 104:
        # A v3 header is 104 bytes, and its feature bits (at 72) are read below.
        raise ImageError(f"{path}: truncated qcow2 header")
    external: list[str] = []
    if backing_offset:
        name = src.read_at(backing_offset, min(backing_size, 1023))
        external.append("backing file " + _show(name))
    header_length = 72
    if version == 3 and len(head) >= 104:
        (incompatible,) = struct.unpack_from(">Q", head, 72)
        (header_length,) = struct.unpack_from(">I", head, 100)
        if incompatible & _QCOW2_INCOMPAT_DATA_FILE:
            external.append("external data file")
    # Header extensions follow the header: (type u32, length u32, data padded to 8 bytes).
    offset = header_length
    ext_area = src.read_at(0, min(size, 65536))
    while offset + 8 <= len(ext_area):
        ext_type, ext_len = struct.unpack_from(">II", ext_area, offset)
        if ext_type == 0:
            break
        if ext_type == _QCOW2_EXT_DATA_FILE:
            name = ext_area[offset + 8 : offset + 8 + ext_len]
            external.append("data file " + _show(name))
        offset += 8 + ((ext_len + 7) & ~7)
    if size < header_length:
        raise ImageError(f"{path}: truncated qcow2 image")
    problem, compressed = _qcow2_tables_problem(src, head, version)
    if version == 3 and struct.unpack_from(">Q", head, 72)[0] & _QCOW2_INCOMPAT_COMPRESSION:
        compressed = True  # a compression type other than zlib (zstd)
    if problem:
        raise ImageError(f"{path}: truncated or corrupt qcow2 image: {problem}")
    external_refs = tuple(dict.fromkeys(external))
    return FormatInfo("qcow2", f"v{version}", virtual_size, external_refs, compressed=compressed)


_QCOW2_OFFSET_MASK = 0x00FFFFFFFFFFFE00
_QCOW2_COMPRESSED = 1 << 62
_QCOW2_EXTENDED_L2 = 1 << 4


def _qcow2_tables_problem(src: _Source, head: bytes, version: int) -> tuple[str | None, bool]:
    """Check that every table and data cluster the image maps lies inside the file.

    qemu reads clusters past the end of a truncated file as zeros, so without this check the
    libguestfs reader would report a truncated image as partly empty and complete.
    Returns (the first problem or None, whether any cluster is compressed).
    """
    compressed = False
    size = src.size
    (cluster_bits,) = struct.unpack_from(">I", head, 20)
    if not 9 <= cluster_bits <= 21:
        return f"cluster size 2^{cluster_bits} out of range", compressed
    cluster = 1 << cluster_bits
    l1_size, l1_offset = struct.unpack_from(">IQ", head, 36)
    incompatible = struct.unpack_from(">Q", head, 72)[0] if version == 3 else 0
    entry_size = 16 if incompatible & _QCOW2_EXTENDED_L2 else 8
    if l1_offset % cluster or l1_offset + l1_size * 8 > size:
        return "L1 table offset is invalid", compressed
    checked: set[int] = set()
    with src.path.open("rb") as fh:
        fh.seek(src.offset + l1_offset)
        l1 = fh.read(l1_size * 8)
        for (entry,) in struct.iter_unpack(">Q", l1[: len(l1) // 8 * 8]):
            l2_offset = entry & _QCOW2_OFFSET_MASK
            if not l2_offset or l2_offset in checked:
                # Each L2 table once: a hostile L1 pointing every entry at one table would
                # otherwise cost (file size / 8) squared steps.
                continue
            checked.add(l2_offset)
            if l2_offset % cluster or l2_offset + cluster > size:
                return (
                    f"L2 table at {l2_offset} lies beyond the end of the file ({size})",
                    compressed,
                )
            fh.seek(src.offset + l2_offset)
            table = fh.read(cluster)
            for index in range(0, len(table), entry_size):
                (l2,) = struct.unpack_from(">Q", table, index)
                if l2 & _QCOW2_COMPRESSED:
                    compressed = True
                    bits = 62 - (cluster_bits - 8)
                    offset = l2 & ((1 << bits) - 1)
                    if offset >= size:
                        return (
                            f"compressed cluster at {offset} lies beyond the end of the file",
                            compressed,
                        )
                    continue
                offset = l2 & _QCOW2_OFFSET_MASK
                if offset and offset + cluster > size:
                    return (
                        f"data cluster at {offset} lies beyond the end of the file ({size})",
                        compressed,
                    )
    return None, compressed


def _vmdk_sparse(src: _Source, head: bytes) -> FormatInfo:
    path, size = src.label, src.size
    if len(head) < 80:
        raise ImageError(f"{path}: truncated vmdk header")
    (capacity,) = struct.unpack_from("<Q", head, 12)
    desc_offset, desc_size = struct.unpack_from("<QQ", head, 28)
    descriptor = b""
    if desc_offset and desc_size:
        descriptor = src.read_at(desc_offset * 512, min(desc_size * 512, 1 << 20))
    create_type, extents = _parse_descriptor(descriptor)
    own = src.name
    external = tuple(
        f"extent {_show(e.encode())}" for e in extents if e != own and not _beside(src, e)
    )
    # A renamed monolithic image still names its old file; the extent is the file itself, so a
    # single extent in a hosted sparse file is not a reference to another file.
    if create_type in ("monolithicSparse", "streamOptimized") and len(extents) <= 1:
        external = ()
    if size < 512:
        raise ImageError(f"{path}: truncated vmdk image")
    return FormatInfo("vmdk", create_type, capacity * 512, external)


def _vmdk_descriptor(src: _Source) -> FormatInfo:
    descriptor = src.read_at(0, 1 << 20)
    create_type, extents = _parse_descriptor(descriptor)
    capacity = 0
    for line in descriptor.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if (
            len(parts) >= 2
            and parts[0] in ("RW", "RDONLY", "NOACCESS")
            # ASCII digits of a u64 sector count: str.isdigit() also takes "²", which int()
            # refuses, as it refuses more than 4300 digits.
            and parts[1].isascii()
            and parts[1].isdigit()
            and len(parts[1]) <= 20
        ):
            capacity += int(parts[1])
    external = tuple(f"extent {_show(e.encode())}" for e in extents if not _beside(src, e))
    if not extents:
        external = ("no extent files named",)
    return FormatInfo("vmdk", create_type, capacity * 512, external)


def _beside(src: _Source, name: str) -> bool:
    """Whether extent `name` is a regular file in the image's own directory, named after it.

    A plain file name only: no directory part, no "..", the descriptor's name with a suffix
    (`disk-flat.vmdk` for `disk.vmdk`), and the file itself (not what a symlink points at
    elsewhere) must resolve inside the directory. Extents named from inside
    an archive are never accepted.
    """
    if src.offset or not name or name != posixpath.basename(name) or name in (".", ".."):
        return False
    # Only the files VMware and qemu-img name after the descriptor (disk-flat.vmdk,
    # disk-s001.vmdk, disk-f001.vmdk for disk.vmdk): a descriptor must not pull in another
    # image, or any other file, that happens to sit in the same directory.
    stem = posixpath.splitext(src.path.name)[0].lower()
    if not (name.lower().startswith(stem + "-") and name.lower().endswith(".vmdk")):
        return False
    if "\0" in name:
        return False  # no file has that name (and Path.resolve() raises ValueError on it)
    folder = src.path.resolve().parent
    candidate = (folder / name).resolve()
    return candidate.parent == folder and candidate.is_file()


def _parse_descriptor(descriptor: bytes) -> tuple[str | None, list[str]]:
    create_type: str | None = None
    extents: list[str] = []
    for raw in descriptor.split(b"\n"):
        line = raw.strip().decode("utf-8", "replace")
        if line.startswith("createType"):
            create_type = line.partition("=")[2].strip().strip('"')  # "createType" alone: ""
        parts = line.split('"')
        if len(parts) >= 3 and line.split()[0] in ("RW", "RDONLY", "NOACCESS"):
            extents.append(parts[1])
    return create_type, extents


def _vhd(footer: bytes, subformat: str) -> FormatInfo:
    size = struct.unpack_from(">Q", footer, 48)[0] if len(footer) >= 56 else 0
    return FormatInfo("vhd", subformat, size)


def _show(name: bytes) -> str:
    """A file name from a hostile header, made safe to print on one line."""
    text = name.split(b"\0", 1)[0].decode("utf-8", "replace")
    return repr("".join(c if c.isprintable() else "?" for c in text))
