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


def code_span(text: str) -> str:
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
            f"### imgscan: {code_span(image)}: **scan failed**, nothing was read\n\n"
            f"{code_span(result.error)}\n"
        )
    lines = [
        f"### imgscan: {code_span(image)}: {len(result.findings)} finding(s)"
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
        policy = f", policy {code_span(result.gate.policy)}" if result.gate.policy else ""
        lines += [
            f"Gate: **{len(result.gate.failing)} finding(s) fail** "
            f"(fail-on {result.gate.fail_on.value}{policy})",
            "",
        ]
    if result.os is not None:
        about = result.os.name or result.os.distro or result.os.type
        lines += [f"OS: {code_span(about)}, host name {code_span(result.os.hostname or '?')}", ""]
    if result.exposures:
        lines += ["What a copy of this image grants:", ""]
        lines += ["| Severity | Kind | Target | As |", "|---|---|---|---|"]
        for e in result.exposures[:MAX_ROWS]:
            who = code_span(e.principal) if e.principal else ""
            lines.append(f"| {e.severity.value} | {e.kind} | {code_span(e.target)} | {who} |")
        if len(result.exposures) > MAX_ROWS:
            lines.append(f"| | and {len(result.exposures) - MAX_ROWS} more | | |")
        lines.append("")
    findings = sorted(result.findings, key=lambda f: (-f.severity.rank, f.sort_key()))
    if findings:
        lines += ["| Severity | Rule | Location | Check |", "|---|---|---|---|"]
        for f in findings[:MAX_ROWS]:
            where = code_span(f"{f.path}:{f.line}")
            check = f.validation.status.value
            if f.package is not None:
                check += f"; {code_span(f.package.describe())}"
            lines.append(f"| {f.severity.value} | {code_span(f.rule)} | {where} | {check} |")
        if len(findings) > MAX_ROWS:
            lines.append(f"| | and {len(findings) - MAX_ROWS} more | | |")
        lines.append("")
    unread = [v for v in result.volumes if not v.covered]
    if unread or result.skipped:
        lines.append("Not read:")
        for v in unread:
            lines.append(f"- volume {code_span(v.device)}: {code_span(v.reason or v.status.value)}")
        for s in result.skipped[:MAX_ROWS]:
            lines.append(f"- file {code_span(s.path)}: {code_span(s.reason)}")
        if len(result.skipped) > MAX_ROWS:
            lines.append(f"- and {len(result.skipped) - MAX_ROWS} more file(s)")
        lines.append("")
    if any(e.files for e in result.excluded):
        lines.append("Excluded by the scan's `--exclude` (not read, by choice):")
        lines += [
            f"- {code_span(e.pattern)}: {e.files} file(s), {e.bytes} bytes" for e in result.excluded
        ]
        lines.append("")
    if result.suppressed:
        lines += [f"{len(result.suppressed)} accepted finding(s) suppressed.", ""]
    return "\n".join(lines)
