"""Package ownership through the real command line, on a real image with real-shaped dpkg,
Python RECORD and apk records (testdata/build_packages.py): vendor content is demoted to info
with its package, modified and forged files keep their severity, unowned files are judged as
before; both readers agree; every format shows the package; a policy can fail vendor
findings."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "testdata"))

import build_packages  # noqa: E402
from command import run_imgscan  # noqa: E402

from imgscan.batch.stored import result_from_report  # noqa: E402
from imgscan.report.json import to_dict  # noqa: E402

_reports: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_packages.build_packages(tmp_path_factory.mktemp("packages"))


def _expect(image: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((image.parent / "packages.json").read_text())
    return data


def _report(image: Path, reader: str) -> dict[str, Any]:
    if reader not in _reports:
        proc = run_imgscan("scan", image, "--reader", reader, "--format", "json", "--no-progress")
        assert proc.returncode == 1, proc.stderr  # the unowned and modified findings fail
        _reports[reader] = json.loads(proc.stdout)
    return _reports[reader]


def _by_path(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for finding in report["findings"]:
        assert finding["path"] not in found, finding["path"]
        found[finding["path"]] = finding
    return found


def _package_check(finding: dict[str, Any]) -> str:
    (detail,) = [c["detail"] for c in finding["validation"]["checks"] if c["check"] == "package"]
    return str(detail)


def _assert_ownership(image: Path, report: dict[str, Any]) -> None:
    expect = _expect(image)
    assert report["coverage"]["complete"]
    found = _by_path(report)
    assert set(found) == (
        set(expect["vendor"])
        | set(expect["modified"])
        | set(expect["unowned"])
        | set(expect["unverified"])
    )
    failing = set(report["gate"]["failing"])
    for path, want in expect["vendor"].items():
        finding = found[path]
        package = finding["package"]
        assert finding["severity"] == "info", path
        assert {k: package[k] for k in want} == want, path
        assert package["original_severity"] in ("high", "critical"), path
        assert finding["fingerprint"] not in failing, path
        assert "shipped unmodified by" in _package_check(finding)
    key = found["/usr/lib/x86_64-linux-gnu/libfakecrypt.so.1"]
    assert (key["category"], key["package"]["original_severity"]) == ("private-key", "critical")
    assert "anyone with the package has this key: it is public" in _package_check(key)
    for path, want in expect["modified"].items():
        finding = found[path]
        package = finding["package"]
        assert finding["severity"] == "high", path
        assert package["unmodified"] is False, path
        assert {k: package[k] for k in want} == {**want}, path
        assert finding["fingerprint"] in failing, path
        assert "modified since" in _package_check(finding)
    for path, want in expect["unverified"].items():
        finding = found[path]
        package = finding["package"]
        assert finding["severity"] == "info", path
        assert {k: package[k] for k in want} == want, path
        assert package["unmodified"] is None, path
        assert finding["fingerprint"] not in failing, path
        check = _package_check(finding)
        assert "compiled from" in check or "content is not verified" in check, check
    for path in expect["unowned"]:
        assert "package" not in found[path], path
        assert found[path]["severity"] == "high"
        assert found[path]["fingerprint"] in failing
    # Vendor findings grant nothing specific to this image: no exposure cites them.
    cited = {fp for e in report["exposures"] for fp in e["evidence"]}
    assert not cited & {found[p]["fingerprint"] for p in expect["vendor"]}


def test_native_reader_demotes_vendor_content(image: Path) -> None:
    report = _report(image, "native")
    _assert_ownership(image, report)
    # A stored report (imgscan batch, results) keeps the package records.
    assert to_dict(result_from_report(report))["findings"] == report["findings"]


@pytest.mark.guestfs
def test_guestfs_reader_demotes_vendor_content(image: Path) -> None:
    guest = _report(image, "guestfs")
    _assert_ownership(image, guest)
    native = _report(image, "native")
    assert [(f["path"], f["severity"], f.get("package")) for f in guest["findings"]] == [
        (f["path"], f["severity"], f.get("package")) for f in native["findings"]
    ]


def test_every_format_shows_the_package(image: Path, tmp_path: Path) -> None:
    shown = "dpkg package libfakecrypt1 1.2.3-1, unmodified"
    modified = "dpkg package fakedb-server 1:10.11.6-0+deb12u1, modified since installed"
    out = {}
    for fmt in ("table", "markdown", "html", "sarif"):
        target = tmp_path / f"report.{fmt}"
        proc = run_imgscan(
            "scan", image, "--reader", "native", "-f", fmt, "-o", target, "--no-progress"
        )
        assert proc.returncode == 1, proc.stderr
        out[fmt] = target.read_text()
    for fmt in ("table", "markdown", "html"):
        text = " ".join(out[fmt].split())  # the table wraps at 80 columns
        assert shown in text, fmt
        assert modified in text, fmt
    sarif = json.loads(out["sarif"])
    packages = {
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]: r["properties"].get(
            "package"
        )
        for r in sarif["runs"][0]["results"]
    }
    lib = next(p for uri, p in packages.items() if uri.endswith("libfakecrypt.so.1"))
    assert lib is not None
    assert (lib["manager"], lib["name"], lib["unmodified"]) == ("dpkg", "libfakecrypt1", True)
    assert next(p for uri, p in packages.items() if uri.endswith("/.env")) is None


def test_a_policy_can_fail_vendor_findings(image: Path, tmp_path: Path) -> None:
    expect = _expect(image)
    policy = tmp_path / "gate.toml"
    policy.write_text(
        '[[rule]]\naction = "fail"\nvendor = true\nreason = "no vendor keys either"\n'
        '[[rule]]\naction = "allow"\n'
        'package = ["forged", "fakedb-server", "fakeorm", "fakessl-libs"]\n'
        'reason = "reviewed"\n'
        '[[rule]]\naction = "allow"\nvendor = false\nreason = "lab"\n'
        f"path = {json.dumps(expect['unowned'])}\n"
    )
    proc = run_imgscan("scan", image, "--reader", "native", "--policy", policy, "-f", "json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    found = _by_path(report)
    failing = {p for p, f in found.items() if f["fingerprint"] in report["gate"]["failing"]}
    assert failing == set(expect["vendor"]) | set(expect["unverified"])
    rules = {found[p]["fingerprint"]: p for p in found}
    decided = {rules[d["fingerprint"]]: d["rule"] for d in report["gate"]["decisions"]}
    assert decided == {
        **{p: 1 for p in expect["vendor"]},
        **{p: 1 for p in expect["unverified"]},
        **{p: 2 for p in expect["modified"]},
        **{p: 3 for p in expect["unowned"]},
    }
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\naction = "fail"\nvendor = "yes"\nreason = "r"\n')
    proc = run_imgscan("scan", image, "--policy", bad)
    assert proc.returncode == 2
    assert "vendor must be true or false" in proc.stderr


def test_hostile_records_cost_nothing_but_themselves(tmp_path: Path) -> None:
    """Records are the image's data: malformed ones give what they can, never an error."""
    import io
    import sqlite3

    from imgscan.detect.packages import read_records

    huge = b"a.py,sha256=" + b"A" * 43 + b',1\n"' + b"x" * 300_000 + b'",y\n'
    (record,) = read_records("/x/a-1.dist-info/RECORD", io.BytesIO(huge))
    assert [f[0] for f in record.files] == ["/x/a.py"]
    assert read_records("/var/lib/rpm/rpmdb.sqlite", io.BytesIO(b"not sqlite" * 100)) == ()
    db = tmp_path / "rpmdb.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB)")
        # Index entries pointing past the data, a count that overflows, a short blob.
        bad = [b"\0\0\0\1\0\0\0\4" + b"\0\0\3\xe8\0\0\0\6\x7f\0\0\0\0\0\0\1" + b"abcd"]
        bad += [b"\xff\xff\xff\xff\0\0\0\0", b"\0"]
        conn.executemany("INSERT INTO Packages (blob) VALUES (?)", [(b,) for b in bad])
    conn.close()
    assert read_records("/var/lib/rpm/rpmdb.sqlite", io.BytesIO(db.read_bytes())) == ()
    status = b"Package: a\nConffiles:\n /etc/a zz\n /etc/b\n\n\n:::\n\xff\xfe"
    (entry,) = read_records("/var/lib/dpkg/status", io.BytesIO(status))
    assert (entry.name, entry.files) == ("a", ())
    apk = b"P:p\nV:1\nF:etc\nR:x\nZ:Q1!!!notbase64\nR:y\nZ:Q1" + b"A" * 27 + b"=\n"
    (package,) = read_records("/lib/apk/db/installed", io.BytesIO(apk))
    assert [f[0] for f in package.files] == ["/etc/y"]
