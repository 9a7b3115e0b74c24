"""A reader in a child process: a crash in a C parser costs what it was reading, never the scan.

The native reader runs libyal and The Sleuth Kit over partition tables, volume metadata and
directories whose bytes the image's author controls. A segfault there, in the main process,
would end the scan with no report and no one-line error. So `IsolatedReader` runs the reader
(built by a picklable factory) in a spawned child, the "reader process", and answers the Reader
protocol by asking it: the volumes once at open, `read_small` by request, `files` as batches
streamed back while the child walks (the pipe holds a few batches, so a child walking faster
than the scan consumes waits, and memory stays bounded). File content is read by the worker
processes as before, from the same `OpenerSpec`.

What a crash of the reader process costs, the contract:

- while opening the image (partition tables, volume systems, file system identification):
  an ImageError naming the cause and suggesting the libguestfs reader (the auto reader then
  falls back to libguestfs, whose parsers run in the appliance's kernel);
- while listing a volume: what it handed over before (whole batches) is kept, and the volume
  ends with one Skipped at its mountpoint naming the cause, so coverage is incomplete; the
  next request starts a new reader process (it reopens the image the same way);
- while reading a small file (fstab, os-release, a registry hive): None, as for a file that
  is absent, and a warning in `warnings`.

The child ignores SIGINT (a terminal's Ctrl-C reaches the whole process group; the main process
decides) and dies at once on SIGTERM; `close()` and every early end of a `files()` iteration
(closed, or left by an exception such as KeyboardInterrupt) stop it, so none outlives the scan.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Generator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from imgscan.errors import ImageError, ImgscanError
from imgscan.image.formats import FormatInfo
from imgscan.image.interface import OpenerSpec, Reader, VolumeInfo
from imgscan.model import FileRef, ImageInfo, ReaderInfo, Skipped
from imgscan.spawned import caller_main_hidden

#: Builds the reader inside the child: `factory(image, fmt, keys)`. Must be picklable by
#: reference (a module-level function).
ReaderFactory = Callable[[str, FormatInfo, tuple[str, ...]], Reader]

_BATCH = 512
_STOP_GRACE = 5.0
_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def describe_exit(exitcode: int | None) -> str:
    """How a child process ended, for a reason: "signal SIGSEGV" or "exit status 1"."""
    if exitcode is None:
        return "unknown cause"
    if exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit status {exitcode}"


def name_process(name: str) -> None:
    """Name the calling process as `ps` and `top` show it (Linux `comm`, at most 15 bytes), so
    an operator can tell imgscan's workers and reader process apart. Best effort."""
    try:
        with open("/proc/self/comm", "w", encoding="ascii") as comm:
            comm.write(name[:15])
    except OSError:
        pass


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def _serve(reader: Reader, conn: Connection) -> None:
    """Answer requests until None: ("read_small", device, path, limit) -> ("value", bytes or
    None); ("files", device, mountpoint) -> ("items", [...]) batches, then ("end", failure or
    None)."""
    while (request := conn.recv()) is not None:
        if request[0] == "read_small":
            _, device, path, limit = request
            conn.send(("value", reader.read_small(device, path, limit)))
            continue
        _, device, mountpoint = request
        batch: list[FileRef | Skipped] = []
        failure = None
        try:
            for item in reader.files(device, mountpoint):
                batch.append(item)
                if len(batch) >= _BATCH:
                    conn.send(("items", batch))
                    batch = []
        except Exception as exc:  # a library error the reader did not expect: this volume
            failure = _one_line(exc)
        conn.send(("items", batch))
        conn.send(("end", failure))


def _reader_main(
    conn: Connection, factory: ReaderFactory, image: str, fmt: FormatInfo, keys: tuple[str, ...]
) -> None:
    """The reader process's life: open the image, send what the main process keeps (or the
    error), then serve requests."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    name_process("imgscan-reader")
    try:
        try:
            reader = factory(image, fmt, keys)
        except ImgscanError as exc:
            conn.send(("error", exc))
            return
        except Exception as exc:  # a bug or an unexpected library error: one line, not a trace
            conn.send(("error", ImageError(f"{image}: cannot read image: {_one_line(exc)}")))
            return
        try:
            opened = (reader.volumes(), reader.info, reader.warnings, reader.opener_spec())
            conn.send(("opened", opened))
            _serve(reader, conn)
        finally:
            reader.close()
    except (EOFError, OSError):
        pass  # the main process is gone, or stopped listening: nobody to answer


class IsolatedReader:
    """A Reader whose work happens in a reader process (see the module docstring)."""

    def __init__(
        self,
        factory: ReaderFactory,
        image: str,
        fmt: FormatInfo,
        keys: tuple[str, ...] = (),
    ) -> None:
        """Open `image` in a new reader process; raises what the reader raises (ImageError,
        ReaderUnavailableError), or ImageError if the process dies while opening it."""
        self._args = (factory, image, fmt, keys)
        self._lost = "the reader process is not running"
        self.image = ImageInfo(path=image, format=fmt.format, virtual_size=fmt.virtual_size)
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._busy = False
        self.warnings: tuple[str, ...] = ()
        opened = self._start("opening the image")
        if opened is None:
            raise ImageError(f"{image}: {self._lost}; try --reader guestfs")
        self._volumes: list[VolumeInfo] = opened[0]
        self.info: ReaderInfo = opened[1]
        self.warnings = opened[2]
        self._spec: OpenerSpec = opened[3]

    def _start(self, doing: str) -> tuple[Any, ...] | None:
        """Start a reader process and return what it sent on opening; None if it died (the
        cause in `self._lost`). Re-raises the reader's own ImgscanError."""
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe(duplex=True)
        process = context.Process(
            target=_reader_main, args=(child, *self._args), name="imgscan-reader", daemon=True
        )
        # Both signals blocked while the child starts (it inherits the mask and unblocks them
        # once it has set them up), as for the pool's workers: none is lost for this process.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            with caller_main_hidden():
                process.start()
            self._process, self._conn = process, parent
        finally:
            child.close()
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        try:
            kind, payload = parent.recv()
        except (EOFError, OSError):
            self._died(doing)
            return None
        if kind == "error":
            self.close()
            raise payload
        return tuple(payload)

    def _died(self, doing: str) -> None:
        process = self._process
        if process is not None:
            process.join(_STOP_GRACE)
        how = describe_exit(process.exitcode if process is not None else None)
        self._lost = f"the native reader crashed ({how}) while {doing}"
        self.close()

    def _connection(self, doing: str) -> Connection | None:
        """The live reader process's pipe, starting a new process after a crash."""
        if self._busy:
            raise RuntimeError("the reader is listing a volume: one request at a time")
        if self._conn is None:
            try:
                if self._start(doing) is None:
                    return None
            except ImgscanError as exc:  # it opened the first time: not expected, but said
                self._lost = f"the native reader could not reopen the image ({exc})"
                return None
        return self._conn

    def volumes(self) -> list[VolumeInfo]:
        return list(self._volumes)

    def read_small(self, device: str, path: str, limit: int = 1 << 16) -> bytes | None:
        doing = f"reading {path} on {device}"
        conn = self._connection(doing)
        if conn is None:
            self.warnings = (*self.warnings, f"{self._lost}; not read")
            return None
        try:
            conn.send(("read_small", device, path, limit))
            _, value = conn.recv()
        except (EOFError, OSError):
            self._died(doing)
            self.warnings = (*self.warnings, f"{self._lost}; not read")
            return None
        return value  # type: ignore[no-any-return]

    def files(self, device: str, mountpoint: str) -> Generator[FileRef | Skipped, None, None]:
        doing = f"listing {device}"
        conn = self._connection(doing)
        if conn is None:
            yield Skipped(mountpoint, f"{self._lost}; this volume was not listed")
            return
        self._busy = True
        finished = False
        try:
            try:
                conn.send(("files", device, mountpoint))
                while True:
                    kind, payload = conn.recv()
                    if kind == "items":
                        yield from payload
                        continue
                    finished = True
                    if payload is not None:
                        yield Skipped(mountpoint, f"listing this volume failed: {payload}")
                    return
            except (EOFError, OSError):
                pass  # the reader process died: the pipe closed under it
            self._died(doing)
            yield Skipped(
                mountpoint,
                f"{self._lost}; the files it had not handed over yet were not scanned",
            )
        finally:
            self._busy = False
            if not finished:
                # Closed early: the process may be mid-volume, with a send pending.
                self.close()

    def opener_spec(self) -> OpenerSpec:
        return self._spec

    def close(self) -> None:
        """Stop and reap the reader process; idempotent. A later request starts a new one."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is None:
            return
        if process.exitcode is None:
            process.terminate()
        process.join(_STOP_GRACE)
        if process.exitcode is None:
            process.kill()  # still starting up, with SIGTERM blocked
            process.join()
        process.close()
