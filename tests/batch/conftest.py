"""Batch fixtures: one batch over a small store, shared by the tests that only read it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from imgscan.cli import main
from imgscan.options import default_signatures_dir

from .batchstore import make_store, summary_json, write_broken


@pytest.fixture(scope="session")
def signatures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the rule pack, taken once: results are keyed by the pack's version, and the
    bundled pack may be edited while the tests run (a new version would make every rerun scan
    again)."""
    target = tmp_path_factory.mktemp("pack") / "signatures"
    shutil.copytree(default_signatures_dir(), target)
    return target


@pytest.fixture(scope="session")
def scanned_store(
    images: Path, signatures: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One batch over the two small images and a broken file, run once for the tests that only
    read its outcome: the store, the report directory, the summary (JSON) and the exit code."""
    base = tmp_path_factory.mktemp("scanned")
    store = make_store(images, base / "store")
    write_broken(store / "x.qcow2")
    db, out = base / "results.sqlite", base / "reports"
    code = main(
        [
            "batch",
            str(store),
            "--db",
            str(db),
            "--out-dir",
            str(out),
            "--summary-format",
            "json",
            "-o",
            str(base / "summary.json"),
            "--jobs",
            "2",
            "--images",
            "2",
            "--quiet",
            "--signatures",
            str(signatures),
        ]
    )
    return {
        "code": code,
        "store": store,
        "db": db,
        "out": out,
        "summary": summary_json((base / "summary.json").read_text()),
    }
