"""A stored JSON report (`imgscan.report/v1`) back to the ScanResult it was rendered from, so
that every renderer (table, SARIF, markdown, HTML) works on stored results.

The JSON report holds everything a renderer reads except two things, restored here: the rules'
documentation (`ScanResult.rules`, rebuilt from the rule pack the result was keyed by, which
is the one loaded: same version, same text) and the clues (`ScanResult.clues`), which only
serve to rebuild exposures after suppressions and are not needed once exposures are built:
they stay empty. The gate is left unjudged (the caller judges it against its own threshold).
For every field the report has, `render_json(result_from_report(r))` gives back `r`.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from imgscan.detect.rules import RulePack
from imgscan.model import (
    Check,
    CheckResult,
    Excluded,
    Exposure,
    Finding,
    GateAction,
    GateDecision,
    ImageInfo,
    OsInfo,
    OsUser,
    Package,
    ReaderInfo,
    RuleDoc,
    ScanResult,
    Skipped,
    Stats,
    Suppressed,
    Validation,
    Verdict,
    Volume,
    VolumeStatus,
)
from imgscan.model import Severity as Sev


def result_from_report(report: dict[str, Any], pack: RulePack | None = None) -> ScanResult:
    """The ScanResult of a JSON report; `pack` (the pack the report was made with) restores the
    rules' documentation. Raises KeyError or ValueError on a report of another shape."""
    findings = tuple(
        Finding(
            rule=f["rule"],
            category=f["category"],
            severity=Sev(f["severity"]),
            path=f["path"],
            line=f["line"],
            preview=f["preview"],
            fingerprint=f["fingerprint"],
            secret=f.get("secret"),
            validation=Validation(
                tuple(
                    Check(c["check"], CheckResult(c["result"]), c["detail"])
                    for c in f["validation"]["checks"]
                )
            ),
            context=tuple((str(k), str(v)) for k, v in f["context"].items()),
            package=_package(f.get("package")),
        )
        for f in report["findings"]
    )
    coverage = report["coverage"]
    os_data = report.get("os")
    rules: tuple[RuleDoc, ...] = ()
    if pack is not None:
        metas = [pack.meta(rule) for rule in sorted({f.rule for f in findings})]
        rules = tuple(RuleDoc(m.id, m.name, m.category, m.severity, pack.help(m.id)) for m in metas)
    return ScanResult(
        image=ImageInfo(
            report["image"]["path"],
            report["image"]["format"],
            report["image"]["virtual_size"],
            report["image"].get("in_use"),
            report["image"].get("sha256"),
        ),
        reader=ReaderInfo(report["reader"]["name"], report["reader"]["accel"]),
        volumes=tuple(
            Volume(
                device=v["device"],
                fstype=v["fstype"],
                mountpoint=v["mountpoint"],
                status=VolumeStatus(v["status"]),
                reason=v["reason"],
                files=v["files"],
                bytes=v["bytes"],
                reader=v["reader"],
                subvolumes=tuple((s["path"], s["mountpoint"]) for s in v["subvolumes"]),
            )
            for v in coverage["volumes"]
        ),
        skipped=tuple(Skipped(s["path"], s["reason"]) for s in coverage["skipped_files"]),
        findings=findings,
        stats=_stats(report["stats"]),
        warnings=tuple(report["warnings"]),
        os=None
        if os_data is None
        else OsInfo(
            type=os_data["type"],
            distro=os_data["distro"],
            version=os_data["version"],
            name=os_data["name"],
            hostname=os_data["hostname"],
            users=tuple(OsUser(u["name"], u["uid"], u["home"]) for u in os_data["users"]),
        ),
        suppressed=tuple(
            Suppressed(s["rule"], s["path"], s["line"], s["fingerprint"], s["by"])
            for s in report["suppressed"]
        ),
        rules=rules,
        exposures=tuple(
            Exposure(
                kind=e["kind"],
                target=e["target"],
                principal=e["principal"],
                severity=Sev(e["severity"]),
                evidence=tuple(e["evidence"]),
                paths=tuple(e["paths"]),
                remediation=e["remediation"],
                sysprep=tuple(e["sysprep"]),
                details=tuple((str(k), str(v)) for k, v in e["details"].items()),
            )
            for e in report["exposures"]
        ),
        interrupted=bool(coverage["interrupted"]),
        pack_version=str(report["tool"].get("rules") or ""),
        error=report.get("error"),
        excluded=tuple(
            Excluded(str(e["pattern"]), int(e["files"]), int(e["bytes"]))
            for e in coverage.get("excluded", ())
        ),
    )


def verdict_from_report(report: dict[str, Any]) -> Verdict | None:
    """The gate verdict a JSON report holds (None for a report of an unjudged result). Raises
    KeyError or ValueError on a report of another shape."""
    gate = report.get("gate")
    if gate is None:
        return None
    return Verdict(
        fail_on=Sev(gate["fail_on"]),
        policy=gate["policy"],
        failing=tuple(str(f) for f in gate["failing"]),
        decisions=tuple(
            GateDecision(
                str(d["fingerprint"]), GateAction(d["action"]), int(d["rule"]), str(d["reason"])
            )
            for d in gate["decisions"]
        ),
    )


def _stats(data: dict[str, Any]) -> Stats:
    """Stats from the report's `stats`: every field the report has (reports gain fields, such
    as per-stage times; a JSON object is a tuple of pairs in the model), in the model's order."""
    values: dict[str, Any] = {}
    for item in fields(Stats):
        if item.name in data:
            value = data[item.name]
            values[item.name] = tuple(value.items()) if isinstance(value, dict) else value
    return Stats(**values)


def _package(data: dict[str, Any] | None) -> Package | None:
    """A finding's `package` (absent from reports made before package ownership)."""
    if data is None:
        return None
    return Package(
        manager=data["manager"],
        name=data["name"],
        version=data["version"],
        unmodified=None if data["unmodified"] is None else bool(data["unmodified"]),
        record=data["record"],
        original_severity=Sev(data["original_severity"]),
    )
