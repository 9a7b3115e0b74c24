"""Running a batch: hash the images, skip what the store has, scan the rest locally or on a
Dask cluster, and commit each result to the store as it arrives.

One image, one child process. Every image is scanned by `scan_image()` in a child process of
its own (`python -m imgscan batch-worker`, which reads an ImageTask on stdin and answers with
one JSON envelope on stdout), locally and on Dask workers alike. Why a child process rather
than calling `scan_image()` in the batch process (or in the Dask worker) directly:

- `scan_image()` starts its own worker processes (imgscan/scan/pool.py). Dask's workers run
  as daemonic processes, and a daemonic multiprocessing process may not have children; a child
  started with `subprocess` is not subject to that, so the same code runs under any Dask
  deployment without asking operators to set `distributed.worker.daemon: False`.
- Isolation: a reader that crashes on a hostile image (a C library segfault), or leaks memory,
  takes one child with it, not the batch (locally) or the Dask worker (on a cluster). A child
  that dies is an exception to the caller; Dask retries it (`--retries`), and so does the
  local runner.
- Interruption: the child turns SIGINT/SIGTERM into the scan's own clean stop (workers reaped,
  libguestfs appliance shut down). It also watches its stdin, which the batch holds open until
  the answer is in: when the batch dies (even by SIGKILL) the pipe closes and the child stops
  its scan instead of running on as an orphan.
- The result crosses the process boundary as the JSON report (`imgscan.report/v1`), the
  interface other tools use anyway; that is also what the store keeps.

The cost is one interpreter start per image (~0.5 s, as much as a scan's worker start-up
costs already), nothing next to a real image's scan.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from imgscan import build
from imgscan.batch.digest import image_digest
from imgscan.batch.discover import Discovery, ImageFile
from imgscan.batch.store import Key, Record, Store
from imgscan.detect.rules import RulePack, load_pack
from imgscan.errors import ImgscanError
from imgscan.image import ReaderKind
from imgscan.options import DEFAULT_MAX_FILE_SIZE, ScanOptions, default_signatures_dir

_log = logging.getLogger(__name__)

# How long children get to stop after SIGTERM (their scan reaps its workers and stops a
# libguestfs appliance, each bounded) before they are killed.
_STOP_GRACE = 20.0


@dataclass(frozen=True)
class ImageTask:
    """One image scan as plain data: what a child (local or on a Dask worker) is asked to do.
    Never holds a secret (LUKS keys are not supported in batches) nor an open handle."""

    image: str
    reader: str = ReaderKind.AUTO.value
    jobs: int = 0  # worker processes of this image's scan; 0: one per core of the host
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    allow_external_files: bool = False
    signatures: str | None = None
    timeout: float = 0.0  # seconds the scan may take; 0: no limit

    def options(self) -> ScanOptions:
        return ScanOptions(
            image=Path(self.image),
            reader=ReaderKind(self.reader),
            jobs=self.jobs,
            max_file_size=self.max_file_size,
            allow_external_files=self.allow_external_files,
            signatures=Path(self.signatures) if self.signatures else None,
        )


class ScanChildError(ImgscanError):
    """The child scanning an image died or answered nothing usable (retried by the runner)."""


class ScanChildStopped(ImgscanError):
    """The child's scan was interrupted (by a signal, or because the batch went away)."""


# -- the child's side ----------------------------------------------------------------------


def serve_child(stdin: IO[bytes]) -> dict[str, Any]:
    """A batch child's work: read the ImageTask (one JSON line) from `stdin`, scan the image
    and return the envelope to print: `tool_version`, `pack_version`, `worker`, and either
    `report` (the JSON report data, gate not judged) or `error` (the one-line reason the image
    could not be scanned), or `interrupted` true.

    The rest of `stdin` is watched: its end means the batch is gone, and the scan is stopped
    as by a Ctrl-C (the caller's KeyboardInterrupt handling applies)."""
    from imgscan.report.json import to_dict
    from imgscan.scan.scanner import scan_image

    task = ImageTask(**json.loads(stdin.readline()))
    threading.Thread(target=_watch_parent, args=(stdin,), daemon=True).start()
    options = task.options()
    envelope: dict[str, Any] = {
        "tool_version": build.tool_version(),
        "pack_version": None,
        "worker": _worker_name(),
    }
    try:
        envelope["pack_version"] = load_pack(options.signatures_dir).version
        envelope["report"] = to_dict(scan_image(options))
    except KeyboardInterrupt:  # ScanInterrupted, or a stop before the scan began
        envelope["interrupted"] = True
    except ImgscanError as exc:
        envelope["error"] = str(exc)
    return envelope


def _watch_parent(stdin: IO[bytes]) -> None:
    import _thread

    with contextlib.suppress(OSError, ValueError):
        while stdin.read(4096):
            pass
    _thread.interrupt_main()


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# -- the parent's side ---------------------------------------------------------------------


class _Children:
    """The child processes running now, so that an interrupted batch can stop them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self.stopping = False

    def add(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.add(proc)
            if self.stopping:
                proc.terminate()

    def discard(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.discard(proc)

    def stop_all(self) -> None:
        """SIGTERM every child, then SIGKILL those still running after the grace period."""
        with self._lock:
            self.stopping = True
            procs = list(self._procs)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_child(task: ImageTask, children: _Children | None = None) -> dict[str, Any]:
    """Scan one image in a child process and return its envelope (see `serve_child`).

    Raises ScanChildStopped when the scan was interrupted, ScanChildError when the child
    died or answered nothing (the caller may retry)."""
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "imgscan", "batch-worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        if children is not None:
            children.add(proc)
        expired = threading.Event()
        timer = _deadline(proc, task.timeout, expired)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps(asdict(task)).encode() + b"\n")
                proc.stdin.flush()
            except BrokenPipeError:
                pass  # it died at once: its exit status says how
            # stdin stays open until the answer is read: its end tells the child to stop.
            answer = proc.stdout.read()
            code = proc.wait()
            proc.stdin.close()
        finally:
            if timer is not None:
                timer.cancel()
            if children is not None:
                children.discard(proc)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        errors.seek(0)
        tail = errors.read().decode("utf-8", "replace").strip().splitlines()
    if expired.is_set():
        # Stopped for taking too long: an error of this image (fail closed), not a crash to
        # retry nor an interruption of the batch.
        return {
            "tool_version": build.tool_version(),
            "pack_version": None,
            "worker": _worker_name(),
            "error": f"{task.image}: the scan did not finish within {task.timeout:g} s "
            "(--timeout); stopped",
        }
    try:
        envelope: dict[str, Any] = json.loads(answer)
    except ValueError:
        last = f": {tail[-1][:300]}" if tail else ""
        raise ScanChildError(f"the scan process {_describe(code)}{last}") from None
    if envelope.get("interrupted"):
        raise ScanChildStopped(f"{task.image}: scan interrupted")
    return envelope


def _deadline(
    proc: subprocess.Popen[bytes], seconds: float, expired: threading.Event
) -> threading.Timer | None:
    """Stop `proc` once `seconds` have passed (None: no limit): SIGTERM, which ends its scan
    and its own children as an interruption would, then SIGKILL if it is still there after a
    grace period. `expired` is set when that happened."""
    if seconds <= 0:
        return None

    def stop() -> None:
        expired.set()
        with contextlib.suppress(OSError):
            proc.terminate()
            try:
                proc.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()

    timer = threading.Timer(seconds, stop)
    timer.daemon = True
    timer.start()
    return timer


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code} and no result"


def dask_scan_task(task: ImageTask) -> dict[str, Any]:
    """The Dask task: one image scanned in a child process of the Dask worker. Raises on a
    dead child so that Dask retries the task."""
    envelope = run_child(task)
    from distributed import get_worker

    envelope["worker"] = str(get_worker().address)  # the child only knows its own host and pid
    return envelope


# -- the batch -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchSettings:
    """How to run a batch (the CLI builds it from the options)."""

    reader: ReaderKind = ReaderKind.AUTO
    jobs: int = 0  # total worker processes on this host (0: one per core)
    parallel_images: int = 0  # images scanned at once locally (0: chosen from jobs)
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    allow_external_files: bool = False
    signatures: Path | None = None
    retries: int = 2
    timeout: float = 0.0  # seconds one image's scan may take (0: no limit)
    scheduler: str | None = None  # a Dask scheduler address: run there instead of locally
    rescan: bool = False


@dataclass(frozen=True)
class ImageOutcome:
    """What the batch did with one image. `status`: scanned (now), cached (a result with the
    same digest and versions was in the store), error (could not be hashed or scanned; see
    `error`), interrupted (the batch stopped before its result was in). `record` is the
    stored result for scanned, cached and error (when hashed)."""

    path: str
    digest: str | None
    status: str
    record: Record | None = None
    error: str | None = None


@dataclass
class BatchResult:
    outcomes: list[ImageOutcome] = field(default_factory=list)
    interrupted: bool = False
    tool_version: str = field(default_factory=build.tool_version)
    pack_version: str = ""
    slots: int = 1
    workers_per_image: int = 1

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


class Progress(Protocol):
    """What the batch reports as it goes (the CLI draws one bar from it)."""

    def phase(self, name: str, images: int, size: int) -> None:
        """A phase starts: `images` images of `size` bytes in all to go through."""

    def advance(self, images: int, size: int) -> None:
        """`images` more images, `size` more bytes, are through."""


def split_jobs(jobs: int, pending: int, parallel_images: int = 0) -> tuple[int, int]:
    """How `jobs` worker processes are shared: (images scanned at once, workers per image).

    Default: half as many images at once as jobs (at least one, at most the images due), each
    with an equal share of the workers. Why not one worker per image: each image's scan has a
    serial part in its own main process (detecting the format, opening the image, walking the
    filesystems, the workers' start-up), during which a lone worker idles; two workers per
    image keep the cores busy through it. Why not every worker on one image at a time: that
    serial part would then idle all the other cores, and a store is mostly many small images;
    running images side by side overlaps one image's serial part with another's scanning. A
    single image due gets every worker. `parallel_images` overrides the image count."""
    jobs = max(1, jobs)
    pending = max(1, pending)
    slots = parallel_images if parallel_images > 0 else max(1, jobs // 2)
    slots = min(slots, pending)
    return slots, max(1, math.floor(jobs / slots))


def run_batch(
    discovery: Discovery,
    store: Store,
    settings: BatchSettings,
    progress: Progress | None = None,
    on_outcome: Callable[[ImageOutcome], None] | None = None,
    pack: RulePack | None = None,
) -> BatchResult:
    """Run the batch over the discovered images with `store` (whose writer lock the caller
    holds). Every image's outcome is also passed to `on_outcome` as soon as it is known
    (cached ones first, then each scanned one as it is committed). A KeyboardInterrupt stops
    the children and returns the result so far with `interrupted` set; what was committed stays
    committed, and the next batch scans only what is not `done`. `pack` is the rule pack of
    `settings.signatures` when the caller has it loaded already."""
    if pack is None:
        pack = load_pack(settings.signatures or default_signatures_dir())
    result = BatchResult(pack_version=pack.version)
    notify = on_outcome or (lambda _outcome: None)
    for problem in discovery.problems:
        outcome = ImageOutcome(problem.path, None, "error", error=problem.error)
        result.outcomes.append(outcome)
        notify(outcome)

    # 1. Digests (cached by file identity; only new or changed files are read).
    images = list(discovery.images)
    files = {image.path: image for image in images}
    sizes = {image.path: image.size for image in images}
    if progress is not None:
        progress.phase("hashing", len(images), sum(sizes.values()))
    digests: dict[Path, str] = {}
    try:
        for image in images:
            try:
                digest, _ = image_digest(
                    image, store, (lambda n: progress.advance(0, n)) if progress else None
                )
            except OSError as exc:
                why = f"{image.path}: cannot read: {exc.strerror or exc}"
                outcome = ImageOutcome(str(image.path), None, "error", error=why)
                result.outcomes.append(outcome)
                notify(outcome)
                continue
            digests[image.path] = digest
            if progress is not None:
                progress.advance(1, 0)
    except KeyboardInterrupt:
        result.interrupted = True
        result.outcomes.extend(
            ImageOutcome(str(i.path), None, "interrupted") for i in images if i.path not in digests
        )
        return result
    store.see_images([(str(path), digest, sizes[path]) for path, digest in digests.items()])

    # 2. What is due: one scan per digest not done with these versions.
    by_digest: dict[str, list[Path]] = {}
    for path, digest in digests.items():
        by_digest.setdefault(digest, []).append(path)
    due: dict[str, Path] = {}
    for digest, paths in by_digest.items():
        key = Key(digest, build.tool_version(), pack.version)
        if settings.rescan or not store.is_done(key):
            due[digest] = paths[0]
            continue
        record = store.record(key)
        for path in paths:
            outcome = ImageOutcome(str(path), digest, "cached", record)
            result.outcomes.append(outcome)
            notify(outcome)

    slots, workers = split_jobs(
        settings.jobs if settings.jobs > 0 else (os.cpu_count() or 1),
        len(due),
        settings.parallel_images,
    )
    result.slots, result.workers_per_image = slots, workers
    _log.info(
        "%d image(s) in the store already, %d to scan%s",
        len(by_digest) - len(due),
        len(due),
        f" on {settings.scheduler}"
        if settings.scheduler
        else f": {slots} at a time, {workers} worker(s) each",
    )
    tasks = {
        digest: ImageTask(
            image=str(path),
            reader=settings.reader.value,
            # On a cluster each worker host decides (0: one per core of that host).
            jobs=workers if settings.scheduler is None else settings.jobs,
            max_file_size=settings.max_file_size,
            allow_external_files=settings.allow_external_files,
            signatures=str(settings.signatures) if settings.signatures else None,
            timeout=settings.timeout,
        )
        for digest, path in due.items()
    }
    if progress is not None:
        progress.phase("scanning", len(due), sum(sizes[p] for p in due.values()))
    claimer = f"{socket.gethostname()}:{os.getpid()}"
    store.claim(
        [(Key(d, build.tool_version(), pack.version), str(p)) for d, p in due.items()], claimer
    )

    def finished(digest: str, envelope: dict[str, Any] | None, error: str | None) -> None:
        """Commit one image's result (the store's single writer is this thread)."""
        key = Key(digest, build.tool_version(), pack.version)
        path = due[digest]
        worker = envelope.get("worker") if envelope else None
        if envelope is not None and error is None:
            if (envelope.get("tool_version"), envelope.get("pack_version")) != (
                build.tool_version(),
                pack.version,
            ) and envelope.get("report") is not None:
                error = (
                    f"{path}: the worker {worker} runs imgscan {envelope.get('tool_version')} "
                    f"with rule pack {envelope.get('pack_version')}, this batch "
                    f"{build.tool_version()} with {pack.version}: install the same on every host"
                )
            elif envelope.get("report") is not None:
                error = _changed_since_hashed(files[path], digest, store)
                if error is None:
                    store.commit_result(key, str(path), envelope["report"], worker)
            else:
                error = str(envelope.get("error") or f"{path}: no result")
        if error is not None:
            store.commit_error(key, str(path), error, worker)
        record = store.record(key)
        status = "scanned" if error is None else "error"
        for each in by_digest[digest]:
            outcome = ImageOutcome(str(each), digest, status, record, error)
            result.outcomes.append(outcome)
            notify(outcome)
        if progress is not None:
            progress.advance(1, sizes[path])

    try:
        if settings.scheduler is not None:
            _run_dask(settings.scheduler, tasks, settings.retries, finished)
        else:
            _run_local(tasks, slots, settings.retries, finished)
    except KeyboardInterrupt:
        result.interrupted = True
        done = {o.digest for o in result.outcomes}
        for digest, paths in by_digest.items():
            if digest not in done:
                result.outcomes.extend(ImageOutcome(str(p), digest, "interrupted") for p in paths)
    return result


Finished = Callable[[str, dict[str, Any] | None, str | None], None]


def _changed_since_hashed(image: ImageFile, digest: str, store: Store) -> str | None:
    """Why the result of scanning `image` must not be stored under `digest`, or None.

    The batch hashes every image first and scans later, so an image replaced or rewritten in
    between would have its scan stored under the digest of the content it no longer has (and
    served for that content ever after). The digest is taken again once the scan has ended:
    the file-identity cache makes that a stat per part when nothing changed (a rewrite changes
    the ctime, a replacement the inode), and a full hash when something did."""
    try:
        after, _ = image_digest(image, store)
    except OSError as exc:
        return f"{image.path}: cannot read after the scan: {exc.strerror or exc}"
    if after != digest:
        return (
            f"{image.path}: the image changed while the batch was scanning it; "
            "its result was not stored (run the batch again)"
        )
    return None


def _run_local(tasks: dict[str, ImageTask], slots: int, retries: int, finished: Finished) -> None:
    """Scan `tasks` (by digest) in child processes, `slots` at a time; each result goes to
    `finished` in this thread as soon as it is in. A child that dies is retried up to
    `retries` times."""
    children = _Children()
    attempts: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=max(1, slots), thread_name_prefix="imgscan-image") as ex:
        running: dict[Future[dict[str, Any]], str] = {}
        queue = list(tasks)
        try:
            while queue or running:
                while queue and len(running) < slots:
                    digest = queue.pop(0)
                    attempts[digest] = attempts.get(digest, 0) + 1
                    running[ex.submit(run_child, tasks[digest], children)] = digest
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    digest = running.pop(future)
                    try:
                        envelope = future.result()
                    except ScanChildStopped as exc:
                        # Stopped by a signal of its own (a Ctrl-C reaches the batch too and
                        # stops it): this image is not done, and the next batch scans it.
                        finished(digest, None, str(exc))
                        continue
                    except ScanChildError as exc:
                        if attempts[digest] <= retries:
                            _log.info("%s: %s; trying again", tasks[digest].image, exc)
                            queue.append(digest)
                            continue
                        finished(digest, None, f"{tasks[digest].image}: {exc}")
                        continue
                    finished(digest, envelope, None)
        except BaseException:
            # Interrupted, or `finished` failed (a report that cannot be written): no child
            # may outlive the batch.
            children.stop_all()
            for future in running:
                future.cancel()
            raise


def _run_dask(address: str, tasks: dict[str, ImageTask], retries: int, finished: Finished) -> None:
    """Scan `tasks` on the Dask cluster at `address`, one task per image, each retried up to
    `retries` times by Dask; results come back here, to be committed by `finished`."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ImgscanError(
            "--scheduler needs Dask's distributed package: pip install 'dask[distributed]'"
        ) from None
    try:
        client = Client(address, timeout="30s")
    except (OSError, TimeoutError) as exc:
        raise ImgscanError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    with client:
        futures = {
            client.submit(
                dask_scan_task,
                task,
                key=f"imgscan-{digest.split(':')[-1][:16]}-{uuid.uuid4().hex[:8]}",
                retries=retries,
                pure=False,
            ): digest
            for digest, task in tasks.items()
        }
        try:
            for future in as_completed(futures):
                digest = futures[future]
                try:
                    envelope = future.result()
                except ScanChildStopped as exc:
                    finished(digest, None, str(exc))
                except Exception as exc:  # the task failed on every try: this image's error
                    finished(digest, None, f"{tasks[digest].image}: {type(exc).__name__}: {exc}")
                else:
                    finished(digest, envelope, None)
        except KeyboardInterrupt:
            client.cancel(list(futures))
            raise
