"""A batch stopped midway (SIGKILL, or SIGTERM) loses nothing it had finished, leaves no
process behind, and a rerun scans only the images not finished."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import SLOW_LOG_MIB, cmdline, descendants, session_processes, write_slow_log

from .batchstore import make_store, run_cli, scans_per_digest

REPO = Path(__file__).resolve().parents[2]
IMAGES = ("bare.raw", "server-stream.vmdk", "server.vmdk")


def _done(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT COUNT(*) FROM results WHERE state = 'done'").fetchone()
    except sqlite3.OperationalError:
        return 0  # the batch is creating the store
    return int(row[0])


def _start(store: Path, db: Path, signatures: Path) -> subprocess.Popen[bytes]:
    # One image at a time, one worker: the images finish one after the other.
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "imgscan",
            "batch",
            str(store),
            "--db",
            str(db),
            "-q",
            "--images",
            "1",
            "--jobs",
            "1",
            "--signatures",
            str(signatures),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _wait_first_commit(proc: subprocess.Popen[bytes], db: Path) -> None:
    deadline = time.monotonic() + 120
    while _done(db) < 1:
        if proc.poll() is not None:
            pytest.fail(f"the batch ended (exit {proc.returncode}) before a result was in")
        if time.monotonic() > deadline:
            pytest.fail("no result committed within 120 s")
        time.sleep(0.05)


def _session_empties(sid: int) -> list[str]:
    deadline = time.monotonic() + 30
    left: list[str] = session_processes(sid)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = session_processes(sid)
    return left


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_batch_resumes_with_the_rest(
    how: signal.Signals,
    images: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    signatures: Path,
) -> None:
    store = make_store(images, tmp_path / "store", IMAGES)
    db = tmp_path / "results.sqlite"
    proc = _start(store, db, signatures)
    try:
        _wait_first_commit(proc, db)
        os.kill(proc.pid, how)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if how is signal.SIGTERM:
        assert proc.returncode == 130, stderr
        assert b"run the same command again" in stderr
    else:
        assert proc.returncode == -signal.SIGKILL
    # No child outlives the batch: a scan child whose batch was killed sees its stdin close
    # and stops its scan (workers included).
    assert _session_empties(proc.pid) == []

    before = scans_per_digest(db)
    finished = [digest for digest, n in before.items() if n]
    assert 1 <= len(finished) < len(IMAGES)
    assert all(n == 1 for n in before.values() if n)
    with sqlite3.connect(db) as conn:
        states = sorted(s for (s,) in conn.execute("SELECT state FROM results"))
    # Every image was claimed; the ones not finished are still `running`.
    assert states.count("running") == len(IMAGES) - len(finished)

    code, _, _err = run_cli(
        capsys,
        signatures,
        "batch",
        str(store),
        "--db",
        str(db),
        "--jobs",
        "2",
        "--images",
        "2",
        "-q",
    )
    assert code == 1
    after = scans_per_digest(db)
    assert len(after) == len(IMAGES)
    # What was finished was not scanned again; each of the rest exactly once.
    assert all(n == 1 for n in after.values())
    with sqlite3.connect(db) as conn:
        assert {s for (s,) in conn.execute("SELECT state FROM results")} == {"done"}


def test_a_scan_process_that_dies_is_retried(
    images: Path, tmp_path: Path, signatures: Path
) -> None:
    """An image's scan process killed from outside (as the OOM killer would) is scanned again
    by a new one (`--retries`); with no retry left it is that image's error, and the batch
    goes on with the others."""
    store = make_store(images, tmp_path / "store", ("server.vmdk",))
    db = tmp_path / "results.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgscan", "batch", str(store), "--db", str(db), "-v",
         "--jobs", "1", "--retries", "1", "--signatures", str(signatures),
         "--summary-format", "json"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        killed = None
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            for pid in descendants(proc.pid):
                if "imgscan batch-worker" in cmdline(pid):
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
                    break
            time.sleep(0.02)
        assert killed is not None, "no scan process seen"
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert b"was killed by SIGKILL; trying again" in err
    (image,) = json.loads(out)["images"]
    assert (image["status"], image["gate"]) == ("scanned", "fail")
    assert list(scans_per_digest(db).values()) == [1]  # the dead attempt committed nothing
    assert _session_empties(proc.pid) == []


def test_an_image_past_its_timeout_is_an_error_and_the_batch_goes_on(
    images: Path, signatures: Path, tmp_path: Path
) -> None:
    # A scan that cannot finish in time is stopped and listed as an error; the small image
    # beside it (a few seconds' scan) is scanned; nothing is left running. The slow image holds
    # one slow log under six names (hard links): six times a worker's few seconds.
    store = make_store(images, tmp_path / "store", ("bare.raw",))
    tree = tmp_path / "tree"
    log = tree / "var" / "log" / "big.log"
    write_slow_log(log)
    for n in range(1, 6):
        os.link(log, log.with_name(f"big.log.{n}"))
    subprocess.run(
        ["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(store / "slow.raw"),
         f"{SLOW_LOG_MIB + 64}M"],
        check=True,
    )  # fmt: skip
    db = tmp_path / "results.sqlite"
    argv = [
        *(sys.executable, "-m", "imgscan", "batch", str(store), "--db", str(db)),
        *("--timeout", "8", "--images", "1", "--jobs", "1"),
        *("--summary-format", "json", "--signatures", str(signatures)),
    ]
    started = time.monotonic()
    with subprocess.Popen(
        argv,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        out, err = proc.communicate(timeout=120)
    assert time.monotonic() - started < 60
    assert proc.returncode == 2, err
    rows = {Path(r["path"]).name: r for r in json.loads(out)["images"]}
    assert rows["slow.raw"]["status"] == "error"
    assert "did not finish within 8 s (--timeout)" in rows["slow.raw"]["error"]
    assert rows["bare.raw"]["status"] == "scanned"
    assert _session_empties(proc.pid) == []
