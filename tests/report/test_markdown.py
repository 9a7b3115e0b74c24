"""The Markdown summary: short, escaped, and never a value."""

from __future__ import annotations

from imgscan.model import (
    Finding,
    ImageInfo,
    ReaderInfo,
    ScanResult,
    Severity,
    Skipped,
    Stats,
    Volume,
    VolumeStatus,
    fingerprint,
)
from imgscan.report.markdown import MAX_ROWS, render_markdown

HOSTILE = "/srv/a|b`c``d\n<script>alert(1)</script>\x1b[31m.env"


def _result(findings: tuple[Finding, ...], skipped: tuple[Skipped, ...] = ()) -> ScanResult:
    volumes = (
        Volume("/dev/sda1", "ext4", "/", VolumeStatus.SCANNED),
        Volume("/dev/sda2", None, None, VolumeStatus.UNSUPPORTED, "no filesystem recognised"),
    )
    return ScanResult(
        ImageInfo("/images/app01.qcow2", "qcow2", 1 << 30),
        ReaderInfo("native"),
        volumes,
        skipped,
        findings,
        Stats(10, 1000, 0.5),
    )


def _finding(path: str, secret: str, severity: Severity = Severity.HIGH) -> Finding:
    fp = fingerprint("generic-password-unquoted", path, secret.encode())
    return Finding("generic-password-unquoted", "password", severity, path, 2, "…(9)", fp, secret)


def test_hostile_paths_cannot_break_out_of_their_cell() -> None:
    text = render_markdown(_result((_finding(HOSTILE, "hunter2-x9"),)))
    row = next(line for line in text.splitlines() if line.startswith("| high"))
    # One table row: four cells, the path's pipe escaped, in a fence longer than its backticks.
    assert row.count(" | ") == 3
    assert "a\\|b" in row and "```" in row
    assert "\n<script>" not in text and "\x1b" not in text
    assert "hunter2-x9" not in text  # never the value, even when the scan kept it
    assert "**coverage incomplete**" in text.splitlines()[0]
    assert "- volume `/dev/sda2`: `no filesystem recognised`" in text


def test_long_results_stay_short() -> None:
    findings = tuple(_finding(f"/etc/app{i:03d}.conf", f"pw-{i:04d}") for i in range(200))
    skipped = tuple(Skipped(f"/var/big{i}.img", "larger than the size limit") for i in range(50))
    text = render_markdown(_result(findings, skipped))
    assert sum(line.startswith("| high") for line in text.splitlines()) == MAX_ROWS
    assert f"and {200 - MAX_ROWS} more" in text
    assert f"and {50 - MAX_ROWS} more file(s)" in text
    assert len(text.splitlines()) < 2 * MAX_ROWS + 20


def test_exposures_come_first_escaped() -> None:
    from dataclasses import replace

    from imgscan.exposures import build_exposures

    findings = tuple(_finding(f"/home/{HOSTILE}/app{i}.conf", f"pw-{i:04d}") for i in range(30))
    result = _result(findings)
    text = render_markdown(replace(result, exposures=build_exposures(findings)))
    lines = text.splitlines()
    grants = lines.index("What a copy of this image grants:")
    assert grants < next(i for i, line in enumerate(lines) if line.startswith("| Severity | Rule"))
    rows = [line for line in lines[grants:] if line.startswith("| high | credential")]
    assert len(rows) == MAX_ROWS and all(row.count(" | ") == 3 for row in rows)
    assert "\n<script>" not in text and "pw-0001" not in text
