"""The imgscan command line as the tests run it: a real process, `python -m imgscan`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_imgscan(
    *args: str | Path, cwd: Path | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """`imgscan ARGS` in a new process of this interpreter: exit code, stdout and stderr as
    text. Never raises for a non-zero exit; a scan past `timeout` seconds raises
    TimeoutExpired."""
    return subprocess.run(
        [sys.executable, "-m", "imgscan", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )
