"""The reader process (imgscan/image/isolated.py): a crash while opening the image, while reading
a small file or while listing a volume costs that and nothing more.

The reader here is the real native reader over the real server image, made to crash on cue
with SIGSEGV, as libyal would on corrupt metadata: `CrashingReader` kills its own process at
the point a test names. Each crash must come back as data (an ImageError, a warning, a Skipped
entry), the next request must be served by a new reader process, and no process may be left.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import readers

from imgscan.errors import ImageError
from imgscan.image.formats import FormatInfo, detect_format
from imgscan.image.isolated import IsolatedReader
from imgscan.image.native import NativeReader
from imgscan.model import FileRef, Skipped

# Where to crash, passed through the image's "keys" (the only free argument a factory gets):
# "open", "read:<path>", or "list:<device>:<after N items>".
_CRASH_PREFIX = "crash-at="


def _crash() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


class CrashingReader(NativeReader):
    def __init__(self, image: str, fmt: FormatInfo, keys: tuple[str, ...] = ()) -> None:
        self._crash_at = [
            k.removeprefix(_CRASH_PREFIX) for k in keys if k.startswith(_CRASH_PREFIX)
        ]
        if "open" in self._crash_at:
            _crash()
        super().__init__(image, fmt, ())

    def read_small(self, device: str, path: str, limit: int = 1 << 16) -> bytes | None:
        if f"read:{path}" in self._crash_at:
            _crash()
        return super().read_small(device, path, limit)

    def files(self, device: str, mountpoint: str) -> Iterator[FileRef | Skipped]:
        after = next(
            (int(c.rsplit(":", 1)[1]) for c in self._crash_at if c.startswith(f"list:{device}:")),
            None,
        )
        for count, item in enumerate(super().files(device, mountpoint)):
            if count == after:
                _crash()
            yield item


def _open(image: Path, *crash: str) -> IsolatedReader:
    fmt = detect_format(image, False)
    return IsolatedReader(CrashingReader, str(image), fmt, tuple(_CRASH_PREFIX + c for c in crash))


def _paths(items: list[Any]) -> list[str]:
    return [i.path for i in items if isinstance(i, FileRef)]


@pytest.fixture
def server(images: Path) -> Iterator[Path]:
    yield images / "server.qcow2"
    assert readers(os.getpid()) == []  # every test leaves no reader process behind


def test_a_crash_while_opening_is_an_image_error(server: Path) -> None:
    with pytest.raises(ImageError) as raised:
        _open(server, "open")
    message = str(raised.value)
    assert "crashed (signal SIGSEGV) while opening the image" in message
    assert "--reader guestfs" in message  # the auto reader falls back on this


def test_a_crash_while_listing_costs_the_rest_of_that_volume(server: Path) -> None:
    whole = _open(server)
    try:
        expected = {d: _paths(list(whole.files(d, f"/m{d}"))) for d in ("/dev/sda1", "/dev/sda2")}
    finally:
        whole.close()
    reader = _open(server, "list:/dev/sda1:100")
    try:
        first = list(reader.files("/dev/sda1", "/m/dev/sda1"))
        # What the reader process sent before the crash (whole batches) is kept, in order;
        # then one Skipped says why the rest is missing.
        kept = _paths(first)
        assert len(kept) <= 100 and kept == expected["/dev/sda1"][: len(kept)]
        assert isinstance(first[-1], Skipped)
        assert first[-1].path == "/m/dev/sda1"
        assert "crashed (signal SIGSEGV) while listing /dev/sda1" in first[-1].reason
        # A new reader process lists the next volume whole (its own crash point not reached).
        assert _paths(list(reader.files("/dev/sda2", "/m/dev/sda2"))) == expected["/dev/sda2"]
    finally:
        reader.close()


def test_a_crash_while_reading_a_small_file_is_a_warning(server: Path) -> None:
    reader = _open(server, "read:/etc/fstab")
    try:
        assert reader.read_small("/dev/sda1", "/etc/hostname") is not None
        assert reader.read_small("/dev/sda1", "/etc/fstab") is None
        assert reader.warnings == (
            "the native reader crashed (signal SIGSEGV) while reading /etc/fstab on /dev/sda1; "
            "not read",
        )
        assert reader.read_small("/dev/sda1", "/etc/hostname") is not None  # a new process
    finally:
        reader.close()


def test_a_listing_closed_early_stops_the_reader_process(server: Path) -> None:
    reader = _open(server)
    listing = reader.files("/dev/sda1", "/")
    next(listing)
    assert len(readers(os.getpid())) == 1
    listing.close()  # as an interrupted scan closes it
    assert readers(os.getpid()) == []
    reader.close()
