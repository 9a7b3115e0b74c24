"""A worker that dies mid-scan fails the scan closed (exit 2) instead of hanging.

The worker is killed from outside with SIGKILL, as the kernel's OOM killer would, while it is
scanning a tree of many files; the main process must notice, stop, and say so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _children(pid: int) -> list[int]:
    """Direct child processes of `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
        if int(ppid) == pid:
            found.append(int(entry.name))
    return found


def _workers(pid: int) -> list[int]:
    """The scan's worker processes (multiprocessing spawn children)."""
    workers = []
    for child in _children(pid):
        try:
            cmdline = (Path("/proc") / str(child) / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            workers.append(child)
    return workers


def test_worker_crash_exits_2_without_hanging(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for d in range(60):
        folder = tree / f"d{d:02d}"
        folder.mkdir(parents=True)
        for f in range(500):
            (folder / f"f{f:03d}.conf").write_text(f"# file {d}/{f}\nname = value{f}\n" * 4)
    image = tmp_path / "disk.raw"
    subprocess.run(
        ["mke2fs", "-q", "-t", "ext4", "-N", "40000", "-d", str(tree), str(image), "160M"],
        check=True,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgscan", "scan", str(image), "--jobs", "2", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while not workers and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            workers = _workers(proc.pid)
        assert workers, "no worker process appeared"
        time.sleep(0.3)  # let it start scanning
        os.kill(workers[0], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, (stdout[-500:], stderr[-2000:])
    assert "worker process died" in stderr
    assert "Traceback" not in stderr
