"""The hostile-image suite (testdata/build_hostile.py): every case ends within a time and
memory bound, never reads or shows a host file, fails closed, and escapes what it shows.

Each case runs the real command line in its own process group, under a wrapper that reports
the peak resident memory of the scan and everything it started (workers, qemu).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "testdata"))

import build_hostile  # noqa: E402

TIME_LIMIT = 60.0  # seconds, per scan
MEMORY_LIMIT = 1 << 30  # bytes of peak RSS, the largest process of the scan
ESCAPE_FILE = Path("/tmp/imgscan-escape.raw")

# Runs the command, then prints the peak RSS (KiB) of the largest process it waited for.
_MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(f'peak-rss-kib={peak}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _case_names() -> list[str]:
    """Case names without building: the builders declare them as they build, so this reads
    the cached manifest when there is one and otherwise builds."""
    return [c["name"] for c in _manifest()["cases"]]


_CACHE: dict[str, Any] = {}


def _manifest() -> dict[str, Any]:
    if "manifest" not in _CACHE:
        directory = build_hostile.build_hostile()
        _CACHE["dir"] = directory
        _CACHE["manifest"] = json.loads((directory / "manifest.json").read_text())
    manifest: dict[str, Any] = _CACHE["manifest"]
    return manifest


@pytest.fixture(scope="session")
def hostile(guestfs_accelerator: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    manifest = _manifest()
    yield _CACHE["dir"], manifest


class Scan:
    def __init__(self, proc: subprocess.CompletedProcess[str], seconds: float, rss: int) -> None:
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.seconds = seconds
        self.rss = rss


def _scan(image: Path, report: Path, *args: str) -> Scan:
    cli = [sys.executable, "-m", "imgscan", "scan", str(image), "--no-progress"]
    argv = [sys.executable, "-c", _MEASURE, *cli, "--format", "json", "-o", str(report), *args]
    started = time.monotonic()
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as proc:
        try:
            out, err = proc.communicate(timeout=TIME_LIMIT * 2)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"{image.name}: still running after {TIME_LIMIT * 2:.0f} s")
    seconds = time.monotonic() - started
    # Nothing the scan started may outlive it (multiprocessing's resource tracker leaves a
    # moment after its parent: give the group a few seconds to empty).
    deadline = time.monotonic() + 10
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"{image.name}: processes of the scan outlived it")
        time.sleep(0.1)
    lines = err.splitlines()
    rss = next(int(x.split("=")[1]) * 1024 for x in reversed(lines) if x.startswith("peak-rss"))
    err = "\n".join(x for x in lines if not x.startswith("peak-rss"))
    done = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    return Scan(done, seconds, rss)


def _reasons(report: dict[str, Any]) -> str:
    parts = [v.get("reason") or "" for v in report["coverage"]["volumes"]]
    parts += [s["reason"] for s in report["coverage"]["skipped_files"]]
    parts += report["warnings"]
    return "\n".join(parts)


@pytest.mark.parametrize("name", _case_names())
def test_hostile_case(hostile: tuple[Path, dict[str, Any]], name: str, tmp_path: Path) -> None:
    directory, manifest = hostile
    case = next(c for c in manifest["cases"] if c["name"] == name)
    ESCAPE_FILE.unlink(missing_ok=True)
    report_path = tmp_path / "report.json"
    # "{dir}" in a case's options names a file the builder put beside the images.
    args = [arg.replace("{dir}", str(directory)) for arg in case["args"]]
    scan = _scan(directory / case["file"], report_path, *args)
    # The figures, for `pytest -rA` (captured output of passed tests).
    print(f"{name}: {scan.seconds:.1f} s, peak RSS {scan.rss >> 20} MiB, exit {scan.code}")

    assert scan.seconds <= TIME_LIMIT, f"{name}: {scan.seconds:.1f} s"
    assert scan.rss <= MEMORY_LIMIT, f"{name}: peak RSS {scan.rss >> 20} MiB"
    assert "Traceback" not in scan.stderr, scan.stderr
    assert scan.code in case["exits"], (scan.code, scan.stderr[-2000:])
    report_text = report_path.read_text() if report_path.exists() else ""
    # Nothing of the host: not the marker file's content, not /etc/shadow's.
    for output in (scan.stdout, scan.stderr, report_text):
        assert manifest["marker"] not in output
    assert not ESCAPE_FILE.exists(), "an archive member was written outside the scan"

    refused = json.loads(report_text) if report_text else None
    if case["error"] is not None:
        # Refused before scanning: one clear line, and the report asked for says so: the
        # error, nothing found, coverage incomplete (a pipeline reads a verdict, not nothing).
        assert scan.code == 2
        lines = scan.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("imgscan: error:"), scan.stderr
        assert case["error"] in lines[0]
        assert refused is not None and case["error"] in refused["error"]
        assert refused["findings"] == [] and refused["coverage"]["complete"] is False
        return
    if scan.code == 2 and refused is not None and "error" in refused:
        # A clean refusal is failing closed too (a container too broken to open).
        lines = scan.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("imgscan: error:"), scan.stderr
        assert not case["finds"] and not case["incomplete"], scan.stderr
        assert refused["findings"] == [] and refused["coverage"]["complete"] is False
        return
    report = json.loads(report_text)
    complete = report["coverage"]["complete"]
    # Fail closed: anything not read makes coverage incomplete, and incomplete exits 2.
    assert (scan.code == 2) == (not complete), (scan.code, complete)
    if case["incomplete"]:
        assert not complete, _reasons(report)
    if case["reason"]:
        assert case["reason"].lower() in _reasons(report).lower(), _reasons(report)
    if case["finds"]:
        # The image's own secret is still found, and (without --show-secrets) never shown.
        assert any(f["path"].endswith(".conf") for f in report["findings"]), report["findings"]
        assert manifest["password"] not in report_text + scan.stderr
    if case["escapes"]:
        _assert_escaped(directory / case["file"], tmp_path, manifest, args)
    if case.get("places"):
        _assert_metadata_places(case, report, directory / case["file"], tmp_path, args)


def _assert_metadata_places(
    case: dict[str, Any], report: dict[str, Any], image: Path, tmp_path: Path, args: list[str]
) -> None:
    """Issue 20: secrets in names, link targets and extended attributes are found at
    `<path>#<where>` by the reader under test, every report format shows each place, and the
    secrets a name holds are shown in none of them."""
    paths = {f["path"] for f in report["findings"]}
    for place in case["places"]:
        assert place in paths, (place, sorted(paths))
    shown = run_formats(image, tmp_path, args)
    for fmt, text in shown.items():
        for place in case["places"]:
            # The last component: what a format escapes in a path ("/" in HTML, say) is not
            # in it. JSON and SARIF write "…" as \u2026.
            tail = place.rsplit("/", 1)[-1]
            assert tail in text or json.dumps(tail)[1:-1] in text, (fmt, place)
        for value in case["hidden"]:
            assert value not in text, fmt


def run_formats(image: Path, tmp_path: Path, args: list[str]) -> dict[str, str]:
    """The report of `image` in every format, as text."""
    shown = {}
    for fmt in ("table", "json", "sarif", "markdown", "html"):
        out = tmp_path / f"report.{fmt}"
        cli = [sys.executable, "-m", "imgscan", "scan", str(image), "--no-progress"]
        subprocess.run(
            [*cli, "--format", fmt, "-o", str(out), *args],
            capture_output=True,
            check=False,
            timeout=TIME_LIMIT * 2,
        )
        shown[fmt] = out.read_text(encoding="utf-8")
    return shown


def _assert_escaped(image: Path, tmp_path: Path, manifest: dict[str, Any], args: list[str]) -> None:
    shown = run_formats(image, tmp_path, args)
    for fmt, text in shown.items():
        assert manifest["password"] not in text, fmt
        assert "\x1b" not in text and "\x07" not in text and "\r" not in text, fmt
        assert "\udcff" not in text, fmt
    # Control characters come out as visible escapes: no name breaks a line of the table.
    assert "new\\x0aline.conf" in shown["table"]
    assert "\\x1b[31mred" in shown["table"]
    # JSON and SARIF parse, and hold every finding's path on one line.
    report = json.loads(shown["json"])
    assert len(report["findings"]) == len(manifest["hostile_names"]) + 2
    assert any(len(f["path"]) > 4000 for f in report["findings"])
    json.loads(shown["sarif"])
    # HTML: the markup in names is text, never an element.
    assert "<script>window.pwned" not in shown["html"] and "<!--" not in shown["html"]
    assert "<img src=x" not in shown["html"]
    assert "&lt;script&gt;window.pwned" in shown["html"]
