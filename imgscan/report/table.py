"""The default report: text a person reads in an 80-column terminal.

What a copy of the image grants comes first (one block per exposure: severity, kind, target
and principal, then what to do), then the findings grouped by severity and, within a severity,
by file (line, rule, redacted preview), then the image, the OS and the coverage. Lines are
wrapped at WIDTH columns except where one word is longer (a long path stays whole, so it can
be copied). Every string from the image goes through `printable`.
"""

from __future__ import annotations

import textwrap
from itertools import groupby

from imgscan.exposures import sysprep_command
from imgscan.model import Finding, ScanResult, Severity, VolumeStatus
from imgscan.report.interface import printable

WIDTH = 80
_EXPOSURE_INDENT = " " * 23  # under the target: 2 + severity (9) + 1 + kind (10) + 1


def _wrap(text: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )


def render_table(result: ScanResult) -> str:
    if result.error is not None:
        return (
            "\n".join(
                _wrap(f"Scan failed, nothing was read: {printable(result.error)}", "", "  ")
                + _wrap(f"Image: {printable(result.image.path)}", "", "  ")
            )
            + "\n"
        )
    lines = _exposure_lines(result)
    lines += _finding_lines(result.findings)
    lines.append("")
    lines += _wrap(
        f"Image: {printable(result.image.path)} ({result.image.format}, "
        f"{result.image.virtual_size} bytes), reader: {result.reader.name}"
        + (f" ({result.reader.accel})" if result.reader.accel else "")
        + (f", {result.image.sha256}" if result.image.sha256 else ""),
        "",
        "  ",
    )
    if result.stats.started_at:
        lines.append(f"Scanned {result.stats.started_at} to {result.stats.finished_at}")
    if result.os is not None:
        about = result.os.name or " ".join(filter(None, (result.os.distro, result.os.version)))
        users = ", ".join(printable(u.name) for u in result.os.users)
        lines += _wrap(
            f"OS: {printable(about or result.os.type)}, hostname "
            f"{printable(result.os.hostname or '?')}, users: {users or '-'}",
            "",
            "  ",
        )
    if result.image.in_use is not None:
        lines += _wrap(
            f"IMAGE IN USE: another process holds {result.image.in_use} on it (a running VM); "
            "its file systems may be mid-change",
            "",
            "  ",
        )
    lines.extend(_volume_lines(result))
    for e in result.excluded:
        lines += _wrap(
            f"excluded by --exclude {printable(e.pattern)}: {e.files} file(s), {e.bytes} bytes",
            "  ",
            "    ",
        )
    for s in result.skipped:
        lines += _wrap(f"skipped {printable(s.path)}: {printable(s.reason)}", "  ", "    ")
    if result.suppressed:
        lines.append(f"Suppressed ({len(result.suppressed)}), not counted by the gate:")
        for sup in result.suppressed:
            lines += _wrap(
                f"{sup.rule}  {printable(f'{sup.path}:{sup.line}')}  ({printable(sup.by)})",
                "  ",
                "    ",
            )
    return "\n".join(lines) + "\n"


def _exposure_lines(result: ScanResult) -> list[str]:
    """What a copy grants, first: a block per exposure, then the virt-sysprep command."""
    if not result.exposures:
        return []
    lines = [f"What a copy of this image grants ({len(result.exposures)}):"]
    for e in result.exposures:
        who = f", as {printable(e.principal)}" if e.principal else ""
        head = f"  {e.severity.value.upper():9s} {e.kind:10s} "
        lines += _wrap(printable(e.target) + who, head, _EXPOSURE_INDENT)
        count = len(e.evidence)
        lines += _wrap(
            f"{e.remediation} ({count} finding{'s' if count != 1 else ''})",
            _EXPOSURE_INDENT + "-> ",
            _EXPOSURE_INDENT + "   ",
        )
    command = sysprep_command(result.image.path, result.exposures)
    if command:
        lines.append("  virt-sysprep removes part of it:")
        lines += _wrap(printable(command), "    ", "      ")
    lines.append("")
    return lines


def _finding_lines(findings: tuple[Finding, ...]) -> list[str]:
    """Findings by severity, then by file: `line  rule  preview` under each path."""
    if not findings:
        return ["No secrets found."]
    lines = [f"Findings ({len(findings)}):"]
    ordered = sorted(findings, key=lambda f: (-f.severity.rank, f.sort_key()))
    for severity, same_severity in groupby(ordered, key=lambda f: f.severity):
        group = list(same_severity)
        lines.append(f"{Severity(severity).value.upper()} ({len(group)})")
        for path, in_file in groupby(group, key=lambda f: f.path):
            lines += _wrap(printable(path), "  ", "    ")
            for f in in_file:
                line = str(f.line) if f.line else "-"  # 0: a file rule, the whole file
                if f.secret is not None and "\n" in f.secret.strip("\n"):
                    # A PEM key and other multi-line values: as the block they are, each line
                    # escaped on its own, not one line of \x0a.
                    lines += _wrap(f"{line:>5}  {f.rule}", "  ", "          ")
                    lines += [
                        "          | " + printable(part)
                        for part in f.secret.strip("\n").splitlines()
                    ]
                else:
                    value = printable(f.secret) if f.secret is not None else f.preview
                    lines += _wrap(f"{line:>5}  {f.rule}  {value}", "  ", "          ")
                if f.package is not None:
                    owner = f"[{printable(f.package.describe())}]"
                    lines += _wrap(owner, "          ", "          ")
    return lines


def _volume_lines(result: ScanResult) -> list[str]:
    """One aligned line per volume: device, fstype, mountpoint, files, status and reason."""
    rows: list[tuple[str, str, str, str, str]] = []
    for v in result.volumes:
        state = v.status.value
        if v.status is not VolumeStatus.SCANNED and v.reason:
            state += f": {printable(v.reason)}"
        where = printable(v.mountpoint) if v.mountpoint else "-"
        mounted = [(p, m) for p, m in v.subvolumes if m and not m.startswith("/@dev/")]
        if mounted:
            where += " (" + ", ".join(f"{printable(p)} at {printable(m)}" for p, m in mounted) + ")"
        rows.append((printable(v.device), v.fstype or "?", where, f"{v.files} files", state))
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["Volumes:"]
    for row in rows:
        text = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
        lines += _wrap(text, "  ", "      ")
    return lines
