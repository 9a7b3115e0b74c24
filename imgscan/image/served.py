"""The native reader over qemu's block layer where libyal cannot read the container.

`ServedNativeReader` decides, per disk of the image, who decodes the container: libyal's image
libraries (in the reader process and the workers, from the file) or a qemu-nbd server started
here, in the main process (nbd.py), whose socket the reader process and every worker connect
to. Partition tables, LVM and filesystems are read by the same dfvfs/libyal parsers either way.
The servers are stopped when the reader closes, and die with this process otherwise.
"""

from __future__ import annotations

import functools

from imgscan.errors import ImageError, ReaderUnavailableError
from imgscan.image.formats import Disk, FormatInfo
from imgscan.image.isolated import IsolatedReader
from imgscan.image.native import NativeReader
from imgscan.image.nbd import NbdServer

# Containers libyal decodes correctly, with half the workers' CPU of the qemu-nbd path
# (benchmarks/RESULTS.md, issue 15): read from the file. qcow2 compressed clusters are not among
# them (libqcow returns wrong bytes for qemu's zlib clusters and cannot read zstd), nor is VDI
# (no libyal library reads it).
LIBYAL_CONTAINERS = frozenset({"qcow2", "vmdk", "vhd", "vhdx", "raw"})


def served_by_qemu(disk: Disk) -> bool:
    """Whether `disk` is read through a qemu-nbd server rather than libyal."""
    return disk.compressed or disk.format not in LIBYAL_CONTAINERS


def _start(image: str, disk: Disk) -> NbdServer:
    try:
        return NbdServer(image, disk)
    except ReaderUnavailableError as exc:
        # The auto reader then gives the image to libguestfs, as it names.
        raise ImageError(f"{image}: {exc}; or use --reader guestfs") from None


class ServedNativeReader(IsolatedReader):
    """The native reader (in its reader process, isolated.py), with a qemu-nbd server for each
    disk that `served_by_qemu`. Raises what the servers raise (ImageError with qemu's reason
    for an image qemu cannot open) and what the native reader raises."""

    def __init__(self, image: str, fmt: FormatInfo, keys: tuple[str, ...] = ()) -> None:
        self._servers: list[NbdServer] = []
        try:
            sockets: list[str | None] = []
            for disk in fmt.disks:
                if served_by_qemu(disk):
                    server = _start(image, disk)
                    self._servers.append(server)
                    sockets.append(server.socket)
                else:
                    sockets.append(None)
            factory = functools.partial(NativeReader, served=tuple(sockets))
            super().__init__(factory, image, fmt, keys)
        except BaseException:
            self._stop_servers()
            raise

    def _stop_servers(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.stop()

    def close(self) -> None:
        """Stop the reader process, then the servers (the workers are done with them)."""
        try:
            super().close()
        finally:
            self._stop_servers()
