"""SARIF 2.1.0: validates against the official schema, on a real scan and on hostile input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import sarif_schema
from expect import IDENTIFIER_RULES
from test_cli import run

from imgscan.model import (
    Finding,
    ImageInfo,
    ReaderInfo,
    RuleDoc,
    ScanResult,
    Severity,
    Skipped,
    Stats,
    Suppressed,
    Volume,
    VolumeStatus,
    fingerprint,
)
from imgscan.report.sarif import guest_uri, render_sarif


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft4Validator:
    schema = sarif_schema.sarif_schema()
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def _errors(validator: jsonschema.Draft4Validator, document: Any) -> list[str]:
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(document)]


def test_a_real_scan_validates(
    images: Path, manifest: dict[str, Any], validator: jsonschema.Draft4Validator
) -> None:
    proc = run("scan", images / "server.qcow2", "--format", "sarif")
    assert proc.returncode == 1, proc.stderr
    sarif = json.loads(proc.stdout)
    assert _errors(validator, sarif) == []
    (run_,) = sarif["runs"]
    rules = {r["id"] for r in run_["tool"]["driver"]["rules"]}
    assert {r["ruleId"] for r in run_["results"]} == rules
    assert all(r["partialFingerprints"]["imgscan/fp1"].startswith("fp1:") for r in run_["results"])
    assert run_["invocations"][0]["executionSuccessful"] is True
    # No value without --show-secrets.
    for planted in manifest["server-qcow2"]["planted"]:
        if planted["kind"] in IDENTIFIER_RULES:
            continue  # shown whole: not a secret
        value = planted["secret"]
        assert (value if len(value) < 64 else value[-48:]) not in proc.stdout


def test_hostile_names_suppressions_and_gaps_validate(
    validator: jsonschema.Draft4Validator,
) -> None:
    hostile = "/srv/we ird#?%\n\x1b[2J<script>.env"
    finding = Finding(
        "generic-password-unquoted",
        "password",
        Severity.MEDIUM,
        hostile,
        4,
        "…(12)",
        fingerprint("generic-password-unquoted", hostile, b"x"),
    )
    result = ScanResult(
        ImageInfo("disk.qcow2", "qcow2", 1 << 20),
        ReaderInfo("native"),
        (Volume("/dev/sda2", None, None, VolumeStatus.UNSUPPORTED, "no filesystem recognised"),),
        (Skipped("C:\\Users\\x\\big file.vhd", "larger than the size limit"),),
        (finding,),
        Stats(1, 10, 0.1),
        suppressed=(
            Suppressed("generic-password-unquoted", "/etc/app.conf", 0, "fp1:abc", "baseline"),
        ),
        rules=(
            RuleDoc("generic-password-unquoted", "Password", "password", Severity.MEDIUM, "why"),
        ),
    )
    sarif = json.loads(render_sarif(result))
    assert _errors(validator, sarif) == []
    (run_,) = sarif["runs"]
    assert run_["invocations"][0]["executionSuccessful"] is False
    uris = [
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in run_["results"]
    ]
    assert uris[0] == guest_uri(hostile) and "\n" not in uris[0] and " " not in uris[0]
    assert run_["results"][1]["suppressions"] == [{"kind": "external", "justification": "baseline"}]
    texts = [n["message"]["text"] for n in run_["invocations"][0]["toolExecutionNotifications"]]
    assert "volume /dev/sda2 not read: no filesystem recognised" in texts
    assert guest_uri("C:\\Users\\x\\big file.vhd") == "/C:/Users/x/big%20file.vhd"
