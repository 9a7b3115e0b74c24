"""The native reader: dfvfs over the libyal libraries, in-process, no VM, no root.

The container format is the one imgscan detected (never dfvfs' own probing), decoded by
libyal's image libraries or, for a disk served by qemu-nbd (served.py: compressed qcow2, VDI),
by qemu, read as an NBD export (nbd_dfvfs.py); partitions come from dfvfs' GPT and MBR
back-ends; filesystems are read through dfvfs. Every path specification
is rebuilt from plain strings, so a worker process can open its own handle from `OpenerSpec`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, cast

from imgscan.errors import ImageError, ReaderUnavailableError
from imgscan.image import unpartitioned
from imgscan.image.formats import FormatInfo
from imgscan.image.fslogs import (
    NTFS_DIRTY,
    XFS_DIRTY_LOG,
    LogState,
    ntfs_log_state,
    xfs_log_state,
)
from imgscan.image.interface import (
    ZERO_CHECK_LIMIT,
    ZERO_REASON,
    OpenerSpec,
    VolumeInfo,
    device_sort_key,
    join_guest_path,
)
from imgscan.image.metadata import (
    LINK_SUFFIX,
    XATTR_MAX,
    XATTR_SUFFIX,
    NameBatches,
    link_ref,
    wants_xattr,
    xattr_ref,
)
from imgscan.image.superblock import (
    EXT_SUPERBLOCK_OFFSET,
    JOURNAL_INODE,
    FsIdentity,
    ext_identity,
    ext_needs_recovery,
    fat_identity,
    is_swap,
    jbd2_log_empty,
    ntfs_identity,
    xfs_identity,
)
from imgscan.model import FileRef, ImageInfo, ReaderInfo, Skipped, VolumeStatus

try:
    import pyfsntfs
    import pytsk3
    from dfvfs.analyzer import analyzer as dfvfs_analyzer
    from dfvfs.lib import definitions as dfvfs_defs
    from dfvfs.lib import errors as dfvfs_errors
    from dfvfs.lib import tsk_image
    from dfvfs.path import factory as dfvfs_factory
    from dfvfs.resolver import context as dfvfs_context
    from dfvfs.resolver import resolver as dfvfs_resolver
    from dfvfs.volume import gpt_volume_system, lvm_volume_system, tsk_volume_system

    HAS_DFVFS = True
except ImportError:  # pragma: no cover - exercised only on a broken install
    HAS_DFVFS = False

# imgscan format name -> dfvfs storage-media type indicator
_CONTAINERS = {"qcow2": "QCOW", "vmdk": "VMDK", "vhd": "VHDI", "vhdx": "VHDI", "raw": "RAW"}
# Marks a volume read as raw bytes (swap), and the one FileRef that stands for all of it.
_RAW = "@raw"
# Separates a file's location from the name of one of its NTFS data streams in a locator.
_STREAM = "\0"
# dfvfs filesystem indicators the native reader walks in this version.
_WALKABLE = {"EXT", "XFS", "FAT", "NTFS"}
_FS_NAMES = {
    "EXT": "ext",
    "XFS": "xfs",
    "NTFS": "ntfs",
    "FAT": "vfat",
    "HFS": "hfs",
    "APFS": "apfs",
    "TSK": "unknown",
}
_VOLUME_SYSTEM_NAMES = {
    "LVM": "LVM2_member",
    "LUKSDE": "crypto_LUKS",
    "BDE": "BitLocker",
    "APFS_CONTAINER": "apfs",
    "CS": "CoreStorage",
    "VSHADOW": "vss",
}

# dfvfs raises these (plus OSError) for corrupt or unreadable structures.
_BACKEND_ERRORS: tuple[type[BaseException], ...] = (OSError, RuntimeError, ValueError)
if HAS_DFVFS:
    _BACKEND_ERRORS = (*_BACKEND_ERRORS, dfvfs_errors.Error)


def _require_dfvfs() -> None:
    if not HAS_DFVFS:
        raise ReaderUnavailableError(
            "the native reader needs dfvfs and the libyal libraries: reinstall imgscan with pip "
            "(they are among its dependencies)"
        )


@dataclass(frozen=True)
class _Volume:
    info: VolumeInfo
    address: str  # see _volume_spec
    fs_indicator: str | None


def _unread(
    device: str, fstype: str | None, status: VolumeStatus, reason: str, address: str
) -> _Volume:
    """A volume that will not be walked, with the reason."""
    return _Volume(VolumeInfo(device, fstype, status, reason), address, None)


def _not_read_yet(device: str, name: str, address: str, indicator: str | None) -> _Volume:
    """A volume of a kind libguestfs reads but this reader does not (yet)."""
    reason = f"{name} is not read by the native reader yet; use --reader guestfs"
    info = VolumeInfo(device, name, VolumeStatus.UNSUPPORTED, reason, other_reader=True)
    return _Volume(info, address, indicator)


def _disk_spec(image: str, member: str | None, fmt: str, served: str | None = None) -> Any:
    """Path spec of one disk: the export of its qemu-nbd server (`served`, the socket), else
    the image file itself or a member of an OVA (tar) archive read by libyal."""
    if served is not None:
        from imgscan.image.nbd_dfvfs import TYPE_INDICATOR

        return dfvfs_factory.Factory.NewPathSpec(TYPE_INDICATOR, location=served)
    if fmt not in _CONTAINERS:
        raise ImageError(
            f"{image}: the native reader cannot read {fmt} disks; use --reader guestfs"
        )
    spec = dfvfs_factory.Factory.NewPathSpec(dfvfs_defs.TYPE_INDICATOR_OS, location=image)
    if member is not None:
        spec = dfvfs_factory.Factory.NewPathSpec(
            dfvfs_defs.TYPE_INDICATOR_TAR, location="/" + member.lstrip("/"), parent=spec
        )
    if fmt == "raw":
        # dfvfs' RAW back-end globs for split-image segments (disk.001, disk.002, ...) and so
        # would read other files beside the image; the plain file reads exactly the one file.
        return spec
    return dfvfs_factory.Factory.NewPathSpec(_CONTAINERS[fmt], parent=spec)


def _volume_spec(bases: list[Any], address: str) -> Any:
    """Path spec of a volume from its plain-string address: the disk's index, then a chain of
    steps joined by ">": "GPT:/p2", "TSK_PARTITION:@<byte offset>" (an MBR partition),
    "LVM:/lvm1" (a logical volume); e.g. "0" (a whole disk) or "0>GPT:/p3>LVM:/lvm2"."""
    disk, *steps = address.split(">")
    spec = bases[int(disk)]
    for step in steps:
        indicator, location = step.split(":", 1)
        if location.startswith("@"):
            spec = dfvfs_factory.Factory.NewPathSpec(
                indicator, start_offset=int(location[1:]), parent=spec
            )
        else:
            spec = dfvfs_factory.Factory.NewPathSpec(indicator, location=location, parent=spec)
    return spec


def _fs_spec(volume_spec: Any, indicator: str, location: str) -> Any:
    return dfvfs_factory.Factory.NewPathSpec(indicator, location=location, parent=volume_spec)


class NativeReader:
    """Reader over dfvfs. Opening walks the partition table and identifies every filesystem."""

    warnings: tuple[str, ...] = ()

    def __init__(
        self,
        image: str,
        fmt: FormatInfo,
        keys: tuple[str, ...] = (),
        served: tuple[str | None, ...] = (),
    ) -> None:
        """Open `image` read-only. `keys` (LUKS passphrases) only decide whether an encrypted
        volume is worth handing to libguestfs: this reader does not unlock volumes. `served`
        gives, per disk, the socket of the qemu-nbd server that serves it (served.py), or None
        for a disk libyal reads from the file."""
        _require_dfvfs()
        served = served or (None,) * len(fmt.disks)
        self._keys = keys
        self.image = ImageInfo(path=image, format=fmt.format, virtual_size=fmt.virtual_size)
        self.info = ReaderInfo(name="native", accel=None)
        self._format = fmt.format
        if fmt.format == "qcow2" and fmt.external:
            # libqcow reads only the top image: clusters held by a backing or data file would
            # read as zeros and the scan would look complete while missing them.
            raise ImageError(
                f"{image}: the native reader cannot follow a qcow2 backing or data file; "
                "use --reader guestfs"
            )
        if any(d.compressed and not socket for d, socket in zip(fmt.disks, served, strict=True)):
            # libqcow returns wrong bytes for the compressed clusters qemu-img writes (measured
            # with qemu 7.2) and cannot read zstd at all: leave such images to libguestfs.
            raise ImageError(
                f"{image}: the native reader does not read qcow2 compressed clusters; "
                "use --reader guestfs"
            )
        self._context = dfvfs_context.Context()
        self._disks = tuple((d.member, d.format) for d in fmt.disks)
        self._served = served
        self._bases = [
            _disk_spec(image, member, disk_format, socket)
            for (member, disk_format), socket in zip(self._disks, served, strict=True)
        ]
        try:
            self._volumes = self._discover()
        except ImageError:
            raise
        except _BACKEND_ERRORS as exc:
            raise ImageError(f"{image}: cannot read {fmt.format} image: {_one_line(exc)}") from exc
        self._by_device = {v.info.device: v for v in self._volumes}

    # -- discovery -------------------------------------------------------------------------

    def _discover(self) -> list[_Volume]:
        volumes: list[_Volume] = []
        for index, base in enumerate(self._bases):
            # Disks are named as the guest's kernel names them, in attachment order.
            self._base, self._disk = base, str(index)
            self._disk_device = f"/dev/sd{chr(ord('a') + index)}"
            volumes.extend(self._discover_disk(single=len(self._bases) == 1))
        # A volume group on several disks lists its logical volumes once per physical volume.
        unique = {v.info.device: v for v in reversed(volumes)}
        return sorted(unique.values(), key=lambda v: device_sort_key(v.info.device))

    def _discover_disk(self, single: bool) -> list[_Volume]:
        # The container must open, else this is a corrupt or truncated image.
        handle = dfvfs_resolver.Resolver.OpenFileObject(self._base, resolver_context=self._context)
        self._disk_size = handle.get_size()
        if self._disk_size == 0:
            raise ImageError(f"{self.image.path}: image has no data")
        indicators = dfvfs_analyzer.Analyzer.GetVolumeSystemTypeIndicators(
            self._base, resolver_context=self._context
        )
        table = next((i for i in indicators if i == dfvfs_defs.TYPE_INDICATOR_GPT), None)
        if table is None and not indicators:
            table = self._probe_mbr()
        if table is not None:
            return self._partitions(table)
        volumes = self._identify(self._disk_device, self._disk)
        if single and len(volumes) == 1 and volumes[0].info.fstype is None:
            raise ImageError(
                f"{self.image.path}: no partition table or filesystem found "
                f"(read as {self._format})"
            )
        return volumes

    def _probe_mbr(self) -> str | None:
        # dfvfs' analyzer has no MBR signature of its own; TSK decides whether a DOS partition
        # table is there (the same fallback dfvfs' source scanner uses).
        spec = dfvfs_factory.Factory.NewPathSpec(
            dfvfs_defs.TYPE_INDICATOR_TSK_PARTITION, location="/", parent=self._base
        )
        system = tsk_volume_system.TSKVolumeSystem()
        try:
            system.Open(spec)
        except _BACKEND_ERRORS:
            return None
        return dfvfs_defs.TYPE_INDICATOR_TSK_PARTITION if system.volumes else None

    def _partitions(self, indicator: str) -> list[_Volume]:
        partuuids: dict[int, str] = {}
        entries = (
            self._gpt_entries(partuuids)
            if indicator == dfvfs_defs.TYPE_INDICATOR_GPT
            else self._mbr_entries(partuuids)
        )
        volumes = []
        for number, address, end in entries:
            device = f"{self._disk_device}{number}"
            if end > self._disk_size:
                reason = f"partition ends at byte {end}, beyond the disk's {self._disk_size}"
                volumes.append(
                    _Volume(
                        VolumeInfo(device, None, VolumeStatus.UNREADABLE, reason), address, None
                    )
                )
                continue
            found = self._identify(device, address)
            partuuid = partuuids.get(number)
            volumes.extend(
                replace(v, info=replace(v.info, partuuid=partuuid))
                if v.info.device == device
                else v
                for v in found
            )
        if not volumes:
            raise ImageError(f"{self.image.path}: partition table holds no partitions")
        volumes += self._outside_partitions()
        return sorted(volumes, key=lambda v: device_sort_key(v.info.device))

    def _outside_partitions(self) -> list[_Volume]:
        """What no partition covers that may hold data (unpartitioned.py), as volumes not
        read. Holes of a raw image file are skipped without reading them."""
        handle = dfvfs_resolver.Resolver.OpenFileObject(self._base, resolver_context=self._context)

        def read_at(offset: int, length: int) -> bytes:
            handle.seek(offset)
            data: bytes = handle.read(length)
            return data

        member, disk_format = self._disks[int(self._disk)]
        with contextlib.ExitStack() as stack:
            next_data: unpartitioned.NextData | None = None
            if disk_format == "raw" and member is None:
                fd = os.open(self.image.path, os.O_RDONLY)
                stack.callback(os.close, fd)

                def next_data(offset: int) -> int:
                    try:
                        return os.lseek(fd, offset, os.SEEK_DATA)
                    except OSError as exc:  # ENXIO: no data past `offset`
                        return self._disk_size if exc.errno == errno.ENXIO else offset

            found = unpartitioned.outside_partitions(
                read_at, self._disk_size, OUTSIDE_CHECK_LIMIT, next_data
            )
        return [
            _unread(
                f"{self._disk_device}:unpartitioned@{region.start}",
                None,
                VolumeStatus.UNSUPPORTED,
                region.reason,
                self._disk,
            )
            for region in found
        ]

    def _gpt_entries(self, partuuids: dict[int, str]) -> list[tuple[int, str, int]]:
        """(partition number, volume address, end offset) of every GPT partition."""
        spec = dfvfs_factory.Factory.NewPathSpec(
            dfvfs_defs.TYPE_INDICATOR_GPT, location="/", parent=self._base
        )
        system = gpt_volume_system.GPTVolumeSystem()
        system.Open(spec)
        entries = []
        for volume in system.volumes:
            identifier = volume.identifier  # "p1", "p2", ...: the partition entry number
            end = max((e.offset + e.size for e in volume.extents), default=0)
            guid = volume.GetAttribute("identifier")
            if guid is not None:
                partuuids[int(identifier.lstrip("p"))] = str(guid.value).lower()
            entries.append((int(identifier.lstrip("p")), f"{self._disk}>GPT:/{identifier}", end))
        return entries

    def _mbr_entries(self, partuuids: dict[int, str]) -> list[tuple[int, str, int]]:
        """(partition number, volume address, end offset) of every MBR partition, numbered as
        Linux numbers them: primary slots 1-4, then logical partitions 5, 6, ... along the chain
        of extended boot records. Extended containers themselves are not volumes."""
        handle = dfvfs_resolver.Resolver.OpenFileObject(self._base, resolver_context=self._context)
        handle.seek(440)
        # Linux names an MBR partition's PARTUUID after the disk signature and its number.
        signature = int.from_bytes(handle.read(4), "little")
        table = pytsk3.Volume_Info(tsk_image.TSKFileSystemImage(handle))
        sector = table.info.block_size
        entries = []
        for part in table:
            if not part.flags & pytsk3.TSK_VS_PART_FLAG_ALLOC or part.table_num < 0:
                continue
            if part.desc.startswith((b"DOS Extended", b"Win95 Extended", b"Linux Extended")):
                continue
            number = part.slot_num + 1 if part.table_num == 0 else 4 + part.table_num
            start = part.start * sector
            address = f"{self._disk}>{dfvfs_defs.TYPE_INDICATOR_TSK_PARTITION}:@{start}"
            entries.append((number, address, start + part.len * sector))
            partuuids[number] = f"{signature:08x}-{number:02x}"
        return entries

    def _identify(self, device: str, address: str) -> list[_Volume]:
        """What the volume at `address` holds: a filesystem, swap, or a volume system (LVM:
        the physical volume plus each logical volume, identified in turn)."""
        spec = _volume_spec(self._bases, address)
        try:
            systems = dfvfs_analyzer.Analyzer.GetVolumeSystemTypeIndicators(
                spec, resolver_context=self._context
            )
            systems = [s for s in systems if s != dfvfs_defs.TYPE_INDICATOR_TSK_PARTITION]
            if dfvfs_defs.TYPE_INDICATOR_LVM in systems:
                return self._lvm(device, address)
            if systems:
                name = _VOLUME_SYSTEM_NAMES.get(systems[0], systems[0])
                if name == "crypto_LUKS":
                    if self._keys:
                        # libluksde reads LUKS1 only; libguestfs unlocks LUKS1 and LUKS2.
                        return [_not_read_yet(device, "crypto_LUKS", address, None)]
                    return [
                        _unread(
                            device,
                            name,
                            VolumeStatus.UNSUPPORTED,
                            "encrypted (LUKS) volume: no key given",
                            address,
                        )
                    ]
                return [_not_read_yet(device, name, address, None)]
            found = dfvfs_analyzer.Analyzer.GetFileSystemTypeIndicators(
                spec, resolver_context=self._context
            )
        except _BACKEND_ERRORS as exc:
            return [
                _unread(
                    device,
                    None,
                    VolumeStatus.UNREADABLE,
                    f"cannot read volume: {_one_line(exc)}",
                    address,
                )
            ]
        return [self._filesystem(device, address, spec, found)]

    def _lvm(self, pv_device: str, address: str) -> list[_Volume]:
        """The physical volume (not scanned itself) and every logical volume on it, named as
        the guest names them: /dev/<vg>/<lv>."""
        spec = dfvfs_factory.Factory.NewPathSpec(
            dfvfs_defs.TYPE_INDICATOR_LVM, location="/", parent=_volume_spec(self._bases, address)
        )
        try:
            system = lvm_volume_system.LVMVolumeSystem()
            system.Open(spec)
            # Keep the file system object alive while its volume group is used: the group
            # belongs to the libvslvm handle the file system owns.
            lvm_fs = dfvfs_resolver.Resolver.OpenFileSystem(spec, resolver_context=self._context)
            group = lvm_fs.GetLVMVolumeGroup()
            group_name = group.name
            names = [logical.name for logical in group.logical_volumes]
            physical = group.number_of_physical_volumes
        except _BACKEND_ERRORS as exc:
            # libvslvm cannot assemble every group (one spread over several disks, say);
            # libguestfs' LVM tools can.
            reason = f"cannot read LVM metadata: {_one_line(exc)}"
            info = VolumeInfo(
                pv_device, "LVM2_member", VolumeStatus.UNREADABLE, reason, other_reader=True
            )
            return [_Volume(info, address, None)]
        volumes = [
            _unread(
                pv_device,
                "LVM2_member",
                VolumeStatus.SKIPPED,
                "LVM physical volume; its logical volumes are listed separately",
                address,
            )
        ]
        if physical > 1:
            # dfvfs opens one physical volume only; a group spread over several is left to
            # libguestfs (once per group: every physical volume lists the same volumes).
            return volumes + [
                _not_read_yet(f"/dev/{group_name}/{name}", "LVM2 logical volume", address, None)
                for name in names
            ]
        for volume in system.volumes:
            identifier = volume.identifier  # "lvm1", "lvm2", ...: index into the group + 1
            device = f"/dev/{group_name}/{names[int(identifier.removeprefix('lvm')) - 1]}"
            volumes.extend(self._identify(device, f"{address}>LVM:/{identifier}"))
        return volumes

    def _filesystem(self, device: str, address: str, spec: Any, found: list[str]) -> _Volume:
        if "FAT" in found and not self._fat(spec):
            found = [f for f in found if f != "FAT"]
        indicator = next((f for f in found if f in _WALKABLE), found[0] if found else None)
        if indicator is None and self._swap(spec):
            # Paged-out memory holds passwords and keys: swap is scanned as raw bytes.
            return _Volume(VolumeInfo(device, "swap", VolumeStatus.SCANNED), address, _RAW)
        if indicator is None and self._zeroed(spec):
            return _Volume(VolumeInfo(device, None, VolumeStatus.EMPTY, ZERO_REASON), address, None)
        if indicator is None:
            # libguestfs knows more filesystems (btrfs, reiserfs, jfs, ufs, ...): let it try.
            info = VolumeInfo(
                device,
                None,
                VolumeStatus.UNSUPPORTED,
                "no filesystem recognised",
                other_reader=True,
            )
            return _Volume(info, address, None)
        if indicator not in _WALKABLE:
            name = _FS_NAMES.get(indicator, indicator.lower())
            return _not_read_yet(device, name, address, indicator)
        ident = self._fs_identity(spec, indicator)
        if ident is None:
            return _unread(
                device,
                None,
                VolumeStatus.UNREADABLE,
                f"{_FS_NAMES[indicator]} superblock is damaged",
                address,
            )
        try:
            fs_spec = _fs_spec(spec, indicator, "/")
            dfvfs_resolver.Resolver.OpenFileSystem(fs_spec, resolver_context=self._context)
        except _BACKEND_ERRORS as exc:
            return _unread(
                device,
                ident.fstype,
                VolumeStatus.UNREADABLE,
                f"cannot open {ident.fstype}: {_one_line(exc)}",
                address,
            )
        if indicator == "EXT" and self._unreplayed_journal(spec):
            # The guest's kernel replays the journal at mount: the blocks it holds are what
            # the guest reads, and libfsext reads the stale ones in place. libguestfs mounts
            # behind a throw-away overlay, where the kernel replays it.
            info = VolumeInfo(
                device,
                ident.fstype,
                VolumeStatus.UNSUPPORTED,
                UNREPLAYED_JOURNAL,
                ident.uuid,
                ident.label,
                other_reader=True,
            )
            return _Volume(info, address, indicator)
        if indicator in ("XFS", "NTFS"):
            state = self._log_state(spec, indicator)
            if state is not LogState.CLEAN:
                # XFS: the Linux kernel replays the log at mount, so libguestfs can read the
                # volume as the guest would. NTFS: no reader here replays $LogFile.
                info = VolumeInfo(
                    device,
                    ident.fstype,
                    VolumeStatus.UNSUPPORTED,
                    (XFS_DIRTY_LOG if indicator == "XFS" else NTFS_DIRTY) + f" ({state.value})",
                    ident.uuid,
                    ident.label,
                    other_reader=indicator == "XFS",
                )
                return _Volume(info, address, indicator)
        return _Volume(
            VolumeInfo(device, ident.fstype, VolumeStatus.SCANNED, None, ident.uuid, ident.label),
            address,
            indicator,
        )

    def _log_state(self, spec: Any, indicator: str) -> LogState:
        """Whether an XFS or NTFS volume was cleanly unmounted (imgscan/image/fslogs.py)."""
        handle = dfvfs_resolver.Resolver.OpenFileObject(spec, resolver_context=self._context)

        def read(offset: int, size: int) -> bytes:
            handle.seek(offset)
            data: bytes = handle.read(size)
            return data

        try:
            if indicator == "XFS":
                return xfs_log_state(read(0, 512), read)
            return ntfs_log_state(read)
        except _BACKEND_ERRORS:
            return LogState.UNKNOWN

    def _unreplayed_journal(self, spec: Any) -> bool:
        """Whether an ext volume's journal holds transactions not yet replayed: the superblock
        says `needs_recovery` and the journal's own superblock says its log is not empty (a
        file system copied while mounted says `needs_recovery` with an empty log as well).
        A journal that cannot be read is taken to hold something."""
        handle = dfvfs_resolver.Resolver.OpenFileObject(spec, resolver_context=self._context)
        handle.seek(EXT_SUPERBLOCK_OFFSET)
        if not ext_needs_recovery(handle.read(1024)):
            return False
        journal = dfvfs_factory.Factory.NewPathSpec("EXT", inode=JOURNAL_INODE, parent=spec)
        try:
            head = dfvfs_resolver.Resolver.OpenFileObject(
                journal, resolver_context=self._context
            ).read(1024)
        except _BACKEND_ERRORS:
            return True
        return not jbd2_log_empty(head)

    def _fs_identity(self, spec: Any, indicator: str) -> FsIdentity | None:
        handle = dfvfs_resolver.Resolver.OpenFileObject(spec, resolver_context=self._context)
        handle.seek(0)
        head = handle.read(EXT_SUPERBLOCK_OFFSET + 1024)
        if indicator == "EXT":
            return ext_identity(head[EXT_SUPERBLOCK_OFFSET:])
        if indicator == "XFS":
            return xfs_identity(head)
        if indicator == "FAT":
            return fat_identity(head)
        if indicator == "NTFS":
            ident = ntfs_identity(head)
            if ident is None:
                return None
            # The label is not in the boot sector but in the $Volume file: libfsntfs reads it.
            volume = pyfsntfs.volume()
            try:
                volume.open_file_object(handle)
                return FsIdentity(ident.fstype, ident.uuid, volume.name or None)
            finally:
                volume.close()
        return None

    def _fat(self, spec: Any) -> bool:
        try:
            handle = dfvfs_resolver.Resolver.OpenFileObject(spec, resolver_context=self._context)
            handle.seek(0)
            return fat_identity(handle.read(512)) is not None
        except _BACKEND_ERRORS:
            return False

    def _zeroed(self, spec: Any) -> bool:
        """Whether the volume is small enough to check and every byte of it is zero."""
        try:
            handle = dfvfs_resolver.Resolver.OpenFileObject(spec, resolver_context=self._context)
            size = handle.get_size()
            if size > ZERO_CHECK_LIMIT:
                return False
            handle.seek(0)
            block = 1 << 20
            for offset in range(0, size, block):
                data = handle.read(min(block, size - offset))
                if not data or data.count(0) != len(data):
                    return False
            return True
        except _BACKEND_ERRORS:
            return False

    def _swap(self, spec: Any) -> bool:
        try:
            handle = dfvfs_resolver.Resolver.OpenFileObject(spec, resolver_context=self._context)
            handle.seek(0)
            return is_swap(handle.read(4096))
        except _BACKEND_ERRORS:
            return False

    # -- Reader protocol -------------------------------------------------------------------

    def volumes(self) -> list[VolumeInfo]:
        return [v.info for v in self._volumes]

    def _entry(self, device: str, location: str) -> Any:
        volume = self._by_device[device]
        assert volume.fs_indicator is not None
        spec = _fs_spec(_volume_spec(self._bases, volume.address), volume.fs_indicator, location)
        fs = dfvfs_resolver.Resolver.OpenFileSystem(spec, resolver_context=self._context)
        return fs.GetFileEntryByPathSpec(spec)

    def read_small(self, device: str, path: str, limit: int = 1 << 16) -> bytes | None:
        indicator = self._by_device[device].fs_indicator
        if indicator == _RAW:
            return None  # raw bytes (swap): no files
        if indicator in ("NTFS", "FAT"):
            # dfvfs locations use the filesystem's own separator; libfsntfs and libfsfat look
            # names up case-insensitively, as Windows does.
            path = path.replace("/", "\\")
        try:
            entry = self._entry(device, path)
            if entry is None or not entry.IsFile():
                return None
            handle = entry.GetFileObject()
            return cast(bytes, handle.read(limit))
        except _BACKEND_ERRORS:
            return None

    def files(self, device: str, mountpoint: str) -> Iterator[FileRef | Skipped]:
        """Walk the ext filesystem through libfsext itself, entry by entry.

        dfvfs' directory generator stops at the first entry libfsext cannot decode (a name
        that is not UTF-8), losing the rest of the directory; index access isolates such an
        entry, which is reported as skipped. Files are addressed by inode number.
        """
        volume = self._by_device[device]
        assert volume.fs_indicator is not None
        if volume.fs_indicator == _RAW:
            handle = dfvfs_resolver.Resolver.OpenFileObject(
                _volume_spec(self._bases, volume.address), resolver_context=self._context
            )
            yield FileRef(
                volume=device, path=mountpoint, size=handle.get_size(), locator=_RAW, raw=True
            )
            return
        spec = _fs_spec(_volume_spec(self._bases, volume.address), volume.fs_indicator, "/")
        fs = dfvfs_resolver.Resolver.OpenFileSystem(spec, resolver_context=self._context)
        if volume.fs_indicator != "EXT":
            yield from _walk_entries(fs.GetRootFileEntry(), device, mountpoint, fs.PATH_SEPARATOR)
            return
        root = fs.GetEXTFileEntryByPathSpec(spec)
        names = NameBatches(device)
        yield from _ext_metadata(root, join_guest_path(mountpoint, "/"), device)
        stack: list[tuple[Any, str]] = [(root, "/")]
        # A corrupt (or hostile) ext can hard-link a directory into itself: each directory
        # inode is walked once, and meeting it again is reported rather than followed.
        walked: dict[int, str] = {}
        while stack:
            directory, location = stack.pop()
            inode = int(directory.inode_number)
            if inode in walked or len(location) > MAX_PATH_BYTES:
                reason = (
                    f"directory loop: the same directory as {walked[inode]} (a directory hard "
                    "link: the file system is corrupt); not walked twice"
                    if inode in walked
                    else f"path longer than {MAX_PATH_BYTES} bytes (a loop in the file system?)"
                )
                yield Skipped(join_guest_path(mountpoint, location), reason)
                continue
            walked[inode] = join_guest_path(mountpoint, location)
            try:
                count = directory.number_of_sub_file_entries
            except _BACKEND_ERRORS as exc:
                yield Skipped(
                    join_guest_path(mountpoint, location), f"directory unreadable: {_one_line(exc)}"
                )
                continue
            # Entries are handled as they are read, never held all at once: a directory of a
            # million entries costs the files it yields, and past MAX_DIRECTORY_ENTRIES the
            # rest is reported as not read.
            here = join_guest_path(mountpoint, location)
            known: set[str] = set()
            subdirectories: list[tuple[str, Any]] = []
            failed: list[tuple[int, str]] = []
            if count > MAX_DIRECTORY_ENTRIES:
                yield Skipped(
                    here,
                    f"directory of {count} entries: only the first {MAX_DIRECTORY_ENTRIES} "
                    "were read",
                )
            for index in range(min(count, MAX_DIRECTORY_ENTRIES)):
                try:
                    entry = directory.get_sub_file_entry(index)
                    name = entry.name
                except _BACKEND_ERRORS as exc:
                    failed.append((index, _one_line(exc)))
                    continue
                known.add(name)
                yield from self._ext_child(
                    device, mountpoint, location, name, entry, subdirectories, names
                )
            if failed:
                # libfsext cannot give a name that is not UTF-8; The Sleuth Kit lists the
                # directory with raw names, and libfsext then opens those entries by inode.
                found = self._undecodable(device, fs, spec, directory.inode_number, known)
                for name, entry in found:
                    yield from self._ext_child(
                        device, mountpoint, location, name, entry, subdirectories, names
                    )
                for index, reason in failed[len(found) :]:
                    where = join_guest_path(mountpoint, location.rstrip("/") + f"/#{index}")
                    yield Skipped(where, f"directory entry unreadable: {reason}")
            del known
            for child, entry in sorted(subdirectories, key=lambda c: c[0], reverse=True):
                stack.append((entry, child))
        batch = names.flush()
        if batch is not None:
            yield batch

    @staticmethod
    def _ext_child(
        device: str,
        mountpoint: str,
        location: str,
        name: str,
        entry: Any,
        subdirectories: list[tuple[str, Any]],
        names: NameBatches,
    ) -> Iterator[FileRef | Skipped]:
        """An entry's name (scanned in batches), its metadata (xattrs, a link's target) and,
        for a regular file, the file as a FileRef; a directory goes to `subdirectories` (as
        its location and entry) to be walked later."""
        child = location.rstrip("/") + "/" + name
        path = join_guest_path(mountpoint, child)
        batch = names.add(path, name)
        if batch is not None:
            yield batch
        yield from _ext_metadata(entry, path, device)
        mode = entry.file_mode or 0
        if stat.S_ISDIR(mode):
            subdirectories.append((child, entry))
        elif stat.S_ISREG(mode):
            yield FileRef(
                volume=device,
                path=path,
                size=int(entry.size or 0),
                locator=str(entry.inode_number),
            )

    def _undecodable(
        self, device: str, fs: Any, spec: Any, directory_inode: int, known: set[str]
    ) -> list[tuple[str, Any]]:
        """Entries of a directory whose names libfsext could not decode, named as tar names
        them (UTF-8 with surrogate escapes), found through pytsk3."""
        try:
            volume = dfvfs_resolver.Resolver.OpenFileObject(
                spec.parent, resolver_context=self._context
            )
            tsk_fs = pytsk3.FS_Info(tsk_image.TSKFileSystemImage(volume))
            listing = tsk_fs.open_dir(inode=directory_inode)
        except (OSError, RuntimeError):
            return []
        found = []
        for item in listing:
            raw = item.info.name.name
            if raw in (b".", b"..") or item.info.meta is None:
                continue
            name = raw.decode("utf-8", "surrogateescape")
            if name in known:
                continue
            inode_spec = dfvfs_factory.Factory.NewPathSpec(
                "EXT", inode=int(item.info.meta.addr), parent=spec.parent
            )
            try:
                found.append((name, fs.GetEXTFileEntryByPathSpec(inode_spec)))
            except _BACKEND_ERRORS:
                continue
        return found

    def opener_spec(self) -> OpenerSpec:
        volumes = tuple(
            (v.info.device, f"{v.address}|{v.fs_indicator}")
            for v in self._volumes
            if v.info.status is VolumeStatus.SCANNED
        )
        return OpenerSpec(
            "native", self.image.path, self._format, volumes, self._disks, served=self._served
        )

    def close(self) -> None:
        self._context.Empty()


class NativeOpener:
    """Worker-side file access: its own dfvfs resolver context over the same image."""

    def __init__(self, spec: OpenerSpec) -> None:
        _require_dfvfs()
        self._context = dfvfs_context.Context()
        served = spec.served or (None,) * len(spec.disks)
        bases = [
            _disk_spec(spec.image, member, fmt, socket)
            for (member, fmt), socket in zip(spec.disks, served, strict=True)
        ]
        self._volumes: dict[str, tuple[Any, str]] = {}
        for device, address in spec.volumes:
            volume_address, indicator = address.rsplit("|", 1)
            self._volumes[device] = (_volume_spec(bases, volume_address), indicator)
        self._file_systems: dict[str, Any] = {}

    def open(self, ref: FileRef) -> BinaryIO:
        volume_spec, indicator = self._volumes[ref.volume]
        if ref.locator == _RAW:
            return cast(
                BinaryIO,
                dfvfs_resolver.Resolver.OpenFileObject(volume_spec, resolver_context=self._context),
            )
        if ref.volume not in self._file_systems:
            # Held open for the worker's life: dfvfs closes a file system (and drops it from
            # the resolver cache) when its last file object goes, and reopening it for every
            # file (superblock, group descriptors, journal) cost most of a small file's scan.
            self._file_systems[ref.volume] = dfvfs_resolver.Resolver.OpenFileSystem(
                _fs_spec(volume_spec, indicator, "/"), resolver_context=self._context
            )
        if indicator == "EXT":
            # ext files are addressed by inode: no path lookup, and names need not decode.
            spec = dfvfs_factory.Factory.NewPathSpec(
                indicator, inode=int(ref.locator), parent=volume_spec
            )
        elif _STREAM in ref.locator:
            location, stream = ref.locator.split(_STREAM, 1)
            spec = dfvfs_factory.Factory.NewPathSpec(
                indicator, location=location, data_stream=stream, parent=volume_spec
            )
        else:
            spec = _fs_spec(volume_spec, indicator, ref.locator)
        return cast(
            BinaryIO, dfvfs_resolver.Resolver.OpenFileObject(spec, resolver_context=self._context)
        )

    def release(self, ref: FileRef) -> None:
        """dfvfs caches open objects in the resolver context; nothing to free per file."""


UNREPLAYED_JOURNAL = (
    "the journal holds committed transactions not yet replayed (needs_recovery): the guest's "
    "kernel writes them in place at mount, and the native reader does not replay a journal; "
    "use --reader guestfs (it replays the journal in a throw-away overlay)"
)

# Far beyond any real path (Linux: 4096 bytes per path given to a system call; NTFS: 32,767
# UTF-16 units), and short enough that a directory loop stops after a few hundred turns.
MAX_PATH_BYTES = 65536
# Bytes of unpartitioned space read to see whether it is empty (zeros read fast here).
OUTSIDE_CHECK_LIMIT = 4 << 30
# Entries of one directory that are read: a mail spool or a cache holds tens of thousands;
# past this, the rest is reported as not read (the walk's memory stays bounded).
MAX_DIRECTORY_ENTRIES = 200_000


def _walk_entries(
    root: Any, device: str, mountpoint: str, separator: str
) -> Iterator[FileRef | Skipped]:
    """Every regular file under a dfvfs directory entry (xfs, vfat, exfat, ntfs), addressed by
    its location inside the filesystem (dfvfs writes FAT and NTFS locations with `separator`
    "\\"; guest paths always use "/"). A directory that cannot be listed is reported.
    Every entry's name is scanned too, and on xfs its extended attributes and link targets."""

    ntfs = root.type_indicator == "NTFS"
    xfs = root.type_indicator == "XFS"
    names = NameBatches(device)

    def guest(location: str) -> str:
        return join_guest_path(mountpoint, location.replace(separator, "/"))

    if xfs:
        yield from _ext_metadata(root.GetXFSFileEntry(), guest("/"), device)

    stack = [root]
    while stack:
        directory = stack.pop()
        location = directory.path_spec.location or "/"
        if len(location) > MAX_PATH_BYTES:
            # A directory that contains itself (a corrupt FAT cluster chain, a corrupt MFT)
            # would otherwise be walked for ever: its path grows on each turn.
            yield Skipped(
                guest(location)[:512] + "…",
                f"path longer than {MAX_PATH_BYTES} bytes (a loop in the file system?)",
            )
            continue
        try:
            children = list(directory.sub_file_entries)
        except _BACKEND_ERRORS as exc:
            yield Skipped(guest(location), f"directory unreadable: {_one_line(exc)}")
            continue
        for child in sorted(children, key=lambda e: e.name, reverse=True):
            child_location = child.path_spec.location
            if directory is root and ntfs and child.name.startswith("$"):
                continue  # NTFS metadata ($MFT, $Extend, ...): not files the guest sees
            batch = names.add(guest(child_location), child.name)
            if batch is not None:
                yield batch
            if xfs:
                yield from _ext_metadata(child.GetXFSFileEntry(), guest(child_location), device)
            if child.IsDirectory():
                stack.append(child)
            elif child.IsFile():
                yield FileRef(
                    volume=device,
                    path=guest(child_location),
                    size=int(child.size or 0),
                    locator=child_location,
                )
                if ntfs:
                    yield from _alternate_streams(child, guest(child_location), device)
    batch = names.flush()
    if batch is not None:
        yield batch


def _alternate_streams(entry: Any, path: str, device: str) -> Iterator[FileRef | Skipped]:
    """An NTFS file's named data streams, each a file of its own at `path:stream` (the
    Windows notation): content hidden there is as much a part of the copy as the file."""
    for stream in entry.data_streams:
        name = stream.name
        if not name:
            continue
        try:
            size = entry.GetFileObject(data_stream_name=name).get_size()
        except _BACKEND_ERRORS as exc:
            yield Skipped(f"{path}:{name}", f"stream unreadable: {_one_line(exc)}")
            continue
        yield FileRef(
            volume=device,
            path=f"{path}:{name}",
            size=int(size),
            locator=entry.path_spec.location + _STREAM + name,
        )


def _ext_metadata(entry: Any, path: str, device: str) -> Iterator[FileRef | Skipped]:
    """What an ext or xfs inode carries besides its content (a libfsext or libfsxfs file
    entry, which share these calls): its extended attributes and, for a symbolic link, the
    target string (imgscan/image/metadata.py)."""
    mode = entry.file_mode or 0
    if stat.S_ISLNK(mode):
        try:
            target = entry.symbolic_link_target or ""
        except _BACKEND_ERRORS as exc:
            yield Skipped(path + LINK_SUFFIX, f"link target unreadable: {_one_line(exc)}")
        else:
            yield link_ref(device, path, target.encode("utf-8", "surrogateescape"))
    try:
        count = entry.number_of_extended_attributes
    except _BACKEND_ERRORS as exc:
        yield Skipped(path + XATTR_SUFFIX, f"extended attributes unreadable: {_one_line(exc)}")
        return
    for index in range(count):
        name = f"#{index}"
        try:
            attribute = entry.get_extended_attribute(index)
            name = attribute.name
            if not wants_xattr(name):
                continue
            value = attribute.read_buffer(min(int(attribute.size), XATTR_MAX))
        except _BACKEND_ERRORS as exc:
            yield Skipped(path + XATTR_SUFFIX + name, f"unreadable: {_one_line(exc)}")
            continue
        yield xattr_ref(device, path, name, bytes(value))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__
