"""imgscan installed as a user installs it, not as the checkout runs it.

An sdist and a wheel are built from the checkout (the wheel from the sdist, as `python -m build`
does), the wheel is installed (not editable) into a fresh `--system-site-packages` virtualenv with
its dependencies from the package index, and that installation scans the demo image from an
unrelated directory with the same findings as the checkout. The same virtualenv then holds an
editable install of a copy of the source: a code edit changes `imgscan --version`, and a results
store written by one build scans the image again under the other.

Slow (a virtualenv and pip), but it is the only test that sees what a wheel really carries: the
rule pack once lived outside the package, and every test passed while an installed imgscan could
not scan.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

REPO = Path(__file__).resolve().parent.parent
# The interpreter Debian's python3-guestfs is installed for; README's user install uses it.
SYSTEM_PYTHON = "/usr/bin/python3"


def _run(argv: list[str | Path], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _checked(argv: list[str | Path], cwd: Path, timeout: int = 900) -> str:
    proc = _run(argv, cwd, timeout)
    assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _findings(report: dict[str, Any]) -> list[tuple[str, str, int, str, str]]:
    return sorted(
        (f["path"], f["rule"], f["line"], f["severity"], f["fingerprint"])
        for f in report["findings"]
    )


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel built from the checkout's sdist installed in it."""
    base = tmp_path_factory.mktemp("install")
    dist = base / "dist"
    # The sdist is built from a copy of the files git tracks, as they are in the working tree:
    # what a clean clone would hold, without the caches and builds lying around here.
    source = base / "clone"
    for name in _checked(["git", "ls-files", "-z"], REPO).split("\0"):
        if name and (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    _checked([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", dist, source], base)
    sdists, wheels = sorted(dist.glob("imgscan-*.tar.gz")), sorted(dist.glob("imgscan-*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in dist.iterdir())
    venv = base / "venv"
    _checked([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", venv], base)
    _checked([venv / "bin/python", "-m", "pip", "install", "-q", wheels[0]], base)
    return venv


def test_the_wheel_scans_like_the_checkout(user_venv: Path, images: Path, tmp_path: Path) -> None:
    demo = images / "demo.qcow2"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    installed = _run([user_venv / "bin/imgscan", "scan", demo, "--format", "json"], elsewhere)
    assert installed.returncode == 1, installed.stderr
    checkout = _run([sys.executable, "-m", "imgscan", "scan", demo, "--format", "json"], REPO)
    assert checkout.returncode == 1, checkout.stderr
    wheel_report, checkout_report = json.loads(installed.stdout), json.loads(checkout.stdout)
    # Not the checkout's files: the installed package, with its own copy of the rule pack.
    where = _checked(
        [user_venv / "bin/python", "-c", "import imgscan, sys; sys.stdout.write(imgscan.__file__)"],
        elsewhere,
    )
    assert Path(where).is_relative_to(user_venv), where
    assert (Path(where).parent / "signatures" / "files.toml").is_file()
    assert _findings(wheel_report) == _findings(checkout_report)
    assert len(wheel_report["findings"]) >= 30
    # The same code and the same rules: the same build identity.
    assert wheel_report["tool"] == checkout_report["tool"]
    # The published schemas are package data too, and the wheel's report follows its own.
    schema = _checked([user_venv / "bin/imgscan", "schema", "report"], elsewhere)
    jsonschema.validate(wheel_report, json.loads(schema))


def test_a_code_edit_changes_the_build_and_the_store_scans_again(
    user_venv: Path, images: Path, tmp_path: Path
) -> None:
    # An editable install of a copy of the source, in place of the wheel.
    source = tmp_path / "src"
    shutil.copytree(
        REPO / "imgscan", source / "imgscan", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO / name, source / name)
    pip: list[str | Path] = [user_venv / "bin/python", "-m", "pip"]
    _checked([*pip, "uninstall", "-q", "-y", "imgscan"], tmp_path)
    _checked([*pip, "install", "-q", "--no-deps", "-e", source], tmp_path)
    imgscan = user_venv / "bin/imgscan"

    store = tmp_path / "store"
    store.mkdir()
    shutil.copyfile(images / "bare.raw", store / "bare.raw")
    db = tmp_path / "results.sqlite"
    batch: list[str | Path] = [
        imgscan,
        "batch",
        store,
        "--db",
        db,
        "-q",
        "--summary-format",
        "json",
    ]

    def statuses() -> list[str]:
        proc = _run(batch, tmp_path)
        assert proc.returncode == 1, proc.stderr  # bare.raw has findings
        return [image["status"] for image in json.loads(proc.stdout)["images"]]

    before = _checked([imgscan, "--version"], tmp_path)
    assert statuses() == ["scanned"]
    assert statuses() == ["cached"]

    with (source / "imgscan" / "cli.py").open("a") as fh:
        fh.write("\n# an edit: another build\n")
    after = _checked([imgscan, "--version"], tmp_path)
    assert after != before
    # Only the code digest moved; the release and the rule pack are what they were.
    assert after.split("(code")[0] == before.split("(code")[0]
    assert after.split("rules")[1] == before.split("rules")[1]
    # What the store holds came from the other build: this one scans again.
    assert statuses() == ["scanned"]
    assert statuses() == ["cached"]
