"""The auto reader: the native reader for every volume it can read, libguestfs for the rest.

The native reader is ~45x faster here than libguestfs under TCG, so it reads whatever it can;
libguestfs is launched only when the native reader cannot open the image at all (a format it
lacks) or leaves volumes it has no support for (marked `other_reader`). Each volume in the
report names the reader that read it. Without libguestfs installed, such volumes stay unread
with the reason, and coverage is incomplete.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace

from imgscan.errors import ImageError, ReaderUnavailableError
from imgscan.image.formats import FormatInfo
from imgscan.image.interface import OpenerSpec, Reader, VolumeInfo, device_sort_key
from imgscan.model import FileRef, ImageInfo, ReaderInfo, Skipped, VolumeStatus

_log = logging.getLogger(__name__)


def _guestfs(image: str, fmt: FormatInfo, keys: tuple[str, ...]) -> Reader:
    from imgscan.image.guestfs import GuestfsReader

    return GuestfsReader(image, fmt, keys)


def _native(image: str, fmt: FormatInfo, keys: tuple[str, ...]) -> Reader:
    from imgscan.image.served import ServedNativeReader

    # In a reader process of its own (isolated.py): if libyal crashes while opening the image,
    # the ImageError says "--reader guestfs" and libguestfs is tried instead. Containers libyal
    # cannot decode (compressed qcow2, VDI) are read through qemu-nbd (served.py).
    return ServedNativeReader(image, fmt, keys)


class AutoReader:
    """A Reader that routes each volume to the native or the libguestfs reader."""

    def __init__(self, image: str, fmt: FormatInfo, keys: tuple[str, ...] = ()) -> None:
        self._keys = keys
        self.image = ImageInfo(path=image, format=fmt.format, virtual_size=fmt.virtual_size)
        self._readers: list[Reader] = []
        self._route: dict[str, Reader] = {}
        self._warnings: list[str] = []
        try:
            native: Reader | None = _native(image, fmt, keys)
        except ImageError as exc:
            if "--reader guestfs" not in str(exc):
                raise  # the image itself is bad: libguestfs would not do better
            _log.info("native reader: %s; using libguestfs", exc)
            native = None
        try:
            if native is None:
                whole = _guestfs(image, fmt, keys)
                self._adopt(whole, whole.volumes())
            else:
                volumes = native.volumes()
                self._adopt(native, volumes)
                gaps = [v for v in volumes if v.other_reader]
                if gaps:
                    self._fill(image, fmt, gaps)
        except BaseException:
            # Nobody gets this reader to close (a Ctrl-C while libguestfs launches, an error):
            # stop the native reader's process now, or it outlives the scan.
            if native is not None:
                native.close()
            self.close()
            raise
        self.info = ReaderInfo(
            name="auto", accel=next((r.info.accel for r in self._readers if r.info.accel), None)
        )

    def _adopt(self, reader: Reader, volumes: list[VolumeInfo]) -> None:
        self._readers.append(reader)
        for volume in volumes:
            self._route[volume.device] = reader
        self._volumes = {
            **getattr(self, "_volumes", {}),
            **{v.device: replace(v, reader=reader.info.name) for v in volumes},
        }

    def _fill(self, image: str, fmt: FormatInfo, gaps: list[VolumeInfo]) -> None:
        """Ask libguestfs for the volumes the native reader could not read."""
        names = ", ".join(v.device for v in gaps)
        _log.info("native reader cannot read %s; starting libguestfs for them", names)
        try:
            guest = _guestfs(image, fmt, self._keys)
        except (ReaderUnavailableError, ImageError) as exc:
            self._warnings.append(f"libguestfs unavailable for {names}: {exc}")
            return
        # The gaps themselves, and what libguestfs found inside them (an unlocked LUKS volume's
        # content, logical volumes inside it) that the native reader never saw.
        wanted = {v.device for v in gaps}
        taken = [v for v in guest.volumes() if v.device in wanted or v.device not in self._volumes]
        if not taken:
            guest.close()
            return
        self._adopt(guest, taken)

    @property
    def warnings(self) -> tuple[str, ...]:
        own = tuple(self._warnings)
        return own + tuple(w for r in self._readers for w in r.warnings if w not in own)

    def volumes(self) -> list[VolumeInfo]:
        return sorted(self._volumes.values(), key=lambda v: device_sort_key(v.device))

    def read_small(self, device: str, path: str, limit: int = 1 << 16) -> bytes | None:
        return self._route[device].read_small(device, path, limit)

    def files(self, device: str, mountpoint: str) -> Iterator[FileRef | Skipped]:
        return self._route[device].files(device, mountpoint)

    def opener_spec(self) -> OpenerSpec:
        parts = tuple(reader.opener_spec() for reader in self._readers)
        routes = tuple(
            (device, self._readers.index(reader))
            for device, reader in self._route.items()
            if self._volumes[device].status is VolumeStatus.SCANNED
        )
        return OpenerSpec("auto", self.image.path, self.image.format, parts=parts, routes=routes)

    def close(self) -> None:
        for reader in self._readers:
            reader.close()
