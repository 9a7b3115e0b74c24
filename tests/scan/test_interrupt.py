"""SIGINT and SIGTERM mid-scan: exit 130, a partial report that says so, no traceback, and no
process left behind (no worker, no qemu, not even multiprocessing's resource tracker).

The CLI runs as a subprocess in a session of its own, so "no process left behind" is checked
over the whole session, whatever became of the process tree. The image holds one 400 MB file:
the worker scanning it reads the image for seconds, which makes "the scan is under way"
observable from outside (the worker's read counter) and leaves ample time to interrupt it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from procs import (
    SCANNING_BYTES,
    SLOW_LOG_MIB,
    cmdline,
    descendants,
    read_bytes,
    session_processes,
    workers,
    write_slow_log,
)


def wait_for(what: str, condition: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    """Poll `condition` until it holds; fail if the scan ends first or 120 s pass."""
    deadline = time.monotonic() + 120
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the scan ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def start_scan(
    image: Path, report: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "imgscan", "scan", str(image), "--jobs", "2"),
            *("--format", "json", "-o", str(report), "--no-progress", *extra),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own session: what it leaves behind is easy to find
        env=env,
    )


def finish(proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    """Wait for the interrupted scan; its stderr. Kills the session if it hangs."""
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"no exit within {timeout} s of the signal")
    return stderr.decode("utf-8", "replace")


def assert_nothing_left(sid: int) -> None:
    """No process of the session survives the CLI. multiprocessing's resource tracker exits
    when the CLI's end of its pipe closes, so allow it a moment."""
    deadline = time.monotonic() + 15
    while (left := session_processes(sid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []


def assert_partial_report(report: Path, signame: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(report.read_text())
    assert data["coverage"]["complete"] is False
    assert data["coverage"]["interrupted"] is True
    assert any(f"interrupted by {signame}" in w for w in data["warnings"]), data["warnings"]
    for volume in data["coverage"]["volumes"]:
        if volume["status"] == "interrupted":
            assert "interrupted" in volume["reason"]
    return data


@pytest.fixture(scope="module")
def big_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ext4 image with a few small files and one 400 MB file of plain text."""
    root = tmp_path_factory.mktemp("interrupt")
    tree = root / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("interrupted\n")
    write_slow_log(tree / "var" / "log" / "big.log")
    image = root / "big.raw"
    subprocess.run(
        ["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(image), f"{SLOW_LOG_MIB + 200}M"],
        check=True,
        capture_output=True,
    )
    (tree / "var" / "log" / "big.log").unlink()  # the image has it; free the disk space
    return image


def _scanning(proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    return lambda: any(read_bytes(w) > SCANNING_BYTES for w in workers(proc.pid))


@pytest.mark.parametrize(
    ("signum", "to_group"),
    [
        pytest.param(signal.SIGINT, True, id="sigint-to-the-process-group"),  # a terminal Ctrl-C
        pytest.param(signal.SIGTERM, False, id="sigterm-to-the-main-process"),  # a supervisor
    ],
)
def test_interrupt_native_scan(
    big_image: Path, tmp_path: Path, signum: signal.Signals, to_group: bool
) -> None:
    report = tmp_path / "report.json"
    proc = start_scan(big_image, report)
    wait_for("a worker scanning the big file", _scanning(proc), proc)
    if to_group:
        os.killpg(proc.pid, signum)
    else:
        os.kill(proc.pid, signum)
    stderr = finish(proc)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"INTERRUPTED by {signum.name}" in stderr.splitlines()[-1]
    data = assert_partial_report(report, signum.name)
    [volume] = data["coverage"]["volumes"]
    assert volume["status"] == "interrupted"
    assert_nothing_left(proc.pid)


def _guestfs_env(tmp_path: Path) -> dict[str, str]:
    """TMPDIR in the test's directory, to see the reader's spool files come and go; the
    appliance cache where it already is (libguestfs would otherwise rebuild it in TMPDIR)."""
    cache = os.environ.get("LIBGUESTFS_CACHEDIR") or os.environ.get("TMPDIR") or "/var/tmp"
    return {**os.environ, "TMPDIR": str(tmp_path), "LIBGUESTFS_CACHEDIR": cache}


def _qemu(proc: subprocess.Popen[bytes]) -> bool:
    return any("qemu" in cmdline(pid) for pid in descendants(proc.pid))


@pytest.mark.guestfs
def test_interrupt_guestfs_scan_stops_qemu(big_image: Path, tmp_path: Path) -> None:
    """SIGTERM to the main process only, while the appliance streams the big file: qemu gets
    no signal of its own, so it is imgscan that must stop it."""
    spool = tmp_path / "tmp"
    spool.mkdir()
    report = tmp_path / "report.json"
    proc = start_scan(big_image, report, "--reader", "guestfs", env=_guestfs_env(spool))

    def streaming() -> bool:  # the big file is being spooled out of the appliance
        return any(
            path.stat().st_size > (8 << 20)
            for path in spool.glob("imgscan-guestfs-*/spool-*")
            if path.exists()
        )

    wait_for("the appliance streaming the big file", streaming, proc)
    assert _qemu(proc)
    os.kill(proc.pid, signal.SIGTERM)
    stderr = finish(proc)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    data = assert_partial_report(report, "SIGTERM")
    assert data["reader"]["name"] == "guestfs"
    assert_nothing_left(proc.pid)
    assert list(spool.glob("imgscan-guestfs-*")) == []  # spool files deleted with their dir


@pytest.mark.guestfs
def test_interrupt_guestfs_launch_stops_qemu(big_image: Path, tmp_path: Path) -> None:
    """SIGTERM while libguestfs is still launching its appliance, which no API call can
    cancel: the qemu being launched is stopped all the same, and the report says that
    nothing was read."""
    spool = tmp_path / "tmp"
    spool.mkdir()
    report = tmp_path / "report.json"
    proc = start_scan(big_image, report, "--reader", "guestfs", env=_guestfs_env(spool))
    wait_for("qemu", lambda: _qemu(proc), proc)
    os.kill(proc.pid, signal.SIGTERM)
    stderr = finish(proc)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    data = assert_partial_report(report, "SIGTERM")
    assert data["coverage"]["volumes"] == []
    assert data["findings"] == []
    assert_nothing_left(proc.pid)
    assert list(spool.glob("imgscan-guestfs-*")) == []
