"""The documented library API (`imgscan.scan_image`) from a plain script, as a user writes one:
no `if __name__ == "__main__":` guard, workers and all, and the same findings as the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from command import run_imgscan

SCRIPT = """\
import json, sys
import imgscan
from imgscan.errors import ImgscanError
from imgscan.report.json import to_dict

result = imgscan.scan_image(sys.argv[1], reader="native", jobs=2)
report = to_dict(result)
try:
    imgscan.scan_image(sys.argv[1] + ".missing")
except ImgscanError as exc:
    report["missing"] = str(exc)
try:
    imgscan.scan_image(sys.argv[1], colour="blue")
except TypeError as exc:
    report["typo"] = str(exc)
print(json.dumps(report))
"""


def test_scan_from_a_plain_script(tmp_path: Path, images: Path) -> None:
    script = tmp_path / "audit.py"
    script.write_text(SCRIPT)
    image = images / "demo.qcow2"
    proc = subprocess.run(
        [sys.executable, str(script), str(image)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["coverage"]["complete"] is True
    assert report["missing"].endswith("no such file")
    assert "colour" in report["typo"]
    cli = json.loads(run_imgscan("scan", image, "--reader", "native", "-f", "json").stdout)

    def found(r: dict[str, object]) -> list[tuple[object, ...]]:
        items = r["findings"]
        assert isinstance(items, list)
        return sorted((f["path"], f["rule"], f["line"], f["fingerprint"]) for f in items)

    assert found(report) == found(cli) and len(found(cli)) >= 30
