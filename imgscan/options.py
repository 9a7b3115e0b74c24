"""ScanOptions: every knob of one scan, built once by the CLI (or an API caller) and passed down.

Frozen and picklable. Worker processes do not receive it: they get a `WorkerSpec`
(imgscan/scan/worker.py) with what scanning a file needs.
"""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass, field
from pathlib import Path

from imgscan.image import ReaderKind
from imgscan.model import Severity

DEFAULT_MAX_FILE_SIZE = 1 << 30  # 1 GiB: larger files are listed as skipped
DEFAULT_CHUNK_SIZE = 1 << 20  # files are read in 1 MiB chunks, never whole
DEFAULT_FILE_TIMEOUT = 120.0  # seconds: a file that takes longer is listed as skipped


def default_cache_dir() -> Path:
    """Where compiled rule databases are kept: $XDG_CACHE_HOME/imgscan or ~/.cache/imgscan."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imgscan"


def default_signatures_dir() -> Path:
    """The rule pack shipped inside the package (`imgscan/signatures/`, package data).

    The same directory in a checkout, an editable install and an installed wheel, whatever the
    working directory. Installed packages are plain directories on disk (a zipped install is not
    supported: YARA and the loader read the rule files by path)."""
    return Path(str(importlib.resources.files("imgscan") / "signatures"))


@dataclass(frozen=True)
class ScanOptions:
    """What to scan and how.

    `reader` chooses the image reader. `allow_external_files` lets a qcow2 backing file or a
    vmdk extent in another file be opened; off by default because a hostile image could name a
    file of the scanning host.
    """

    image: Path
    reader: ReaderKind = ReaderKind.AUTO
    jobs: int = 0  # 0: one worker per core
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    chunk_size: int = DEFAULT_CHUNK_SIZE
    show_secrets: bool = False
    allow_external_files: bool = False
    signatures: Path | None = None
    progress: bool = False
    file_timeout: float = DEFAULT_FILE_TIMEOUT  # each file's time budget (seconds)
    # Rule directories that extend the pack (`--rules`), in order.
    rules: tuple[Path, ...] = ()
    # Guest-path globs of files not to scan (`--exclude`): listed as excluded, not as unread.
    exclude: tuple[str, ...] = ()
    # Passphrases for LUKS volumes. Kept out of repr() so that no log of the options shows them.
    luks_keys: tuple[str, ...] = field(default=(), repr=False)

    @property
    def worker_count(self) -> int:
        return self.jobs if self.jobs > 0 else (os.cpu_count() or 1)

    @property
    def signatures_dir(self) -> Path:
        return self.signatures if self.signatures is not None else default_signatures_dir()


def parse_severity(text: str) -> Severity:
    """`--fail-on` value to Severity; raises ValueError with the accepted names."""
    try:
        return Severity(text.lower())
    except ValueError:
        names = ", ".join(s.value for s in Severity)
        raise ValueError(f"unknown severity {text!r}; choose one of {names}") from None
