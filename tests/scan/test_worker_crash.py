"""A worker that dies mid-scan costs the file it was scanning at most, never the scan.

Workers are killed from outside with SIGSEGV, as a crash in a C library on a corrupt file
would kill them, while they are busy; which one is busy, and on what, is read from /proc (a
worker's read counter grows with the bytes it scans). Nothing in imgscan knows about this test.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import build as testdata_build  # testdata/build.py: fake secrets of the right shape
import pytest
from procs import (
    SCANNING_BYTES,
    SLOW_LOG_MIB,
    read_bytes,
    session_processes,
    workers,
    write_slow_log,
)

from imgscan.model import ScanResult, VolumeStatus
from imgscan.options import ScanOptions
from imgscan.scan import pool
from imgscan.scan.scanner import scan_image

_PLANTED = 12


def _no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the SIGSEGVs below are on purpose


def _start(image: Path, report: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "imgscan", "scan", str(image), "--jobs", "2"),
            *("--format", "json", "-o", str(report), "--no-progress", *extra),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_no_core_dumps,
    )


def _kill_busy_worker(
    parent: int,
    running: Callable[[], bool],
    spared: set[int],
    threshold: int = SCANNING_BYTES,
) -> int:
    """SIGSEGV the first worker of `parent` (not in `spared`) to read `threshold` bytes more
    than when it was first seen here, while `running()`; return its pid."""
    seen: dict[int, int] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and running():
        for pid in workers(parent):
            if pid in spared:
                continue
            now = read_bytes(pid)
            start = seen.setdefault(pid, now)
            if now - start > threshold:
                os.kill(pid, signal.SIGSEGV)
                return pid
        time.sleep(0.02)
    pytest.fail("no busy worker to kill: the scan ended first")


def _finish(proc: subprocess.Popen[bytes]) -> str:
    try:
        _, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the scan did not finish after its worker crashed")
    deadline = time.monotonic() + 15
    while (left := session_processes(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []
    return stderr.decode("utf-8", "replace")


def _findings(report: dict[str, Any]) -> Counter[tuple[str, str]]:
    return Counter((f["rule"], f["path"]) for f in report["findings"])


def _make_image(tmp_path: Path, tree: Path, size_mib: int) -> Path:
    image = tmp_path / "disk.raw"
    subprocess.run(
        ["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(image), f"{size_mib}M"],
        check=True,
        capture_output=True,
    )
    return image


def _plant(tree: Path) -> set[tuple[str, str]]:
    """Small files with one fake GitHub token each (made now: none is in the repository)."""
    planted = set()
    for n in range(_PLANTED):
        folder = tree / "srv" / f"app{n:02d}"
        folder.mkdir(parents=True)
        (folder / ".env").write_text(f"GITHUB_TOKEN={testdata_build.github_token()}\n")
        planted.add(("github-token", f"/srv/app{n:02d}/.env"))
    return planted


def _archive_image(tmp_path: Path) -> tuple[Path, set[tuple[str, str]]]:
    """An image of 100 compressed logs, each expanding to 12 MiB with a fake token at its end,
    beside the planted files; and the findings expected."""
    tree = tmp_path / "tree"
    planted = _plant(tree)
    token = testdata_build.github_token()
    line = b"2024-05-01 12:00:00 INFO request served in 3 ms by worker seven\n"
    text = line * ((12 << 20) // len(line)) + f"GITHUB_TOKEN={token}\n".encode()
    packed = gzip.compress(text, compresslevel=6, mtime=0)
    (tree / "var" / "log" / "archive").mkdir(parents=True)
    for n in range(100):
        (tree / "var" / "log" / "archive" / f"app-{n:03d}.log.gz").write_bytes(packed)
        planted.add(("github-token", f"/var/log/archive/app-{n:03d}.log.gz!/app-{n:03d}.log"))
    return _make_image(tmp_path, tree, 64), planted


def test_a_file_that_crashes_its_worker_twice_is_skipped(tmp_path: Path) -> None:
    """The worker scanning a 400 MB file is killed; the file is retried alone, and its new
    worker is killed too: the file is reported skipped with the reason, exit 2, and every
    other file is scanned, once."""
    tree = tmp_path / "tree"
    planted = _plant(tree)
    big = tree / "var" / "log" / "big.log"
    write_slow_log(big)
    image = _make_image(tmp_path, tree, SLOW_LOG_MIB + 200)
    big.unlink()
    report = tmp_path / "report.json"

    proc = _start(image, report)

    def running() -> bool:
        return proc.poll() is None

    first = _kill_busy_worker(proc.pid, running, spared=set())
    # The retry goes to whichever worker is free first: the other one, or first's replacement.
    _kill_busy_worker(proc.pid, running, spared={first})
    stderr = _finish(proc)

    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr
    data = json.loads(report.read_text())
    assert data["coverage"]["complete"] is False
    assert data["coverage"]["interrupted"] is False
    assert data["coverage"]["skipped_files"] == [
        {
            "path": "/var/log/big.log",
            "reason": "the worker scanning this file crashed twice (signal SIGSEGV, then signal "
            "SIGSEGV); not scanned",
        }
    ]
    [volume] = data["coverage"]["volumes"]
    assert volume["status"] == "scanned"
    findings = _findings(data)
    assert set(findings) == planted
    assert max(findings.values()) == 1
    assert any("died (signal SIGSEGV)" in w and "big.log" in w for w in data["warnings"])


def test_files_queued_behind_a_crash_are_scanned_once(tmp_path: Path) -> None:
    """A worker is killed halfway through a batch of compressed logs (each expands to 12 MiB,
    so a batch of them takes seconds): the file it was on is scanned again and succeeds, the
    rest of its batch goes to another worker; every file is reported exactly once and the scan
    is complete."""
    image, planted = _archive_image(tmp_path)
    report = tmp_path / "report.json"

    proc = _start(image, report, "--verbose")  # says how much of the batch was handed on
    # A few files into its batch (each file's 12 MiB pass through a spool file it reads back).
    _kill_busy_worker(proc.pid, lambda: proc.poll() is None, set(), threshold=60 << 20)
    stderr = _finish(proc)
    handed_on = re.search(r"died \(signal SIGSEGV\) scanning .*; (\d+) other file", stderr)
    assert handed_on is not None, stderr
    assert int(handed_on.group(1)) > 0  # the test did kill it mid-batch

    assert proc.returncode == 1, stderr  # findings, and the whole image was read
    assert "Traceback" not in stderr
    data = json.loads(report.read_text())
    assert data["coverage"]["complete"] is True
    assert data["coverage"]["skipped_files"] == []
    findings = _findings(data)
    assert set(findings) == planted
    assert max(findings.values()) == 1
    assert sum(1 for w in data["warnings"] if "died (signal SIGSEGV)" in w) == 1


def test_a_scan_that_keeps_crashing_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_CRASHES worker deaths the scan stops respawning workers and reports what it
    has: the volume it did not finish is unreadable, with the reason. The bound is lowered to
    one for the test (in this process, where the scan runs on a thread), so two deaths do."""
    image, planted = _archive_image(tmp_path)
    monkeypatch.setattr(pool, "MAX_CRASHES", 1)
    results: list[ScanResult] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(scan_image(ScanOptions(image=image, jobs=2)))
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        first = _kill_busy_worker(os.getpid(), thread.is_alive, set(), threshold=60 << 20)
        _kill_busy_worker(os.getpid(), thread.is_alive, {first}, threshold=60 << 20)
    finally:
        thread.join(120)
    assert not errors
    [result] = results
    [volume] = result.volumes
    assert volume.status is VolumeStatus.UNREADABLE
    assert volume.reason is not None and "crashed 2 times" in volume.reason
    assert any("the rest of the scan was given up" in w for w in result.warnings)
    assert not result.complete
    assert any(s.reason.startswith("the worker scanning this file crashed") for s in result.skipped)
    found = Counter((f.rule, f.path) for f in result.findings)
    assert set(found) < planted  # some, not all: the scan stopped early
    assert max(found.values()) == 1
    assert workers(os.getpid()) == []  # none left running
