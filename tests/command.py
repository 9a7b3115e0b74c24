"""The imgscan command line as the tests run it: a real process, `python -m imgscan`.

Every JSON report and batch summary a run writes (to stdout, to `-o FILE`, into
`--output-dir DIR`) is validated against the published schema (imgscan/schemas/), so the
schema is checked by every test that makes a JSON output, not by one sample."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from imgscan.report.schema import SCHEMAS, validate

_TAGS = {tag for tag, _ in SCHEMAS.values()}


def run_imgscan(
    *args: str | Path, cwd: Path | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """`imgscan ARGS` in a new process of this interpreter: exit code, stdout and stderr as
    text. Never raises for a non-zero exit; a scan past `timeout` seconds raises
    TimeoutExpired. A JSON report or summary it wrote that breaks its schema fails the test."""
    proc = subprocess.run(
        [sys.executable, "-m", "imgscan", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )
    for document in _json_outputs(proc.stdout, [str(a) for a in args], cwd):
        validate(document)
    return proc


def _json_outputs(stdout: str, argv: list[str], cwd: Path | None) -> list[dict[str, Any]]:
    """The imgscan JSON documents a run wrote: on stdout, and in the files it was told to
    write (-o/--output FILE, every *.json in --output-dir/--out-dir DIR)."""
    texts = [stdout] if stdout.lstrip().startswith("{") else []
    base = cwd or Path.cwd()
    for flag, value in itertools.pairwise(argv):
        target = base / value
        if flag in ("-o", "--output") and value != "-" and target.is_file():
            texts.append(target.read_text(errors="replace"))
        elif flag in ("--output-dir", "--out-dir") and target.is_dir():
            texts += [p.read_text(errors="replace") for p in sorted(target.glob("*.json"))]
    documents = []
    for text in texts:
        try:
            data = json.loads(text)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("schema") in _TAGS:
            documents.append(data)
    return documents
