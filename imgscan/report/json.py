"""The JSON report, schema `imgscan.report/v1`: an interface other tools rely on. Fields may be
added; none is renamed or removed."""

from __future__ import annotations

import json
from typing import Any

from imgscan import __version__, build
from imgscan.exposures import sysprep_command
from imgscan.model import Package, ScanResult

SCHEMA = "imgscan.report/v1"


def to_dict(result: ScanResult) -> dict[str, Any]:
    """The report as plain JSON-ready data. `secret` appears only if the scan captured it."""
    findings = []
    for f in result.findings:
        item: dict[str, Any] = {
            "rule": f.rule,
            "category": f.category,
            "severity": f.severity.value,
            "path": f.path,
            "line": f.line,
            "preview": f.preview,
            "fingerprint": f.fingerprint,
            "validation": {
                "status": f.validation.status.value,
                "checks": [
                    {"check": c.name, "result": c.result.value, "detail": c.detail}
                    for c in f.validation.checks
                ],
            },
        }
        item["context"] = dict(f.context)
        if f.package is not None:
            # Only for a file a package record lists, like `secret` only when captured: a
            # finding's keys stay what they were for files no package installed.
            item["package"] = package_dict(f.package)
        if f.secret is not None:
            item["secret"] = f.secret
        findings.append(item)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        # `code` and `rules` identify the build (imgscan/build.py); `version` is the release.
        "tool": {
            "name": "imgscan",
            "version": __version__,
            "code": build.current().code,
            "rules": result.pack_version,
        },
        "image": {
            "path": result.image.path,
            "format": result.image.format,
            "virtual_size": result.image.virtual_size,
            # Only when another process had the image locked (a running VM).
            **({"in_use": result.image.in_use} if result.image.in_use is not None else {}),
            # Only when asked for (--image-digest: a full read of the image).
            **({"sha256": result.image.sha256} if result.image.sha256 is not None else {}),
        },
        "reader": {"name": result.reader.name, "accel": result.reader.accel},
        "os": _os(result),
        "coverage": {
            "complete": result.complete,
            # The scan was stopped (SIGINT/SIGTERM) before its end: a partial report.
            "interrupted": result.interrupted,
            "volumes": [
                {
                    "device": v.device,
                    "fstype": v.fstype,
                    "mountpoint": v.mountpoint,
                    "status": v.status.value,
                    "reason": v.reason,
                    "files": v.files,
                    "bytes": v.bytes,
                    "reader": v.reader,
                    "subvolumes": [
                        {"path": path, "mountpoint": mountpoint}
                        for path, mountpoint in v.subvolumes
                    ],
                }
                for v in result.volumes
            ],
            "skipped_files": [{"path": s.path, "reason": s.reason} for s in result.skipped],
            # Files read whole whose findings were capped: not every match is listed.
            "capped": [
                {
                    "path": c.path,
                    "rule": c.rule,
                    "reported": c.reported,
                    "not_reported": c.not_reported,
                }
                for c in result.capped
            ],
            # Files the user's --exclude globs kept out: not read by choice, not unread.
            "excluded": [
                {"pattern": e.pattern, "files": e.files, "bytes": e.bytes} for e in result.excluded
            ],
        },
        "suppressed": [
            {
                "rule": s.rule,
                "path": s.path,
                "line": s.line,
                "fingerprint": s.fingerprint,
                "by": s.by,
            }
            for s in result.suppressed
        ],
        "exposures": [
            {
                "kind": e.kind,
                "target": e.target,
                "principal": e.principal,
                "severity": e.severity.value,
                "evidence": list(e.evidence),
                "paths": list(e.paths),
                "remediation": e.remediation,
                "sysprep": list(e.sysprep),
                "details": dict(e.details),
            }
            for e in result.exposures
        ],
        "sysprep_command": sysprep_command(result.image.path, result.exposures),
        "findings": findings,
        "gate": _gate(result),
        "stats": {
            "files": result.stats.files,
            "bytes": result.stats.bytes,
            "seconds": result.stats.seconds,
            "stages": dict(result.stats.stages),
            "started_at": result.stats.started_at,
            "finished_at": result.stats.finished_at,
        },
        "warnings": list(result.warnings),
    }
    if result.error is not None:
        # Only on a scan that could not be done (exit code 2): the report says why, coverage
        # is incomplete and nothing was found. A normal report's keys are unchanged.
        report["error"] = result.error
    return report


def package_dict(package: Package | None) -> dict[str, Any] | None:
    """A finding's `package`: the package that installed its file, by the guest's records;
    null for a file no record lists."""
    if package is None:
        return None
    return {
        "manager": package.manager,
        "name": package.name,
        "version": package.version,
        "unmodified": package.unmodified,
        "record": package.record,
        "original_severity": package.original_severity.value,
    }


def _os(result: ScanResult) -> dict[str, Any] | None:
    info = result.os
    if info is None:
        return None
    return {
        "type": info.type,
        "distro": info.distro,
        "version": info.version,
        "name": info.name,
        "hostname": info.hostname,
        "users": [{"name": u.name, "uid": u.uid, "home": u.home} for u in info.users],
    }


def _gate(result: ScanResult) -> dict[str, Any] | None:
    """The gate's verdict: its threshold, the policy file, the fingerprints of the findings
    that fail it, and what policy rules decided (`rule` counts from 1). None when the result
    was not judged (an API caller rendering a bare scan)."""
    gate = result.gate
    if gate is None:
        return None
    return {
        "fail_on": gate.fail_on.value,
        "policy": gate.policy,
        "failing": list(gate.failing),
        "decisions": [
            {
                "fingerprint": d.fingerprint,
                "action": d.action.value,
                "rule": d.rule,
                "reason": d.reason,
            }
            for d in gate.decisions
        ],
    }


def render_json(result: ScanResult) -> str:
    # ensure_ascii keeps hostile bytes in file names as \u escapes, never raw control codes.
    return json.dumps(to_dict(result), indent=2, ensure_ascii=True) + "\n"
