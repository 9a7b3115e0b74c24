"""Files imgscan reads besides the image (issue 20): a crafted results store and baselines.

A results store whose `exposures` or `report` column holds JSON nested 100,000 deep is one line
naming the store and exit code 2, never an internal error; a baseline is read entry by entry
and keeps only its fingerprints (the hostile case baseline-huge bounds its memory).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from imgscan import __version__
from imgscan.batch.store import Store
from imgscan.detect.rules import load_pack
from imgscan.options import default_signatures_dir
from imgscan.suppress import load_baseline

DEEP = 100_000


def _store_with(tmp_path: Path, column: str) -> Path:
    path = tmp_path / "results.sqlite"
    Store(path).close()  # the real schema
    deep = "[" * DEEP + "]" * DEEP
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO results (digest, tool_version, pack_version, state, image_path,"
            f" complete, {column}) VALUES (?, ?, ?, 'done', '/srv/images/a.qcow2', 1, ?)",
            ("sha256:" + "ab" * 32, __version__, load_pack(default_signatures_dir()).version, deep),
        )
        db.execute(
            "INSERT INTO images VALUES ('/srv/images/a.qcow2', ?, 1, '2026-01-01T00:00:00')",
            ("sha256:" + "ab" * 32,),
        )
    return path


@pytest.mark.parametrize(
    ("column", "query"),
    [
        ("exposures", ["list"]),
        ("exposures", ["summary"]),
        ("report", ["show", "/srv/images/a.qcow2"]),
    ],
)
def test_a_store_nested_too_deep_is_one_line(tmp_path: Path, column: str, query: list[str]) -> None:
    store = _store_with(tmp_path, column)
    proc = subprocess.run(
        [sys.executable, "-m", "imgscan", "results", *query, "--db", str(store)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"imgscan: error: {store}: corrupt results store"), lines
    assert "nested too deep" in lines[0] and "internal error" not in lines[0]


def test_a_baseline_is_read_entry_by_entry(tmp_path: Path) -> None:
    # Over 3 MB, so entries straddle the 1 MiB pieces it is read in; values of every JSON
    # type around the findings, in any order.
    fingerprints = [f"fp1:{n:032x}" for n in range(20_000)] + ["fp0:legacy", "fp1:ABC"]
    entries = [{"fingerprint": f, "rule": "r", "path": "/p" + "x" * 100} for f in fingerprints]
    doc = {
        "tool": {"name": "imgscan", "version": "1.0", "n": [1, 2.5e3, None, True]},
        "findings": entries,
        "schema": "imgscan.baseline/v1",
        "image": "disk.qcow2",
    }
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(doc, indent=1))
    accepted = load_baseline(path)
    assert set(accepted) == set(fingerprints)
    assert "fp1:" + "0" * 32 in accepted and "fp1:abc" not in accepted and "fp0:legacy" in accepted
    assert len(accepted) == len(fingerprints)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"schema": "imgscan.baseline/v1", "findings": [{}]}', "must each have a fingerprint"),
        ('{"schema": "imgscan.baseline/v1"}', "must each have a fingerprint"),
        ('{"schema": "other", "findings": []}', "schema is not"),
        ('{"schema": "imgscan.baseline/v1", "findings": []} []', "not a baseline file"),
        ('{"schema": "imgscan.baseline/v1", "findings": [', "not a baseline file"),
        ("[" * DEEP + "]" * DEEP, "not a baseline file"),
        ('{"schema": "imgscan.baseline/v1", "findings": ' + "[" * DEEP, "not a baseline file"),
    ],
)
def test_a_bad_baseline_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    from imgscan.errors import ImgscanError

    path = tmp_path / "baseline.json"
    path.write_text(text)
    with pytest.raises(ImgscanError) as error:
        load_baseline(path)
    assert str(error.value).startswith(str(path))
    assert message in str(error.value) and "\n" not in str(error.value)
