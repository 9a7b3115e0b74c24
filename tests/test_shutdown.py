"""No process imgscan starts outlives it, on any way out: when the command has exited, its
session holds nothing (not a worker, not multiprocessing's resource tracker, not qemu)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import session_processes


def _left_behind(*args: str | Path) -> tuple[int, list[str]]:
    """Run `python -m imgscan ARGS` in a session of its own; its exit code and the processes
    of that session still alive the moment it has exited."""
    argv = [sys.executable, "-m", "imgscan", *map(str, args), "--no-progress"]
    with subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    ) as proc:
        code = proc.wait(timeout=300)
        return code, session_processes(proc.pid)


@pytest.mark.parametrize("way", ["findings", "unwritable report", "refused image"])
def test_nothing_outlives_imgscan(images: Path, tmp_path: Path, way: str) -> None:
    image = tmp_path / "disk.raw"
    shutil.copyfile(images / "bare.raw", image)
    if way == "findings":
        args: tuple[str | Path, ...] = ("scan", image, "--jobs", "2", "-o", tmp_path / "r.txt")
        expected = 1
    elif way == "unwritable report":
        # The scan runs (workers and all), then the report cannot be written: exit 2.
        args = ("scan", image, "--jobs", "2", "-o", tmp_path / "missing" / "r.txt")
        expected = 2
    else:
        descriptor = tmp_path / "d.vmdk"
        descriptor.write_text(
            "# Disk DescriptorFile\nversion=1\nparentCID=ffffffff\n"
            'createType="monolithicFlat"\nRW 2048 FLAT "/etc/shadow" 0\n'
        )
        args = ("scan", descriptor)
        expected = 2
    for _ in range(3):  # a race shows some of the time: look more than once
        code, left = _left_behind(*args)
        assert code == expected
        assert left == [], left


@pytest.mark.guestfs
def test_interrupt_while_auto_starts_libguestfs_leaves_nothing(images: Path) -> None:
    """mbr.qcow2 has a volume the native reader leaves to libguestfs: a Ctrl-C while the
    appliance launches must stop the native reader's process too (the auto reader is not
    built yet, so nobody else closes it), at once rather than at the end of the grace."""
    argv = [sys.executable, "-m", "imgscan", "scan", str(images / "mbr.qcow2"), "--no-progress"]
    with subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    ) as proc:
        deadline = time.monotonic() + 120
        while not any("qemu-system" in p for p in session_processes(proc.pid)):
            assert proc.poll() is None and time.monotonic() < deadline, "no appliance launched"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGINT)
        stopped = time.monotonic()
        code = proc.wait(timeout=60)
        took = time.monotonic() - stopped
        left = session_processes(proc.pid)
    assert code == 130
    assert left == [], left
    assert took < 8, f"{took:.1f} s to stop"  # wait_for_children's grace is 10 s
