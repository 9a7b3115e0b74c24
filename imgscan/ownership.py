"""Findings in files a package manager installed: vendor content or not, by the guest's own
records (imgscan/detect/packages.py) and the digests the workers took of the files as they
scanned them.

A file a package lists whose digest equals the recorded one is vendor content: what anyone
who installs that package version has (gnutls' built-in test keys, a library's docstring with
an example connection URL). Its findings get a `Package` record and `info` severity: listed,
never failing the default gate, and a policy can still fail them (`vendor = true`). A listed
file whose digest differs (an edited conffile, a patched script) keeps its severity and says it
was modified since the package installed it. Files no record lists are judged as before.

The records are the guest's own data: a hostile image can forge them (and the digests with
them), so they only ever demote a finding to info, never drop it, and the report names the
package and the record file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from imgscan.model import Check, CheckResult, Finding, Package, PackageFiles, Severity, Validation

# usrmerge: /bin is a symlink to /usr/bin, and dpkg's records still name /bin/... for files
# the walk finds under /usr/bin (symlinks are never followed).
_MERGED = ("/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/")


@dataclass(frozen=True)
class _Owner:
    files: PackageFiles
    algorithm: str
    digest: str


def file_path(finding_path: str) -> str:
    """The file on the file system a finding is in: an archive member's outermost archive, a
    registry value's hive."""
    return finding_path.split("!/", 1)[0]


def apply_ownership(
    findings: Iterable[Finding],
    records: Iterable[PackageFiles],
    digests: Mapping[str, Mapping[str, str]],
) -> list[Finding]:
    """`findings`, each in a file some record lists given its `package` (and, when the file
    is unmodified, demoted to info with a check that says why). `digests` maps a file's guest
    path to {algorithm: hex digest} of its content, for the files the findings are in."""
    findings = list(findings)
    wanted = {file_path(f.path) for f in findings}
    wanted |= {alias for alias in map(_unmerged, wanted) if alias is not None}
    versions: dict[tuple[str, str], str] = {}
    owners: dict[str, list[_Owner]] = {}
    for record in records:
        if record.version:
            versions.setdefault((record.manager, record.name), record.version)
        for path, algorithm, digest in record.files:
            if path in wanted:
                owners.setdefault(path, []).append(_Owner(record, algorithm, digest))
    if not owners:
        return findings
    return [_judge(f, owners, versions, digests) for f in findings]


def _unmerged(path: str) -> str | None:
    """The path dpkg may record for a file the walk found under /usr (`/usr/bin/x` -> `/bin/x`)."""
    for top in _MERGED:
        if path.startswith("/usr" + top):
            return path[len("/usr") :]
    return None


def _judge(
    finding: Finding,
    owners: Mapping[str, list[_Owner]],
    versions: Mapping[tuple[str, str], str],
    digests: Mapping[str, Mapping[str, str]],
) -> Finding:
    path = file_path(finding.path)
    listed = owners.get(path) or owners.get(_unmerged(path) or "", [])
    if not listed:
        return finding
    have = digests.get(path, {})
    ordered = sorted(listed, key=lambda o: (o.files.manager, o.files.name, o.files.record))
    same = [o for o in ordered if have.get(o.algorithm) == o.digest]
    owner = same[0] if same else ordered[0]
    record = owner.files
    version = record.version or versions.get((record.manager, record.name), "")
    package = Package(
        manager=record.manager,
        name=record.name,
        version=version,
        unmodified=bool(same),
        record=record.record,
        original_severity=finding.severity,
    )
    who = f"{record.manager} package {record.name}" + (f" {version}" if version else "")
    if same:
        detail = (
            f"vendor content: shipped unmodified by {who} (its {owner.algorithm} is the one "
            f"{record.record} records)"
        )
        if finding.category == "private-key":
            detail += (
                "; anyone with the package has this key: it is public, not a secret of this image"
            )
        severity = Severity.INFO
    elif owner.algorithm not in have:
        detail = (
            f"listed by {who} ({record.record}), but its {owner.algorithm} was not taken, so it "
            "is not known to be unmodified"
        )
        severity = finding.severity
    else:
        detail = (
            f"modified since {who} installed it: its {owner.algorithm} differs from the one "
            f"{record.record} records"
        )
        severity = finding.severity
    check = Check("package", CheckResult.INFO, detail)
    return replace(
        finding,
        severity=severity,
        package=package,
        validation=Validation((*finding.validation.checks, check)),
    )
