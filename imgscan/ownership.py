"""Findings in files a package manager installed: vendor content or not, by the guest's own
records (imgscan/detect/packages.py) and the digests the workers took of the files as they
scanned them.

A file a package lists whose digest equals the recorded one is vendor content: what anyone
who installs that package version has (gnutls' built-in test keys, a library's docstring with
an example connection URL). Its findings get a `Package` record and `info` severity: listed,
never failing the default gate, and a policy can still fail them (`vendor = true`). A listed
file whose digest differs (an edited conffile, a patched script) keeps its severity and says it
was modified since the package installed it. Files no record lists are judged as before, with
two exceptions for records without a digest per file:

- a compiled Python file (`__pycache__/x.cpython-311.pyc`), which pip and dpkg list without a
  digest, is vendor content when its source is and holds the same finding (a .pyc carries its
  source's strings);
- a file inside an npm package directory that `node_modules/.package-lock.json` records as
  installed from a registry is vendor content by that record alone: npm keeps no digest per
  file, so `unmodified` is None ("not verifiable") and the finding says so.

The records are the guest's own data: a hostile image can forge them (and the digests with
them), so they only ever demote a finding to info, never drop it, and the report names the
package and the record file.
"""

from __future__ import annotations

import posixpath
import re
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
    directories: dict[str, PackageFiles] = {}
    for record in records:
        if record.version:
            versions.setdefault((record.manager, record.name), record.version)
        for path, algorithm, digest in record.files:
            if path in wanted:
                owners.setdefault(path, []).append(_Owner(record, algorithm, digest))
        if record.directory is not None:
            directories.setdefault(record.directory, record)
    if not owners and not directories:
        return findings
    judged = [_judge(f, owners, versions, digests) for f in findings]
    judged = [_placed(f, directories) for f in judged]
    return _compiled(judged)


def _placed(finding: Finding, directories: Mapping[str, PackageFiles]) -> Finding:
    """`finding` given the package whose directory holds its file (npm: the deepest one, as
    nested node_modules are packages of their own), when no file record listed the file."""
    if finding.package is not None or not directories:
        return finding
    path = file_path(finding.path)
    folder = posixpath.dirname(path)
    while folder not in ("/", ""):
        record = directories.get(folder)
        if record is not None:
            break
        folder = posixpath.dirname(folder)
    else:
        return finding
    package = Package(
        manager=record.manager,
        name=record.name,
        version=record.version,
        unmodified=None,
        record=record.record,
        original_severity=finding.severity,
    )
    detail = (
        f"vendor content: in {record.manager} package {record.name} {record.version}, which "
        f"{record.record} records as installed from a registry; {record.manager} keeps no "
        "digest per file, so this file's content is not verified"
    )
    check = Check("package", CheckResult.INFO, detail)
    return replace(
        finding,
        severity=Severity.INFO,
        package=package,
        validation=Validation((*finding.validation.checks, check)),
    )


# CPython's compiled files: dir/__pycache__/name.<tag>.pyc (PEP 3147), or dir/name.pyc beside
# its source (Python 2, and `-B`-less installs of old).
_PYC = re.compile(r"^(?P<dir>.*?/)(?:__pycache__/(?P<name>[^/]+?)\.[^./]+|(?P<old>[^/]+?))\.pyc$")


def _source_of(path: str) -> str | None:
    """The source file a compiled Python file was compiled from, by CPython's naming."""
    match = _PYC.match(path)
    if match is None:
        return None
    return f"{match['dir']}{match['name'] or match['old']}.py"


def _compiled(findings: list[Finding]) -> list[Finding]:
    """Findings in compiled Python files judged by their source. Package records list a
    `.pyc` without a digest (pip and dpkg's py3compile write them after installing), but a
    `.pyc` holds its source's strings: a finding in one whose source is vendor content, with
    the same finding (rule, preview and context) in that source, is vendor content too."""
    vendor: dict[str, dict[tuple[str, str, tuple[tuple[str, str], ...]], Package]] = {}
    for f in findings:
        if f.package is not None and f.package.unmodified is True:
            key = (f.rule, f.preview, f.context)
            vendor.setdefault(file_path(f.path), {})[key] = f.package
    if not vendor:
        return findings
    out = []
    for f in findings:
        source = _source_of(file_path(f.path)) if f.package is None else None
        package = vendor.get(source or "", {}).get((f.rule, f.preview, f.context))
        if source is None or package is None:
            out.append(f)
            continue
        detail = (
            f"vendor content: compiled from {source} ({package.describe()}), which holds the "
            "same finding"
        )
        out.append(
            replace(
                f,
                severity=Severity.INFO,
                # The compiled file has no digest of its own to check: its source vouches.
                package=replace(package, unmodified=None, original_severity=f.severity),
                validation=Validation(
                    (*f.validation.checks, Check("package", CheckResult.INFO, detail))
                ),
            )
        )
    return out


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
