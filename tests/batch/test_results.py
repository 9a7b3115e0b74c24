"""`imgscan results`: past results without rescanning, with gate exit codes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from .batchstore import by_name, run_cli, scans_per_digest, summary_json


def test_list_shows_every_stored_result(
    scanned_store: dict[str, Any], capsys: pytest.CaptureFixture[str], signatures: Path
) -> None:
    db = str(scanned_store["db"])
    code, out, _ = run_cli(capsys, signatures, "results", "list", "--db", db, "--format", "csv")
    assert code == 0
    rows = {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(out))}
    assert {name: r["status"] for name, r in rows.items()} == {
        "bare.raw": "done",
        "server-stream.vmdk": "done",
        "x.qcow2": "error",
    }
    assert "no partition table or filesystem" in rows["x.qcow2"]["error"]


def test_show_renders_the_stored_report_with_the_gate_exit_code(
    scanned_store: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    signatures: Path,
) -> None:
    db = str(scanned_store["db"])
    store: Path = scanned_store["store"]
    before = scans_per_digest(scanned_store["db"])
    written = json.loads((scanned_store["out"] / "server-stream.vmdk.json").read_text())

    code, out, _ = run_cli(
        capsys,
        signatures,
        "results",
        "show",
        str(store / "server-stream.vmdk"),
        "--db",
        db,
        "-f",
        "json",
    )
    assert code == 1
    assert json.loads(out) == written  # the same report the batch wrote

    # By digest prefix, another format, another threshold.
    digest = by_name(scanned_store["summary"])["bare.raw"]["digest"]
    target = tmp_path / "bare.sarif"
    code, _, _ = run_cli(
        capsys, signatures, "results", "show", digest.split(":")[1][:16], "--db", db,
        "-f", "sarif", "-o", str(target), "--fail-on", "critical",
    )  # fmt: skip
    assert code == 0  # bare.raw has no critical finding
    sarif = json.loads(target.read_text())
    assert {r["ruleId"] for r in sarif["runs"][0]["results"]} == {
        f["rule"]
        for f in json.loads((scanned_store["out"] / "bare.raw.json").read_text())["findings"]
    }
    code, out, _ = run_cli(
        capsys, signatures, "results", "show", str(store / "bare.raw"), "--db", db
    )
    assert code == 1 and "What a copy of this image grants" in out

    # A copy no batch has seen is found by its content.
    copy = tmp_path / "copy-of-bare.img"
    copy.write_bytes((store / "bare.raw").read_bytes())
    code, out, _ = run_cli(capsys, signatures, "results", "show", str(copy), "--db", db)
    assert code == 1 and "What a copy of this image grants" in out

    # An image that could not be scanned, and one never seen: exit 2 with one line.
    code, _, err = run_cli(
        capsys, signatures, "results", "show", str(store / "x.qcow2"), "--db", db
    )
    assert code == 2 and "no finished result (error:" in err
    code, _, err = run_cli(
        capsys, signatures, "results", "show", "/no/such/image.qcow2", "--db", db
    )
    assert code == 2 and err.strip().endswith(f"no result in {db}")
    assert scans_per_digest(scanned_store["db"]) == before  # nothing was scanned


def test_summary_is_a_gate_over_stored_results(
    scanned_store: dict[str, Any], capsys: pytest.CaptureFixture[str], signatures: Path
) -> None:
    db = str(scanned_store["db"])
    code, out, _ = run_cli(capsys, signatures, "results", "summary", "--db", db, "--format", "json")
    assert code == 2  # x.qcow2 could not be scanned
    summary = summary_json(out)
    batch = by_name(scanned_store["summary"])
    for name, image in by_name(summary).items():
        assert image["digest"] == batch[name]["digest"]
        assert image["gate"] == batch[name]["gate"]
        assert image["exposures"] == batch[name]["exposures"]
    code, out, _ = run_cli(
        capsys, signatures, "results", "summary", "--db", db, "--fail-on", "critical"
    )
    assert code == 2
    assert "3 image(s): 1 pass, 1 fail, 0 incomplete, 1 error (fail-on critical)" in out


def test_prune_forgets_deleted_images_and_list_shows_versions(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], signatures: Path
) -> None:
    import shutil

    store = tmp_path / "store"
    store.mkdir()
    shutil.copyfile(images / "bare.raw", store / "kept.raw")
    shutil.copyfile(images / "bare.raw", store / "deleted.raw")
    db = str(tmp_path / "r.sqlite")
    code, _, _ = run_cli(capsys, signatures, "batch", str(store), "--db", db, "-q")
    assert code == 1
    (store / "deleted.raw").unlink()

    def summary() -> list[str]:
        _, out, _ = run_cli(
            capsys, signatures, "results", "summary", "--db", db, "--format", "json"
        )
        return sorted(by_name(summary_json(out)))

    assert summary() == ["deleted.raw", "kept.raw"]  # the deleted image is still listed
    code, out, err = run_cli(capsys, signatures, "results", "prune", "--db", db, "--dry-run")
    assert code == 0 and out == f"would forget {store / 'deleted.raw'}\n"
    assert summary() == ["deleted.raw", "kept.raw"]
    code, out, err = run_cli(capsys, signatures, "results", "prune", "--db", db)
    assert code == 0 and out == f"forgot {store / 'deleted.raw'}\n"
    assert "forgot 1 image(s) no longer present" in err
    assert summary() == ["kept.raw"]
    # The result itself stays (keyed by content: kept.raw is the same bytes), and `list`
    # says when it was made and by which build, to a file if asked.
    listing = tmp_path / "list.txt"
    code, out, _ = run_cli(capsys, signatures, "results", "list", "--db", db, "-o", str(listing))
    assert code == 0 and out == ""
    header, row = listing.read_text().splitlines()[:2]
    assert header.split()[-3:] == ["SCANNED", "IMGSCAN", "RULES"]
    assert row.split()[-2].startswith("0.3.0+code.")
