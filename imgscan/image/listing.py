"""Volume listing in a child process: a crash in a file system library costs the volume it was
listing, never the scan.

Listing a directory tree runs C parsers (libfsext, libfsntfs, The Sleuth Kit, ...) over
metadata the image's author controls; a segfault there in the main process would end the scan
with no report at all. So a reader that lists in process hands the work to a `ListingProcess`:
one spawned child per scan (re-spawned after a crash), rebuilding its own access to the image
from plain data (the reader's `OpenerSpec`) as the worker processes do, and sending the
volume's FileRefs and Skipped entries back in batches as it finds them.

The contract:

- `files(device, mountpoint)` yields what the child lists, in its order, and ends when the
  child has listed the whole volume.
- If the child dies before that (a signal, the OOM killer), what it sent is kept and the volume
  ends with one Skipped at `mountpoint` that names the cause; coverage is then incomplete. The
  next volume is listed by a new child. A listing that raises is reported the same way.
- However the generator ends (exhausted, closed early, an exception such as KeyboardInterrupt)
  and on `close()`, no child outlives it. The child ignores SIGINT (a terminal's Ctrl-C reaches
  the whole process group; the main process decides) and dies at once on SIGTERM.

The pipe holds a few batches: a child listing faster than the scan consumes waits, so memory
stays bounded whatever the volume's size.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Protocol

from imgscan.image.interface import OpenerSpec
from imgscan.model import FileRef, Skipped

#: What the child builds from the OpenerSpec: an object whose `files(device, mountpoint)`
#: lists one volume. Must be picklable by reference (a module-level class or function).
WalkerFactory = Callable[[OpenerSpec], "Walker"]

_BATCH = 512
_STOP_GRACE = 5.0
_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class Walker(Protocol):
    """What a WalkerFactory returns: lists one volume, as `Reader.files` does."""

    def files(self, device: str, mountpoint: str) -> Iterator[FileRef | Skipped]: ...


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
    an operator can tell imgscan's workers and listers apart. Best effort."""
    try:
        with open("/proc/self/comm", "w", encoding="ascii") as comm:
            comm.write(name[:15])
    except OSError:
        pass


def _lister_main(conn: Connection, factory: WalkerFactory, spec: OpenerSpec) -> None:
    """The child's life: build the walker, then for each (device, mountpoint) received send
    ("items", [...]) batches and one ("end", reason or None); None received ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    name_process("imgscan-list")
    try:
        walker = factory(spec)
        while (request := conn.recv()) is not None:
            device, mountpoint = request
            batch: list[FileRef | Skipped] = []
            failure = None
            try:
                for item in walker.files(device, mountpoint):
                    batch.append(item)
                    if len(batch) >= _BATCH:
                        conn.send(("items", batch))
                        batch = []
            except Exception as exc:  # a library error the walker did not expect: this volume
                failure = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            conn.send(("items", batch))
            conn.send(("end", failure))
    except (EOFError, OSError, BrokenPipeError):
        pass  # the main process is gone, or stopped listing: nobody to answer


class ListingProcess:
    """Lists volumes in a child process (see the module docstring for the contract)."""

    def __init__(self, factory: WalkerFactory, spec: OpenerSpec) -> None:
        self._factory = factory
        self._spec = spec
        self._context = multiprocessing.get_context("spawn")
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None

    def _start(self) -> tuple[BaseProcess, Connection]:
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_lister_main,
            args=(child, self._factory, self._spec),
            name="imgscan-list",
            daemon=True,
        )
        # As for the pool's workers: both signals blocked while the child starts, so it
        # inherits them blocked until it has set them up, and none is lost for the parent.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            process.start()
            self._process, self._conn = process, parent
        finally:
            child.close()
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return process, parent

    def files(self, device: str, mountpoint: str) -> Iterator[FileRef | Skipped]:
        if self._process is None or self._conn is None:
            process, conn = self._start()
        else:
            process, conn = self._process, self._conn
        finished = False
        try:
            try:
                conn.send((device, mountpoint))
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
                pass  # the child died: the pipe closed under it
            process.join(_STOP_GRACE)
            how = describe_exit(process.exitcode)
            self.close()
            yield Skipped(
                mountpoint,
                f"the file system reader crashed ({how}) while listing this volume; the files "
                "it had not listed yet were not scanned",
            )
        finally:
            if not finished:
                # Closed early (or crashed): the child may be mid-volume, with a send pending.
                self.close()

    def close(self) -> None:
        """Stop and reap the child; idempotent."""
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
