"""One image, end to end: detect the format, open a reader, place volumes at their guest
mountpoints, stream every file through the worker pool, and collect a ScanResult.

Only a failure to open the image or load the rules is fatal (ImgscanError); trouble with one
volume or one file is recorded in the result and makes coverage incomplete.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

from imgscan.detect.engine import build_spec
from imgscan.detect.rules import load_pack
from imgscan.errors import ImageError
from imgscan.exposures import build_exposures
from imgscan.image import open_reader
from imgscan.image.formats import detect_format
from imgscan.image.inspect import inspect_linux
from imgscan.image.interface import Reader, join_guest_path
from imgscan.image.layout import (
    mount_layout,
    relocate,
    relocations,
    root_filesystem,
)
from imgscan.image.windows import find_windows
from imgscan.model import (
    Clue,
    FileRef,
    Finding,
    RuleDoc,
    ScanResult,
    Skipped,
    Stats,
    Volume,
    VolumeStatus,
)
from imgscan.options import ScanOptions, default_cache_dir
from imgscan.scan.pool import run_pool
from imgscan.scan.worker import FileOutcome, WorkerSpec

Progress = Callable[[FileOutcome], None]
_log = logging.getLogger(__name__)


def scan_image(options: ScanOptions, progress: Progress | None = None) -> ScanResult:
    """Scan `options.image` and return everything found, sorted and deterministic."""
    started = time.monotonic()
    fmt = detect_format(options.image, options.allow_external_files)
    _log.info(
        "%s: %s image (%s), %d bytes",
        options.image,
        fmt.format,
        fmt.subformat or "-",
        fmt.virtual_size,
    )
    pack = load_pack(options.signatures_dir)
    engine_spec = build_spec(pack, default_cache_dir() / "hyperscan")
    _log.info(
        "rule pack %s: %d pattern rules, %d YARA files",
        pack.version,
        len(pack.patterns),
        len(pack.yara),
    )
    _log.info("opening the image with the %s reader", options.reader.value)
    reader = open_reader(options.reader, str(options.image), fmt, options.luks_keys)
    try:
        infos = reader.volumes()
        if not any(v.fstype for v in infos):
            raise ImageError(
                f"{options.image}: no filesystem recognised on any of its {len(infos)} "
                "volume(s); the partition table may be garbage"
            )
        windows = find_windows(reader, infos)
        layout = mount_layout(reader, infos, windows)
        root = root_filesystem(layout, infos)
        os_info = inspect_linux(reader, *root) if root is not None else None
        if os_info is None and windows is not None:
            os_info = windows.os
        spec = WorkerSpec(
            engine_spec,
            reader.opener_spec(),
            options.chunk_size,
            options.max_file_size,
            options.show_secrets,
        )
        skipped: list[Skipped] = []
        findings: list[Finding] = []
        clues: list[Clue] = []
        files: dict[str, int] = {}
        sizes: dict[str, int] = {}
        scannable = [v.device for v in infos if v.status is VolumeStatus.SCANNED]
        for outcome in run_pool(
            spec, _walk(reader, scannable, layout), options.worker_count, skipped.append
        ):
            findings.extend(outcome.findings)
            skipped.extend(outcome.skipped)
            clues.extend(outcome.clues)
            files[outcome.volume] = files.get(outcome.volume, 0) + 1
            sizes[outcome.volume] = sizes.get(outcome.volume, 0) + outcome.bytes
            if progress is not None:
                progress(outcome)
        volumes = tuple(
            Volume(
                device=v.device,
                fstype=v.fstype,
                mountpoint=layout.get(v.device),
                status=v.status,
                reason=v.reason,
                files=files.get(v.device, 0),
                bytes=sizes.get(v.device, 0),
                reader=v.reader or reader.info.name,
                subvolumes=tuple(
                    (path, _subvolume_place(layout, v.device, path)) for _, path in v.subvolumes
                ),
            )
            for v in infos
        )
        return ScanResult(
            image=reader.image,
            reader=reader.info,
            volumes=volumes,
            skipped=tuple(sorted(set(skipped), key=lambda s: (s.path, s.reason))),
            findings=tuple(sorted(findings, key=Finding.sort_key)),
            stats=Stats(
                files=sum(files.values()),
                bytes=sum(sizes.values()),
                seconds=round(time.monotonic() - started, 3),
            ),
            exposures=build_exposures(findings, clues),
            rules=tuple(
                RuleDoc(meta.id, meta.name, meta.category, meta.severity, pack.help(meta.id))
                for meta in (pack.meta(rule_id) for rule_id in sorted({f.rule for f in findings}))
            ),
            warnings=engine_spec.compiled.warnings
            + reader.warnings
            + (windows.warnings if windows is not None else ()),
            os=os_info,
            clues=tuple(sorted(set(clues), key=lambda c: (c.path, c.kind, c.facts))),
        )
    finally:
        reader.close()


def _subvolume_place(layout: dict[str, str], device: str, path: str) -> str | None:
    """Where the files of btrfs subvolume `path` appear: its mountpoint, its place inside a
    mounted parent, or under the volume's own prefix."""
    top = layout.get(device)
    if top is None:
        return None
    return relocate(join_guest_path(top, "/" + path), relocations(layout, device))


def _walk(
    reader: Reader, devices: list[str], layout: dict[str, str]
) -> Iterator[FileRef | Skipped]:
    for device in devices:
        _log.info("scanning %s at %s", device, layout[device])
        moves = relocations(layout, device)
        if not moves:
            yield from reader.files(device, layout[device])
            continue
        # A btrfs volume is walked from its top level; mounted subvolumes move to their
        # mountpoints (the files under /@dev/sda2/@home appear under /home).
        for item in reader.files(device, layout[device]):
            yield replace(item, path=relocate(item.path, moves))
