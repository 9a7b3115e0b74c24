"""qemu's block layer as a read-only block device: qemu-nbd serving one disk, read over libnbd.

qemu's block drivers are the reference implementations of qcow2 (zlib and zstd compressed
clusters included), VDI, vmdk, VHD and VHDX. `NbdServer` runs `qemu-nbd` on one disk of the
image, read-only, with the format imgscan detected given explicitly (qemu never probes) and a
backing file refused by the options themselves (`"backing": null`); external data files are
refused by imgscan's own header check before any server starts (formats.py), since qemu 7.2
accepts `"data-file": null` and then reads the data clusters as nothing. The image file is
opened without a lock (`"locking": "off"`), so the image of a running VM can be read.

The server listens on a unix socket in a private (0700) temporary directory and lives no
longer than the process that started it: `stop()` ends it (the readers call it on close, on an
error and on an interrupt), and the kernel kills it (PR_SET_PDEATHSIG) if that process dies
any other way, SIGKILL included. It runs in a process group of its own (in imgscan's session),
so a Ctrl-C at the terminal reaches imgscan, which decides, and not the server.

`NbdDevice` is the client side: one libnbd connection per process and socket (every process,
the reader process and each worker, connects on its own; the server accepts any number of
clients), with a bounded cache of aligned blocks, since filesystem parsers issue many small
reads and an NBD round trip costs ~40 µs whatever its size up to tens of KiB.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from imgscan.errors import ImageError, ReaderUnavailableError
from imgscan.image.formats import QEMU_DRIVERS, Disk

try:
    import nbd

    HAS_LIBNBD = True
except ImportError:  # pragma: no cover - exercised only without python3-libnbd
    HAS_LIBNBD = False

QEMU_NBD = "qemu-nbd"
# How long qemu-nbd may take to open the image and listen: opening reads only headers and
# tables, bounded by qemu's own limits on their sizes.
_START_TIMEOUT = 30.0
_STOP_GRACE = 5.0
_PR_SET_PDEATHSIG = 1

# Block cache of each NbdDevice: aligned blocks, least recently used dropped first.
BLOCK_SIZE = 1 << 20
CACHE_BLOCKS = 32  # 32 MiB per process and disk
# libnbd refuses a single request above 64 MiB (the NBD protocol's usual maximum).
_MAX_REQUEST = 32 << 20


def _require_qemu_nbd() -> str:
    path = shutil.which(QEMU_NBD)
    if path is None or not HAS_LIBNBD:
        raise ReaderUnavailableError(
            "reading this image natively needs qemu-nbd and libnbd's Python binding: install "
            "the Debian packages qemu-utils and python3-libnbd"
        )
    return path


def blockdev_options(image: str, disk: Disk) -> dict[str, object]:
    """qemu's block options for `disk` of `image`: the detected format's driver over the
    image file (or over the byte range of an OVA member), with no backing file."""
    node: dict[str, object] = {"driver": "file", "filename": image, "locking": "off"}
    if disk.member is not None:
        node = {"driver": "raw", "offset": disk.offset, "size": disk.size, "file": node}
    if disk.format == "raw":
        return node if disk.member is not None else {"driver": "raw", "file": node}
    return {"driver": QEMU_DRIVERS[disk.format], "backing": None, "file": node}


def _die_with_parent(parent: int) -> None:
    """In the forked child before exec: ask the kernel for SIGKILL when the parent's forking
    thread ends, and end at once if the parent is already gone (the request came too late)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


class NbdServer:
    """qemu-nbd serving one disk of an image read-only on a private unix socket.

    Start it from the main thread: the kernel's parent-death signal fires when the thread
    that forked the server ends. Raises ImageError (one line, qemu's own reason) when qemu
    cannot open the image, ReaderUnavailableError when qemu-nbd or libnbd is missing.
    """

    def __init__(self, image: str, disk: Disk) -> None:
        program = _require_qemu_nbd()
        self._dir = tempfile.mkdtemp(prefix="imgscan-nbd-")  # mode 0700
        self.socket = os.path.join(self._dir, "disk.sock")
        self._pid_file = os.path.join(self._dir, "qemu-nbd.pid")
        options = json.dumps(blockdev_options(image, disk))
        command = [
            program,
            "--read-only",
            "--persistent",
            "--shared=0",  # any number of clients: the reader process and every worker
            "--cache=writeback",
            f"--socket={self.socket}",
            f"--pid-file={self._pid_file}",
            f"json:{options}",
        ]
        self._log = open(os.path.join(self._dir, "qemu-nbd.log"), "w+b")  # noqa: SIM115
        try:
            self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
                process_group=0,
                preexec_fn=functools.partial(_die_with_parent, os.getpid()),
                close_fds=True,
            )
        except OSError as exc:
            self._cleanup()
            raise ReaderUnavailableError(f"cannot start qemu-nbd: {exc}") from None
        try:
            self._wait_ready(image)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, image: str) -> None:
        """Until qemu-nbd has opened the image: it writes its pid file only then (the socket
        exists before the image is opened, and stays until a failed open makes it exit)."""
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                raise ImageError(f"{image}: {self._reason()}")
            if os.path.exists(self._pid_file) and os.path.getsize(self._pid_file) > 0:
                return
            if time.monotonic() > deadline:
                raise ImageError(f"{image}: qemu-nbd did not open the image within 30 s")
            time.sleep(0.01)

    def _reason(self) -> str:
        """qemu-nbd's own one-line reason for failing to open the image."""
        self._log.seek(0)
        text = self._log.read(4096).decode("utf-8", "replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        reason = lines[-1] if lines else "qemu-nbd ended without a reason"
        # "qemu-nbd: Failed to blk_new_open 'json:{...}': Image is not in qcow2 format"
        if "': " in reason:
            reason = reason.split("': ", 1)[1]
        return f"qemu cannot open the image: {' '.join(reason.split())[:300]}"

    def stop(self) -> None:
        """End the server and remove its directory; safe to call more than once."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)


@dataclass
class _Connection:
    handle: nbd.NBD
    size: int


class NbdDevice:
    """Random read access to an NBD export over one libnbd connection, through a bounded LRU
    cache of `block_size`-aligned blocks. Thread-safe. Read errors raise OSError."""

    def __init__(
        self, socket: str, block_size: int = BLOCK_SIZE, blocks: int = CACHE_BLOCKS
    ) -> None:
        if not HAS_LIBNBD:
            _require_qemu_nbd()
        handle = nbd.NBD()
        # Simple replies: qemu-nbd 7.2 answers a failed read in a structured (sparse) reply by
        # dropping the connection, so one unreadable cluster would fail every later read of
        # the process; a simple reply carries the error for that one request.
        handle.set_request_structured_replies(False)
        try:
            handle.connect_unix(socket)
            self._connection = _Connection(handle, int(handle.get_size()))
        except nbd.Error as exc:
            raise OSError(f"cannot connect to the image server: {exc}") from None
        self.size = self._connection.size
        self._block = block_size
        self._limit = blocks
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def _fetch(self, length: int, offset: int) -> bytes:
        try:
            return bytes(self._connection.handle.pread(length, offset))
        except nbd.Error as exc:
            raise OSError(f"image read failed at byte {offset}: {exc}") from None

    def _cached_block(self, index: int) -> bytes:
        block = self._cache.get(index)
        if block is not None:
            self._cache.move_to_end(index)
            return block
        start = index * self._block
        block = self._fetch(min(self._block, self.size - start), start)
        self._cache[index] = block
        if len(self._cache) > self._limit:
            self._cache.popitem(last=False)
        return block

    def pread(self, length: int, offset: int) -> bytes:
        """Up to `length` bytes at `offset`; fewer only at the end of the device."""
        if offset < 0 or length < 0:
            raise OSError("negative offset or length")
        length = min(length, self.size - offset)
        if length <= 0:
            return b""
        with self._lock:
            if length >= self._block:
                # A long read (file content) goes straight through, in bounded requests,
                # and does not flush the metadata blocks out of the cache.
                return b"".join(
                    self._fetch(min(_MAX_REQUEST, offset + length - at), at)
                    for at in range(offset, offset + length, _MAX_REQUEST)
                )
            first, last = offset // self._block, (offset + length - 1) // self._block
            parts = [self._cached_block(i) for i in range(first, last + 1)]
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        skip = offset - first * self._block
        return data[skip : skip + length]

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
            self._connection.handle.shutdown()


_devices: dict[tuple[int, str], NbdDevice] = {}
_devices_lock = threading.Lock()


def device(socket: str) -> NbdDevice:
    """This process's connection to the server on `socket` (made on first use)."""
    key = (os.getpid(), socket)
    with _devices_lock:
        found = _devices.get(key)
        if found is None:
            found = _devices[key] = NbdDevice(socket)
        return found
