"""The worker pool: FileRefs in, FileOutcomes out, across N processes (or in-process for one).

Workers start with the `spawn` method: a forked child would share the parent's open image file
descriptors, and with them the file offsets the C readers seek on. Each worker builds its engine
and its own reader handle in the initializer from plain data; only FileRefs and FileOutcomes
cross the process boundary. `--jobs 1` runs the very same code in the calling process.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterable, Iterator

from imgscan.errors import ImgscanError
from imgscan.image import make_opener
from imgscan.model import FileRef, Skipped
from imgscan.scan.worker import FileOutcome, FileScanner, WorkerSpec


class WorkerStartError(ImgscanError):
    """A worker process failed to build its engine or open the image."""


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
    items: Iterable[FileRef | Skipped],
    on_skipped: Callable[[Skipped], None],
    slots: threading.BoundedSemaphore,
) -> Iterator[list[FileRef]]:
    """Group refs into batches of small files (fewer round trips); a big file goes alone.

    `slots` bounds how many batches are in flight: readers that spool content (guestfs) must
    not run ahead of the workers and fill the disk.
    """
    batch: list[FileRef] = []
    size = 0
    for item in items:
        if isinstance(item, Skipped):
            on_skipped(item)
            continue
        batch.append(item)
        size += item.size
        if len(batch) >= _BATCH_FILES or size >= _BATCH_BYTES:
            slots.acquire()
            yield batch
            batch, size = [], 0
    if batch:
        slots.acquire()
        yield batch


def run_pool(
    spec: WorkerSpec,
    items: Iterable[FileRef | Skipped],
    jobs: int,
    on_skipped: Callable[[Skipped], None],
) -> Iterator[FileOutcome]:
    """Scan every FileRef in `items` with `jobs` workers; yield outcomes as they complete.

    Skipped items from the walk are passed to `on_skipped` as they are met. The order of
    outcomes is not defined; callers sort.
    """
    slots = threading.BoundedSemaphore(max(4, jobs * 4))
    batches = _batches(items, on_skipped, slots)
    if jobs <= 1:
        _init_worker(spec)
        for batch in batches:
            slots.release()
            yield from _scan_batch(batch)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes=jobs, initializer=_init_worker, initargs=(spec,)) as pool:
        for outcomes in pool.imap_unordered(_scan_batch, batches):
            slots.release()
            yield from outcomes
