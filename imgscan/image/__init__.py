"""Image readers. Registration is explicit: one entry per reader in `ReaderKind`, one branch in
each factory below, and the type checker's `assert_never` catches a missing branch."""

from __future__ import annotations

from enum import StrEnum
from typing import BinaryIO, assert_never

from imgscan.image.formats import FormatInfo
from imgscan.image.interface import FileOpener, OpenerSpec, Reader
from imgscan.model import FileRef


class ReaderKind(StrEnum):
    AUTO = "auto"
    NATIVE = "native"
    GUESTFS = "guestfs"


def open_reader(
    kind: ReaderKind, image: str, fmt: FormatInfo, keys: tuple[str, ...] = ()
) -> Reader:
    """Open `image` (of detected format `fmt`) read-only with the chosen reader; `keys` are
    passphrases for encrypted volumes."""
    match kind:
        case ReaderKind.AUTO:
            from imgscan.image.auto import AutoReader

            return AutoReader(image, fmt, keys)
        case ReaderKind.NATIVE:
            from imgscan.image.served import ServedNativeReader

            # In a reader process of its own: a crash in libyal costs a volume, not the scan;
            # qemu-nbd decodes the containers libyal cannot.
            return ServedNativeReader(image, fmt, keys)
        case ReaderKind.GUESTFS:
            from imgscan.image.guestfs import GuestfsReader

            return GuestfsReader(image, fmt, keys)
        case _:
            assert_never(kind)


def make_opener(spec: OpenerSpec) -> FileOpener:
    """Worker-side file access for the reader that produced `spec`."""
    kind = ReaderKind(spec.reader)
    match kind:
        case ReaderKind.AUTO:
            return RoutedOpener(spec)
        case ReaderKind.NATIVE:
            from imgscan.image.native import NativeOpener

            return NativeOpener(spec)
        case ReaderKind.GUESTFS:
            from imgscan.image.guestfs import GuestfsOpener

            return GuestfsOpener(spec)
        case _:
            assert_never(kind)


class RoutedOpener:
    """Worker-side file access for the auto reader: each volume's files through the opener of
    the reader that walked it."""

    def __init__(self, spec: OpenerSpec) -> None:
        openers = [make_opener(part) for part in spec.parts]
        self._by_device = {device: openers[index] for device, index in spec.routes}

    def open(self, ref: FileRef) -> BinaryIO:
        return self._by_device[ref.volume].open(ref)

    def release(self, ref: FileRef) -> None:
        self._by_device[ref.volume].release(ref)
