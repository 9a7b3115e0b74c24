"""The default table: exposures first, findings grouped, 80 columns, escaped, no values."""

from __future__ import annotations

import json
import re
from pathlib import Path

from expect import IDENTIFIER_RULES
from test_cli import run

from imgscan.report.table import WIDTH


def test_server_image_table_reads_in_80_columns(images: Path) -> None:
    proc = run("scan", images / "server.qcow2")
    report = json.loads(run("scan", images / "server.qcow2", "--format", "json").stdout)
    lines = proc.stdout.splitlines()
    # Only a single word longer than the width (a path kept whole to be copied) may overflow.
    assert [line for line in lines if len(line) > WIDTH and " " in line.strip()] == []
    assert lines[0] == f"What a copy of this image grants ({len(report['exposures'])}):"
    findings = lines.index(f"Findings ({len(report['findings'])}):")
    groups = [re.fullmatch(r"([A-Z]+) \((\d+)\)", line) for line in lines[findings + 1 :]]
    counts = {m[1].lower(): int(m[2]) for m in groups if m}
    want: dict[str, int] = {}
    for f in report["findings"]:
        want[f["severity"]] = want.get(f["severity"], 0) + 1
    assert counts == want
    # Exposure targets and principals as the JSON has them; previews, never values.
    assert "postgresql://db.internal:5432/hr, as hr_app" in proc.stdout
    assert "  /etc/machine-id" in lines and "      -  machine-id  file of 33 bytes" in lines
    secrets = run("scan", images / "server.qcow2", "--show-secrets", "--format", "json")
    found = json.loads(secrets.stdout)["findings"]
    assert len([f for f in found if f.get("secret")]) == len(report["findings"]) - 2  # file rules
    values = [f["secret"] for f in found if f.get("secret") and f["rule"] not in IDENTIFIER_RULES]
    for value in values:
        assert value not in proc.stdout
