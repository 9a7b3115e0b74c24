"""Where reports go and what a pipeline gets in every case (issue 18, the gate): a report even
when the scan fails, outputs checked before the scan, several formats from one scan, `render`
from a saved JSON report, `-q`, and an image another process has locked."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from command import run_imgscan as run

FORMATS = ("json", "sarif", "markdown", "html", "table")


def test_failed_scan_still_writes_every_report(tmp_path: Path, images: Path) -> None:
    truncated = tmp_path / "truncated.qcow2"
    with (images / "server.qcow2").open("rb") as src:
        truncated.write_bytes(src.read(300_000))
    for image in (tmp_path / "missing.qcow2", truncated):
        out = tmp_path / f"reports-{image.stem}"
        proc = run("scan", image, "-f", ",".join(FORMATS), "--output-dir", out)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("imgscan: error:") == 1, proc.stderr
        error = proc.stderr.split("imgscan: error: ", 1)[1].strip()
        report = json.loads((out / f"{image.name}.json").read_text())
        assert report["error"] == error
        assert report["coverage"]["complete"] is False
        assert report["findings"] == [] and report["image"]["path"] == str(image)
        sarif = json.loads((out / f"{image.name}.sarif").read_text())
        invocation = sarif["runs"][0]["invocations"][0]
        assert invocation["executionSuccessful"] is False
        assert invocation["toolExecutionNotifications"][0]["message"]["text"].endswith(error)
        assert "scan failed" in (out / f"{image.name}.md").read_text()
        assert 'id="scan-error"' in (out / f"{image.name}.html").read_text()
        assert "Scan failed" in (out / f"{image.name}.txt").read_text()
    # To stdout: JSON for a program; the default table is left to the stderr line.
    proc = run("scan", tmp_path / "missing.qcow2", "-f", "json")
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"].endswith("no such file")
    proc = run("scan", tmp_path / "missing.qcow2")
    assert proc.returncode == 2 and proc.stdout == ""


def test_a_bad_input_file_also_gives_a_report(tmp_path: Path, images: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("fail_on = 'sometimes'\n")
    out = tmp_path / "r.sarif"
    proc = run("scan", images / "bare.raw", "--policy", policy, "-f", "sarif", "-o", out)
    assert proc.returncode == 2
    sarif = json.loads(out.read_text())
    assert sarif["runs"][0]["invocations"][0]["executionSuccessful"] is False


def test_outputs_are_checked_before_the_scan(tmp_path: Path, images: Path) -> None:
    for argv, needle in (
        (["-o", tmp_path / "no" / "such" / "r.json"], "does not exist"),
        (["-o", tmp_path], "is a directory"),
        (["--output-dir", tmp_path / "no" / "such"], "parent directory does not exist"),
        (["-f", "json,sarif"], "need --output-dir"),
        (["-f", "json,sarif", "-o", tmp_path / "r"], "need --output-dir"),
        (["-o", tmp_path / "r", "--output-dir", tmp_path], "not both"),
    ):
        started = time.monotonic()
        proc = run("scan", images / "server.qcow2", "-f", "json", *argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert needle in proc.stderr, (argv, proc.stderr)
        assert "finding(s)" not in proc.stderr  # refused before any scan
        assert time.monotonic() - started < 30
    proc = run("scan", images / "bare.raw", "-f", "yaml")
    assert proc.returncode == 2 and "unknown format yaml" in proc.stderr


def test_dash_is_stdout(tmp_path: Path, images: Path) -> None:
    proc = run("scan", images / "bare.raw", "-f", "json", "-o", "-", cwd=tmp_path)
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["image"]["format"] == "raw"
    assert not (tmp_path / "-").exists()


def test_one_scan_many_reports_and_render(tmp_path: Path, images: Path) -> None:
    image = images / "bare.raw"
    out = tmp_path / "out"
    proc = run("scan", image, "-f", "json,sarif,markdown,html", "--output-dir", out, "-q")
    assert proc.returncode == 1
    assert proc.stderr == ""  # -q: no summary line (and no warnings on this image)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["bare.raw.html", "bare.raw.json", "bare.raw.md", "bare.raw.sarif"]
    single = run("scan", image, "-f", "sarif")
    report = json.loads((out / "bare.raw.sarif").read_text())
    assert report["runs"][0]["results"] == json.loads(single.stdout)["runs"][0]["results"]
    # `render` turns the saved JSON report into each format exactly as the scan wrote it.
    again = tmp_path / "again"
    formats = "json,sarif,markdown,html"
    proc = run("render", out / "bare.raw.json", "-f", formats, "--output-dir", again)
    assert proc.returncode == 0, proc.stderr
    for name in names:
        assert (again / name).read_text() == (out / name).read_text(), name
    proc = run("render", out / "bare.raw.json", "-f", "table")
    assert proc.returncode == 0 and "Image:" in proc.stdout
    for bad, needle in (
        (tmp_path / "nope.json", "cannot read"),
        (out / "bare.raw.md", "not a JSON report"),
    ):
        proc = run("render", bad, "-f", "sarif")
        assert proc.returncode == 2 and needle in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    other = tmp_path / "other.json"
    other.write_text('{"schema": "something/v2"}')
    proc = run("render", other)
    assert proc.returncode == 2 and "not an imgscan report" in proc.stderr


def test_ignore_entries_are_checked_and_unused_ones_reported(tmp_path: Path, images: Path) -> None:
    typo = tmp_path / "typo.toml"
    typo.write_text('[[ignore]]\nrule = "aws-acess-key-id"\nreason = "typo"\n')
    proc = run("scan", images / "bare.raw", "--ignore", typo)
    assert proc.returncode == 2
    assert "ignore entry 1: unknown rule id 'aws-acess-key-id'" in proc.stderr
    stale = tmp_path / "stale.toml"
    stale.write_text('[[ignore]]\npath = "/no/such/place/**"\nreason = "moved away long ago"\n')
    proc = run("scan", images / "bare.raw", "--ignore", stale, "-f", "json")
    warnings = json.loads(proc.stdout)["warnings"]
    assert any("ignore entry 1 matched no finding (moved away long ago)" in w for w in warnings)
    assert "matched no finding" in proc.stderr


def test_image_in_use_is_said(tmp_path: Path, images: Path) -> None:
    image = tmp_path / "live.qcow2"
    shutil.copyfile(images / "demo.qcow2", image)
    quiet = run("scan", image, "-f", "json")
    assert "in_use" not in json.loads(quiet.stdout)["image"]
    # qemu-nbd serving the image writable locks it as a running VM's qemu does.
    server = subprocess.Popen(
        ["qemu-nbd", "--format=qcow2", f"--socket={tmp_path / 'nbd.sock'}", str(image)]
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "nbd.sock").exists():
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.1)
        proc = run("scan", image, "-f", "json,markdown", "--output-dir", tmp_path / "out")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert proc.returncode == 1
    assert "IMAGE IN USE" in proc.stderr
    report = json.loads((tmp_path / "out" / "live.qcow2.json").read_text())
    assert "lock" in report["image"]["in_use"]
    assert any("the image is in use" in w for w in report["warnings"])
    assert "**Image in use**" in (tmp_path / "out" / "live.qcow2.md").read_text()


def test_published_schemas(tmp_path: Path, images: Path) -> None:
    import jsonschema
    import pytest

    from imgscan.report.schema import validate

    for name, tag in (("report", "imgscan.report/v1"), ("summary", "imgscan.batch-summary/v1")):
        proc = run("schema", name)
        assert proc.returncode == 0
        schema = json.loads(proc.stdout)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["title"] == tag
    # run() validates what the run wrote: a report and a batch summary, both real.
    report = json.loads(run("scan", images / "demo.qcow2", "-f", "json").stdout)
    summary = tmp_path / "summary.json"
    proc = run(
        "batch", images / "bare.raw", "--db", tmp_path / "r.db", "--summary-format", "json",
        "-o", summary, "-q",
    )  # fmt: skip
    assert proc.returncode == 1 and json.loads(summary.read_text())["totals"]["images"] == 1
    # And a report that breaks its contract is caught.
    report["findings"][0]["severity"] = "severe"
    with pytest.raises(jsonschema.ValidationError):
        validate(report)
    del report["findings"][0]
    report["coverage"].pop("complete")
    with pytest.raises(jsonschema.ValidationError):
        validate(report)


def test_shell_completion(tmp_path: Path) -> None:
    proc = run("completion", "bash")
    assert proc.returncode == 0
    script = tmp_path / "imgscan.bash"
    script.write_text(proc.stdout)

    def complete(*words: str) -> list[str]:
        line = " ".join(["imgscan", *words])
        probe = (
            f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words)}; "
            'COMP_LINE="' + line + '"; _shtab_imgscan; printf "%s\\n" "${COMPREPLY[@]}"'
        )
        out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
        return out.stdout.split()

    commands = complete("''")
    assert {"scan", "batch", "results", "render", "schema", "completion"} <= set(commands)
    assert "batch-worker" not in commands  # internal: never offered
    assert "--output-dir" in complete("scan", "--out")
    assert run("completion", "zsh").stdout.startswith("#compdef imgscan")


def test_exclude_keeps_paths_out_and_says_so(tmp_path: Path, images: Path) -> None:
    image = images / "demo.qcow2"
    full = json.loads(run("scan", image, "-f", "json").stdout)
    under_srv = [f for f in full["findings"] if f["path"].startswith("/srv/")]
    assert under_srv
    out = tmp_path / "out"
    proc = run(
        "scan", image, "--exclude", "/srv/**", "--exclude", "**/*.nothing",
        "-f", "json,markdown,html,table", "--output-dir", out,
    )  # fmt: skip
    report = json.loads((out / "demo.qcow2.json").read_text())
    assert report["coverage"]["complete"] is True  # excluded by choice, not unread
    assert not [f for f in report["findings"] if f["path"].startswith("/srv/")]
    assert len(report["findings"]) == len(full["findings"]) - len(under_srv)
    srv, nothing = report["coverage"]["excluded"]
    assert srv["pattern"] == "/srv/**" and srv["files"] > 0 and srv["bytes"] > 0
    assert (nothing["pattern"], nothing["files"]) == ("**/*.nothing", 0)
    assert report["stats"]["files"] == full["stats"]["files"] - srv["files"]
    assert f"{srv['files']} file(s) excluded by --exclude" in proc.stderr
    assert "/srv/**" in (out / "demo.qcow2.md").read_text()
    assert 'id="excluded"' in (out / "demo.qcow2.html").read_text()
    assert "excluded by --exclude /srv/**" in (out / "demo.qcow2.txt").read_text()


INHOUSE_RULE = """\
[[rules]]
id = "acme-deploy-token"
name = "ACME internal deploy token"
category = "token"
severity = "high"
keywords = ["acmedt_"]
pattern = '''(?P<secret>acmedt_[A-Za-z0-9]{32})'''
comment = "ACME's own deploy tokens: acmedt_ and 32 letters and digits."
examples = ["token: acmedt_{{rand:alnum:32}}"]
negative_examples = ["acmedt_short"]
"""


def test_rules_extend_the_builtin_pack(tmp_path: Path) -> None:
    import secrets
    import string

    token = "acmedt_" + "".join(secrets.choice(string.ascii_letters) for _ in range(32))
    tree = tmp_path / "tree" / "etc" / "acme"
    tree.mkdir(parents=True)
    (tree / "deploy.conf").write_text(f"token = {token}\n")
    image = tmp_path / "acme.raw"
    subprocess.run(
        ["mke2fs", "-q", "-t", "ext4", "-d", str(tmp_path / "tree"), str(image), "4M"], check=True
    )
    extra = tmp_path / "rules"
    (extra / "patterns").mkdir(parents=True)
    (extra / "patterns" / "inhouse.toml").write_text(INHOUSE_RULE)
    assert run("scan", image).returncode == 0  # the built-in pack knows no such token
    proc = run("scan", image, "--rules", extra, "-f", "json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert [(f["rule"], f["path"]) for f in report["findings"]] == [
        ("acme-deploy-token", "/etc/acme/deploy.conf")
    ]
    builtin = json.loads(run("scan", image, "-f", "json").stdout)["tool"]["rules"]
    assert report["tool"]["rules"] != builtin  # the extended pack has a version of its own
    # A policy or ignore entry may name the added rule.
    ignore = tmp_path / "ignore.toml"
    ignore.write_text('[[ignore]]\nrule = "acme-deploy-token"\nreason = "lab token"\n')
    assert run("scan", image, "--rules", extra, "--ignore", ignore).returncode == 0
    # An id the pack already has is refused, as is a broken rule.
    (extra / "patterns" / "clash.toml").write_text(
        INHOUSE_RULE.replace("acme-deploy-token", "aws-access-key-id")
    )
    proc = run("scan", image, "--rules", extra)
    assert proc.returncode == 2 and "'aws-access-key-id' is already in the rule pack" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_timed_out_scan_reports_its_error(tmp_path: Path, images: Path) -> None:
    out = tmp_path / "r.sarif"
    proc = run("scan", images / "server.qcow2", "--timeout", "1", "-f", "sarif", "-o", out)
    assert proc.returncode == 2
    assert "(--timeout); stopped" in proc.stderr
    invocation = json.loads(out.read_text())["runs"][0]["invocations"][0]
    assert invocation["executionSuccessful"] is False
    assert "(--timeout)" in invocation["toolExecutionNotifications"][0]["message"]["text"]


def test_report_times_and_image_digest(tmp_path: Path, images: Path) -> None:
    import hashlib

    image = images / "bare.raw"
    plain = json.loads(run("scan", image, "-f", "json").stdout)
    assert "sha256" not in plain["image"]  # a full read of the image only when asked
    started, finished = plain["stats"]["started_at"], plain["stats"]["finished_at"]
    assert started.endswith("Z") and started <= finished
    out = tmp_path / "out"
    proc = run("scan", image, "--image-digest", "-f", "json,html,table", "--output-dir", out)
    assert proc.returncode == 1
    report = json.loads((out / "bare.raw.json").read_text())
    digest = "sha256:" + hashlib.sha256(image.read_bytes()).hexdigest()
    assert report["image"]["sha256"] == digest  # what sha256sum prints
    assert digest in (out / "bare.raw.html").read_text()
    table = (out / "bare.raw.txt").read_text()
    assert (
        digest in table.replace("\n  ", " ") and f"Scanned {report['stats']['started_at']}" in table
    )
    assert run("scan", tmp_path / "gone.raw", "--image-digest").returncode == 2
