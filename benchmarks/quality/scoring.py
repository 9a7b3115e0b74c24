"""Scoring a scanner's findings against a corpus's labels (benchmarks/quality).

Two matching modes, chosen by what a scanner reports:

``value`` (imgscan, which reports the captured secret and its byte offset):
    a secret is found when a finding in the same file captured exactly its value, or, for
    multi-line key material (``block`` labels) of at least 32 characters, a value containing it
    or contained in it (a rule may capture a PEM block with or without its armour; this is the
    convention of tests/expect.py). A decoy is reported when a finding in its file captured
    bytes overlapping the decoy's bytes.

``line`` (peers: trivy redacts its matches, detect-secrets only keeps a SHA-1 of them):
    a secret is found when a finding in the same file covers one of the secret's lines, or
    captured the same value (equality / block containment as above), or reports the SHA-1 of
    the value. A decoy is reported when a finding in its file covers one of its lines. The
    corpus never puts two labels on one line, so a line names one label.

Precision, two ways:

* per finding: findings that match a labelled secret / all findings (a finding that matches no
  secret is a false positive, whether it hit a decoy or unlabelled text);
* per location: secrets found / (secrets found + distinct file:line locations of false
  findings). It does not depend on how a tool groups its output (credsweeper reports a PEM key
  as one finding per line, imgscan as one), so it is the figure to compare across tools.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from corpus import CATEGORIES, Label

MIN_BLOCK_OVERLAP = 32


@dataclass(frozen=True)
class Finding:
    """One match a scanner reported, normalised: ``path`` is relative to the corpus's fs/,
    lines are 1-based and inclusive. ``value``, ``offset``, ``category`` and ``digest`` (SHA-1
    hex of the captured value) are None when the scanner does not report them."""

    path: str
    rule: str
    line: int
    end_line: int
    value: str | None = None
    offset: int | None = None
    category: str | None = None
    digest: str | None = None

    @property
    def end(self) -> int | None:
        """Byte offset just past the captured value, when known."""
        if self.offset is None or self.value is None:
            return None
        return self.offset + len(self.value.encode())


def same_value(label: Label, value: str) -> bool:
    """The project's convention for "this capture is that secret" (tests/expect.py)."""
    if value == label.value:
        return True
    if label.block and min(len(value), len(label.value)) >= MIN_BLOCK_OVERLAP:
        return value in label.value or label.value in value
    return False


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _lines_overlap(label: Label, finding: Finding) -> bool:
    return finding.line <= label.end_line and label.line <= finding.end_line


def finds(label: Label, finding: Finding, mode: str) -> bool:
    """Whether ``finding`` reports the secret ``label`` (see the module docstring)."""
    if finding.path != label.path:
        return False
    if finding.value is not None and same_value(label, finding.value):
        return True
    if finding.digest is not None and finding.digest == _sha1(label.value):
        return True
    return mode == "line" and _lines_overlap(label, finding)


def reports_decoy(label: Label, finding: Finding, mode: str) -> bool:
    """Whether ``finding`` reports (part of) the decoy ``label``."""
    if finding.path != label.path:
        return False
    end = finding.end
    if mode == "value" and finding.offset is not None and end is not None:
        return finding.offset < label.end and label.offset < max(end, finding.offset + 1)
    return _lines_overlap(label, finding)


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


@dataclass
class Score:
    """What one scanner achieved on one corpus. Counters are [hits, total] pairs."""

    mode: str
    secrets: int = 0
    found: int = 0
    decoys: int = 0
    decoys_reported: int = 0
    findings: int = 0
    true_findings: int = 0
    by_category: dict[str, list[int]] = field(default_factory=dict)
    by_kind: dict[str, list[int]] = field(default_factory=dict)
    kind_category: dict[str, str] = field(default_factory=dict)
    decoys_by_group: dict[str, list[int]] = field(default_factory=dict)
    findings_by_rule_category: dict[str, list[int]] = field(default_factory=dict)
    missed: list[Label] = field(default_factory=list)
    reported: list[tuple[Label, Finding]] = field(default_factory=list)
    false_findings: list[Finding] = field(default_factory=list)
    false_on_decoys: int = 0

    @property
    def recall(self) -> float:
        return _ratio(self.found, self.secrets)

    @property
    def precision(self) -> float:
        """Per finding: true findings / findings."""
        return _ratio(self.true_findings, self.findings)

    @property
    def false_locations(self) -> int:
        return len({(f.path, f.line) for f in self.false_findings})

    @property
    def location_precision(self) -> float:
        """Secrets found / (secrets found + distinct locations of false findings)."""
        return _ratio(self.found, self.found + self.false_locations)

    @property
    def decoy_rate(self) -> float:
        return _ratio(self.decoys_reported, self.decoys)

    def category_recall(self, category: str) -> float:
        found, total = self.by_category.get(category, [0, 0])
        return _ratio(found, total)

    def summary(self) -> dict[str, object]:
        """Plain figures for --json."""
        return {
            "mode": self.mode,
            "recall": round(self.recall, 4),
            "secrets": self.secrets,
            "found": self.found,
            "by_category": {
                cat: {"found": f, "total": t, "recall": round(_ratio(f, t), 4)}
                for cat, (f, t) in sorted(self.by_category.items())
            },
            "by_kind": {
                kind: {"category": self.kind_category[kind], "found": f, "total": t}
                for kind, (f, t) in sorted(self.by_kind.items())
            },
            "decoys": self.decoys,
            "decoys_reported": self.decoys_reported,
            "decoy_rate": round(self.decoy_rate, 4),
            "decoys_by_group": {
                g: {"reported": r, "total": t} for g, (r, t) in sorted(self.decoys_by_group.items())
            },
            "findings": self.findings,
            "true_findings": self.true_findings,
            "false_findings": len(self.false_findings),
            "false_on_decoys": self.false_on_decoys,
            "false_locations": self.false_locations,
            "precision": round(self.precision, 4),
            "location_precision": round(self.location_precision, 4),
            "precision_by_rule_category": {
                cat: {"true": tp, "findings": n, "precision": round(_ratio(tp, n), 4)}
                for cat, (tp, n) in sorted(self.findings_by_rule_category.items())
            },
            "missed": [f"{lab.path}:{lab.line} {lab.kind}" for lab in self.missed],
            "reported_decoys": [
                f"{lab.path}:{lab.line} {lab.kind} <- {f.rule}" for lab, f in self.reported
            ],
            "false_positives": [f"{f.path}:{f.line} {f.rule}" for f in self.false_findings],
        }


def score(labels: Iterable[Label], findings: Iterable[Finding], mode: str = "value") -> Score:
    """Score ``findings`` against ``labels`` (secrets and decoys) in ``mode`` (value | line)."""
    if mode not in ("value", "line"):
        raise ValueError(f"unknown mode {mode!r}")
    result = Score(mode)
    by_path: dict[str, list[Finding]] = defaultdict(list)
    all_findings = list(findings)
    for finding in all_findings:
        by_path[finding.path].append(finding)
    labels = list(labels)
    secrets = [lab for lab in labels if lab.role == "secret"]
    decoys = [lab for lab in labels if lab.role == "decoy"]
    for category in CATEGORIES:
        result.by_category[category] = [0, 0]
    secrets_by_path: dict[str, list[Label]] = defaultdict(list)
    for lab in secrets:
        secrets_by_path[lab.path].append(lab)
        hit = any(finds(lab, f, mode) for f in by_path.get(lab.path, ()))
        result.secrets += 1
        result.found += hit
        for table, key in ((result.by_category, lab.category), (result.by_kind, lab.kind)):
            counts = table.setdefault(key, [0, 0])
            counts[0] += hit
            counts[1] += 1
        result.kind_category[lab.kind] = lab.category
        if not hit:
            result.missed.append(lab)
    decoys_by_path: dict[str, list[Label]] = defaultdict(list)
    for lab in decoys:
        decoys_by_path[lab.path].append(lab)
        culprit = next((f for f in by_path.get(lab.path, ()) if reports_decoy(lab, f, mode)), None)
        result.decoys += 1
        counts = result.decoys_by_group.setdefault(lab.category, [0, 0])
        counts[1] += 1
        if culprit is not None:
            result.decoys_reported += 1
            counts[0] += 1
            result.reported.append((lab, culprit))
    for finding in all_findings:
        true = any(finds(lab, finding, mode) for lab in secrets_by_path.get(finding.path, ()))
        result.findings += 1
        result.true_findings += true
        if finding.category is not None:
            counts = result.findings_by_rule_category.setdefault(finding.category, [0, 0])
            counts[0] += true
            counts[1] += 1
        if not true:
            result.false_findings.append(finding)
            if any(
                reports_decoy(lab, finding, mode) for lab in decoys_by_path.get(finding.path, ())
            ):
                result.false_on_decoys += 1
    return result
