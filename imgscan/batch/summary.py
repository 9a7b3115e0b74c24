"""The summary of a batch (or of the store): one row per image, with its exposures, as a table,
JSON (`imgscan.batch-summary/v1`: fields may be added, none renamed or removed) or CSV.

Renderers are pure and deterministic (rows sorted by path). Nothing here shows a secret: the
store never holds one, and exposures are kind, target, principal and severity.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from imgscan import build
from imgscan.batch.store import Record
from imgscan.model import Severity

SCHEMA = "imgscan.batch-summary/v1"
SUMMARY_FORMATS = ("table", "json", "csv")


@dataclass(frozen=True)
class SummaryRow:
    """One image: `status` says what the batch did (scanned, cached, error, interrupted) or,
    for `imgscan results`, the stored state (done, error, running); `record` is its stored
    result (None when it has none); `report` the report file written for it, if any."""

    path: str
    status: str
    digest: str | None = None
    record: Record | None = None
    error: str | None = None
    report: str | None = None
    # How many findings fail the image's gate as a policy, baseline or ignore file judged its
    # stored report (None: judged by `fail_on` over the stored counts alone).
    failing: int | None = None

    def gate(self, fail_on: Severity) -> str:
        """pass, fail (a finding at or above `fail_on`, or one the policy fails), incomplete
        (coverage), error (not scanned: could not be opened, or no finished result)."""
        record = self.record
        if self.error or record is None or record.state != "done":
            return "error"
        if not record.complete:
            return "incomplete"
        if self.failing is not None:
            return "fail" if self.failing else "pass"
        return "fail" if record.fails(fail_on) else "pass"


def _kinds(record: Record | None) -> str:
    if record is None:
        return ""
    counts = Counter(e["kind"] for e in record.exposures)
    return " ".join(f"{kind}:{n}" if n > 1 else kind for kind, n in sorted(counts.items()))


def summary_error(row: SummaryRow) -> str | None:
    """The one-line error of a row (its own, or its stored result's), or None."""
    if row.error:
        return row.error
    if row.record is not None and row.record.state == "error":
        return row.record.error
    if row.status in ("interrupted", "running"):
        return "not scanned to the end (the batch was stopped); the next batch scans it"
    return None


def _sorted(rows: Sequence[SummaryRow]) -> list[SummaryRow]:
    return sorted(rows, key=lambda r: (r.path, r.digest or ""))


def render_summary(
    rows: Sequence[SummaryRow],
    fmt: str,
    fail_on: Severity,
    pack_version: str = "",
    history: bool = False,
) -> str:
    """The summary in `fmt` (table, json or csv). `history` (`results list`): the table also
    shows when each result was made and by which imgscan and rule pack (JSON and CSV always
    carry both)."""
    if fmt == "json":
        return _json(rows, fail_on, pack_version)
    if fmt == "csv":
        return _csv(rows, fail_on)
    return _table(rows, fail_on, history)


def _json(rows: Sequence[SummaryRow], fail_on: Severity, pack_version: str) -> str:
    images: list[dict[str, Any]] = []
    for row in _sorted(rows):
        record = row.record
        done = record is not None and record.state == "done"
        counts = {s.value: record.counts[s] for s in Severity} if done and record else None
        images.append(
            {
                "path": row.path,
                "status": row.status,
                "digest": row.digest or (record.key.digest if record else None),
                "gate": row.gate(fail_on),
                "complete": record.complete if done and record else None,
                "findings": counts,
                "exposures": list(record.exposures) if done and record else [],
                "files": record.files if done and record else None,
                "bytes": record.bytes if done and record else None,
                "seconds": record.seconds if done and record else None,
                "format": record.format if done and record else None,
                "tool_version": record.key.tool_version if record else None,
                "rule_pack": record.key.pack_version if record else None,
                "scanned_at": record.finished_at if record else None,
                "report": row.report,
                "error": summary_error(row),
            }
        )
    gates = Counter(image["gate"] for image in images)
    data = {
        "schema": SCHEMA,
        "tool": {"name": "imgscan", "version": build.tool_version()},
        "rule_pack": pack_version or None,
        "fail_on": fail_on.value,
        "totals": {
            "images": len(images),
            **{gate: gates.get(gate, 0) for gate in ("pass", "fail", "incomplete", "error")},
            "exposures": sum(len(image["exposures"]) for image in images),
        },
        "images": images,
    }
    return json.dumps(data, indent=2, ensure_ascii=True) + "\n"


_CSV_COLUMNS = (
    "path",
    "status",
    "gate",
    "digest",
    "complete",
    *(s.value for s in Severity),
    "exposures",
    "exposure_kinds",
    "report",
    "error",
    "scanned_at",
    "tool_version",
    "rule_pack",
)


def _csv(rows: Sequence[SummaryRow], fail_on: Severity) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for row in _sorted(rows):
        record = row.record
        done = record is not None and record.state == "done"
        writer.writerow(
            [
                row.path,
                row.status,
                row.gate(fail_on),
                row.digest or (record.key.digest if record else ""),
                "" if not done or record is None else str(bool(record.complete)).lower(),
                *((record.counts[s] if done and record else "") for s in Severity),
                len(record.exposures) if done and record else "",
                _kinds(record) if done else "",
                row.report or "",
                summary_error(row) or "",
                (record.finished_at or "") if record else "",
                record.key.tool_version if record else "",
                record.key.pack_version if record else "",
            ]
        )
    return out.getvalue()


def _table(rows: Sequence[SummaryRow], fail_on: Severity, history: bool = False) -> str:
    header: tuple[str, ...] = ("IMAGE", "STATUS", "GATE", "FINDINGS C/H/M/L/I", "EXPOSURES")
    if history:
        header += ("SCANNED", "IMGSCAN", "RULES")
    lines: list[tuple[str, ...]] = []
    notes: list[str] = []
    for row in _sorted(rows):
        record = row.record
        done = record is not None and record.state == "done"
        counts = "/".join(str(record.counts[s]) for s in Severity) if done and record else "-"
        line: tuple[str, ...] = (
            _printable(row.path),
            row.status,
            row.gate(fail_on),
            counts,
            _kinds(record) if done else "-",
        )
        if history:
            line += (
                (record.finished_at or "-") if record else "-",
                record.key.tool_version if record else "-",
                record.key.pack_version if record else "-",
            )
        lines.append(line)
        error = summary_error(row)
        if error:
            # Scan errors name the image already (`PATH: reason`), as `scan` prints them.
            shown = error if error.startswith(row.path + ":") else f"{row.path}: {error}"
            notes.append(f"  {_printable(shown)}")
    widths = [max(len(line[i]) for line in (header, *lines)) for i in range(len(header))]
    text = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip()
        for line in (header, *lines)
    ]
    gates = Counter(row.gate(fail_on) for row in rows)
    text.append("")
    text.append(
        f"{len(rows)} image(s): "
        + ", ".join(f"{gates.get(g, 0)} {g}" for g in ("pass", "fail", "incomplete", "error"))
        + f" (fail-on {fail_on.value})"
    )
    if notes:
        text.append("errors:")
        text.extend(notes)
    return "\n".join(text) + "\n"


def _printable(text: str) -> str:
    """Escape control characters: a hostile file name must not drive the terminal."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
