"""After the scan (issue 20): what imgscan does with the result is bounded and interruptible.

SIGINT or SIGTERM while suppression, the policy, the exposures or rendering run stops imgscan
promptly with exit code 130 (no report is written: one without the suppressions and the
verdict would say too much), through the real command line, on a hostile-suite image.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "testdata"))
sys.path.insert(0, str(ROOT / "tests"))

import build_hostile  # noqa: E402
from procs import descendants, session_processes, stat_fields  # noqa: E402

PROMPT = 10.0  # seconds from the signal to the exit, on a loaded two-core machine


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _workers(pid: int) -> int:
    return sum(1 for child in descendants(pid) if _comm(child) == "imgscan-worker")


def _image(name: str) -> Path:
    directory = build_hostile.build_hostile()
    manifest = json.loads((directory / "manifest.json").read_text())
    case = next(c for c in manifest["cases"] if c["name"] == name)
    return directory / str(case["file"])


def _many_globs(tmp_path: Path, kind: str, count: int) -> Path:
    """An ignore file or a policy of `count` entries whose relative globs never match: every
    finding is compared with every one of them, over its whole 3.9 KB path."""
    if kind == "ignore":
        entry = '[[ignore]]\npath = "**/x{n}/**/*.pem"\nreason = "never"\n\n'
    else:
        entry = '[[rule]]\naction = "allow"\npath = "**/x{n}/**/*.pem"\nreason = "never"\n\n'
    path = tmp_path / f"{kind}.toml"
    path.write_text("".join(entry.format(n=n) for n in range(count)))
    return path


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
@pytest.mark.parametrize("kind", ["ignore", "policy"])
def test_a_signal_after_the_scan_stops_it_promptly(
    tmp_path: Path, kind: str, signum: signal.Signals
) -> None:
    image = _image("glob-backtracking")
    option = _many_globs(tmp_path, kind, 30_000)
    report = tmp_path / "report.json"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "imgscan", "scan", str(image), "--jobs", "1"),
            *("--format", "json", "-o", str(report), "--no-progress", f"--{kind}", str(option)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        # The scan is over once its worker has come and gone; what follows is the post-scan
        # work, minutes of it here (30,000 globs for each of 12 findings).
        deadline = time.monotonic() + 120
        seen = False
        while True:
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the scan did not end within 120 s"
            running = _workers(proc.pid)
            seen = seen or running > 0
            if seen and not running:
                break
            time.sleep(0.05)
        time.sleep(1.0)  # well into matching the globs
        assert proc.poll() is None, "the post-scan work ended before the signal"
        fields = stat_fields(proc.pid)
        assert fields is not None and fields[0] in ("R", "S")
        os.kill(proc.pid, signum)
        signalled = time.monotonic()
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("still running 60 s after the signal")
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    stderr = err.decode("utf-8", "replace")
    assert took < PROMPT, f"{took:.1f} s from the signal to the exit"
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    name = signal.Signals(signum).name
    assert f"interrupted by {name} after the scan" in stderr, stderr
    assert not report.exists()
    # Nothing of the scan outlives it (multiprocessing's resource tracker takes a moment).
    gone = time.monotonic() + 15
    while session_processes(proc.pid) and time.monotonic() < gone:
        time.sleep(0.1)
    assert session_processes(proc.pid) == []
