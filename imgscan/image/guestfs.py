"""The libguestfs reader: the image is attached read-only to a small appliance VM, whose Linux
kernel mounts each filesystem; files leave the appliance as one `tar_out` stream per volume.

Why this shape:

- Every libguestfs call is an RPC into the appliance (~0.2 s under TCG), so nothing here is
  per file: volumes are probed with a handful of calls each, and a volume's files arrive as a
  single tar stream that is parsed on the host as it flows. Small files travel to the workers
  inline in their FileRef; larger ones are spooled to a private temp dir, and the worker deletes
  the spool file when it is done (`GuestfsOpener.release`).
- Hardening follows libguestfs' security guidance for untrusted images: the container format is
  always the one imgscan detected (qemu never probes), the drive is read-only, the appliance has
  no network and bounded memory, every filesystem is mounted with `mount_ro`, and no guest
  binary is ever run (no `sh`/`command`, no inspection, hence no icon extraction either).
- KVM is tried first. Where it cannot start (here: qemu aborts setting an MSR), the launch is
  retried under TCG, and `info.accel` says which one ran.
- The handle lives on one private thread (`_HandleThread`): libguestfs keeps its error handler
  per thread and the Python bindings silence it only in the thread that created the handle, so a
  call from any other thread would also print "libguestfs: error: ..." on stderr. `tar_out` has
  to run beside the thread that consumes its stream, hence one thread owns every call.
- Interruption (KeyboardInterrupt in the main thread, which SIGINT and the CLI's SIGTERM
  handler raise) never leaves qemu running: a call the main thread stops waiting for still runs
  to its end on the handle's thread, and `close()` queues the shutdown behind it (a `tar_out`
  is cut short first by closing its pipe). A launch cannot be cancelled through the API, so an
  interrupted launch kills the qemu it started (see `_abandon_launch`). Closing the handle at
  interpreter exit while another thread still launches it would crash libguestfs (a double
  free, seen here), hence no launch is ever left behind.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import queue
import re
import shutil
import signal
import stat
import tarfile
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, BinaryIO, TypeVar, cast

from imgscan.errors import ImageError, ReaderUnavailableError
from imgscan.image import luks, unpartitioned
from imgscan.image.formats import QEMU_DRIVERS, Disk, FormatInfo
from imgscan.image.fslogs import NTFS_DIRTY, LogState, ntfs_log_state
from imgscan.image.interface import (
    ZERO_CHECK_LIMIT,
    ZERO_REASON,
    OpenerSpec,
    VolumeInfo,
    device_sort_key,
    join_guest_path,
)
from imgscan.image.metadata import NameBatches, link_ref, wants_xattr, xattr_ref
from imgscan.model import FileRef, ImageInfo, ReaderInfo, Skipped, VolumeStatus

try:
    import guestfs

    HAS_GUESTFS = True
except ImportError:  # pragma: no cover - exercised only where python3-guestfs is missing
    HAS_GUESTFS = False

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Spool files live in a private directory `<tempdir>/imgscan-guestfs-XXXX/spool-XXXX`; the
# opener refuses any locator that is not of exactly this shape.
TEMP_PREFIX = "imgscan-guestfs-"
SPOOL_PREFIX = "spool-"
# Files up to this size travel inline in the FileRef (pickled to the worker); larger ones are
# spooled to disk so that neither process holds a big file in memory.
INLINE_MAX = 1 << 20
# Appliance RAM in MiB: enough for the kernel, page cache and btrfs/xfs metadata, and a bound on
# what a hostile image can make the appliance allocate on the host. qemu's own RSS is this plus
# TCG's translation cache and its own overhead: measured on the 2 GB benchmark image, 855 MiB
# at 512 (1,106 MiB at 768), so a scan stays under 1 GiB. Unlocking LUKS2 needs what the
# volume's argon2id key slot asks (up to 1 GiB, cryptsetup's default cap): with passphrases
# the appliance gets room for that.
APPLIANCE_MEMSIZE = 512
APPLIANCE_MEMSIZE_LUKS = 1536
# Unpartitioned space is read through the appliance (slow under TCG) to see whether it is
# empty: at most this much, in pieces of _PREAD_PIECE (libguestfs' protocol carries ~4 MiB).
OUTSIDE_CHECK_LIMIT = 1 << 30
_PREAD_PIECE = 2 << 20
# Bytes per `pread` call: the protocol caps one message at 4 MiB.
_PREAD_CHUNK = 2 << 20
# Filesystems whose names Windows looks up case-insensitively.
_CASE_INSENSITIVE = ("ntfs", "vfat", "exfat")
_SPOOL_CHUNK = 1 << 20
# How long to wait for an interrupted `tar_out` to notice its reader is gone (it takes ~0.1 s).
_STREAM_STOP_TIMEOUT = 60.0
# How long close() waits for the appliance to shut down before leaving it to libguestfs' own
# exit handler (and its recovery process, which kills qemu when this process dies).
_CLOSE_TIMEOUT = 30.0
# How long a launch with the default accelerator (KVM) may take before it counts as failed and
# TCG is tried. Under KVM the appliance is up in a few seconds; on some hosts qemu aborts under
# KVM at once, on others (this project's CI machines, at times) the launch never returns, and
# without a bound the scan would hang with it.
KVM_LAUNCH_TIMEOUT = 60.0

# MBR partition type ids of an extended partition: a container of logical partitions (which
# libguestfs lists as sda5, sda6, ...), not a volume.
_MBR_EXTENDED_IDS = {0x05, 0x0F, 0x85}
_PARTITION = re.compile(r"^(/dev/[a-z]+)(\d+)$")
# /dev/VG/LV with the characters LVM allows in a name (lvm(8), "VALID NAMES").
_LVM_NAME = re.compile(r"^[A-Za-z0-9+_.-]+$")
_LV_PATH = re.compile(r"^/dev/[A-Za-z0-9+_.-]+/[A-Za-z0-9+_.-]+$")
# The appliance kernel logs this only when it runs on KVM; under TCG there is no hypervisor
# CPUID leaf (checked: no "Hypervisor detected" line at all in a TCG appliance's dmesg).
_KVM_MARKER = "Hypervisor detected: KVM"

# A default (KVM) launch failed and TCG then worked. Remembered for this process and, in the
# cache directory, for later scans on this host until it reboots or qemu changes: each would
# otherwise spend up to KVM_LAUNCH_TIMEOUT on a launch that cannot work.
_kvm_unusable = False


def _kvm_verdict() -> tuple[Path, str]:
    """Where the "KVM does not work here" verdict is kept, and what it must say to still hold:
    this boot and this qemu binary."""
    from imgscan.options import default_cache_dir  # options imports the image package

    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "unknown-boot"
    qemu = shutil.which("qemu-system-x86_64") or ""
    with contextlib.suppress(OSError):
        qemu += f" {os.stat(qemu).st_mtime_ns}"
    return default_cache_dir() / "kvm-unusable", f"{boot} {qemu}\n"


def _kvm_known_unusable() -> bool:
    if _kvm_unusable:
        return True
    path, wanted = _kvm_verdict()
    try:
        return path.read_text() == wanted
    except OSError:
        return False


def _remember_kvm_unusable() -> None:
    global _kvm_unusable
    _kvm_unusable = True
    path, text = _kvm_verdict()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _require_guestfs() -> None:
    if not HAS_GUESTFS:
        raise ReaderUnavailableError(
            "the guestfs reader needs libguestfs and its Python bindings, which are not on PyPI: "
            "run `apt-get install python3-guestfs libguestfs-xfs linux-image-amd64` and use "
            "a virtualenv made with `/usr/bin/python3 -m venv --system-site-packages`"
        )


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of a (libguestfs) error: the rest is advice or dmesg hints."""
    for line in str(exc).splitlines():
        if line.strip():
            return " ".join(line.split())[:300]
    return type(exc).__name__


# -- the handle and its thread -----------------------------------------------------------------


class _HandleThread:
    """Runs callables one at a time on a private daemon thread.

    A daemon thread, not a ThreadPoolExecutor: executor threads are joined before atexit
    handlers run, so one stuck in `tar_out` would hang interpreter exit before our cleanup
    could close the stream that unblocks it.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._serve, name="imgscan-guestfs", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:  # handed to the caller, never lost in this thread
                future.set_exception(exc)
            else:
                future.set_result(result)

    def submit(self, fn: Callable[[], _T]) -> Future[_T]:
        future: Future[_T] = Future()
        self._jobs.put((future, fn))
        return future

    def run(self, fn: Callable[[], _T]) -> _T:
        return self.submit(fn).result()

    def stop(self, timeout: float) -> None:
        self._jobs.put(None)
        self._thread.join(timeout)


class _LaunchError(Exception):
    """The appliance did not start. `detail` is the most telling line qemu printed, if any."""

    def __init__(self, message: str, detail: str | None) -> None:
        super().__init__(message)
        self.detail = detail

    def describe(self) -> str:
        first = _first_line(self)
        return f"{first} ({self.detail})" if self.detail else first


class _DriveError(Exception):
    """libguestfs refused the image itself when attaching it (before any VM started)."""


class _Appliance:
    """One launched libguestfs handle, confined to its own thread."""

    def __init__(self, worker: _HandleThread, handle: Any) -> None:
        self._worker = worker
        self.handle = handle

    @classmethod
    def launch(
        cls, drives: list[tuple[str, str]], tcg: bool, memsize: int, timeout: float | None = None
    ) -> _Appliance:
        """Start an appliance with `image` attached read-only; raise _LaunchError/_DriveError.

        With `timeout`, an appliance that is not up by then is stopped (its qemu killed) and
        the launch fails with _LaunchError."""
        worker = _HandleThread()
        before = _qemu_children()
        future = worker.submit(lambda: _open_handle(drives, tcg, memsize))
        try:
            handle = future.result(timeout=timeout)
        except FutureTimeoutError:
            _abandon_launch(worker, future, before)
            worker.stop(timeout=1.0)
            raise _LaunchError(f"the appliance was not up after {timeout:.0f} s", None) from None
        except KeyboardInterrupt:
            _abandon_launch(worker, future, before)
            worker.stop(timeout=1.0)
            raise
        except BaseException:
            worker.stop(timeout=1.0)
            raise
        return cls(worker, handle)

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the libguestfs method `name` on the handle's thread; its RuntimeError propagates."""
        return self._worker.run(lambda: getattr(self.handle, name)(*args, **kwargs))

    def submit(self, fn: Callable[[Any], _T]) -> Future[_T]:
        """Start `fn(handle)` on the handle's thread without waiting for it."""
        return self._worker.submit(lambda: fn(self.handle))

    def close(self) -> None:
        """Unmount, stop the appliance (qemu exits) and release the handle. Never raises."""

        def finish(handle: Any) -> None:
            for step in (handle.umount_all, handle.shutdown):
                # A dead appliance cannot unmount or shut down; close() below still kills qemu.
                with contextlib.suppress(RuntimeError):
                    step()
            handle.close()

        # On failure or timeout, libguestfs' atexit handler and its recovery process (which
        # kills qemu when this process dies) still reap the appliance.
        with contextlib.suppress(FutureTimeoutError, RuntimeError):
            self.submit(finish).result(timeout=_CLOSE_TIMEOUT)
        self._worker.stop(timeout=1.0)


def _qemu_children() -> set[int]:
    """Pids of this process's children that run a qemu binary (libguestfs starts qemu as a
    direct child). A child's pid is not reused before its parent reaps it, and libguestfs reaps
    qemu only once the launch has failed or the handle is closed: killing a pid found here
    does not hit a stranger."""
    me = os.getpid()
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                if ppid == me and os.path.basename(
                    os.readlink(f"/proc/{entry.name}/exe")
                ).startswith("qemu"):
                    found.add(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile, or not ours to read
    return found


def _abandon_launch(worker: _HandleThread, future: Future[Any], before: set[int]) -> None:
    """Stop an interrupted launch before the interruption goes on: kill the qemu it started
    (now, or as soon as it appears), so that `launch()` fails at once and `_open_handle`
    closes the handle; a launch that won the race is closed here. Bounded by _CLOSE_TIMEOUT:
    past that, libguestfs' recovery process kills qemu when this process exits."""
    deadline = time.monotonic() + _CLOSE_TIMEOUT
    while time.monotonic() < deadline:
        for pid in _qemu_children() - before:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            handle = future.result(timeout=0.2)
        except FutureTimeoutError:
            continue
        except BaseException:
            return  # the launch failed: _open_handle closed its handle
        # It was up before qemu could be killed: close it, on its own thread like every call.
        with contextlib.suppress(Exception):
            worker.submit(handle.close).result(timeout=max(0.0, deadline - time.monotonic()))
        return


def _open_handle(drives: list[tuple[str, str]], tcg: bool, memsize: int) -> Any:
    """Create, harden and launch a handle. Runs on the handle's own thread."""
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        # What qemu-img and qemu say (the reason an image is refused or a launch failed) arrives
        # only as events; capture it, unless the user asked for libguestfs' debug output, which
        # a registered callback would swallow.
        lines: deque[str] = deque(maxlen=40)
        event = None
        if not g.get_verbose():
            mask = guestfs.EVENT_APPLIANCE | guestfs.EVENT_LIBRARY | guestfs.EVENT_WARNING

            def collect(_event: int, _handle: int, buf: str | None, _array: Any) -> None:
                lines.extend(line for line in (buf or "").splitlines() if line.strip())

            event = g.set_event_callback(collect, mask)
        try:
            if tcg:
                settings = list(g.get_backend_settings())
                if "force_tcg" not in settings:
                    g.set_backend_settings([*settings, "force_tcg"])
            g.set_network(False)
            g.set_memsize(memsize)
            try:
                # readonly: libguestfs puts a throw-away overlay in front; nothing reaches the
                # image. format: always explicit, so qemu never guesses (and never obeys a
                # header that a raw image's first sector pretends to have).
                for path, qemu_format in drives:
                    g.add_drive_opts(path, readonly=True, format=qemu_format, protocol="file")
            except RuntimeError as exc:
                raise _DriveError(_drive_complaint(lines) or _first_line(exc)) from exc
            try:
                g.launch()
            except RuntimeError as exc:
                raise _LaunchError(str(exc), _qemu_complaint(lines)) from exc
        finally:
            if event is not None:
                g.delete_event_callback(event)
    except BaseException:
        g.close()
        raise
    return g


# qemu-img names the overlay libguestfs creates in front of the image, not the image itself.
_OVERLAY_PREFIX = re.compile(r"^qemu-img: \S*overlay\d*\.qcow2: ")


def _drive_complaint(lines: deque[str]) -> str | None:
    """Why qemu-img refused the image (e.g. "Active L1 table offset invalid"), on one line."""
    texts = [
        _OVERLAY_PREFIX.sub("", line).strip()
        for line in lines
        if not line.startswith("Formatting ")
    ]
    return "; ".join(t for t in texts if t)[:300] or None


def _qemu_complaint(lines: deque[str]) -> str | None:
    """The last line qemu (or supermin) printed that reads like an error."""
    for line in reversed(lines):
        lowered = line.lower()
        if ("qemu" in lowered or "supermin" in lowered) and (
            "error" in lowered or "fail" in lowered or "could not" in lowered
        ):
            return " ".join(line.split())[:300]
    return None


def _tcg_forced_by_environment() -> bool:
    return "force_tcg" in os.environ.get("LIBGUESTFS_BACKEND_SETTINGS", "").split(":")


def _start_appliance(
    image: str, drives: list[tuple[str, str]], memsize: int = APPLIANCE_MEMSIZE
) -> tuple[_Appliance, str]:
    """Launch under KVM if possible, else TCG; return the appliance and the accelerator used.

    Raises ImageError when libguestfs rejects the image or no accelerator can start it, and
    ReaderUnavailableError when libguestfs cannot build its appliance at all (no kernel).
    """
    tried_kvm = False
    try:
        if not (_tcg_forced_by_environment() or _kvm_known_unusable()):
            tried_kvm = True
            started = time.monotonic()
            try:
                appliance = _Appliance.launch(
                    drives, tcg=False, memsize=memsize, timeout=KVM_LAUNCH_TIMEOUT
                )
            except _LaunchError as exc:
                _log.info(
                    "libguestfs launch with the default accelerator failed after %.1f s "
                    "(%s); retrying under TCG",
                    time.monotonic() - started,
                    exc.describe(),
                )
            else:
                try:
                    accel = _detect_accel(appliance)
                except BaseException:
                    appliance.close()  # interrupted: not the reader's yet, so ours to stop
                    raise
                _log.debug(
                    "libguestfs appliance up under %s in %.1f s", accel, time.monotonic() - started
                )
                return appliance, accel
        started = time.monotonic()
        appliance = _Appliance.launch(drives, tcg=True, memsize=memsize)
        _log.debug("libguestfs appliance up under TCG in %.1f s", time.monotonic() - started)
    except _DriveError as exc:
        formats = "/".join(sorted({f for _, f in drives}))
        raise ImageError(f"{image}: libguestfs cannot open the {formats} image: {exc}") from exc
    except _LaunchError as exc:
        text = exc.describe()
        if "supermin" in text.lower():
            raise ReaderUnavailableError(
                f"libguestfs cannot build its appliance ({text}); install linux-image-amd64 "
                "(supermin needs a kernel under /boot) and libguestfs-tools"
            ) from exc
        tried = "KVM, then TCG" if tried_kvm else "TCG"
        raise ImageError(
            f"{image}: libguestfs could not start its appliance (tried {tried}): {text}"
        ) from exc
    if tried_kvm:
        _remember_kvm_unusable()
    return appliance, "tcg"


def _detect_accel(appliance: _Appliance) -> str:
    """Which accelerator a default launch ended up with, asked of the appliance kernel.

    A default launch asks qemu for `accel=kvm:tcg`, so it may have fallen back to TCG silently
    (no /dev/kvm, no permission). The appliance kernel's boot log names KVM when it runs on it;
    `dmesg` is a stable libguestfs call that runs nothing from the guest. If the log cannot be
    read we claim only what we can back: not KVM.
    """
    try:
        log = str(appliance.call("dmesg"))
    except RuntimeError:
        return "tcg"
    return "kvm" if _KVM_MARKER in log else "tcg"


# -- the reader --------------------------------------------------------------------------------


@dataclass
class _Stream:
    """The tar stream of the one volume being walked: its pipe and the `tar_out` call."""

    pipe: IO[bytes]
    future: Future[None]


class _Session:
    """Everything that must be released, reachable without the reader (for weakref.finalize)."""

    def __init__(self, tmpdir: str) -> None:
        self.tmpdir = tmpdir
        self.appliance: _Appliance | None = None
        self.stream: _Stream | None = None
        self.pid = os.getpid()
        self.closed = False
        self.lock = threading.Lock()

    def stop_stream(self) -> None:
        """Cut off the active tar stream, if any, and wait until `tar_out` has returned."""
        stream = self.stream
        if stream is None:
            return
        # With no reader left, the library's write fails (EPIPE: Python ignores SIGPIPE), it
        # cancels the transfer and tar_out returns within ~0.1 s; the handle stays usable.
        stream.pipe.close()
        try:
            stream.future.result(timeout=_STREAM_STOP_TIMEOUT)
        except FutureTimeoutError:
            return  # still busy: leave `stream` set so later calls fail instead of hanging
        except Exception:
            pass  # the expected "file receive cancelled", or a tar_out failure already reported
        if self.stream is stream:
            self.stream = None

    def close(self) -> None:
        """Stop the stream and the appliance, delete the temp dir. Idempotent; never raises."""
        with self.lock:
            # A forked child inherits this object but not the appliance: it must not kill it.
            if self.closed or os.getpid() != self.pid:
                return
            self.closed = True
        with contextlib.suppress(OSError):
            self.stop_stream()
        if self.appliance is not None:
            self.appliance.close()
            self.appliance = None
        shutil.rmtree(self.tmpdir, ignore_errors=True)


_XATTR = "SCHILY.xattr."
_XATTR_STREAM = _XATTR + "user."


def _streams(member: tarfile.TarInfo, device: str, mountpoint: str) -> Iterator[FileRef]:
    """The NTFS data streams tar carried as user.* xattrs, each a file at `path:stream`."""
    path = join_guest_path(mountpoint, _member_name(member))
    for key, value in sorted(member.pax_headers.items()):
        if key.startswith(_XATTR_STREAM):
            data = value.encode("utf-8", "surrogateescape")
            stream = key.removeprefix(_XATTR_STREAM)
            yield FileRef(
                volume=device, path=f"{path}:{stream}", size=len(data), locator="", inline=data
            )


def _member_name(member: tarfile.TarInfo) -> str:
    # GNU tar in the appliance names members "./etc/fstab" (the root is ".").
    name = member.name[2:] if member.name.startswith("./") else member.name
    return "" if name == "." else name


def _metadata(
    member: tarfile.TarInfo, device: str, mountpoint: str, ntfs: bool
) -> Iterator[FileRef]:
    """What a tar member carries besides content (imgscan/image/metadata.py): a symbolic
    link's target and the entry's extended attributes (on ntfs the user.* ones are its data
    streams, which `_streams` gives)."""
    path = join_guest_path(mountpoint, _member_name(member))
    if member.issym():
        yield link_ref(device, path, member.linkname.encode("utf-8", "surrogateescape"))
    if ntfs:
        return
    for key, value in sorted(member.pax_headers.items()):
        name = key.removeprefix(_XATTR)
        if key.startswith(_XATTR) and wants_xattr(name):
            yield xattr_ref(device, path, name, value.encode("utf-8", "surrogateescape"))


def _tar_out(handle: Any, fd: int, xattrs: bool = False) -> None:
    """Stream the mounted filesystem as tar into pipe `fd`; runs on the handle's thread.

    The library reopens the pipe through /dev/fd (a pipe, unlike a named FIFO, has no blocking
    open() that could wait forever if tar_out failed before opening it). Closing `fd` here once
    the call returns is what gives the reading side its end of file.
    """
    try:
        handle.tar_out("/", f"/dev/fd/{fd}", numericowner=True, xattrs=xattrs)
    finally:
        os.close(fd)


def _download(handle: Any, remote: str, fd: int) -> None:
    """Stream `remote` (a file or a device) into pipe `fd`; runs on the handle's thread."""
    try:
        handle.download(remote, f"/dev/fd/{fd}")
    finally:
        os.close(fd)


class GuestfsReader:
    """Reader over a libguestfs appliance. Opening launches the appliance (~15 s under TCG) and
    identifies every volume; `close()` (or garbage collection, or interpreter exit) stops it.

    Not thread-safe, and one volume at a time: while a `files()` iterator is live, other calls
    raise RuntimeError rather than deadlock behind its stream.
    """

    warnings: tuple[str, ...] = ()

    def __init__(self, image: str, fmt: FormatInfo, keys: tuple[str, ...] = ()) -> None:
        """Open `image` read-only. `keys` are passphrases tried on every LUKS volume."""
        _require_guestfs()
        self._keys = keys
        self.image = ImageInfo(path=image, format=fmt.format, virtual_size=fmt.virtual_size)
        self._format = fmt.format
        for disk in fmt.disks:
            if disk.format not in QEMU_DRIVERS:
                raise ImageError(f"{image}: the guestfs reader cannot read {disk.format} disks")
        self._session = _Session(tempfile.mkdtemp(prefix=TEMP_PREFIX))
        # Runs close() when the reader is collected or at interpreter exit, so an exception
        # anywhere (here included) never leaves a qemu process or spool files behind.
        self._finalizer = weakref.finalize(self, self._session.close)
        self._mounted: str | None = None
        self._partuuids: dict[str, str] = {}
        self._by_fstype: dict[str, str] = {}
        self._parttype: dict[str, str | None] = {}
        try:
            drives = [
                (self._extract(image, disk) if disk.member else image, QEMU_DRIVERS[disk.format])
                for disk in fmt.disks
            ]
            memsize = APPLIANCE_MEMSIZE_LUKS if keys else APPLIANCE_MEMSIZE
            appliance, accel = _start_appliance(image, drives, memsize)
            self._session.appliance = appliance
            self._appliance = appliance
            self.info = ReaderInfo(name="guestfs", accel=accel)
            try:
                self._volumes = self._discover()
            except RuntimeError as exc:
                raise ImageError(
                    f"{image}: libguestfs failed while listing volumes: {_first_line(exc)}"
                ) from exc
        except BaseException:
            self._finalizer()
            raise
        self._by_device = {v.device: v for v in self._volumes}

    def _extract(self, image: str, disk: Disk) -> str:
        """Copy an OVA member to the private temp dir: qemu cannot read inside a tar."""
        fd, path = tempfile.mkstemp(prefix="disk-", dir=self._session.tmpdir)
        with open(image, "rb") as source, os.fdopen(fd, "wb") as out:
            source.seek(disk.offset)
            left = disk.size
            while left > 0:
                chunk = source.read(min(_SPOOL_CHUNK, left))
                if not chunk:
                    raise ImageError(f"{image}: truncated OVA member {disk.member!r}")
                out.write(chunk)
                left -= len(chunk)
        return path

    # -- discovery -----------------------------------------------------------------------------

    def _discover(self) -> list[VolumeInfo]:
        # libguestfs names the drives /dev/sda, /dev/sdb, ... in the order they were added and
        # their partitions /dev/sdaN, exactly as the native reader does.
        disks = [str(d) for d in self._appliance.call("list_devices")]
        all_partitions = [str(p) for p in self._appliance.call("list_partitions")]
        volumes: list[VolumeInfo] = []
        for disk in disks:
            partitions = [p for p in all_partitions if p.startswith(disk)]
            volumes += [
                v for v in (self._identify(p) for p in partitions or [disk]) if v is not None
            ]
            if partitions:
                volumes += self._outside_partitions(disk)
        single = len(disks) == 1
        disk = disks[0]
        partitions = all_partitions
        volumes = self._unlock(volumes)
        # Logical volumes: the appliance activates every volume group when it boots (and
        # again after unlocking, for groups inside encrypted volumes).
        volumes = self._check_groups(volumes)
        volumes += [
            v for v in (self._identify(lv) for lv in self._logical_volumes()) if v is not None
        ]
        if single and not partitions and len(volumes) == 1 and volumes[0].fstype is None:
            if volumes[0].status is VolumeStatus.UNREADABLE:
                raise ImageError(f"{self.image.path}: cannot read the disk: {volumes[0].reason}")
            if self._partition_table(disk) is not None:
                raise ImageError(f"{self.image.path}: partition table holds no partitions")
            raise ImageError(
                f"{self.image.path}: no partition table or filesystem found "
                f"(read as {self._format})"
            )
        volumes = [replace(v, partuuid=self._partuuids.get(v.device)) for v in volumes]
        return sorted(volumes, key=lambda v: device_sort_key(v.device))

    def _outside_partitions(self, disk: str) -> list[VolumeInfo]:
        """What no partition of `disk` covers that may hold data (unpartitioned.py), as
        volumes not read. Read through the appliance, in pieces its protocol carries."""

        def read_at(offset: int, length: int) -> bytes:
            data = bytearray()
            while len(data) < length:
                piece = min(_PREAD_PIECE, length - len(data))
                chunk = self._appliance.call("pread_device", disk, piece, offset + len(data))
                if not chunk:
                    break
                data += chunk
            return bytes(data)

        size = int(self._appliance.call("blockdev_getsize64", disk))
        try:
            found = unpartitioned.outside_partitions(read_at, size, OUTSIDE_CHECK_LIMIT)
        except RuntimeError as exc:
            reason = f"space outside the partitions not checked: {_first_line(exc)}; not read"
            return [VolumeInfo(f"{disk}:unpartitioned", None, VolumeStatus.UNREADABLE, reason)]
        return [
            VolumeInfo(
                f"{disk}:unpartitioned@{region.start}",
                None,
                VolumeStatus.UNSUPPORTED,
                region.reason,
            )
            for region in found
        ]

    def _logical_volumes(self) -> list[str]:
        """The logical volumes LVM activated, as /dev/VG/LV. libguestfs parses the LVM tools'
        output, in which hostile metadata can make LVM's own messages appear ("Retrying
        metadata scan."): only names LVM could have given are taken; the rest are reported."""
        found = []
        for name in (str(lv) for lv in self._appliance.call("lvs")):
            if _LV_PATH.match(name):
                found.append(name)
            else:
                # repr(): the text comes from the image's metadata; its control bytes escaped.
                warning = f"LVM listed a logical volume with an impossible name, ignored: {name!r}"
                self.warnings = (*self.warnings, warning)
        return found

    def _check_groups(self, volumes: list[VolumeInfo]) -> list[VolumeInfo]:
        """An LVM physical volume is only covered by its logical volumes if LVM could read its
        volume group: one whose metadata LVM rejected (corrupt, or hostile: logical volumes
        stacked in a loop) lists no logical volume at all, so the PV itself must say unread."""
        if not any(v.fstype == "LVM2_member" for v in volumes):
            return volumes
        grouped: set[str] = set()
        for group in (str(g) for g in self._appliance.call("vgs")):
            if not _LVM_NAME.match(group):
                continue  # a message of LVM's, not a group (see _logical_volumes)
            try:
                grouped.update(str(u) for u in self._appliance.call("vgpvuuids", group))
            except RuntimeError:
                continue  # not readable after all: its PVs stay unread below
        result = []
        for volume in volumes:
            if volume.fstype == "LVM2_member" and volume.status is VolumeStatus.SKIPPED:
                try:
                    pv = str(self._appliance.call("pvuuid", volume.device))
                except RuntimeError:
                    pv = ""
                if pv not in grouped:
                    volume = replace(
                        volume,
                        status=VolumeStatus.UNREADABLE,
                        reason="LVM physical volume whose volume group LVM could not read "
                        "(corrupt or hostile metadata); its logical volumes were not scanned",
                    )
            result.append(volume)
        return result

    def _unlock(self, volumes: list[VolumeInfo]) -> list[VolumeInfo]:
        """Open every LUKS volume with the first key that fits; its content is listed as
        /dev/mapper/luks-<name> (a filesystem) or as the logical volumes inside it."""
        if not self._keys:
            return volumes
        result: list[VolumeInfo] = []
        opened = False
        for volume in volumes:
            if volume.fstype != "crypto_LUKS":
                result.append(volume)
                continue
            problem = self._kdf_problem(volume.device)
            if problem is not None:
                reason = f"encrypted (LUKS) volume not unlocked: {problem}"
                result.append(replace(volume, reason=reason))
                continue
            mapname = "luks-" + volume.device.rsplit("/", 1)[-1]
            if not any(self._try_key(volume.device, key, mapname) for key in self._keys):
                result.append(
                    replace(volume, reason="encrypted (LUKS) volume: none of the keys opens it")
                )
                continue
            opened = True
            inner = f"/dev/mapper/{mapname}"
            result.append(
                replace(
                    volume,
                    status=VolumeStatus.SKIPPED,
                    reason=f"LUKS volume unlocked; its content is listed as {inner}",
                )
            )
            identified = self._identify(inner)
            if identified is not None and identified.fstype != "LVM2_member":
                result.append(replace(identified, parent=volume.device))
        if opened:
            self._appliance.call("lvm_scan", True)
        return result

    def _pread(self, device: str, offset: int, size: int) -> bytes:
        """`size` bytes of `device` at `offset`; fewer past its end, none when unreadable."""
        try:
            data: bytes = self._appliance.call("pread_device", device, size, offset)
        except RuntimeError:
            return b""
        return data

    def _kdf_problem(self, device: str) -> str | None:
        """Why the LUKS volume on `device` must not be unlocked (its key derivation costs past
        imgscan's bounds, or its header does not parse), from the header read before any key is
        tried: cryptsetup runs what the header asks, for as long as it asks."""

        def read_at(offset: int, length: int) -> bytes:
            data: bytes = self._appliance.call("pread_device", device, length, offset)
            return data

        try:
            return luks.kdf_problem(read_at)
        except RuntimeError as exc:
            return f"header unreadable: {_first_line(exc)}"

    def _try_key(self, device: str, key: str, mapname: str) -> bool:
        try:
            self._appliance.call("cryptsetup_open", device, key, mapname, readonly=True)
        except RuntimeError:
            return False
        return True

    def _identity(self, device: str) -> tuple[str | None, str | None, str | None]:
        """(fstype, uuid, label) as blkid sees them; empty values become None.

        One `blkid` call returns all three (vfs_type, vfs_uuid and vfs_label would be three
        round trips to the same blkid); it fails where blkid finds no signature at all, and then
        `vfs_type` gives the answer the same way libguestfs' own tools get it.
        """
        try:
            found = dict(self._appliance.call("blkid", device))
        except RuntimeError:
            fstype = str(self._appliance.call("vfs_type", device))
            return (fstype or None), None, None
        if found.get("TYPE"):
            self._by_fstype[device] = str(found["TYPE"])
        if found.get("PART_ENTRY_UUID"):
            self._partuuids[device] = str(found["PART_ENTRY_UUID"]).lower()
        return (
            (found.get("TYPE") or None),
            (found.get("UUID") or None),
            (found.get("LABEL") or None),
        )

    def _identify(self, device: str) -> VolumeInfo | None:
        """What `device` holds and whether it can be scanned; None for an MBR extended
        partition, which is only a container of the logical partitions listed after it."""
        try:
            fstype, uuid, label = self._identity(device)
        except RuntimeError as exc:
            return VolumeInfo(
                device, None, VolumeStatus.UNREADABLE, f"cannot read volume: {_first_line(exc)}"
            )
        if fstype is None:
            if self._is_extended_partition(device):
                return None
            if self._zeroed(device):
                return VolumeInfo(device, None, VolumeStatus.EMPTY, ZERO_REASON)
            return VolumeInfo(device, None, VolumeStatus.UNSUPPORTED, "no filesystem recognised")
        if fstype == "LVM2_member":
            return VolumeInfo(
                device,
                fstype,
                VolumeStatus.SKIPPED,
                "LVM physical volume; its logical volumes are listed separately",
                uuid,
                label,
            )
        if fstype == "swap":
            # Paged-out memory holds passwords and keys: swap is scanned as raw bytes.
            return VolumeInfo(device, fstype, VolumeStatus.SCANNED, None, uuid, label)
        if fstype == "crypto_LUKS":
            return VolumeInfo(
                device,
                fstype,
                VolumeStatus.UNSUPPORTED,
                "encrypted (LUKS) volume: no key given",
                uuid,
                label,
            )
        if fstype == "BitLocker":
            return VolumeInfo(
                device,
                fstype,
                VolumeStatus.UNSUPPORTED,
                "encrypted (BitLocker) volume: no key given",
                uuid,
                label,
            )
        if fstype.endswith("_member"):  # linux_raid_member, zfs_member, ...: not a filesystem
            return VolumeInfo(
                device,
                fstype,
                VolumeStatus.UNSUPPORTED,
                f"{fstype} volume is not assembled by imgscan yet",
                uuid,
                label,
            )
        if fstype == "ntfs":
            # ntfs-3g reads a volume as its blocks lie and does not replay $LogFile.
            state = ntfs_log_state(lambda offset, size: self._pread(device, offset, size))
            if state is not LogState.CLEAN:
                return VolumeInfo(
                    device,
                    fstype,
                    VolumeStatus.UNSUPPORTED,
                    f"{NTFS_DIRTY} ({state.value})",
                    uuid,
                    label,
                )
        # Whether the appliance kernel can read it is settled by mounting it, not by a list.
        try:
            self._mount(device)
        except RuntimeError as exc:
            return VolumeInfo(
                device,
                fstype,
                VolumeStatus.UNREADABLE,
                f"cannot mount {fstype}: {_first_line(exc)}",
                uuid,
                label,
            )
        subvolumes: tuple[tuple[int, str], ...] = ()
        default = ""
        if fstype == "btrfs":
            try:
                listed = self._appliance.call("btrfs_subvolume_list", "/")
            except RuntimeError as exc:
                return VolumeInfo(
                    device,
                    fstype,
                    VolumeStatus.UNREADABLE,
                    f"cannot list btrfs subvolumes: {_first_line(exc)}",
                    uuid,
                    label,
                )
            subvolumes = tuple(
                sorted(
                    (int(s["btrfssubvolume_id"]), str(s["btrfssubvolume_path"]).strip("/"))
                    for s in listed
                )
            )
            default_id = self._appliance.call("btrfs_subvolume_get_default", "/")
            default = next((path for id_, path in subvolumes if id_ == default_id), "")
        return VolumeInfo(
            device,
            fstype,
            VolumeStatus.SCANNED,
            None,
            uuid,
            label,
            subvolumes=subvolumes,
            default_subvolume=default,
        )

    def _zeroed(self, device: str) -> bool:
        """Whether the volume is small enough to check and every byte of it is zero."""
        try:
            if self._appliance.call("blockdev_getsize64", device) > ZERO_CHECK_LIMIT:
                return False
            return bool(self._appliance.call("is_zero_device", device))
        except RuntimeError:
            return False

    def _partition_table(self, disk: str) -> str | None:
        if disk not in self._parttype:
            try:
                self._parttype[disk] = str(self._appliance.call("part_get_parttype", disk))
            except RuntimeError:
                self._parttype[disk] = None
        return self._parttype[disk]

    def _is_extended_partition(self, device: str) -> bool:
        match = _PARTITION.match(device)
        if match is None or int(match.group(2)) > 4:
            return False
        disk, number = match.group(1), int(match.group(2))
        if self._partition_table(disk) != "msdos":
            return False
        try:
            return int(self._appliance.call("part_get_mbr_id", disk, number)) in _MBR_EXTENDED_IDS
        except RuntimeError:
            return False

    def _mount(self, device: str) -> None:
        """Make `device` the one filesystem mounted (read-only) at the appliance's root."""
        self._check_idle()
        if self._mounted == device:
            return
        if self._mounted is not None:
            self._mounted = None
            self._appliance.call("umount_all")
        # The drive sits behind a writable throw-away overlay, so a dirty ext4/xfs journal is
        # replayed there and `ro` mounts work without norecovery/noload.
        if self._by_fstype.get(device) == "btrfs":
            # The top-level subvolume shows every subvolume as a directory (@, @home, ...);
            # the default one (what a plain mount shows) may hide the others.
            self._appliance.call("mount_options", "ro,subvolid=5", device, "/")
        else:
            self._appliance.call("mount_ro", device, "/")
        self._mounted = device

    def _check_idle(self) -> None:
        if self._session.closed:
            raise RuntimeError("GuestfsReader is closed")
        if self._session.stream is not None:
            raise RuntimeError(
                "GuestfsReader is busy: a files() iterator is still live; exhaust or close it first"
            )

    # -- Reader protocol -----------------------------------------------------------------------

    def volumes(self) -> list[VolumeInfo]:
        """Every volume seen, readable or not, in natural device order (sda2 before sda10)."""
        return list(self._volumes)

    def read_small(self, device: str, path: str, limit: int = 1 << 16) -> bytes | None:
        """Up to `limit` bytes of regular file `path` on `device`; None if absent or unreadable.

        A symlink is not followed (`is_file` without following), and intermediate components
        resolve inside the mounted volume (the daemon chroots), so nothing outside is reached.
        """
        volume = self._by_device.get(device)
        if volume is None or volume.status is not VolumeStatus.SCANNED or volume.fstype == "swap":
            return None
        self._check_idle()
        try:
            self._mount(device)
            if volume.fstype in _CASE_INSENSITIVE:
                # Windows looks names up regardless of case; ntfs-3g and the kernel's FAT
                # drivers do not, so resolve the path to the case the volume stores.
                path = self._appliance.call("case_sensitive_path", path)
            if not self._appliance.call("is_file", path, followsymlinks=False):
                return None
            parts: list[bytes] = []
            offset = 0
            while offset < limit:
                want = min(_PREAD_CHUNK, limit - offset)
                chunk = bytes(self._appliance.call("pread", path, want, offset))
                parts.append(chunk)
                offset += len(chunk)
                if len(chunk) < want:
                    break
            return b"".join(parts)
        except RuntimeError:
            return None

    def files(self, device: str, mountpoint: str) -> Iterator[FileRef | Skipped]:
        """Every regular file on `device`, from one `tar_out` stream parsed as it arrives.

        Files up to INLINE_MAX come inline; larger ones are spooled to the private temp dir and
        belong to the consumer from then on (`GuestfsOpener.release` deletes them). Directories,
        symlinks, devices, FIFOs and sockets are not yielded; nor are hard links, whose content
        tar sends once, under the first name met (that FileRef covers it). A failed or broken
        stream ends with a Skipped for the volume root naming the reason.
        Closing the iterator early stops `tar_out` and frees the handle.
        """
        volume = self._by_device.get(device)
        if volume is None or volume.status is not VolumeStatus.SCANNED:
            raise ValueError(f"{device}: not a readable volume of {self.image.path}")
        self._check_idle()
        if volume.fstype == "swap":
            return self._stream_raw(device, mountpoint)
        return self._stream_files(device, mountpoint)

    def _stream_raw(self, device: str, mountpoint: str) -> Iterator[FileRef | Skipped]:
        """The whole device as one file at `mountpoint` (swap), spooled from `download`."""
        self._appliance.call("umount_all")
        self._mounted = None
        try:
            spool, size = self._spool_download(device)
        except (OSError, RuntimeError) as exc:
            yield Skipped(mountpoint, f"cannot read {device}: {_first_line(exc)}")
            return
        yield FileRef(volume=device, path=mountpoint, size=size, locator=spool, raw=True)

    def _stream_files(self, device: str, mountpoint: str) -> Iterator[FileRef | Skipped]:
        root = join_guest_path(mountpoint, "/")
        try:
            self._mount(device)
        except RuntimeError as exc:
            yield Skipped(root, f"cannot mount {device}: {_first_line(exc)}")
            return
        read_fd, write_fd = os.pipe()
        pipe = os.fdopen(read_fd, "rb")
        try:
            # tar carries extended attributes when asked: those of every file system are
            # scanned, and ntfs-3g shows a file's named data streams as user.* attributes.
            ntfs = self._by_fstype.get(device) == "ntfs"
            future = self._appliance.submit(lambda handle: _tar_out(handle, write_fd, True))
        except BaseException:
            pipe.close()
            os.close(write_fd)
            raise
        stream = _Stream(pipe, future)
        self._session.stream = stream
        links: list[str] = []
        names = NameBatches(device)
        try:
            problem: str | None = None
            try:
                with tarfile.open(fileobj=pipe, mode="r|") as archive:
                    while (member := archive.next()) is not None:
                        if member.islnk():
                            links.append(member.name)
                        # TarFile keeps every TarInfo it has read (for hard-link extraction,
                        # which a stream cannot do anyway): drop them, or memory grows with
                        # the volume's file count.
                        archive.members.clear()  # type: ignore[attr-defined]  # not in typeshed
                        item = self._member(archive, member, device, mountpoint)
                        if item is not None:
                            yield item
                        if ntfs and member.isreg():
                            yield from _streams(member, device, mountpoint)
                        yield from _metadata(member, device, mountpoint, ntfs)
                        inner = _member_name(member)
                        batch = names.add(
                            join_guest_path(mountpoint, inner), inner.rsplit("/", 1)[-1]
                        )
                        if batch is not None:
                            yield batch
                    batch = names.flush()
                    if batch is not None:
                        yield batch
            except (tarfile.TarError, EOFError) as exc:
                problem = f"tar stream broken: {_first_line(exc)}"
            # Past the end-of-archive blocks only record padding is left; read it so tar_out
            # can finish, then take its verdict (which also explains a broken stream).
            while pipe.read(1 << 16):
                pass
            try:
                future.result()
            except (RuntimeError, OSError) as exc:
                problem = f"tar_out failed: {_first_line(exc)}"
            if problem is not None:
                yield Skipped(root, problem)
        finally:
            # Normal end: a no-op wait. Consumer gone early (GeneratorExit) or an error: closing
            # the pipe makes tar_out return, so the handle is free for the next call.
            self._session.stop_stream()
        # tar sends a hard-linked file's content once, under the first name; every other name
        # is a file of the guest too (the native reader lists them all), so fetch each one.
        for name in links:
            inner = "/" + (name[2:] if name.startswith("./") else name).lstrip("/")
            path = join_guest_path(mountpoint, inner)
            try:
                spool, size = self._spool_download(inner)
            except (OSError, RuntimeError) as exc:
                yield Skipped(path, f"cannot read hard link: {_first_line(exc)}")
                continue
            yield FileRef(volume=device, path=path, size=size, locator=spool)

    def _spool_download(self, remote: str) -> tuple[str, int]:
        """Copy `remote` (a file of the mounted volume, or a device) into a new spool file;
        return its path and size. The spool belongs to the caller."""
        read_fd, write_fd = os.pipe()
        pipe = os.fdopen(read_fd, "rb")
        try:
            future = self._appliance.submit(lambda handle: _download(handle, remote, write_fd))
        except BaseException:
            pipe.close()
            os.close(write_fd)
            raise
        self._session.stream = _Stream(pipe, future)
        fd, spool = tempfile.mkstemp(prefix=SPOOL_PREFIX, dir=self._session.tmpdir)
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(pipe, out, _SPOOL_CHUNK)
                size = out.tell()
            future.result()
        except BaseException:
            _unlink(spool)
            raise
        finally:
            self._session.stop_stream()
        return spool, size

    def _member(
        self, archive: tarfile.TarFile, member: tarfile.TarInfo, device: str, mountpoint: str
    ) -> FileRef | Skipped | None:
        if not member.isreg():
            return None
        # Non-UTF-8 names arrive with surrogate escapes (tarfile's default), which reporting
        # knows how to show.
        path = join_guest_path(mountpoint, _member_name(member))
        source = archive.extractfile(member)
        if source is None:  # pragma: no cover - isreg() members always have content
            return None
        if member.size <= INLINE_MAX:
            return FileRef(
                volume=device, path=path, size=member.size, locator="", inline=source.read()
            )
        fd, spool = tempfile.mkstemp(prefix=SPOOL_PREFIX, dir=self._session.tmpdir)
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(source, out, _SPOOL_CHUNK)
        except OSError as exc:
            # The host side failed (disk full): this file is lost, the stream goes on (tarfile
            # skips the unread rest of the member).
            _unlink(spool)
            return Skipped(
                path, f"cannot spool to {self._session.tmpdir}: {exc.strerror or _first_line(exc)}"
            )
        except BaseException:
            _unlink(spool)  # broken stream or consumer gone: never yielded, so ours to delete
            raise
        return FileRef(volume=device, path=path, size=member.size, locator=spool, inline=None)

    def opener_spec(self) -> OpenerSpec:
        return OpenerSpec("guestfs", self.image.path, self._format, volumes=())

    def close(self) -> None:
        """Stop any stream, unmount, shut the appliance down, delete the temp dir. Idempotent."""
        self._finalizer()


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _spool_path(locator: str) -> str:
    """`locator` resolved, if it is a spool file of some GuestfsReader; else ValueError.

    Defence in depth: a worker acts on FileRefs it is handed and must never be made to open (or
    delete) an arbitrary host path, so only `<tempdir>/imgscan-guestfs-*/spool-*` owned by us
    is accepted.
    """
    path = os.path.realpath(locator)
    directory = os.path.dirname(path)
    ok = (
        os.path.isabs(locator)
        and os.path.dirname(directory) == os.path.realpath(tempfile.gettempdir())
        and os.path.basename(directory).startswith(TEMP_PREFIX)
        and os.path.basename(path).startswith(SPOOL_PREFIX)
    )
    if ok:
        try:
            ok = os.stat(directory).st_uid == os.geteuid()
        except OSError:
            ok = False
    if not ok:
        raise ValueError(f"refusing {locator!r}: not a guestfs spool file")
    return path


class GuestfsOpener:
    """Worker-side file access: inline bytes, or the spool file the reader wrote.

    Needs no libguestfs: the content already left the appliance in the main process.
    """

    def __init__(self, spec: OpenerSpec) -> None:
        self._spec = spec

    def open(self, ref: FileRef) -> BinaryIO:
        if ref.inline is not None:
            return io.BytesIO(ref.inline)
        path = _spool_path(ref.locator)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ValueError(f"refusing {ref.locator!r}: not a regular file")
        return cast(BinaryIO, os.fdopen(fd, "rb"))

    def release(self, ref: FileRef) -> None:
        """Delete the spool file of `ref`. Called in a `finally`, so it never raises: a locator
        that is not a spool file is left alone (never delete what we would not open)."""
        if ref.inline is not None or not ref.locator:
            return
        with contextlib.suppress(ValueError, OSError):
            _unlink(_spool_path(ref.locator))
