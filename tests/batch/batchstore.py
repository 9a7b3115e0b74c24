"""Batch test helpers: image stores made of copies of the small test images built by
testdata/, a broken file, and running `imgscan batch` / `imgscan results` in process."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from imgscan.batch.store import Store
from imgscan.cli import main

# Small images the native reader reads completely, each with findings (testdata/build.py):
# an 8 MiB bare ext2 filesystem (high + medium findings) and a 1 MiB streamOptimized vmdk of
# the server image (critical findings among others).
SMALL = ("bare.raw", "server-stream.vmdk")


def make_store(images: Path, directory: Path, names: tuple[str, ...] = SMALL) -> Path:
    """A directory holding copies of the named test images (copies, not links: the digest
    cache keys on the file's identity, and a test may change a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(images / name, directory / name)
    return directory


def write_broken(path: Path) -> Path:
    """Random bytes named like an image: no format, no filesystem, cannot be scanned."""
    path.write_bytes(os.urandom(256 << 10))
    return path


def run_cli(
    capsys: pytest.CaptureFixture[str], signatures: Path, *argv: str
) -> tuple[int, str, str]:
    """`imgscan ARGV --signatures SIGNATURES` in process: exit code, stdout, stderr."""
    capsys.readouterr()
    code = main([*argv, "--signatures", str(signatures)])
    out, err = capsys.readouterr()
    return code, out, err


def summary_json(text: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(text)
    assert data["schema"] == "imgscan.batch-summary/v1"
    return data


def by_name(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {Path(image["path"]).name: image for image in summary["images"]}


def scans_per_digest(db: Path) -> dict[str, int]:
    """How many scans the store has committed for each digest (all versions)."""
    with Store(db) as store:
        counts: dict[str, int] = {}
        for record in store.records():
            counts[record.key.digest] = counts.get(record.key.digest, 0) + record.scans
        return counts
