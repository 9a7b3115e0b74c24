"""SARIF 2.1.0 for code hosts and pipelines (validated against the official schema in tests).

One run: the tool with the metadata of every rule that produced a finding, one result per
finding (suppressed ones too, marked with an external suppression and its justification),
locations as guest paths, `partialFingerprints` carrying imgscan's versioned fingerprint, and
what could not be read (volumes, files) as tool execution notifications; the invocation is
successful only when coverage is complete. A value appears only when the scan kept it
(`--show-secrets`), as a result property.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from imgscan import build
from imgscan.model import FINGERPRINT_VERSION, Finding, RuleDoc, ScanResult, Severity
from imgscan.report.interface import printable
from imgscan.report.json import package_dict

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/imgscan/imgscan"
_LEVELS = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}
# GitHub code scanning ranks security results by this property (0.0-10.0).
_SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
    Severity.INFO: "0.5",
}


def guest_uri(path: str) -> str:
    """A guest path as a URI reference: C:\\Users\\a -> /C:/Users/a; every unsafe byte escaped
    (a file name with spaces, '#', '?' or newlines stays one valid reference)."""
    if len(path) > 2 and path[1] == ":" and path[2] == "\\":
        path = "/" + path.replace("\\", "/")
    # A name that is not UTF-8 keeps its own bytes, percent-encoded.
    return quote(path.encode("utf-8", "surrogateescape"), safe="/:!@$&'()*+,;=-._~")


def _rule(doc: RuleDoc) -> dict[str, Any]:
    return {
        "id": doc.id,
        "name": "".join(part.capitalize() for part in doc.id.replace(".", "-").split("-")),
        "shortDescription": {"text": doc.name},
        "fullDescription": {"text": doc.help},
        "help": {
            "text": f"{doc.help}\n\nRotate or remove the credential before the image is copied; "
            "if it must stay, accept it with a baseline or an ignore entry with a reason.",
        },
        "defaultConfiguration": {"level": _LEVELS[doc.severity]},
        "properties": {
            "category": doc.category,
            "severity": doc.severity.value,
            "security-severity": _SECURITY_SEVERITY[doc.severity],
            "tags": ["security", "secret", doc.category],
        },
    }


def _location(path: str, line: int) -> dict[str, Any]:
    physical: dict[str, Any] = {"artifactLocation": {"uri": guest_uri(path)}}
    if line >= 1:
        physical["region"] = {"startLine": line}
    return {"physicalLocation": physical}


def _result(finding: Finding, index: dict[str, int]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": finding.rule,
        "ruleIndex": index[finding.rule],
        "level": _LEVELS[finding.severity],
        "message": {"text": f"{finding.rule} at {printable(finding.path)}: {finding.preview}"},
        "locations": [_location(finding.path, finding.line)],
        "partialFingerprints": {f"imgscan/{FINGERPRINT_VERSION}": finding.fingerprint},
        "properties": {
            "severity": finding.severity.value,
            "category": finding.category,
            "validation": finding.validation.status.value,
        },
    }
    if finding.secret is not None:
        result["properties"]["secret"] = finding.secret
    if finding.package is not None:
        result["properties"]["package"] = package_dict(finding.package)
    return result


def render_sarif(result: ScanResult) -> str:
    # A stored report rendered by another rule pack has no documentation for its rules: each
    # still gets a rule entry (id, category, severity), as SARIF's ruleIndex requires.
    known = {doc.id: doc for doc in result.rules}
    for f in result.findings:
        known.setdefault(f.rule, RuleDoc(f.rule, f.rule, f.category, f.severity, ""))
    docs = sorted(known.values(), key=lambda d: d.id)
    index = {doc.id: i for i, doc in enumerate(docs)}
    results = [_result(f, index) for f in result.findings]
    for accepted in result.suppressed:
        if accepted.rule not in index:
            continue  # a rule this scan's pack no longer has: nothing to point at
        results.append(
            {
                "ruleId": accepted.rule,
                "ruleIndex": index[accepted.rule],
                "message": {"text": f"{accepted.rule} at {printable(accepted.path)} (accepted)"},
                "locations": [_location(accepted.path, accepted.line)],
                "partialFingerprints": {f"imgscan/{FINGERPRINT_VERSION}": accepted.fingerprint},
                "suppressions": [{"kind": "external", "justification": accepted.by}],
            }
        )
    notifications: list[dict[str, Any]] = [
        {
            "level": "error",
            "message": {
                "text": f"volume {v.device} not read: {printable(v.reason or v.status.value)}"
            },
            "descriptor": {"id": "imgscan/volume-not-read"},
        }
        for v in result.volumes
        if not v.covered
    ]
    notifications += [
        {
            "level": "error",
            "message": {"text": f"file not scanned: {printable(s.reason)}"},
            "locations": [_location(s.path, 0)],
            "descriptor": {"id": "imgscan/file-skipped"},
        }
        for s in result.skipped
    ]
    notifications += [
        {"level": "warning", "message": {"text": printable(warning)}} for warning in result.warnings
    ]
    if result.error is not None:
        notifications.insert(
            0,
            {
                "level": "error",
                "message": {"text": f"scan failed: {printable(result.error)}"},
                "descriptor": {"id": "imgscan/scan-failed"},
            },
        )
    run = {
        "tool": {
            "driver": {
                "name": "imgscan",
                "version": build.tool_version(),
                "informationUri": INFORMATION_URI,
                "rules": [_rule(doc) for doc in docs],
            }
        },
        "invocations": [
            {
                "executionSuccessful": result.complete,
                "toolExecutionNotifications": notifications,
            }
        ],
        "results": results,
        "properties": {
            "image": result.image.path,
            "format": result.image.format,
            "coverageComplete": result.complete,
            "excluded": [
                {"pattern": e.pattern, "files": e.files, "bytes": e.bytes} for e in result.excluded
            ],
            "reader": result.reader.name,
        },
    }
    sarif = {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}
    return json.dumps(sarif, indent=2, ensure_ascii=False) + "\n"
