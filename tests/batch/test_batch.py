"""`imgscan batch` on real images: exit codes, per-image reports, the summary in JSON and CSV,
and a rerun that scans nothing (checked by the store's scan counts, not by timing)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from imgscan.batch.store import Store
from imgscan.batch.stored import result_from_report
from imgscan.detect.rules import load_pack
from imgscan.report.json import to_dict

from .batchstore import by_name, make_store, run_cli, scans_per_digest, summary_json


def test_broken_image_gives_2_and_the_others_are_scanned(scanned_store: dict[str, Any]) -> None:
    assert scanned_store["code"] == 2
    images = by_name(scanned_store["summary"])
    assert set(images) == {"bare.raw", "server-stream.vmdk", "x.qcow2"}
    broken = images["x.qcow2"]
    assert broken["gate"] == "error" and broken["status"] == "error"
    assert "x.qcow2" in broken["error"] and "\n" not in broken["error"]
    for name in ("bare.raw", "server-stream.vmdk"):
        assert images[name]["status"] == "scanned"
        assert images[name]["gate"] == "fail"
        assert images[name]["complete"] is True
    totals = scanned_store["summary"]["totals"]
    assert (totals["images"], totals["fail"], totals["error"]) == (3, 2, 1)


def test_one_report_per_image_with_the_summarys_numbers(
    scanned_store: dict[str, Any], manifest: dict[str, Any]
) -> None:
    out: Path = scanned_store["out"]
    assert sorted(p.name for p in out.iterdir()) == [
        "bare.raw.json", "index.html", "index.md", "server-stream.vmdk.json"
    ]  # fmt: skip
    images = by_name(scanned_store["summary"])
    for name in ("bare.raw", "server-stream.vmdk"):
        report = json.loads((out / f"{name}.json").read_text())
        summary = images[name]
        assert report["schema"] == "imgscan.report/v1"
        assert report["image"]["path"] == summary["path"]
        assert report["gate"]["fail_on"] == "low"
        assert summary["report"] == str(out / f"{name}.json")
        counts = {s: 0 for s in summary["findings"]}
        for finding in report["findings"]:
            counts[finding["severity"]] += 1
            assert "secret" not in finding  # a batch never captures raw values
        assert counts == summary["findings"]
        assert [
            {k: e[k] for k in ("kind", "target", "principal", "severity")}
            for e in report["exposures"]
        ] == summary["exposures"]
    # What the image holds: every planted secret of the small image is found.
    bare = json.loads((out / "bare.raw.json").read_text())
    planted = {(p["path"], p["line"]) for p in manifest["bare-raw"]["planted"]}
    assert planted <= {(f["path"], f["line"]) for f in bare["findings"]}


def test_stored_report_renders_back_to_the_same_json(
    scanned_store: dict[str, Any], signatures: Path
) -> None:
    pack = load_pack(signatures)
    with Store(scanned_store["db"]) as store:
        records = [r for r in store.records() if r.state == "done"]
        assert len(records) == 2
        for record in records:
            report = store.report(record.key)
            assert report is not None
            result = result_from_report(report, pack)
            assert to_dict(result) == report
            assert {r.id for r in result.rules} == {f["rule"] for f in report["findings"]}


def test_exit_1_on_findings_and_0_above_them_without_rescanning(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], signatures: Path
) -> None:
    store = make_store(images, tmp_path / "store", ("bare.raw",))
    db = str(tmp_path / "r.sqlite")
    code, out, _ = run_cli(
        capsys, signatures, "batch", str(store), "--db", db, "--summary-format", "csv", "-q"
    )
    assert code == 1  # bare.raw holds a high and a medium finding
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["status"], r["gate"], r["high"], r["medium"]) for r in rows] == [
        ("scanned", "fail", "1", "1")
    ]
    assert rows[0]["digest"].startswith("sha256:") and rows[0]["complete"] == "true"
    assert set(rows[0]["exposure_kinds"].split()) == {"database", "saas"}
    # The gate is judged when the result is used: a higher threshold passes, from the store.
    code, out, _ = run_cli(
        capsys, signatures, "batch", str(store), "--db", db, "--fail-on", "critical", "-q",
        "--summary-format", "json",
    )  # fmt: skip
    assert code == 0
    assert [(i["status"], i["gate"]) for i in summary_json(out)["images"]] == [("cached", "pass")]
    assert list(scans_per_digest(Path(db)).values()) == [1]


def test_rerun_scans_nothing_and_a_copy_is_recognised(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], signatures: Path
) -> None:
    store = make_store(images, tmp_path / "store")
    db = tmp_path / "r.sqlite"
    out_dir = tmp_path / "reports"
    args = ("batch", str(store), "--db", str(db), "--out-dir", str(out_dir), "-q")
    code, _, _ = run_cli(capsys, signatures, *args, "--summary-format", "json")
    assert code == 1
    first = scans_per_digest(db)
    assert sorted(first.values()) == [1, 1]
    reports = {p.name: p.read_bytes() for p in out_dir.glob("*.json")}  # not the index

    # The same content under another name (a renamed or copied image) is the same image.
    shutil.copyfile(store / "bare.raw", store / "bare-copy.img")
    code, out, _ = run_cli(capsys, signatures, *args, "--summary-format", "json")
    assert code == 1
    assert scans_per_digest(db) == first  # no scan happened
    images_ = by_name(summary_json(out))
    assert {name: i["status"] for name, i in images_.items()} == {
        "bare.raw": "cached",
        "bare-copy.img": "cached",
        "server-stream.vmdk": "cached",
    }
    assert images_["bare-copy.img"]["digest"] == images_["bare.raw"]["digest"]
    assert images_["bare-copy.img"]["findings"] == images_["bare.raw"]["findings"]
    # Reports already written stay as they were; the copy's report is written from the store.
    for name, data in reports.items():
        assert (out_dir / name).read_bytes() == data
    copy_report = json.loads((out_dir / "bare-copy.img.json").read_text())
    assert copy_report["image"]["path"] == str(store / "bare-copy.img")

    # A changed image is a new image: appending a byte changes the digest, it is scanned again.
    with (store / "bare-copy.img").open("ab") as fh:
        fh.write(b"\0")
    code, out, _ = run_cli(capsys, signatures, *args, "--summary-format", "json")
    statuses = {name: i["status"] for name, i in by_name(summary_json(out)).items()}
    assert statuses["bare-copy.img"] == "scanned"
    assert statuses["bare.raw"] == statuses["server-stream.vmdk"] == "cached"
    assert sum(scans_per_digest(db).values()) == 3

    # --rescan scans again what it is given, stored or not.
    code, out, _ = run_cli(
        capsys, signatures, "batch", str(store / "bare.raw"), "--db", str(db), "--rescan", "-q",
        "--summary-format", "json",
    )  # fmt: skip
    assert [i["status"] for i in summary_json(out)["images"]] == ["scanned"]
    assert sum(scans_per_digest(db).values()) == 4


def test_table_summary_lists_errors_for_missing_names(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], signatures: Path
) -> None:
    store = make_store(images, tmp_path / "store", ("bare.raw",))
    listing = tmp_path / "list.txt"
    listing.write_text("# images to scan\nstore/bare.raw\nstore/gone.qcow2\n")
    code, out, err = run_cli(
        capsys, signatures, "batch", f"@{listing}", str(tmp_path / "nothing-*.qcow2"),
        "--db", str(tmp_path / "r.sqlite"),
    )  # fmt: skip
    assert code == 2
    lines = out.splitlines()
    assert lines[0].split() == ["IMAGE", "STATUS", "GATE", "FINDINGS", "C/H/M/L/I", "EXPOSURES"]
    assert any(line.startswith(str(store / "bare.raw")) and " fail " in line for line in lines)
    assert f"  {tmp_path}/store/gone.qcow2: no such file or directory" in lines
    assert f"  {tmp_path}/nothing-*.qcow2: no file matches this pattern" in lines
    assert "3 image(s): 0 pass, 1 fail, 0 incomplete, 2 error" in out
    assert "1 scanned" in err


def test_a_second_batch_on_the_same_store_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], signatures: Path
) -> None:
    db = tmp_path / "r.sqlite"
    (tmp_path / "disk.raw").write_bytes(bytes(4096))  # a batch with no image stops sooner
    with Store(db) as store, store.writer_lock():
        code, _, err = run_cli(capsys, signatures, "batch", str(tmp_path), "--db", str(db))
    assert code == 2
    assert "another batch is using this results store" in err


def test_a_batch_that_finds_no_image_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], signatures: Path
) -> None:
    empty = tmp_path / "store-dir"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image\n")
    db = str(tmp_path / "results.db")
    code, _, err = run_cli(capsys, signatures, "batch", str(empty), "--db", db)
    assert code == 2
    assert f"batch: no disk image found in {empty}" in err
    assert len(err.strip().splitlines()) == 1


def test_policy_ignore_and_baseline_judge_every_image(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], signatures: Path
) -> None:
    store = make_store(images, tmp_path / "store", ("bare.raw",))
    db = str(tmp_path / "r.sqlite")
    base = ["batch", str(store), "--db", db, "-q", "--summary-format", "json"]

    def gates(*extra: str) -> tuple[int, list[tuple[str, str]]]:
        code, out, _ = run_cli(capsys, signatures, *base, *extra)
        return code, [(i["status"], i["gate"]) for i in summary_json(out)["images"]]

    assert gates() == (1, [("scanned", "fail")])  # bare.raw: a high and a medium finding
    # A baseline of today's findings accepts them in every image: from the store, no rescan.
    accepted = tmp_path / "accepted.json"
    code, _, _ = run_cli(
        capsys, signatures, "baseline", str(store / "bare.raw"), "-o", str(accepted)
    )
    assert code == 0
    assert gates("--baseline", str(accepted)) == (0, [("cached", "pass")])
    # An ignore file accepts by rule; one of the two rules leaves the other failing.
    code, out, _ = run_cli(capsys, signatures, "results", "show", str(store / "bare.raw"),
                           "--db", db, "--format", "json")  # fmt: skip
    rules = sorted({f["rule"] for f in json.loads(out)["findings"]})
    ignore = tmp_path / "ignore.toml"
    ignore.write_text(f'[[ignore]]\nrule = "{rules[0]}"\nreason = "reviewed"\n')
    assert gates("--ignore", str(ignore))[0] == (0 if len(rules) == 1 else 1)
    everything = tmp_path / "all.toml"
    everything.write_text(
        "".join(f'[[ignore]]\nrule = "{rule}"\nreason = "reviewed"\n' for rule in rules)
    )
    assert gates("--ignore", str(everything)) == (0, [("cached", "pass")])
    # A policy's fail_on applies unless --fail-on is given; a policy rule can fail anything.
    lenient = tmp_path / "lenient.toml"
    lenient.write_text('fail_on = "critical"\n')
    assert gates("--policy", str(lenient)) == (0, [("cached", "pass")])
    assert gates("--policy", str(lenient), "--fail-on", "medium")[0] == 1
    strict = tmp_path / "strict.toml"
    strict.write_text(
        'fail_on = "critical"\n[[rule]]\naction = "fail"\nseverity = "medium"\n'
        'reason = "no medium either"\n'
    )
    assert gates("--policy", str(strict)) == (1, [("cached", "fail")])
    # The reports it writes are judged the same way: accepted findings are listed as such.
    out_dir = tmp_path / "reports"
    run_cli(capsys, signatures, *base, "--ignore", str(everything), "--out-dir", str(out_dir))
    report_file = out_dir / "bare.raw.json"
    report = json.loads(report_file.read_text())
    assert report["findings"] == [] and len(report["suppressed"]) >= len(rules)
    assert list(scans_per_digest(Path(db)).values()) == [1]  # never scanned again
    # A typo in a rule id stops the batch before anything is read.
    typo = tmp_path / "typo.toml"
    typo.write_text('[[ignore]]\nrule = "no-such-rule"\nreason = "r"\n')
    code, _, err = run_cli(capsys, signatures, *base, "--ignore", str(typo))
    assert code == 2 and "unknown rule id 'no-such-rule'" in err


def test_out_dir_gets_an_index_for_people(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], signatures: Path
) -> None:
    import html.parser
    import urllib.parse

    store = make_store(images, tmp_path / "store", ("bare.raw",))
    shutil.copyfile(images / "bare.raw", store / "<b>odd name`|.raw")
    (store / "broken.qcow2").write_bytes(b"QFI\xfb" + bytes(1020))
    out_dir = tmp_path / "reports"
    code, _, _ = run_cli(
        capsys, signatures, "batch", str(store), "--db", str(tmp_path / "r.sqlite"),
        "--out-dir", str(out_dir), "-q",
    )  # fmt: skip
    assert code == 2  # broken.qcow2
    page = (out_dir / "index.html").read_text()
    assert "<b>odd" not in page and "&lt;b&gt;odd name`|.raw" in page
    assert "default-src 'none'" in page and "<script" not in page

    class Links(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.hrefs: list[str] = []
            self.gates: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found = dict(attrs)
            if tag == "a" and found.get("href"):
                self.hrefs.append(str(found["href"]))
            if tag == "tr" and found.get("data-gate"):
                self.gates.append(str(found["data-gate"]))

    links = Links()
    links.feed(page)
    assert links.gates == ["fail", "fail", "error"]  # failing first, then errors
    assert len(links.hrefs) == 2
    for href in links.hrefs:  # relative, and each opens the image's report
        report = json.loads((out_dir / urllib.parse.unquote(href)).read_text())
        assert report["schema"] == "imgscan.report/v1"
    markdown = (out_dir / "index.md").read_text()
    assert markdown.count("[report](") == 2 and "| error |" in markdown
    assert "odd name`|.raw" not in markdown  # inside a code span, the pipe escaped
