"""A Markdown summary short enough for a merge-request or image-registry comment.

The verdict line first (findings by severity, coverage), then what a copy of the image grants
(the exposures, at most MAX_ROWS), then the most severe findings as a table (at most MAX_ROWS),
then what was not read. Strings from the image (paths, rule-given
text) go into code spans whose fence is longer than any backtick run inside them, with table
pipes escaped, so a hostile file name can neither break the table nor inject Markdown or HTML.
Values are never shown, not even with --show-secrets: a comment is read by many people.
"""

from __future__ import annotations

import re

from imgscan.model import ScanResult
from imgscan.report.interface import printable

MAX_ROWS = 20


def _code(text: str) -> str:
    """`text` as an inline code span that survives any content, table cells included."""
    text = printable(text).replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def render_markdown(result: ScanResult) -> str:
    detail = ", ".join(f"{n} {s.value}" for s, n in result.severity_counts().items() if n)
    coverage = (
        "coverage complete"
        if result.complete
        else f"**coverage incomplete** ({result.unread_volumes} volume(s) not read, "
        f"{len(result.skipped)} file(s) skipped)"
    )
    image = result.image.path.rsplit("/", 1)[-1]
    if result.error is not None:
        return (
            f"### imgscan: {_code(image)}: **scan failed**, nothing was read\n\n"
            f"{_code(result.error)}\n"
        )
    lines = [
        f"### imgscan: {_code(image)}: {len(result.findings)} finding(s)"
        + (f" ({detail})" if detail else "")
        + f", {coverage}",
        "",
    ]
    if result.image.in_use is not None:
        lines += [
            f"**Image in use**: another process holds {result.image.in_use} on it (a running "
            "VM); its file systems may be mid-change.",
            "",
        ]
    if result.gate is not None:
        policy = f", policy {_code(result.gate.policy)}" if result.gate.policy else ""
        lines += [
            f"Gate: **{len(result.gate.failing)} finding(s) fail** "
            f"(fail-on {result.gate.fail_on.value}{policy})",
            "",
        ]
    if result.os is not None:
        about = result.os.name or result.os.distro or result.os.type
        lines += [f"OS: {_code(about)}, host name {_code(result.os.hostname or '?')}", ""]
    if result.exposures:
        lines += ["What a copy of this image grants:", ""]
        lines += ["| Severity | Kind | Target | As |", "|---|---|---|---|"]
        for e in result.exposures[:MAX_ROWS]:
            who = _code(e.principal) if e.principal else ""
            lines.append(f"| {e.severity.value} | {e.kind} | {_code(e.target)} | {who} |")
        if len(result.exposures) > MAX_ROWS:
            lines.append(f"| | and {len(result.exposures) - MAX_ROWS} more | | |")
        lines.append("")
    findings = sorted(result.findings, key=lambda f: (-f.severity.rank, f.sort_key()))
    if findings:
        lines += ["| Severity | Rule | Location | Check |", "|---|---|---|---|"]
        for f in findings[:MAX_ROWS]:
            where = _code(f"{f.path}:{f.line}")
            check = f.validation.status.value
            if f.package is not None:
                check += f"; {_code(f.package.describe())}"
            lines.append(f"| {f.severity.value} | {_code(f.rule)} | {where} | {check} |")
        if len(findings) > MAX_ROWS:
            lines.append(f"| | and {len(findings) - MAX_ROWS} more | | |")
        lines.append("")
    unread = [v for v in result.volumes if not v.covered]
    if unread or result.skipped:
        lines.append("Not read:")
        for v in unread:
            lines.append(f"- volume {_code(v.device)}: {_code(v.reason or v.status.value)}")
        for s in result.skipped[:MAX_ROWS]:
            lines.append(f"- file {_code(s.path)}: {_code(s.reason)}")
        if len(result.skipped) > MAX_ROWS:
            lines.append(f"- and {len(result.skipped) - MAX_ROWS} more file(s)")
        lines.append("")
    if any(e.files for e in result.excluded):
        lines.append("Excluded by the scan's `--exclude` (not read, by choice):")
        lines += [
            f"- {_code(e.pattern)}: {e.files} file(s), {e.bytes} bytes" for e in result.excluded
        ]
        lines.append("")
    if result.suppressed:
        lines += [f"{len(result.suppressed)} accepted finding(s) suppressed.", ""]
    return "\n".join(lines)
