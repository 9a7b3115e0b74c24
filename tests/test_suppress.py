"""Baselines and ignore files: accepted findings leave the gate but stay in the report."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from test_cli import run

from imgscan.errors import ImgscanError
from imgscan.model import (
    Finding,
    ImageInfo,
    ReaderInfo,
    ScanResult,
    Severity,
    Stats,
    fingerprint,
)
from imgscan.suppress import apply_suppressions, load_baseline, load_ignore, render_baseline

TODAY = datetime.date(2026, 11, 27)


def _finding(rule: str, path: str, secret: bytes) -> Finding:
    return Finding(
        rule, "password", Severity.HIGH, path, 3, "…(12)", fingerprint(rule, path, secret)
    )


def _result(*findings: Finding) -> ScanResult:
    return ScanResult(
        ImageInfo("disk.qcow2", "qcow2", 1 << 20),
        ReaderInfo("native"),
        (),
        (),
        findings,
        Stats(1, 1, 0.1),
    )


def _ignore(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ignore.toml"
    path.write_text(text)
    return path


def test_baseline_round_trip_holds_no_secret(tmp_path: Path) -> None:
    app = _finding("generic-password-unquoted", "/etc/app.conf", b"s3cr3t-value-1")
    result = _result(app)
    text = render_baseline(result)
    assert "s3cr3t" not in text
    path = tmp_path / "baseline.json"
    path.write_text(text)
    assert load_baseline(path) == {app.fingerprint}
    new = _finding("generic-password-unquoted", "/etc/app.conf", b"s3cr3t-value-2")
    after = apply_suppressions(_result(app, new), load_baseline(path), today=TODAY)
    assert after.findings == (new,)
    assert [(s.fingerprint, s.by) for s in after.suppressed] == [(app.fingerprint, "baseline")]


def test_ignore_entries_match_by_rule_path_and_fingerprint(tmp_path: Path) -> None:
    a = _finding("aws-access-key-id", "/home/alice/.aws/credentials", b"AKIA-one")
    b = _finding("github-token", "C:\\Users\\Bob\\deploy.ps1", b"ghp-two")
    c = _finding("github-token", "/srv/app/.env", b"ghp-three")
    d = _finding("jwt", "/srv/app/.env", b"eyJ-four")
    entries = load_ignore(
        _ignore(
            tmp_path,
            f"""
[[ignore]]
rule = "aws-access-key-id"
reason = "the CI key, rotated nightly"

[[ignore]]
path = "C:/Users/*/deploy.ps1"
reason = "deploy script, reviewed"
expires = 2027-01-31

[[ignore]]
fingerprint = "{d.fingerprint}"
reason = "test token"
expires = 2026-11-01
""",
        )
    )
    after = apply_suppressions(_result(a, b, c, d), ignore=entries, today=TODAY)
    assert after.findings == (c, d)  # d's entry expired
    assert [s.by for s in after.suppressed] == [
        "ignore: the CI key, rotated nightly",
        "ignore: deploy script, reviewed",  # Windows paths match regardless of case
    ]
    assert any("expired on 2026-11-01" in w for w in after.warnings)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[ignore]]\nreason = "x"\n', "needs a rule, a path or a fingerprint"),
        ('[[ignore]]\nrule = "jwt"\n', "needs a reason"),
        ('[[ignore]]\nrule = "jwt"\nreason = "x"\nexpires = "soon"\n', "expires must be a date"),
        ('[[ignore]]\nrule = "jwt"\nreason = "x"\nrules = "typo"\n', "unknown key(s) 'rules'"),
        ("[[ignore]\n", "not valid TOML"),
    ],
)
def test_malformed_ignore_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ImgscanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_ignore(_ignore(tmp_path, text))


def test_a_hostile_key_is_named_on_one_line(tmp_path: Path) -> None:
    # A key may hold any character in TOML; the error must stay one line, whatever it holds.
    text = '[[ignore]]\nrule = "jwt"\nreason = "x"\n"typo\\n\\u001b[2Jrule" = 1\n'
    with pytest.raises(ImgscanError) as raised:
        load_ignore(_ignore(tmp_path, text))
    assert "unknown key(s) 'typo\\n\\x1b[2Jrule'" in str(raised.value)
    assert "\n" not in str(raised.value) and "\x1b" not in str(raised.value)


def test_a_baseline_makes_a_rescan_pass(images: Path, tmp_path: Path) -> None:
    image = images / "server.qcow2"
    baseline = tmp_path / "accepted.json"
    made = run("baseline", image, "--output", baseline)
    assert made.returncode == 0, made.stderr
    accepted: dict[str, Any] = json.loads(baseline.read_text())
    assert accepted["findings"]
    again = run("scan", image, "--baseline", baseline, "--format", "json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["findings"] == []
    assert len(report["suppressed"]) == len(accepted["findings"])
    assert f"{len(accepted['findings'])} suppressed" in again.stderr


def test_an_expired_ignore_entry_no_longer_suppresses(images: Path, tmp_path: Path) -> None:
    image = images / "server.qcow2"
    entry = '[[ignore]]\npath = "/**"\nreason = "accepted until the rebuild"\nexpires = {}\n'
    active = _ignore(tmp_path, entry.format("2099-12-31"))
    assert run("scan", image, "--ignore", active).returncode == 0
    expired = _ignore(tmp_path, entry.format("2020-01-01"))
    proc = run("scan", image, "--ignore", expired)
    assert proc.returncode == 1
    assert "expired on 2020-01-01 and no longer suppresses" in proc.stderr


def test_a_baseline_of_an_incomplete_scan_is_refused(images: Path, tmp_path: Path) -> None:
    baseline = tmp_path / "accepted.json"
    proc = run("baseline", images / "mbr.qcow2", "--output", baseline)
    assert proc.returncode == 2
    assert "no baseline written" in proc.stderr
    assert not baseline.exists()
