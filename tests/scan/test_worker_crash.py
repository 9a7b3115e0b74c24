"""A worker that dies mid-scan fails the scan closed (exit 2) instead of hanging.

The crash is real: the Vectorscan build behind the `hyperscan` wheel segfaults while scanning
this input with this start-of-match pattern (the shipped pack avoids the pattern's shape).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CRASHING_RULE = """
[[rules]]
id = "crashy"
name = "Crashes Vectorscan"
category = "cloud"
severity = "high"
keywords = ["accountkey"]
pattern = '''(?:AccountKey=|azure[_.-]?storage[_.-]?(?:account[_.-]?)?key[ \\t]{0,8}\
[:=][ \\t]{0,8})(?P<secret>[A-Za-z0-9+/]{86}==)'''
comment = "a start-of-match pattern that crashes Vectorscan 5.4 on the input below"
examples = ["AccountKey={{rand:alnum:86}}=="]
negative_examples = ["AccountKey=short"]
"""


def test_worker_crash_exits_2_without_hanging(tmp_path: Path) -> None:
    (tmp_path / "pack" / "patterns").mkdir(parents=True)
    (tmp_path / "pack" / "patterns" / "crash.toml").write_text(CRASHING_RULE)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "trigger.txt").write_bytes(b"aws_session_token = IQoJb3JpZ2luX2Vj" + b"Ab+/" * 75)
    image = tmp_path / "disk.raw"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(image), "4M"], check=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "imgscan",
            "scan",
            str(image),
            "--jobs",
            "2",
            "--signatures",
            str(tmp_path / "pack"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "worker process died" in proc.stderr
    assert "Traceback" not in proc.stderr
