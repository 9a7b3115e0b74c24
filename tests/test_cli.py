"""The command as a user runs it: exit codes, redaction, bad input, JSON contract."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from command import run_imgscan
from expect import IDENTIFIER_RULES


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_imgscan(*args, cwd=cwd, timeout=600)


def _planted_values(image: dict[str, Any]) -> list[str]:
    """The planted secrets, apart from identifiers (their rule shows them whole)."""
    return [p["secret"] for p in image["planted"] if p["kind"] not in IDENTIFIER_RULES]


def test_json_contract_and_exit_code_1(images: Path, manifest: dict[str, Any]) -> None:
    proc = run("scan", images / "server.qcow2", "--format", "json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["schema"] == "imgscan.report/v1"
    assert report["tool"]["name"] == "imgscan"
    assert report["image"] == {
        "path": str(images / "server.qcow2"),
        "format": "qcow2",
        "virtual_size": 64 << 20,
    }
    # The auto reader reads every volume of this image natively: no appliance is started.
    assert report["reader"] == {"name": "auto", "accel": None}
    assert {v["reader"] for v in report["coverage"]["volumes"]} == {"native"}
    assert report["os"]["type"] == "linux"
    assert report["os"]["hostname"] == manifest["server-qcow2"]["os"]["hostname"]
    assert {"name": "alice", "uid": 1000, "home": "/home/alice"} in report["os"]["users"]
    assert report["coverage"]["complete"] is True
    assert {v["device"] for v in report["coverage"]["volumes"]} == {
        "/dev/sda1",
        "/dev/sda2",
        "/dev/sda3",
    }
    for volume in report["coverage"]["volumes"]:
        assert set(volume) >= {
            "device",
            "fstype",
            "mountpoint",
            "status",
            "reason",
            "files",
            "bytes",
        }
    assert report["coverage"]["skipped_files"] == []
    finding = report["findings"][0]
    assert set(finding) == {
        "rule",
        "category",
        "severity",
        "path",
        "line",
        "preview",
        "fingerprint",
        "validation",
        "context",
    }
    assert set(finding["validation"]) == {"status", "checks"}
    # The planted keys are real generated keys: each PEM or OpenSSH one is captured whole and
    # parses (PuTTY and PGP keys have no offline parser yet).
    keys = {f["rule"]: f["validation"]["status"] for f in report["findings"]}
    parsed = [r for r in keys if r.startswith(("pem-", "openssh-", "escaped-pem-"))]
    assert len(parsed) >= 3 and {keys[r] for r in parsed} == {"well-formed"}, keys
    assert set(report["stats"]) == {
        "files", "bytes", "seconds", "stages", "started_at", "finished_at"
    }  # fmt: skip
    assert set(report["stats"]["stages"]) == {"open", "listing", "read", "match"}
    assert all(seconds >= 0 for seconds in report["stats"]["stages"].values())
    paths = {f["path"] for f in report["findings"]}
    assert "/srv/app/releases/config-bundle.zip!/settings.ini" in paths


def test_no_raw_secret_in_default_outputs(images: Path, manifest: dict[str, Any]) -> None:
    secrets = _planted_values(manifest["server-qcow2"])
    formats = (("table",), ("json",), ("sarif",), ("markdown",), ("html",))
    for fmt, *extra in (*formats, ("table", "--debug"), ("json", "-v")):
        proc = run("scan", images / "server.qcow2", "--format", fmt, *extra)
        assert proc.returncode == 1
        for value in secrets:
            # Long secrets (keys) may share a few characters with anything; test the tail.
            probe = value if len(value) < 64 else value[-48:]
            assert probe not in proc.stdout, (fmt, value[:6])
            assert probe not in proc.stderr, (fmt, value[:6])


def test_show_secrets_reveals_them(images: Path, manifest: dict[str, Any]) -> None:
    proc = run("scan", images / "server.qcow2", "--format", "json", "--show-secrets")
    report = json.loads(proc.stdout)
    found = {f.get("secret") for f in report["findings"]}
    assert manifest["server-qcow2"]["planted"][0]["secret"] in found


def test_output_file(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = run("scan", images / "bare.raw", "-f", "json", "-o", out)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert json.loads(out.read_text())["image"]["format"] == "raw"
    assert "finding(s)" in proc.stderr


def test_clean_image_exits_0(tmp_path: Path) -> None:
    tree = tmp_path / "tree" / "etc"
    tree.mkdir(parents=True)
    (tree / "hostname").write_text("clean\n")
    (tree / "app.conf").write_text("password = ${APP_PASSWORD}\n")
    image = tmp_path / "clean.raw"
    subprocess.run(
        ["mke2fs", "-q", "-t", "ext4", "-d", str(tmp_path / "tree"), str(image), "4M"], check=True
    )
    proc = run("scan", image)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No secrets found." in proc.stdout


def test_fail_on_threshold(images: Path) -> None:
    # bare.raw holds high-or-above findings only; --fail-on critical decides by severity.
    proc = run("scan", images / "bare.raw", "--format", "json")
    severities = {f["severity"] for f in json.loads(proc.stdout)["findings"]}
    proc = run("scan", images / "bare.raw", "--fail-on", "critical")
    assert proc.returncode == (1 if "critical" in severities else 0)
    proc = run("scan", images / "bare.raw", "--fail-on", "info")
    assert proc.returncode == 1


def test_incomplete_coverage_exits_2(images: Path) -> None:
    proc = run("scan", images / "mbr.qcow2", "--format", "json")
    assert proc.returncode == 2
    report = json.loads(proc.stdout)
    assert report["coverage"]["complete"] is False
    unread = [v for v in report["coverage"]["volumes"] if v["status"] != "scanned"]
    assert unread and all(v["reason"] for v in unread)
    assert "COVERAGE INCOMPLETE" in proc.stderr
    assert run("scan", images / "mbr.qcow2", "--allow-incomplete").returncode == 1


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert needle in lines[0], lines[0]


def test_bad_inputs(tmp_path: Path, images: Path) -> None:
    _assert_one_line_error(run("scan", tmp_path / "nope.qcow2"), "no such file")
    _assert_one_line_error(run("scan", tmp_path), "is a directory")
    text = tmp_path / "notes.txt"
    text.write_text("just some text, not a disk\n" * 100)
    _assert_one_line_error(run("scan", text), "no partition table or filesystem")
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    _assert_one_line_error(run("scan", empty), "empty file")
    truncated = tmp_path / "truncated.qcow2"
    with (images / "server.qcow2").open("rb") as src:
        truncated.write_bytes(src.read(300_000))
    proc = run("scan", truncated)
    _assert_one_line_error(proc, str(truncated))
    garbage = tmp_path / "garbage.raw"
    data = bytearray(os.urandom(4 << 20))
    data[510:512] = b"\x55\xaa"  # a boot-sector mark over random bytes
    garbage.write_bytes(bytes(data))
    _assert_one_line_error(run("scan", garbage), "no partition table or filesystem")
    bad_table = tmp_path / "bad-table.raw"
    data = bytearray(4 << 20)
    data[510:512] = b"\x55\xaa"
    # One Linux partition entry that starts at sector 2048 and runs far past the disk's end.
    data[446:462] = (
        bytes([0, 0, 0, 0, 0x83, 0, 0, 0])
        + (2048).to_bytes(4, "little")
        + (999_999).to_bytes(4, "little")
    )
    bad_table.write_bytes(bytes(data))
    _assert_one_line_error(run("scan", bad_table), "partition table may be garbage")


def test_debug_shows_traceback(tmp_path: Path) -> None:
    proc = run("scan", tmp_path / "nope.raw", "--debug")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr


def test_backing_file_refused(tmp_path: Path) -> None:
    host_file = tmp_path / "host-secret.raw"
    host_file.write_bytes(b"\0" * (1 << 20))
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            str(host_file),
            str(overlay),
        ],
        check=True,
    )
    proc = run("scan", overlay)
    _assert_one_line_error(proc, "--allow-external-files")
    # Allowed, the native reader still refuses rather than read the backing data as zeros.
    proc = run("scan", overlay, "--allow-external-files", "--reader", "native")
    _assert_one_line_error(proc, "use --reader guestfs")


def test_vmdk_extent_elsewhere_refused(tmp_path: Path) -> None:
    descriptor = tmp_path / "disk.vmdk"
    descriptor.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\nRW 2048 FLAT "/etc/shadow" 0\n'
    )
    _assert_one_line_error(run("scan", descriptor), "--allow-external-files")


def test_help_teaches() -> None:
    proc = run("scan", "--help")
    assert proc.returncode == 0
    for needle in ("--reader", "--fail-on", "--show-secrets", "exit codes", "examples"):
        assert needle in proc.stdout


def test_usage_error_exit_2() -> None:
    proc = run("scan")
    assert proc.returncode == 2
