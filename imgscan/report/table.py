"""The default report: a table a person reads in a terminal, findings first, then coverage."""

from __future__ import annotations

from imgscan.exposures import sysprep_command
from imgscan.model import ScanResult, VolumeStatus
from imgscan.report.interface import printable


def render_table(result: ScanResult) -> str:
    lines: list[str] = _exposure_lines(result)
    if result.findings:
        rows = [
            (
                f.severity.value.upper(),
                f.rule,
                printable(f"{f.path}:{f.line}"),
                printable(f.secret) if f.secret is not None else f.preview,
            )
            for f in sorted(result.findings, key=lambda f: (-f.severity.rank, f.sort_key()))
        ]
        header = (
            "SEVERITY",
            "RULE",
            "LOCATION",
            "SECRET" if result.findings[0].secret is not None else "PREVIEW",
        )
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
        for row in [header, *rows]:
            lines.append(
                "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3]
            )
    else:
        lines.append("No secrets found.")
    lines.append("")
    lines.append(
        f"Image: {printable(result.image.path)} ({result.image.format}, "
        f"{result.image.virtual_size} bytes), reader: {result.reader.name}"
        + (f" ({result.reader.accel})" if result.reader.accel else "")
    )
    if result.os is not None:
        about = result.os.name or " ".join(filter(None, (result.os.distro, result.os.version)))
        users = ", ".join(printable(u.name) for u in result.os.users)
        lines.append(
            f"OS: {printable(about or result.os.type)}, hostname "
            f"{printable(result.os.hostname or '?')}, users: {users or '-'}"
        )
    lines.extend(_volume_lines(result))
    for s in result.skipped:
        lines.append(f"  skipped {printable(s.path)}: {printable(s.reason)}")
    if result.suppressed:
        lines.append(f"Suppressed ({len(result.suppressed)}), not counted by the gate:")
        for sup in result.suppressed:
            lines.append(
                f"  {sup.rule}  {printable(f'{sup.path}:{sup.line}')}  ({printable(sup.by)})"
            )
    return "\n".join(lines) + "\n"


def _exposure_lines(result: ScanResult) -> list[str]:
    """What a copy grants, first: one line per exposure, then the virt-sysprep command."""
    if not result.exposures:
        return []
    lines = ["What a copy of this image grants:"]
    for e in result.exposures:
        who = f" as {printable(e.principal)}" if e.principal else ""
        count = len(e.evidence)
        lines.append(
            f"  {e.severity.value.upper():8s} {e.kind:10s} {printable(e.target)}{who}"
            f"  ({count} finding{'s' if count != 1 else ''}): {e.remediation}"
        )
    command = sysprep_command(result.image.path, result.exposures)
    if command:
        lines.append(f"  virt-sysprep removes part of it: {printable(command)}")
    lines.append("")
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
    return [
        "  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
        for row in rows
    ]
