"""One image, end to end: detect the format, open a reader, place volumes at their guest
mountpoints, stream every file through the worker pool, and collect a ScanResult.

Only a failure to open the image or load the rules is fatal (ImgscanError); trouble with one
volume or one file is recorded in the result and makes coverage incomplete.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace

from imgscan.detect import packages
from imgscan.detect.engine import MAX_FINDINGS_PER_FILE, MAX_FINDINGS_PER_RULE, build_spec
from imgscan.detect.globs import compile_glob
from imgscan.detect.rules import RulePack, glob_form, load_packs
from imgscan.errors import ImageError
from imgscan.exposures import build_exposures
from imgscan.image import open_reader
from imgscan.image.formats import FormatInfo, detect_format
from imgscan.image.inspect import inspect_linux
from imgscan.image.interface import Reader, VolumeInfo, join_guest_path
from imgscan.image.inuse import in_use_warning, lock_holder
from imgscan.image.layout import (
    mount_layout,
    relocate,
    relocations,
    root_filesystem,
)
from imgscan.image.metadata import NAMES
from imgscan.image.windows import find_windows
from imgscan.model import (
    Capped,
    Clue,
    Excluded,
    FileRef,
    Finding,
    ImageInfo,
    OsInfo,
    PackageFiles,
    ReaderInfo,
    RuleDoc,
    ScanResult,
    Skipped,
    Stats,
    Volume,
    VolumeStatus,
)
from imgscan.options import ScanOptions, default_cache_dir
from imgscan.ownership import apply_ownership
from imgscan.scan.pool import WorkerCrashError, WorkerPool
from imgscan.scan.worker import FileOutcome, WorkerSpec

Progress = Callable[[FileOutcome], None]
_log = logging.getLogger(__name__)

INTERRUPTED_REASON = "the scan was interrupted before this volume was read to the end"


class ScanInterrupted(KeyboardInterrupt):
    """The scan was interrupted: a KeyboardInterrupt (SIGINT, or a SIGTERM the caller turned
    into one) that carries the partial result.

    `partial` holds what was found until then: findings of the files scanned, every volume the
    scan did not finish with status `interrupted`, and `interrupted` set, so it is never
    complete. Raised only once the reader (its libguestfs appliance included) and every worker
    process have been stopped. A KeyboardInterrupt, so a caller that knows only that one still
    stops.
    """

    def __init__(self, partial: ScanResult) -> None:
        super().__init__("scan interrupted")
        self.partial = partial


def scan_image(options: ScanOptions, progress: Progress | None = None) -> ScanResult:
    """Scan `options.image` and return everything found, sorted and deterministic.

    Raises ImgscanError when the image or the rules cannot be opened, ScanInterrupted when
    interrupted (after the image's format is known; before, a plain KeyboardInterrupt). Worker
    crashes beyond the pool's bound (`WorkerCrashError`) end the scan early but still return a
    result: the volumes not finished are `unreadable`, so coverage is incomplete.
    """
    started = time.monotonic()
    fmt = detect_format(options.image, options.allow_external_files)
    _log.info(
        "%s: %s image (%s), %d bytes",
        options.image,
        fmt.format,
        fmt.subformat or "-",
        fmt.virtual_size,
    )
    tally = _Tally(
        image=ImageInfo(
            str(options.image), fmt.format, fmt.virtual_size, lock_holder(str(options.image))
        ),
        reader=ReaderInfo(options.reader.value),
        started=started,
    )
    if tally.image.in_use is not None:
        tally.warnings.append(in_use_warning(str(options.image), tally.image.in_use))
    try:
        # The workers start now and import their libraries while the image is opened.
        with WorkerPool(options.worker_count) as pool:
            _scan(options, fmt, tally, pool, progress)
        return tally.result()
    except KeyboardInterrupt:
        # By now the reader's and the pool's own cleanup has run: no appliance, no worker.
        raise ScanInterrupted(tally.result(VolumeStatus.INTERRUPTED, INTERRUPTED_REASON)) from None
    except WorkerCrashError as exc:
        tally.warnings.append(str(exc))
        return tally.result(VolumeStatus.UNREADABLE, f"not read to the end: {exc}")


@dataclass
class _Tally:
    """What the scan has gathered so far: the result at its end, or the partial result of a
    scan stopped early (interrupted, or given up after worker crashes)."""

    image: ImageInfo
    reader: ReaderInfo
    started: float
    started_at: str = field(default_factory=lambda: _utc_now())
    pack: RulePack | None = None
    warnings: list[str] = field(default_factory=list)
    infos: list[VolumeInfo] = field(default_factory=list)
    layout: dict[str, str] = field(default_factory=dict)
    os: OsInfo | None = None
    skipped: list[Skipped] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    clues: list[Clue] = field(default_factory=list)
    capped: list[Capped] = field(default_factory=list)
    excluded: dict[str, list[int]] = field(default_factory=dict)  # glob -> [files, bytes]
    records: list[PackageFiles] = field(default_factory=list)  # package managers' records
    digests: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> {algorithm: hex}
    listed: int = 0  # files the package records list, counted against their bound
    files: dict[str, int] = field(default_factory=dict)  # outcomes received, per volume
    metadata: dict[str, int] = field(default_factory=dict)  # of them, metadata (not files)
    sizes: dict[str, int] = field(default_factory=dict)
    walked: dict[str, int] = field(default_factory=dict)  # FileRefs handed to the pool
    walk_ended: set[str] = field(default_factory=set)  # volumes the walk went through
    opened: float | None = None  # when the first file was asked for (monotonic)
    listing: float = 0.0  # seconds waiting for the reader's next file
    reading: float = 0.0  # workers' seconds reading file content, summed
    scanning: float = 0.0  # workers' seconds scanning files (reads included), summed

    def add(self, outcome: FileOutcome) -> None:
        self.reading += outcome.read_seconds
        self.scanning += outcome.scan_seconds
        self.findings.extend(outcome.findings)
        self.skipped.extend(outcome.skipped)
        self.clues.extend(outcome.clues)
        self.capped.extend(Capped(*entry) for entry in outcome.capped)
        for record in outcome.records:
            self.listed += len(record.files)
            if self.listed <= packages.MAX_TOTAL_FILES:
                self.records.append(record)
            elif self.listed - len(record.files) <= packages.MAX_TOTAL_FILES:
                self.warnings.append(
                    f"package records list more than {packages.MAX_TOTAL_FILES} files; "
                    f"{record.record} and the records read after it are ignored"
                )
        if outcome.digests and outcome.findings:
            self.digests[outcome.findings[0].path.split("!/", 1)[0]] = dict(outcome.digests)
        if outcome.metadata:
            self.metadata[outcome.volume] = self.metadata.get(outcome.volume, 0) + 1
            return
        self.files[outcome.volume] = self.files.get(outcome.volume, 0) + 1
        self.sizes[outcome.volume] = self.sizes.get(outcome.volume, 0) + outcome.bytes

    def finished(self, device: str) -> bool:
        """Whether every file of `device` was walked and has its outcome (the pool answers
        each FileRef exactly once, so the counts say it)."""
        answered = self.files.get(device, 0) + self.metadata.get(device, 0)
        return device in self.walk_ended and self.walked.get(device, 0) == answered

    def result(
        self, unfinished: VolumeStatus | None = None, reason: str | None = None
    ) -> ScanResult:
        """The result; for a scan stopped early (`unfinished` given), each volume it was to
        scan and did not finish gets that status and `reason`."""
        # Findings in files a package installed, unmodified, are vendor content (demoted to
        # info); decided only now, when every record on the image has been read.
        findings = apply_ownership(self.findings, self.records, self.digests)
        volumes = []
        for v in self.infos:
            status, why = v.status, v.reason
            unread = status is VolumeStatus.SCANNED and not self.finished(v.device)
            if unfinished is not None and unread:
                status, why = unfinished, reason
            volumes.append(
                Volume(
                    device=v.device,
                    fstype=v.fstype,
                    mountpoint=self.layout.get(v.device),
                    status=status,
                    reason=why,
                    files=self.files.get(v.device, 0),
                    bytes=self.sizes.get(v.device, 0),
                    reader=v.reader or self.reader.name,
                    subvolumes=tuple(
                        (path, _subvolume_place(self.layout, v.device, path))
                        for _, path in v.subvolumes
                    ),
                )
            )
        pack = self.pack
        capped = tuple(sorted(set(self.capped), key=lambda c: (c.path, c.rule)))
        return ScanResult(
            image=self.image,
            reader=self.reader,
            volumes=tuple(volumes),
            skipped=tuple(sorted(set(self.skipped), key=lambda s: (s.path, s.reason))),
            findings=tuple(sorted(findings, key=Finding.sort_key)),
            stats=Stats(
                files=sum(self.files.values()),
                bytes=sum(self.sizes.values()),
                seconds=round(time.monotonic() - self.started, 3),
                stages=(
                    ("open", round((self.opened or time.monotonic()) - self.started, 3)),
                    ("listing", round(self.listing, 3)),
                    ("read", round(self.reading, 3)),
                    ("match", round(max(0.0, self.scanning - self.reading), 3)),
                ),
                started_at=self.started_at,
                finished_at=_utc_now(),
            ),
            exposures=build_exposures(findings, self.clues),
            pack_version=pack.version if pack is not None else "",
            rules=tuple(
                RuleDoc(meta.id, meta.name, meta.category, meta.severity, pack.help(meta.id))
                for meta in (pack.meta(rule_id) for rule_id in sorted({f.rule for f in findings}))
            )
            if pack is not None
            else (),
            warnings=tuple(self.warnings) + tuple(_capped_notes(capped)),
            os=self.os,
            clues=tuple(sorted(set(self.clues), key=lambda c: (c.path, c.kind, c.facts))),
            interrupted=unfinished is VolumeStatus.INTERRUPTED,
            capped=capped,
            excluded=tuple(
                Excluded(pattern, files, size) for pattern, (files, size) in self.excluded.items()
            ),
        )


def _utc_now() -> str:
    """Now, UTC, ISO 8601 to the second: `2026-12-07T05:31:27Z`."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _capped_notes(capped: tuple[Capped, ...]) -> list[str]:
    """One warning per file whose findings were capped: the report says it lists only part
    of them (the file was read whole: coverage is not affected)."""
    per_file: dict[str, list[Capped]] = {}
    for entry in capped:
        per_file.setdefault(entry.path, []).append(entry)
    return [
        f"{path}: findings capped ({MAX_FINDINGS_PER_RULE} per rule, {MAX_FINDINGS_PER_FILE}"
        " per file): "
        + ", ".join(f"{c.rule} {c.reported} reported, {c.not_reported} not" for c in entries)
        for path, entries in per_file.items()
    ]


def _scan(
    options: ScanOptions,
    fmt: FormatInfo,
    tally: _Tally,
    pool: WorkerPool,
    progress: Progress | None,
) -> None:
    """The scan proper, recording into `tally` as it goes; the reader is closed (its
    appliance stopped) and the pool's workers reaped however this ends."""
    tally.skipped.extend(unread_snapshots(fmt))
    pack = load_packs(options.signatures_dir, options.rules)
    tally.pack = pack
    engine_spec = build_spec(pack, default_cache_dir() / "hyperscan")
    tally.warnings.extend(engine_spec.compiled.warnings)
    pool.prepare(engine_spec)  # the workers build their engines while the image is opened
    _log.info(
        "rule pack %s: %d pattern rules, %d YARA files",
        pack.version,
        len(pack.patterns),
        len(pack.yara),
    )
    _log.info("opening the image with the %s reader", options.reader.value)
    reader = open_reader(options.reader, str(options.image), fmt, options.luks_keys)
    try:
        tally.reader = reader.info
        tally.warnings.extend(reader.warnings)
        infos = reader.volumes()
        if not any(v.fstype for v in infos):
            raise ImageError(
                f"{options.image}: no filesystem recognised on any of its {len(infos)} "
                "volume(s); the partition table may be garbage"
            )
        windows = find_windows(reader, infos)
        if windows is not None:
            tally.warnings.extend(windows.warnings)
        layout = mount_layout(reader, infos, windows)
        tally.infos, tally.layout = infos, layout
        root = root_filesystem(layout, infos)
        os_info = inspect_linux(reader, *root) if root is not None else None
        tally.os = os_info if os_info is not None or windows is None else windows.os
        spec = WorkerSpec(
            engine_spec,
            reader.opener_spec(),
            options.chunk_size,
            options.max_file_size,
            options.show_secrets,
            options.file_timeout,
            # A Windows guest (with no Linux root beside it) has none of the records the
            # digests are for.
            digests=()
            if windows is not None and root is None
            else _digest_algorithms(reader, layout, root),
        )
        scannable = [v.device for v in infos if v.status is VolumeStatus.SCANNED]
        walk = _walk(reader, scannable, layout, tally, options.exclude)
        # Closed explicitly, pool first (its workers stopped), then the walk (a guestfs tar
        # stream cut off), whichever way the loop ends: not left to the garbage collector.
        with (
            contextlib.closing(walk),
            contextlib.closing(
                pool.scan(spec, walk, tally.skipped.append, tally.warnings.append)
            ) as outcomes,
        ):
            for outcome in outcomes:
                tally.add(outcome)
                if progress is not None:
                    progress(outcome)
    finally:
        # What the reader met while reading (a reader process that crashed) is said too.
        tally.warnings.extend(w for w in reader.warnings if w not in tally.warnings)
        reader.close()


def unread_snapshots(fmt: FormatInfo) -> list[Skipped]:
    """One skipped entry per qcow2 internal snapshot of the image's disks: no reader reads
    them (both read the active layer), so they make coverage incomplete, placed at
    `[snapshot ID 'NAME']` (after the OVA member for a disk of an OVA) and named in the
    reason, with the command that copies the snapshot out as an image to scan."""
    skipped = []
    for disk in fmt.disks:
        where = f"{disk.member}!/" if disk.member else ""
        for ident, name in disk.snapshots:
            reason = (
                f"qcow2 internal snapshot {ident} '{name}' not read: it holds the disk as it was "
                "when the snapshot was taken, which anyone with the file restores (qemu-img "
                "snapshot -a); to scan it, copy it out as an image of its own (qemu-img convert "
                f"-O qcow2 -l snapshot.id={ident} IMAGE COPY) and scan that"
            )
            skipped.append(Skipped(f"{where}[snapshot {ident} '{name}']", reason))
    return skipped


def _digest_algorithms(
    reader: Reader, layout: dict[str, str], root: tuple[str, str] | None
) -> tuple[str, ...]:
    """The digests the workers take of every file, for the package records that may list it:
    sha256 always (Python's RECORD files may be anywhere: a virtualenv under /srv, a home
    directory), md5 when the guest has a dpkg database, sha1 when it has an apk one. Hashing
    costs CPU on every byte scanned (md5 most: see README, "Package ownership"), so a digest no
    record on the image can use is not taken."""
    algorithms = ["sha256"]
    for record, manager in ((packages.DPKG_STATUS, "dpkg"), (packages.APK_INSTALLED, "apk")):
        if _exists(reader, layout, root, record):
            algorithms.append(packages.ALGORITHMS[manager])
    return tuple(algorithms)


def _exists(
    reader: Reader, layout: dict[str, str], root: tuple[str, str] | None, guest_path: str
) -> bool:
    """Whether the file at `guest_path` is on the volume mounted deepest above it (the root
    file system in its subvolume, or a /var of its own)."""
    best: tuple[str, str] | None = None
    best_mount = ""
    for device, mountpoint in layout.items():
        inside = mountpoint == "/" or guest_path.startswith(mountpoint.rstrip("/") + "/")
        if inside and len(mountpoint) > len(best_mount) and mountpoint != "/":
            best, best_mount = (device, guest_path[len(mountpoint.rstrip("/")) :]), mountpoint
    if best is None:
        if root is None:
            return False
        best = (root[0], root[1] + guest_path)
    try:
        return reader.read_small(best[0], best[1], 1) is not None
    except Exception:  # a reader's trouble with one file: the digest is taken anyway
        return True


def _subvolume_place(layout: dict[str, str], device: str, path: str) -> str | None:
    """Where the files of btrfs subvolume `path` appear: its mountpoint, its place inside a
    mounted parent, or under the volume's own prefix."""
    top = layout.get(device)
    if top is None:
        return None
    return relocate(join_guest_path(top, "/" + path), relocations(layout, device))


def _excluded_by(exclude: tuple[str, ...], path: str) -> str | None:
    """The first of the `exclude` globs that guest `path` matches (the rule pack's glob syntax,
    as ignore files: linear time), or None."""
    if not exclude:
        return None
    form, caseless = glob_form(path)
    return next((g for g in exclude if compile_glob(g, caseless).match(form)), None)


def _walk(
    reader: Reader,
    devices: list[str],
    layout: dict[str, str],
    tally: _Tally,
    exclude: tuple[str, ...] = (),
) -> Generator[FileRef | Skipped, None, None]:
    """Every file of every device, counted into `tally` as it is handed on (so that a scan
    stopped early knows which volumes it finished); files an `exclude` glob matches are
    counted against that glob in `tally.excluded` and not handed on."""
    tally.excluded = {pattern: [0, 0] for pattern in exclude}
    for device in devices:
        _log.info("scanning %s at %s", device, layout[device])
        # A btrfs volume is walked from its top level; mounted subvolumes move to their
        # mountpoints (the files under /@dev/sda2/@home appear under /home).
        moves = relocations(layout, device)
        if tally.opened is None:
            tally.opened = time.monotonic()
        items = reader.files(device, layout[device])
        try:
            asked = time.monotonic()
            for item in items:
                tally.listing += time.monotonic() - asked
                if moves:
                    item = replace(item, path=relocate(item.path, moves))
                if isinstance(item, FileRef) and item.metadata != NAMES:
                    # A batch of entry names holds other entries' names too: never excluded.
                    # An excluded file's attributes and link target go with it, uncounted.
                    pattern = _excluded_by(exclude, item.path)
                    if pattern is not None:
                        if not item.metadata:
                            tally.excluded[pattern][0] += 1
                            tally.excluded[pattern][1] += item.size
                        asked = time.monotonic()
                        continue
                    tally.walked[item.volume] = tally.walked.get(item.volume, 0) + 1
                yield item
                asked = time.monotonic()
        finally:
            # Closed with the walk, not whenever it is collected: a guestfs stream stops now.
            if isinstance(items, Generator):
                items.close()
        tally.walk_ended.add(device)
