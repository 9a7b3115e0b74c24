"""Container-format detection from the image's own bytes.

imgscan decides the format itself and passes it explicitly to every reader: leaving it to
qemu's probing lets a raw image that starts with a qcow2 header be opened as qcow2, whose header
may then name a host file as backing store (the CVE-2010-3851 class of attack). For the same
reason the header is checked for references to other files and such an image is refused unless
the user allows it (`--allow-external-files`), whichever reader would open it: qcow2 backing and
external data files; vmdk extents in other files and vmdk parents (`parentFileNameHint`, a
`parentCID` other than ffffffff); differencing VHDs (footer disk type 4, a parent name or
parent locators in the dynamic header); VHDX files with a parent (the has-parent flag of the
file parameters, a parent locator metadata item); VDI undo and differencing images (image type
3 and 4, a parent UUID). A structure imgscan cannot parse far enough to tell is refused as
corrupt rather than handed to a reader that might follow it.
"""

from __future__ import annotations

import codecs
import posixpath
import stat
import struct
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from imgscan.errors import ImageError
from imgscan.image import qcow2_tables

# Detection promises to open no file but the image. The first use of a codec imports its module
# (a file of Python's own), so the ones the headers need are looked up once, here.
for _codec in ("utf-16-be", "utf-16-le"):
    codecs.lookup(_codec)

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
    # qcow2 internal snapshots: (id, name) of each, as `qemu-img snapshot -l` lists them.
    # Neither reader reads them: the scan lists each as not read (coverage incomplete).
    snapshots: tuple[tuple[str, str], ...] = ()


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
    snapshots: tuple[tuple[str, str], ...] = ()  # qcow2 internal snapshots (see Disk)


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
        info.snapshots,
    )


def _with_disk(info: FormatInfo, source: _Source) -> FormatInfo:
    disk = _disk(info, source, None)
    return FormatInfo(
        info.format,
        info.subformat,
        info.virtual_size,
        info.external,
        (disk,),
        info.compressed,
        info.snapshots,
    )


# imgscan's format name -> the qemu block driver that reads it (qemu calls VHD "vpc"): what
# libguestfs and qemu-nbd are told, never left to qemu's probing.
QEMU_DRIVERS = {
    "qcow2": "qcow2",
    "vmdk": "vmdk",
    "vhd": "vpc",
    "vhdx": "vhdx",
    "vdi": "vdi",
    "raw": "raw",
}

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
        return _vhdx(src)
    if len(head) >= 0x44 and struct.unpack_from("<I", head, 0x40)[0] == VDI_MAGIC:
        return _vdi(src, head)
    footer = src.read_at(src.size - 512, 512) if src.size >= 512 else b""
    if head.startswith(VHD_COOKIE):
        return _vhd(src, head, footer, "dynamic")
    if footer.startswith(VHD_COOKIE):
        return _vhd(src, footer, b"", "fixed")
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
    return FormatInfo(
        "qcow2",
        f"v{version}",
        virtual_size,
        external_refs,
        compressed=compressed,
        snapshots=_qcow2_snapshots(src, head),
    )


# qemu's own limit on a qcow2's internal snapshots (QCOW_MAX_SNAPSHOTS).
_QCOW2_MAX_SNAPSHOTS = 65536
_QCOW2_SNAPSHOT_HEADER = 40


def _qcow2_snapshots(src: _Source, head: bytes) -> tuple[tuple[str, str], ...]:
    """(id, name) of every internal snapshot in the qcow2 snapshot table (header fields
    nb_snapshots at 60, snapshots_offset at 64). Each entry: a 40-byte header (id and name
    lengths at 12 and 14, extra-data length at 36), the extra data, the id, the name, padded
    to 8 bytes. A table that claims more than qemu allows, or runs past the file, still
    counts its snapshots: each unread one is listed as "?"."""
    count, table = struct.unpack_from(">IQ", head, 60)
    if count == 0:
        return ()
    count = min(count, _QCOW2_MAX_SNAPSHOTS)
    found: list[tuple[str, str]] = []
    offset = table
    for _ in range(count):
        entry = src.read_at(offset, _QCOW2_SNAPSHOT_HEADER) if 0 <= offset < src.size else b""
        if len(entry) < _QCOW2_SNAPSHOT_HEADER:
            break
        id_size, name_size = struct.unpack_from(">HH", entry, 12)
        (extra,) = struct.unpack_from(">I", entry, 36)
        start = offset + _QCOW2_SNAPSHOT_HEADER + extra
        text = src.read_at(start, id_size + name_size) if start < src.size else b""
        found.append((_plain(text[:id_size]), _plain(text[id_size : id_size + name_size])))
        offset = (start + id_size + name_size + 7) & ~7
    found.extend(("?", "?") for _ in range(count - len(found)))
    return tuple(found)


def _plain(name: bytes) -> str:
    """A name from a hostile header, printable and on one line (without _show's quotes)."""
    text = name.decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)[:256]


_QCOW2_EXTENDED_L2 = 1 << 4


def _qcow2_tables_problem(src: _Source, head: bytes, version: int) -> tuple[str | None, bool]:
    """Check that every table and data cluster the image maps lies inside the file.

    qemu reads clusters past the end of a truncated file as zeros, so without this check the
    libguestfs reader would report a truncated image as partly empty and complete.
    Returns (the first problem or None, whether any cluster is compressed).
    """
    (cluster_bits,) = struct.unpack_from(">I", head, 20)
    if not 9 <= cluster_bits <= 21:
        return f"cluster size 2^{cluster_bits} out of range", False
    l1_size, l1_offset = struct.unpack_from(">IQ", head, 36)
    incompatible = struct.unpack_from(">Q", head, 72)[0] if version == 3 else 0
    entry_size = 16 if incompatible & _QCOW2_EXTENDED_L2 else 8
    return qcow2_tables.tables_problem(
        src.path, src.offset, src.size, cluster_bits, l1_offset, l1_size, entry_size
    )


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
    external = [f"extent {_show(e.encode())}" for e in extents if e != own and not _beside(src, e)]
    # A renamed monolithic image still names its old file, and qemu reads a sparse file's own
    # grains whatever its descriptor says. libvmdk (the native reader) does open the file the
    # extent line names, though: a single extent is the file itself only when it names this
    # file, or (a renamed image) names nothing that exists beside it. Inside an OVA the name
    # resolves among the archive's members, never on the host.
    if (
        create_type in ("monolithicSparse", "streamOptimized")
        and len(extents) <= 1
        and (not extents or extents[0] == own or src.offset or _absent_beside(src, extents[0]))
    ):
        external = []
    external.extend(_vmdk_parent(descriptor))
    if size < 512:
        raise ImageError(f"{path}: truncated vmdk image")
    return FormatInfo("vmdk", create_type, capacity * 512, tuple(external))


def _vmdk_descriptor(src: _Source) -> FormatInfo:
    descriptor = src.read_at(0, 1 << 20)
    create_type, extents = _parse_descriptor(descriptor)
    capacity = 0
    for line in descriptor.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if (
            len(parts) >= 2
            and parts[0].upper() in _ACCESS
            # ASCII digits of a u64 sector count: str.isdigit() also takes "²", which int()
            # refuses, as it refuses more than 4300 digits.
            and parts[1].isascii()
            and parts[1].isdigit()
            and len(parts[1]) <= 20
        ):
            capacity += int(parts[1])
    external = [f"extent {_show(e.encode())}" for e in extents if not _beside(src, e)]
    if not extents:
        external = ["no extent files named"]
    external.extend(_vmdk_parent(descriptor))
    return FormatInfo("vmdk", create_type, capacity * 512, tuple(external))


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


_ACCESS = ("RW", "RDONLY", "NOACCESS")


def extent_beside(descriptor: Path, name: str) -> bool:
    """Whether a vmdk descriptor file at `descriptor` may name extent `name` without
    --allow-external-files: the rule detect_format applies (see _beside), for the batch's
    discovery to use the same one."""
    try:
        size = descriptor.stat().st_size
    except OSError:
        return False
    return _beside(_Source(descriptor, 0, size, descriptor.name, str(descriptor)), name)


def _parse_descriptor(descriptor: bytes) -> tuple[str | None, list[str]]:
    """The create type and every extent file name of a vmdk descriptor.

    Read more loosely than any reader parses it, so that nothing a reader would take for an
    extent escapes the check: lines end at LF or CR, the access word is matched without
    regard to case, and an extent line without quotes names its fourth word (every extent
    type but ZERO has a file).
    """
    create_type: str | None = None
    extents: list[str] = []
    for raw in descriptor.replace(b"\r", b"\n").split(b"\n"):
        line = raw.strip().decode("utf-8", "replace")
        if line.startswith("createType"):
            create_type = line.partition("=")[2].strip().strip('"')  # "createType" alone: ""
        words = line.split()
        if not words or words[0].upper() not in _ACCESS:
            continue
        parts = line.split('"')
        if len(parts) >= 3:
            extents.append(parts[1])
        elif len(words) >= 4 and words[2].upper() != "ZERO":
            extents.append(words[3])
    return create_type, extents


def _vmdk_parent(descriptor: bytes) -> list[str]:
    """The parent a vmdk descriptor names: a delta disk (qemu-img create -b, a VMware
    snapshot) reads every grain it lacks from the file in `parentFileNameHint`.

    qemu finds the key anywhere in the text (strstr), so it is searched for the same way,
    without regard to case; a `parentCID` other than ffffffff marks a delta disk too, whose
    parent a reader may look for by other means, so it is refused even without a name.
    """
    text = descriptor.decode("utf-8", "replace")
    lower = text.lower()
    found: list[str] = []
    at = lower.find("parentfilenamehint")
    if at >= 0:
        value = text[at:].replace("\r", "\n").split("\n", 1)[0].partition("=")[2]
        found.append("parent " + _show(value.strip().strip('"').encode()))
    at = lower.find("parentcid")
    if at >= 0 and not found:
        value = lower[at:].replace("\r", "\n").split("\n", 1)[0].partition("=")[2].strip()
        if value.strip('"') != "ffffffff":
            found.append(f"parent disk (parentCID {_show(value.encode())})")
    return found


def _absent_beside(src: _Source, name: str) -> bool:
    """Whether `name` is a plain file name that names nothing in the image's directory (so a
    reader looking for it finds nothing to read)."""
    if not name or "/" in name or "\\" in name or "\0" in name or name in (".", ".."):
        return False
    try:
        (src.path.parent / name).lstat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


_VHD_FIXED, _VHD_DYNAMIC, _VHD_DIFFERENCING = 2, 3, 4
_VHD_NO_OFFSET = 0xFFFFFFFFFFFFFFFF


def _vhd(src: _Source, footer: bytes, other: bytes, subformat: str) -> FormatInfo:
    """A VHD from its footer (`footer`: the copy at the start of a dynamic VHD, or the one at
    the end of a fixed VHD; `other`: the end copy of a dynamic VHD, or b"").

    Readers differ in which copy they trust (libvhdi reads the one at the end, qemu the one
    at the start), so both are checked: disk type 4 (differencing) names a parent, and so does
    a dynamic header with a parent name or a parent locator, whatever the disk type says.
    """
    size = struct.unpack_from(">Q", footer, 48)[0] if len(footer) >= 56 else 0
    external: list[str] = []
    for copy in (footer, other):
        if not copy.startswith(VHD_COOKIE) or len(copy) < 64:
            continue
        data_offset, disk_type = struct.unpack_from(">Q", copy, 16)[0], copy[60:64]
        (kind,) = struct.unpack(">I", disk_type)
        if kind == _VHD_DIFFERENCING:
            external.append("parent disk (differencing VHD)")
        elif kind not in (_VHD_FIXED, _VHD_DYNAMIC):
            raise ImageError(f"{src.label}: unsupported VHD disk type {kind}")
        if data_offset != _VHD_NO_OFFSET:
            external.extend(_vhd_parent_refs(src, data_offset))
    return FormatInfo("vhd", subformat, size, tuple(dict.fromkeys(external)))


def _vhd_parent_refs(src: _Source, offset: int) -> list[str]:
    """The parent a VHD dynamic header at `offset` names: its parent unicode name (UTF-16BE,
    at 64) and its eight parent locators (at 576, 24 bytes each: platform code, data space,
    data length, reserved, data offset), each holding a path to the parent."""
    header = src.read_at(offset, 1024)
    if not header.startswith(b"cxsparse"):
        return []
    found: list[str] = []
    name = header[64:576].decode("utf-16-be", "replace").split("\0", 1)[0]
    if name:
        found.append("parent " + _show(name.encode()))
    for index in range(8):
        entry = header[576 + 24 * index : 600 + 24 * index]
        if len(entry) < 24:
            break
        code, _space, length, _reserved, at = struct.unpack(">IIIIQ", entry)
        if code == 0:
            continue
        text = src.read_at(at, min(length, 4096))
        # Wi2r/Wi2k locators hold UTF-16LE, Mac ones a UTF-8 URL: show whichever reads.
        shown = (
            text.decode("utf-16-le", "replace")
            if code >> 24 == ord("W")
            else text.decode("utf-8", "replace")
        )
        found.append(f"parent locator {_show(shown.encode())}")
    if not found and header[40:56] != bytes(16):
        found.append("parent disk (parent identifier set)")
    return found


_VDI_UNDO, _VDI_DIFF = 3, 4


def _vdi(src: _Source, head: bytes) -> FormatInfo:
    """A VDI (header version 1.1): image type at 0x4C (1 normal, 2 fixed, 3 undo, 4
    differencing), disk size at 0x170, the parent's UUID (uuidLinkage) at 0x1A8.

    An undo or differencing image reads what it lacks from its parent, which VirtualBox finds
    by UUID; such an image, or any with a parent UUID, refers to another file."""
    if len(head) < 0x1B8:
        raise ImageError(f"{src.label}: truncated VDI header")
    (kind,) = struct.unpack_from("<I", head, 0x4C)
    (disk_size,) = struct.unpack_from("<Q", head, 0x170)
    external: list[str] = []
    parent = head[0x1A8:0x1B8]
    if kind in (_VDI_UNDO, _VDI_DIFF) or parent != bytes(16):
        external.append(f"parent image {uuid.UUID(bytes_le=parent)} (VDI image type {kind})")
    problem = _vdi_blocks_problem(src, head)
    if problem:
        raise ImageError(f"{src.label}: truncated or corrupt VDI image: {problem}")
    return FormatInfo("vdi", None, disk_size, tuple(external))


_VDI_UNALLOCATED = 0xFFFFFFFE  # and 0xFFFFFFFF (discarded): no block in the file


def _vdi_blocks_problem(src: _Source, head: bytes) -> str | None:
    """Check that the block map and every block it maps lie inside the file: qemu reads a block
    past the end of a truncated file as zeros, and the scan would look complete."""
    bmap_offset, data_offset = struct.unpack_from("<II", head, 0x154)
    block_size, block_extra, blocks = struct.unpack_from("<III", head, 0x178)
    if bmap_offset + 4 * blocks > src.size:
        return f"block map of {blocks} entries lies beyond the end of the file ({src.size})"
    table = src.read_at(bmap_offset, 4 * blocks)
    stride = block_size + block_extra
    for (entry,) in struct.iter_unpack("<I", table):
        if entry < _VDI_UNALLOCATED and data_offset + (entry + 1) * stride > src.size:
            return f"block {entry} lies beyond the end of the file ({src.size})"
    return None


_VHDX_METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
_VHDX_FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
_VHDX_VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
_VHDX_PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
_VHDX_HAS_PARENT = 1 << 1


def _vhdx(src: _Source) -> FormatInfo:
    """A VHDX: its two region tables (at 192 and 256 KiB) locate the metadata region, whose
    table lists the metadata items. The file parameters' has-parent flag or a parent
    locator item make it a differencing disk, which names its parent by path.

    Both region tables are read (a reader falls back to the second when the first is
    damaged), and a VHDX none of whose region tables locates a metadata table is refused as
    corrupt: imgscan cannot tell whether it names a parent.
    """
    external: list[str] = []
    virtual_size = 0
    tables = 0
    for table_at in (192 << 10, 256 << 10):
        table = src.read_at(table_at, 64 << 10)
        if len(table) < 16 or not table.startswith(b"regi"):
            continue
        (count,) = struct.unpack_from("<I", table, 8)
        for index in range(min(count, 2047)):
            entry = table[16 + 32 * index : 48 + 32 * index]
            if len(entry) < 32:
                break
            if uuid.UUID(bytes_le=entry[:16]) != _VHDX_METADATA_REGION:
                continue
            region_at, region_length = struct.unpack_from("<QI", entry, 16)
            metadata = src.read_at(region_at, min(region_length, 1 << 20))
            if len(metadata) < 32 or not metadata.startswith(b"metadata"):
                continue
            tables += 1
            (items,) = struct.unpack_from("<H", metadata, 10)
            for item in range(min(items, 2047)):
                row = metadata[32 + 32 * item : 64 + 32 * item]
                if len(row) < 32:
                    break
                kind = uuid.UUID(bytes_le=row[:16])
                item_at, item_length = struct.unpack_from("<II", row, 16)
                value = src.read_at(region_at + item_at, min(item_length, 64 << 10))
                if kind == _VHDX_PARENT_LOCATOR:
                    external.append("parent locator " + _vhdx_locator(value))
                elif kind == _VHDX_FILE_PARAMETERS and len(value) >= 8:
                    if struct.unpack_from("<I", value, 4)[0] & _VHDX_HAS_PARENT:
                        external.append("parent disk (has-parent flag)")
                elif kind == _VHDX_VIRTUAL_DISK_SIZE and len(value) >= 8:
                    virtual_size = struct.unpack_from("<Q", value)[0]
    if not tables:
        raise ImageError(f"{src.label}: corrupt VHDX image: no readable metadata table")
    if _vhdx_log_pending(src):
        raise ImageError(
            f"{src.label}: the VHDX log holds writes not yet replayed, and neither reader "
            "replays it without writing the image (qemu replays a VHDX log only when it may "
            "write); replay it on a copy (qemu-img check -r all COPY) and scan the copy"
        )
    return FormatInfo("vhdx", None, virtual_size, tuple(dict.fromkeys(external)))


_VHDX_HEADERS = (64 << 10, 128 << 10)
_VHDX_LOG_SECTOR = 4096
_VHDX_LOG_MAX = 64 << 20  # Hyper-V and qemu make 1 MiB logs


def _vhdx_log_pending(src: _Source) -> bool:
    """Whether a VHDX's log may hold entries to replay. The current header (the higher
    sequence number, at 8, of the two at 64 and 128 KiB) names the log by its LogGuid (at
    48; zero: the log is empty) and locates it (length at 68, offset at 72); an entry is a
    4 KiB-aligned "loge" header carrying that GUID (at 32). Checksums are not verified: an
    entry that only looks valid is taken as one, so the doubt refuses rather than passes."""
    current: bytes | None = None
    sequence = -1
    for at in _VHDX_HEADERS:
        header = src.read_at(at, 80)
        if len(header) == 80 and header.startswith(b"head"):
            (number,) = struct.unpack_from("<Q", header, 8)
            if number > sequence:
                current, sequence = header, number
    if current is None or current[48:64] == bytes(16):
        return False
    log_guid = current[48:64]
    length, offset = struct.unpack_from("<IQ", current, 68)
    log = src.read_at(offset, min(length, _VHDX_LOG_MAX))
    return any(
        log[at : at + 4] == b"loge" and log[at + 32 : at + 48] == log_guid
        for at in range(0, len(log) - 47, _VHDX_LOG_SECTOR)
    )


def _vhdx_locator(value: bytes) -> str:
    """The paths of a VHDX parent locator (key/value entries of UTF-16LE strings, offsets from
    the item's start), shown on one line."""
    if len(value) < 20:
        return "(unreadable)"
    (count,) = struct.unpack_from("<H", value, 18)
    paths: list[str] = []
    for index in range(min(count, 64)):
        entry = value[20 + 12 * index : 32 + 12 * index]
        if len(entry) < 12:
            break
        key_at, value_at, key_len, value_len = struct.unpack("<IIHH", entry)
        key = value[key_at : key_at + key_len].decode("utf-16-le", "replace")
        if key.endswith("path"):
            paths.append(value[value_at : value_at + value_len].decode("utf-16-le", "replace"))
    return _show(" ".join(paths).encode()) if paths else "(no path)"


def _show(name: bytes) -> str:
    """A file name from a hostile header, made safe to print on one line."""
    text = name.split(b"\0", 1)[0].decode("utf-8", "replace")
    return repr("".join(c if c.isprintable() else "?" for c in text))
