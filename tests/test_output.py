"""The report file, through the real command line: never written over an input, and written
whole or not at all (a temporary file beside it, then a rename)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from command import run_imgscan


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    # `results` draws no progress bar, so it has no --no-progress.
    extra = () if args[0] == "results" else ("--no-progress",)
    return run_imgscan(*args, *extra, timeout=300)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def image(images: Path, tmp_path: Path) -> Path:
    """A private copy of bare.raw (an 8 MiB ext2 file system with findings)."""
    copy = tmp_path / "disk.raw"
    shutil.copyfile(images / "bare.raw", copy)
    return copy


def _assert_refused(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgscan: error:"), proc.stderr
    assert "would overwrite an input" in lines[0]


def test_report_over_the_image_is_refused(image: Path, tmp_path: Path) -> None:
    before = _sha(image)
    hard = tmp_path / "hard.json"
    os.link(image, hard)
    soft = tmp_path / "soft.json"
    soft.symlink_to(image)
    for output in (image, hard, soft, tmp_path / "." / "disk.raw"):
        _assert_refused(run("scan", image, "-f", "json", "-o", output))
    _assert_refused(run("baseline", image, "-o", image))
    assert _sha(image) == before


def test_report_over_the_baseline_is_refused(image: Path, tmp_path: Path) -> None:
    baseline = tmp_path / "accepted.json"
    assert run("baseline", image, "-o", baseline, "--allow-incomplete").returncode == 0
    before = _sha(baseline)
    _assert_refused(run("scan", image, "--baseline", baseline, "-o", baseline))
    assert _sha(baseline) == before


def test_batch_summary_or_stored_report_over_an_input_is_refused(
    image: Path, tmp_path: Path
) -> None:
    before = _sha(image)
    db = tmp_path / "r.sqlite"
    db.write_bytes(b"")
    _assert_refused(run("batch", image.parent, "--db", db, "-o", image))
    _assert_refused(run("batch", image.parent, "--db", db, "-o", db))
    _assert_refused(run("results", "show", image, "--db", db, "-o", image))
    assert _sha(image) == before


def test_report_replaces_the_old_one_whole(image: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "r.json"
    out.parent.mkdir()
    out.write_text("old report\n")
    out.chmod(0o640)
    link = tmp_path / "latest.json"
    link.symlink_to(out)
    proc = run("scan", image, "-f", "json", "-o", link)
    assert proc.returncode == 1, proc.stderr
    # The link is followed (the file it names is replaced), the mode is kept, no temporary
    # file is left beside it.
    assert link.is_symlink()
    assert json.loads(out.read_text())["image"]["format"] == "raw"
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.json"]
    # A device is written in place, never replaced by a regular file.
    assert run("scan", image, "-o", os.devnull).returncode == 1
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
