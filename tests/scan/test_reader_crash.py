"""A file system library that crashes while listing a volume costs that volume, not the scan.

The native reader runs in a reader process of its own (imgscan/image/isolated.py). Here that
process is killed with SIGSEGV from outside, as a crash in libfsext on corrupt metadata would
kill it, while it lists the first of two volumes; the scan must go on to the second, report the
first as not fully listed, exit 2, and leave no process behind. The disk is built at test
time: a GPT with two ext4 partitions (mke2fs -d), the first holding tens of thousands of
files so that its listing takes a while, the second a planted password.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import build_hostile  # testdata/build_hostile.py: a GPT writer that takes any layout
from procs import readers, session_processes

MIB = 1 << 20
SECTOR = 512
DIRS, FILES_PER_DIR = 40, 1000


def _ext4(tmp: Path, name: str, tree: Path, size_mib: int, inodes: int) -> bytes:
    image = tmp / f"{name}.ext4"
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-N", str(inodes),
         "-d", str(tree), str(image), f"{size_mib}M"],
        check=True,
    )  # fmt: skip
    data = image.read_bytes()
    image.unlink()
    return data


def _disk(tmp: Path, password: str) -> Path:
    many = tmp / "many"
    for d in range(DIRS):
        folder = many / f"d{d:02}"
        folder.mkdir(parents=True)
        for i in range(FILES_PER_DIR):
            (folder / f"f{i:04}").touch()  # empty: listed, never opened
    app = tmp / "app"
    (app / "etc").mkdir(parents=True)
    (app / "etc" / "app.conf").write_text(f"[db]\nuser = app\npassword = {password}\n")
    first = _ext4(tmp, "many", many, 48, DIRS * FILES_PER_DIR + 1024)
    second = _ext4(tmp, "app", app, 8, 256)
    disk = tmp / "two-volumes.raw"
    starts = (2048, 2048 + 48 * MIB // SECTOR)
    with disk.open("wb") as out:
        out.truncate(64 * MIB)
        for start, data in zip(starts, (first, second), strict=True):
            out.seek(start * SECTOR)
            out.write(data)
    build_hostile.write_gpt(
        disk,
        64 * MIB // SECTOR,
        [(starts[0], starts[1] - 1), (starts[1], starts[1] + 8 * MIB // SECTOR - 1)],
    )
    return disk


def _has_open(pid: int, path: Path) -> bool:
    """Whether process `pid` holds `path` open."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) == str(path):
                return True
        except OSError:
            continue
    return False


def _no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the SIGSEGV below is on purpose


def test_a_crash_while_listing_costs_the_volume_not_the_scan(tmp_path: Path) -> None:
    password = secrets.token_urlsafe(18)
    disk = _disk(tmp_path, password)
    report = tmp_path / "report.json"
    argv = [
        *(sys.executable, "-m", "imgscan", "scan", str(disk), "--reader", "native"),
        *("--format", "json", "-o", str(report), "--no-progress"),
    ]
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_no_core_dumps,
    ) as proc:
        killed = None
        deadline = time.monotonic() + 60
        while killed is None and proc.poll() is None and time.monotonic() < deadline:
            found = readers(proc.pid)
            if found and _has_open(found[0], disk):
                # It has opened the image (a few milliseconds' work) and is listing the first
                # volume's 40,000 files (seconds' work): kill it in the middle of that.
                time.sleep(0.3)
                killed = found[0]
                os.kill(killed, signal.SIGSEGV)
            time.sleep(0.005)
        try:
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert killed is not None, "no listing process was seen"
    assert proc.returncode == 2, stderr
    result = json.loads(report.read_text())
    crashed = [
        s
        for s in result["coverage"]["skipped_files"]
        if "crashed (signal SIGSEGV) while listing" in s["reason"]
    ]
    assert [s["path"] for s in crashed] == ["/@dev/sda1"], result["coverage"]
    # What it listed before the crash was scanned; the second volume was listed by a new
    # reader process and scanned whole.
    volumes = {v["device"]: v for v in result["coverage"]["volumes"]}
    assert 0 < volumes["/dev/sda1"]["files"] < DIRS * FILES_PER_DIR
    assert [f["path"] for f in result["findings"]] == ["/@dev/sda2/etc/app.conf"]
    assert result["coverage"]["complete"] is False
    assert password not in report.read_text() + stderr.decode()
    # Nothing outlives the scan (multiprocessing's resource tracker takes a moment to see
    # its parent gone).
    deadline = time.monotonic() + 15
    while (left := session_processes(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []
