"""The worker pool: FileRefs in, FileOutcomes out, across worker processes.

Workers start with the `spawn` method: a forked child would share the parent's open image file
descriptors, and with them the file offsets the C readers seek on. Each worker builds its engine
and its own reader handle from plain data (`WorkerSpec`); only FileRefs and FileOutcomes cross
the process boundary.

Why a pool of our own and not `ProcessPoolExecutor`: the executor cannot say which worker ran
which task, and one dead worker breaks it whole (it terminates every other worker with its work
and fails every pending task). Here each worker has a pipe of its own, holds at most two
batches (the one it scans and the next, so it never waits for the main process between them)
and answers file by file, so when a worker dies the pool knows exactly which file it was
scanning (the first one not answered) and the other workers go on undisturbed.

Crash isolation, the contract:

- The file a worker was scanning when it died (a segfault in a C library on a corrupt file, the
  OOM killer) is scanned again, alone, by another worker (a replacement is started for the dead
  one): a crash may be transient. If that worker dies too, the file is reported skipped ("the
  worker scanning this file crashed twice (signal SIGSEGV, then signal SIGSEGV); not
  scanned"), which makes coverage incomplete.
- The rest of the dead worker's batch is handed out again as it is: every file is answered
  exactly once, nothing lost and nothing counted twice.
- At most `MAX_CRASHES` workers may die in one scan. The next death raises `WorkerCrashError`
  (after the file it was scanning has been reported skipped): an image that kills every worker
  must not keep the scan respawning forever. The scanner then reports what it has, with the
  volumes it did not finish marked unreadable.
- A worker that dies before it is ready (while building its engine) is no file's fault; after
  `_START_FAILURES` such deaths in a row the scan stops with `WorkerStartError`.

`--jobs 1` runs one worker process too, never the engine in the calling process. On the 3 MB
test server image, on a busy 2-core machine, that costs about 0.5 s per scan compared with
scanning in process (1.5 s against 2.2 s, median of `imgscan scan --jobs 1`): a worker's cold
start (interpreter, imports, engine build, its own handle on the image), fixed per scan, most of
a scan of a tiny image and nothing on a real one. It buys a crash isolation as good as with any
other job count (a segfault in process would end the scan with no report at all) and a main
process that always answers SIGINT/SIGTERM at once.

Interruption: workers ignore SIGINT (a terminal's Ctrl-C reaches the whole process group; the
main process decides what happens) and keep SIGTERM's default action, dying at once without a
word. However `WorkerPool.scan()`'s generator ends (exhausted, closed by its consumer, or left
by an exception such as KeyboardInterrupt), and whenever the pool is closed, every worker is
terminated and reaped, so no process outlives the scan; a worker whose main process vanished
(SIGKILL) sees its pipe close and exits.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import pickle
import signal
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field, fields
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from imgscan.detect.engine import Engine, EngineSpec
from imgscan.errors import ImgscanError
from imgscan.image import make_opener
from imgscan.image.isolated import describe_exit, name_process
from imgscan.model import FileRef, Skipped
from imgscan.scan.worker import FileOutcome, FileScanner, WorkerSpec
from imgscan.spawned import caller_main_hidden


class WorkerStartError(ImgscanError):
    """Worker processes fail to build their engine or open the image, or die while doing so."""


class WorkerCrashError(ImgscanError):
    """Worker processes died more than `MAX_CRASHES` times in one scan: the scan gave up."""


_log = logging.getLogger(__name__)

_BATCH_FILES = 64
# Batches a worker holds at once: the one it scans and the next.
_IN_FLIGHT = 2
_BATCH_BYTES = 8 << 20
# Worker deaths one scan survives: a file that kills its worker every time costs two, so this
# is room for six such files (or a dozen transient deaths) before the image is given up on.
MAX_CRASHES = 12
# Deaths in a row before a worker has become ready that make the pool give up: the engine or
# the image cannot be opened in a worker at all.
_START_FAILURES = 3
# How long stopped workers get to exit after SIGTERM before they are killed. A worker dies at
# once on SIGTERM unless it is still starting up with the signal blocked (see `_spawn`).
_STOP_GRACE = 5.0
# SIGINT and SIGTERM are blocked while a worker is spawned, and stay blocked in it until
# `_worker_main` has set them up: the signal mask is inherited across fork and exec.
_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _worker_main(conn: Connection) -> None:
    """A worker process's whole life.

    From the main process: the pickled EngineSpec (as soon as the rules are compiled), then
    the other fields of the WorkerSpec (once the image is open), then batches (lists of
    FileRefs), then None for stop. To it, in order: ("ready", None) once the scanner is built,
    or ("failed", reason) if it cannot be; then ("outcome", FileOutcome) for every file of
    every batch received, in the order received.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    name_process("imgscan-worker")
    try:
        try:
            # Building the engine (compiling every rule's regex and the YARA rules) is most of
            # a worker's start-up (~0.3 s); it happens while the main process opens the image.
            engine_spec: EngineSpec = pickle.loads(conn.recv_bytes())
            engine = Engine(engine_spec)
            spec = WorkerSpec(engine=engine_spec, **conn.recv())
            scanner = FileScanner(spec, make_opener(spec.opener), engine)
        except Exception as exc:  # reported by the main process as WorkerStartError
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
            return
        conn.send(("ready", None))
        while (batch := conn.recv()) is not None:
            for ref in batch:
                # Sent file by file, not per batch: what reached the pipe before a crash tells
                # the main process which file the worker died on.
                conn.send(("outcome", _scan_file(scanner, ref)))
    except (EOFError, OSError):
        pass  # the main process is gone (its end of the pipe closed): nobody to answer


def _scan_file(scanner: FileScanner, ref: FileRef) -> FileOutcome:
    try:
        return scanner.scan(ref)
    except Exception as exc:  # FileScanner records per-file trouble itself; this is a bug
        reason = f"internal error while scanning: {type(exc).__name__}: {exc}"
        skipped = (Skipped(ref.path, reason),)
        return FileOutcome(ref.volume, (), skipped, 0, metadata=bool(ref.metadata))


def _batches(
    items: Iterable[FileRef | Skipped], on_skipped: Callable[[Skipped], None]
) -> Iterator[list[FileRef]]:
    """Group refs into batches of small files (fewer round trips); a big file goes alone."""
    batch: list[FileRef] = []
    size = 0
    for item in items:
        if isinstance(item, Skipped):
            on_skipped(item)
            continue
        batch.append(item)
        size += item.size
        if len(batch) >= _BATCH_FILES or size >= _BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


@dataclass(frozen=True)
class _Task:
    """Files to hand to one worker. `died` is set on the lone retry of a file whose worker
    died scanning it: how that worker ended."""

    refs: tuple[FileRef, ...]
    died: str | None = None


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    ready: bool = False
    # The batches sent and not yet fully answered (at most _IN_FLIGHT), oldest first, with how
    # many files of each are still unanswered.
    tasks: deque[_Task] = field(default_factory=deque)
    left: deque[int] = field(default_factory=deque)
    # The files of `tasks` sent and not yet answered, in the order the worker scans them.
    unanswered: deque[FileRef] = field(default_factory=deque)


class WorkerPool:
    """The worker processes of one scan, and the bookkeeping of what each one holds.

    The workers are started at once, so that they import their libraries while the main
    process loads the rules; `prepare()` gives them the compiled rules to build their engine
    from while the main process opens the image; `scan()` gives them the rest of the
    WorkerSpec and the files (once: a pool serves one scan). `close()`, or leaving the `with`
    block, or the end of `scan()`'s generator, stops them all.
    """

    def __init__(self, jobs: int) -> None:
        """Start max(1, `jobs`) workers."""
        self._jobs = max(1, jobs)
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        # What every worker is sent, in order, replacements included: the pickled EngineSpec
        # (pickled once: it is ~7 MB), then the WorkerSpec's other fields.
        self._engine: EngineSpec | None = None
        self._setup: list[tuple[bool, Any]] = []
        self._queue: deque[_Task] = deque()  # walked ahead, or handed back by a dead worker
        self._crashes = 0
        self._start_failures = 0
        self._on_warning: Callable[[str], None] | None = None
        try:
            for _ in range(self._jobs):
                self._spawn()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def scan(
        self,
        spec: WorkerSpec,
        items: Iterable[FileRef | Skipped],
        on_skipped: Callable[[Skipped], None],
        on_warning: Callable[[str], None] | None = None,
    ) -> Generator[FileOutcome, None, None]:
        """Scan every FileRef in `items`; yield one outcome per FileRef as they complete.

        Skipped items from the walk are passed to `on_skipped` as they are met, and what the
        report should mention (a worker that died, whose file is scanned again) to
        `on_warning`. The order of outcomes is not defined; callers sort. Each worker holds one
        batch at a time and the walk runs at most one batch per worker ahead, so a reader that
        spools content (guestfs) never runs far ahead of the workers. A worker's crash costs
        the file it was scanning at most (see the module docstring); too many raise
        WorkerCrashError, workers that cannot start raise WorkerStartError. However the
        generator ends (exhausted, closed, an exception through it), the workers are stopped.
        """
        try:
            if len(self._setup) > 1:
                raise RuntimeError("a WorkerPool serves one scan")
            if self._engine is not spec.engine:
                if self._engine is not None:
                    raise RuntimeError("scan() with another engine than prepare() was given")
                self.prepare(spec.engine)
            rest = {f.name: getattr(spec, f.name) for f in fields(spec) if f.name != "engine"}
            self._send_all(False, rest)
            self._on_warning = on_warning
            yield from self._run(_batches(items, on_skipped))
        finally:
            self.close()

    def _run(self, batches: Iterator[list[FileRef]]) -> Iterator[FileOutcome]:
        exhausted = False
        while True:
            self._dispatch()
            if exhausted and not self._queue and all(not w.tasks for w in self._workers):
                return
            # Walk ahead of the workers, a batch at a time, so an idle worker never waits for
            # the walk; but first take what the workers have to say, without waiting.
            walk = not exhausted and len(self._queue) < self._jobs
            ready = wait(
                [w.conn for w in self._workers] + [w.process.sentinel for w in self._workers],
                timeout=0 if walk else None,
            )
            for worker in list(self._workers):
                if worker.conn in ready or worker.process.sentinel in ready:
                    yield from self._collect(worker)
            if walk:
                batch = next(batches, None)
                if batch is None:
                    exhausted = True
                else:
                    self._queue.append(_Task(tuple(batch)))

    def prepare(self, engine: EngineSpec) -> None:
        """Have every worker build its engine from `engine` now (optional: `scan()` does it
        otherwise)."""
        if self._engine is not None:
            raise RuntimeError("prepare() was called already")
        self._engine = engine
        # Through the pipe, not as an argument of the Process: those are written to the child
        # before `start()` returns, while it imports the scanner's libraries, which made each
        # start block the main process for ~0.2 s. Sent this way, workers start side by side.
        self._send_all(True, pickle.dumps(engine, protocol=pickle.HIGHEST_PROTOCOL))

    def _send_all(self, raw: bool, message: Any) -> None:
        self._setup.append((raw, message))
        for worker in self._workers:
            self._send_setup(worker, [(raw, message)])

    def _send_setup(self, worker: _Worker, messages: list[tuple[bool, Any]]) -> None:
        # OSError: it died already; its sentinel reports that, as a failure to start.
        with contextlib.suppress(OSError):
            for raw, message in messages:
                if raw:
                    worker.conn.send_bytes(message)
                else:
                    worker.conn.send(message)

    def _spawn(self) -> None:
        """Start one worker process (spawn: a fresh interpreter that imports imgscan only)."""
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main, args=(child,), name="imgscan-worker", daemon=True
        )
        # Blocked, not ignored: a signal that arrives meanwhile reaches the main process when
        # the mask is restored, and the worker starts with both signals blocked until it has
        # set them up, so a Ctrl-C during its start-up cannot make it print a traceback. The
        # worker is on the books before a pending KeyboardInterrupt can be raised.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            with caller_main_hidden():
                process.start()
            worker = _Worker(process, parent)
            self._workers.append(worker)
        finally:
            child.close()
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self._send_setup(worker, self._setup)  # a replacement: what the others were sent

    def _dispatch(self) -> None:
        """Hand queued tasks to ready workers, up to _IN_FLIGHT each: the next batch is in a
        worker's pipe before it finishes the current one, so it never waits for this process
        to wake up and send it. A file being retried after a crash goes only to a worker that
        holds nothing else, so that it is scanned alone."""
        for worker in self._workers:
            while self._queue and worker.ready and len(worker.tasks) < _IN_FLIGHT:
                if self._queue[0].died is not None and worker.tasks:
                    break
                task = self._queue.popleft()
                try:
                    worker.conn.send(list(task.refs))
                except OSError:
                    # The worker died before it took the batch: not the batch's fault. Its
                    # sentinel reports the death; the task goes to another worker.
                    self._queue.appendleft(task)
                    break
                worker.tasks.append(task)
                worker.left.append(len(task.refs))
                worker.unanswered.extend(task.refs)
                if task.died is not None:
                    break

    def _collect(self, worker: _Worker) -> Iterator[FileOutcome]:
        """Take every message `worker` has sent; handle its death if it died."""
        gone = False
        outcomes: list[FileOutcome] = []
        try:
            while worker.conn.poll():
                kind, payload = worker.conn.recv()
                if kind == "outcome":
                    worker.unanswered.popleft()
                    worker.left[0] -= 1
                    if not worker.left[0]:
                        worker.tasks.popleft()
                        worker.left.popleft()
                    outcomes.append(payload)
                elif kind == "ready":
                    worker.ready = True
                    self._start_failures = 0
                else:
                    raise WorkerStartError(f"a worker process could not start: {payload}")
        except (EOFError, OSError):
            gone = True  # what it sent before it died has been read: the pipe is at its end
        yield from outcomes
        if not gone and worker.process.exitcode is None:
            return
        # Its end of the pipe is closed or it has exited: reap it (it may be mid-exit).
        worker.process.join(_STOP_GRACE)
        if worker.process.exitcode is None:
            worker.process.kill()
            worker.process.join()
        yield from self._bury(worker)

    def _bury(self, worker: _Worker) -> Iterator[FileOutcome]:
        """Replace a dead worker; hand its work out again, or give its file up."""
        how, pid = describe_exit(worker.process.exitcode), worker.process.pid
        self._workers.remove(worker)
        worker.conn.close()
        worker.process.close()
        if not worker.ready:
            self._start_failures += 1
            if self._start_failures >= _START_FAILURES:
                raise WorkerStartError(
                    f"worker processes die while starting ({how}, {self._start_failures} times "
                    "in a row)"
                )
            self._spawn()
            return
        self._crashes += 1
        task = worker.tasks[0] if worker.tasks else None
        unanswered = list(worker.unanswered)
        if task is not None and unanswered:
            culprit, rest = unanswered[0], unanswered[1:]
            if rest:  # not yet scanned when the worker died: innocent, handed out as they are
                self._queue.appendleft(_Task(tuple(rest)))
            _log.info(
                "worker %d died (%s) scanning %r; %d other file(s) of its batch handed out again",
                pid,
                how,
                culprit.path,
                len(rest),
            )
            if task.died is None and self._crashes <= MAX_CRASHES:
                # One more chance, alone and first in line: a crash may be transient.
                self._queue.appendleft(_Task((culprit,), died=how))
                if self._on_warning is not None:
                    # repr(): a file name from the image never reaches a terminal unescaped.
                    self._on_warning(
                        f"a worker process died ({how}) while scanning {culprit.path!r}; the "
                        "file is scanned again, alone"
                    )
            else:
                if task.died is None:
                    reason = f"the worker scanning this file crashed ({how}); not scanned"
                else:
                    reason = (
                        f"the worker scanning this file crashed twice ({task.died}, then "
                        f"{how}); not scanned"
                    )
                yield FileOutcome(
                    culprit.volume,
                    (),
                    (Skipped(culprit.path, reason),),
                    0,
                    metadata=bool(culprit.metadata),
                )
        if self._crashes > MAX_CRASHES:
            raise WorkerCrashError(
                f"worker processes crashed {self._crashes} times while scanning this image "
                f"(the last: {how}); the rest of the scan was given up"
            )
        self._spawn()

    def close(self) -> None:
        """Terminate and reap every worker; idempotent, never leaves a process behind.

        The same path for a finished scan (workers idle), an error and an interruption (workers
        busy): SIGTERM ends a worker at once, even inside a C library.
        """
        for worker in self._workers:
            if worker.process.exitcode is None:
                worker.process.terminate()
        deadline = time.monotonic() + _STOP_GRACE
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                worker.process.kill()  # still starting up, with SIGTERM blocked
                worker.process.join()
            worker.conn.close()
            worker.process.close()
        self._workers.clear()


def run_pool(
    spec: WorkerSpec,
    items: Iterable[FileRef | Skipped],
    jobs: int,
    on_skipped: Callable[[Skipped], None],
) -> Generator[FileOutcome, None, None]:
    """`WorkerPool(jobs).scan(spec, items, on_skipped)`: for callers that have nothing to do
    while the workers start."""
    yield from WorkerPool(jobs).scan(spec, items, on_skipped)
