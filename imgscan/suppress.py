"""Accepted findings: baselines and ignore files, applied to a finished scan.

A baseline (`imgscan baseline IMAGE --output FILE`) lists the fingerprints of an image's
current findings; a later scan with `--baseline FILE` hides those and reports only what is new.
An ignore file (TOML, `--ignore FILE`) holds entries that match by rule, path glob and/or
fingerprint, each with a reason and an optional expiry date; an expired entry stops
suppressing and says so. Suppressed findings leave the gate's verdict but stay in the report
(rule, path, fingerprint and why), so nothing is hidden silently. Neither file ever holds a
secret: fingerprints are salted PBKDF2 digests.
"""

from __future__ import annotations

import datetime
import json
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from imgscan import __version__
from imgscan.detect.globs import compile_glob
from imgscan.detect.rules import glob_form
from imgscan.errors import ImgscanError
from imgscan.exposures import build_exposures
from imgscan.model import Finding, ScanResult, Suppressed

BASELINE_SCHEMA = "imgscan.baseline/v1"


@dataclass(frozen=True)
class IgnoreEntry:
    """One ignore-file entry: every field given must match; `where` names it in messages."""

    reason: str
    where: str
    rule: str | None = None
    path: str | None = None
    fingerprint: str | None = None
    expires: datetime.date | None = None

    def matches(self, finding: Finding) -> bool:
        if self.rule is not None and finding.rule != self.rule:
            return False
        if self.fingerprint is not None and finding.fingerprint != self.fingerprint:
            return False
        return self.path is None or path_matches(self.path, finding.path)


def path_matches(glob: str, path: str) -> bool:
    """Whether guest `path` matches the path glob of an ignore entry or a policy rule (the
    rule pack's glob syntax: `**` crosses directories; Windows paths match regardless of
    case). Time linear in the path's length, whatever the glob (detect/globs.py)."""
    form, caseless = glob_form(path)
    return compile_glob(glob, caseless).match(form)


def render_baseline(result: ScanResult) -> str:
    """The baseline file for `result`: its findings' fingerprints, with rule and path for
    the people who review it (no secret, no preview)."""
    data = {
        "schema": BASELINE_SCHEMA,
        "tool": {"name": "imgscan", "version": __version__},
        "image": result.image.path,
        "findings": [
            {"fingerprint": f.fingerprint, "rule": f.rule, "path": f.path}
            for f in sorted(result.findings, key=Finding.sort_key)
        ],
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def load_baseline(path: Path) -> frozenset[str]:
    """The fingerprints a baseline file accepts."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ImgscanError(f"{path}: cannot read baseline: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: arrays or objects nested a thousand deep, which json.loads gives up on
        raise ImgscanError(f"{path}: not a baseline file: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != BASELINE_SCHEMA:
        raise ImgscanError(f"{path}: not a baseline file (schema is not {BASELINE_SCHEMA})")
    findings = data.get("findings")
    if not isinstance(findings, list) or not all(
        isinstance(f, dict) and isinstance(f.get("fingerprint"), str) for f in findings
    ):
        raise ImgscanError(f"{path}: baseline findings must each have a fingerprint")
    return frozenset(f["fingerprint"] for f in findings)


def load_toml(path: Path, what: str) -> dict[str, Any]:
    """The TOML file `path` (an ignore or policy file: `what`), or `ImgscanError` with one
    line naming it when it cannot be read or is not TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ImgscanError(f"{path}: cannot read {what}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: arrays or tables nested a thousand deep, which tomllib gives up on
        raise ImgscanError(f"{path}: not valid TOML: {exc}") from None


def load_ignore(path: Path) -> tuple[IgnoreEntry, ...]:
    """The `[[ignore]]` entries of an ignore file; a malformed one is an error naming it."""
    data = load_toml(path, "ignore file")
    entries = data.get("ignore", [])
    if not isinstance(entries, list):
        raise ImgscanError(f"{path}: expected an array of [[ignore]] tables")
    return tuple(_entry(path, number, entry) for number, entry in enumerate(entries, start=1))


def _entry(path: Path, number: int, entry: Any) -> IgnoreEntry:
    where = f"{path}: ignore entry {number}"
    if not isinstance(entry, dict):
        raise ImgscanError(f"{where}: must be a table")
    unknown = set(entry) - {"rule", "path", "fingerprint", "reason", "expires"}
    if unknown:
        raise ImgscanError(f"{where}: unknown key(s) {', '.join(map(repr, sorted(unknown)))}")
    fields = {key: entry.get(key) for key in ("rule", "path", "fingerprint")}
    if not any(fields.values()):
        raise ImgscanError(f"{where}: needs a rule, a path or a fingerprint")
    if not all(value is None or (isinstance(value, str) and value) for value in fields.values()):
        raise ImgscanError(f"{where}: rule, path and fingerprint must be non-empty strings")
    reason = entry.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ImgscanError(f"{where}: needs a reason")
    expires = entry.get("expires")
    if expires is not None and (
        not isinstance(expires, datetime.date) or isinstance(expires, datetime.datetime)
    ):
        raise ImgscanError(f"{where}: expires must be a date (expires = 2027-01-31)")
    return IgnoreEntry(reason.strip(), where, expires=expires, **fields)


def apply_suppressions(
    result: ScanResult,
    baseline: frozenset[str] = frozenset(),
    ignore: tuple[IgnoreEntry, ...] = (),
    today: datetime.date | None = None,
) -> ScanResult:
    """`result` with accepted findings moved to `suppressed`, and a warning per expired entry.

    An entry expires at the end of its `expires` day. Coverage is untouched: suppressing a
    finding never makes an incomplete scan look complete.
    """
    today = today or datetime.date.today()
    active = [e for e in ignore if e.expires is None or e.expires >= today]
    warnings = [
        f"{e.where} expired on {e.expires.isoformat()} and no longer suppresses ({e.reason})"
        for e in ignore
        if e.expires is not None and e.expires < today
    ]
    kept: list[Finding] = []
    suppressed: list[Suppressed] = []
    for finding in result.findings:
        if finding.fingerprint in baseline:
            suppressed.append(_suppressed(finding, "baseline"))
            continue
        entry = next((e for e in active if e.matches(finding)), None)
        if entry is not None:
            suppressed.append(_suppressed(finding, f"ignore: {entry.reason}"))
            continue
        kept.append(finding)
    return replace(
        result,
        findings=tuple(kept),
        exposures=build_exposures(kept, result.clues),
        suppressed=result.suppressed + tuple(suppressed),
        warnings=result.warnings + tuple(warnings),
    )


def _suppressed(finding: Finding, by: str) -> Suppressed:
    return Suppressed(finding.rule, finding.path, finding.line, finding.fingerprint, by)
