"""The worker pool: FileRefs in, FileOutcomes out, across N processes (or in-process for one).

Workers start with the `spawn` method: a forked child would share the parent's open image file
descriptors, and with them the file offsets the C readers seek on. Each worker builds its engine
and its own reader handle in the initializer from plain data; only FileRefs and FileOutcomes
cross the process boundary. `--jobs 1` runs the very same code in the calling process.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from imgscan.errors import ImgscanError
from imgscan.image import make_opener
from imgscan.model import FileRef, Skipped
from imgscan.scan.worker import FileOutcome, FileScanner, WorkerSpec


class WorkerStartError(ImgscanError):
    """A worker process failed to build its engine or open the image."""


class WorkerCrashError(ImgscanError):
    """A worker process died mid-scan; what it was scanning is unknown, so the scan fails."""


_BATCH_FILES = 64
_BATCH_BYTES = 8 << 20

_scanner: FileScanner | None = None
_init_error: str | None = None


def _init_worker(spec: WorkerSpec) -> None:
    # An exception escaping a Pool initializer makes multiprocessing respawn the worker
    # forever; keep the error and report it from the first task instead.
    global _scanner, _init_error
    try:
        _scanner = FileScanner(spec, make_opener(spec.opener))
    except Exception as exc:
        _init_error = f"{type(exc).__name__}: {exc}"


def _scan_batch(batch: list[FileRef]) -> list[FileOutcome]:
    if _scanner is None:
        raise WorkerStartError(f"a worker process could not start: {_init_error}")
    return [_scanner.scan(ref) for ref in batch]


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


def run_pool(
    spec: WorkerSpec,
    items: Iterable[FileRef | Skipped],
    jobs: int,
    on_skipped: Callable[[Skipped], None],
) -> Iterator[FileOutcome]:
    """Scan every FileRef in `items` with `jobs` workers; yield outcomes as they complete.

    Skipped items from the walk are passed to `on_skipped` as they are met. The order of
    outcomes is not defined; callers sort. At most a few batches per worker are in flight, so
    a reader that spools content (guestfs) never runs far ahead of the workers. A worker that
    dies (a crash in a native library) stops the scan with WorkerCrashError rather than
    leaving it waiting forever.
    """
    batches = _batches(items, on_skipped)
    if jobs <= 1:
        _init_worker(spec)
        for batch in batches:
            yield from _scan_batch(batch)
        return
    limit = jobs * 3
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_init_worker, initargs=(spec,)
    ) as executor:
        pending: set[Future[list[FileOutcome]]] = set()
        exhausted = False
        try:
            while pending or not exhausted:
                while not exhausted and len(pending) < limit:
                    try:
                        batch = next(batches)
                    except StopIteration:
                        exhausted = True
                    else:
                        pending.add(executor.submit(_scan_batch, batch))
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield from future.result()
        except BrokenProcessPool as exc:
            raise WorkerCrashError(
                "a worker process died while scanning (a crash in a native library?); "
                "the scan is incomplete"
            ) from exc
        finally:
            for future in pending:
                future.cancel()
