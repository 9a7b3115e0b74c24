"""The reader extension point: what every image reader provides, and the value types it returns.

A reader opens one image read-only and exposes its volumes and the regular files on each.
Walking happens through `Reader` (the native one in a reader process of its own, isolated.py);
reading file content happens in worker processes (`FileOpener`), which rebuild their own handle
on the image from the plain-data `OpenerSpec`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from imgscan.model import FileRef, ImageInfo, ReaderInfo, Skipped, VolumeStatus


@dataclass(frozen=True)
class VolumeInfo:
    """A volume as the reader found it, before mountpoints are known.

    `status` is SCANNED for a filesystem the reader can walk (it will be scanned), otherwise the
    reason it cannot be. `uuid` and `label` come from the filesystem superblock; fstab refers to
    volumes by them. `reader` names the reader that will read it; `other_reader` is true when
    this reader lacks support another reader (libguestfs) may have.
    """

    device: str
    fstype: str | None
    status: VolumeStatus
    reason: str | None = None
    uuid: str | None = None
    label: str | None = None
    reader: str | None = None
    other_reader: bool = False
    parent: str | None = None  # the unlocked container a /dev/mapper volume comes from
    partuuid: str | None = None  # partition-table id of a partition (fstab's PARTUUID=)
    # btrfs: (id, path from the top-level subvolume) of every subvolume, nested ones included.
    # The reader walks the top level, where each subvolume is a directory at its path.
    subvolumes: tuple[tuple[int, str], ...] = ()
    default_subvolume: str = ""  # btrfs: what a mount without subvol= shows ("" = top level)


# A volume with no filesystem is read to the end to see whether it holds anything at all (a
# Microsoft reserved partition is all zeros). Past this size the read would cost more than it
# tells: such a volume stays "unsupported" and makes coverage incomplete.
ZERO_CHECK_LIMIT = 256 << 20
ZERO_REASON = "no filesystem; every byte is zero"


@dataclass(frozen=True)
class OpenerSpec:
    """Plain data from which a worker process rebuilds its own access to file content."""

    reader: str
    image: str
    format: str
    volumes: tuple[tuple[str, str], ...] = ()  # (device, reader-private volume address)
    disks: tuple[tuple[str | None, str], ...] = ()  # (archive member or None, disk format)
    served: tuple[str | None, ...] = ()  # per disk: its qemu-nbd socket, or None (read by libyal)
    parts: tuple[OpenerSpec, ...] = ()  # the "auto" reader: one spec per underlying reader
    routes: tuple[tuple[str, int], ...] = ()  # the "auto" reader: device -> index in parts


class Reader(Protocol):
    """One open image. Not shared across processes; workers use `opener_spec()` instead."""

    image: ImageInfo
    info: ReaderInfo

    @property
    def warnings(self) -> tuple[str, ...]:
        """Trouble worth telling the user that is not a volume's status; it may grow while the
        reader reads (a reader process that crashed), so it is read again at the end."""
        ...

    def volumes(self) -> list[VolumeInfo]:
        """Every volume seen on the image, readable or not, in device order."""
        ...

    def read_small(self, device: str, path: str, limit: int = 1 << 16) -> bytes | None:
        """Up to `limit` bytes of a regular file inside a readable volume, or None if absent.

        `path` is absolute inside the volume, with "/" separators. On ntfs, vfat and exfat the
        name matches regardless of case, as Windows looks it up.
        """
        ...

    def files(self, device: str, mountpoint: str) -> Iterator[FileRef | Skipped]:
        """Every regular file on a readable volume, with guest paths under `mountpoint`.

        Directories that cannot be read are yielded as Skipped. Symlinks, devices, FIFOs and
        sockets are not files to scan and are never followed.
        """
        ...

    def opener_spec(self) -> OpenerSpec: ...

    def close(self) -> None: ...


class FileOpener(Protocol):
    """Worker-side access to the content of a FileRef."""

    def open(self, ref: FileRef) -> BinaryIO:
        """A readable (and, where the reader allows, seekable) binary stream of the file."""
        ...

    def release(self, ref: FileRef) -> None:
        """Called once the worker is done with `ref` (a reader may free spooled data)."""
        ...


_DRIVE_ROOT = re.compile(r"^[A-Z]:\\$")


def join_guest_path(mountpoint: str, inner: str) -> str:
    """Guest path of `inner` (absolute in its filesystem) on a volume mounted at `mountpoint`.

    A Windows drive mountpoint ("C:\\") gives a Windows path: C:\\Users\\alice\\notes.txt.
    """
    inner = "/" + inner.lstrip("/")
    if _DRIVE_ROOT.match(mountpoint):
        return mountpoint + inner[1:].replace("/", "\\")
    if mountpoint in ("", "/"):
        return inner
    return mountpoint.rstrip("/") + (inner if inner != "/" else "")


def device_sort_key(device: str) -> list[str | int]:
    """Natural order of device names, the same for every reader: /dev/sda2 before /dev/sda10.

    re.split with a capture group alternates text and digit runs, so like always meets like.
    """
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", device)]
