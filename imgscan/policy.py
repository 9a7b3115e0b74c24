"""Gate policies: which findings stop an image from being copied.

Without a policy the gate is one threshold (`--fail-on`): a finding fails it when its severity
is at or above the threshold. A policy file (TOML, `--policy FILE`) adds rules in front of the
threshold, so a registry can say "fail on any machine identity artifact, whatever its
severity" or "allow info findings":

    fail_on = "high"              # threshold for findings no rule decides (default: low)

    [[rule]]
    action = "fail"               # fail | allow
    exposure = "identity"         # matchers: severity, category, rule, path, exposure,
                                  # vendor, package
    reason = "a copy must never carry this host's identity"

Each matcher is a string or a list of strings (a list matches any of its values); every
matcher a rule gives must match (AND), and a rule gives at least one. `severity`, `category`
and `rule` compare exactly; `path` is a guest-path glob with the ignore file's semantics (`**`
crosses directories, Windows paths match regardless of case); `exposure` matches a finding
cited as evidence by an exposure of that kind (info findings, test fixtures, belong to no
exposure); `vendor` (true or false) matches findings in files a package installed and nobody
modified (imgscan/ownership.py; npm packages count by their lockfile alone, npm keeping no
digest per file), and `package` the name of the package that installed the
finding's file. Rules are evaluated in file order and the first that matches a finding decides it;
a finding no rule matches fails when its severity is at or above `fail_on`. A reason is
required, as in an ignore file: an `allow` rule accepts a risk, and the report shows why.

Findings accepted by a baseline or an ignore file are out of the scan's findings before the
policy sees them. Coverage is not the policy's business: an image that was not read completely
fails the gate (exit code 2) whatever the policy says, unless `--allow-incomplete` is given.

Loading is strict (a malformed policy is an `ImgscanError` naming the file and the rule, so a
typo never weakens a gate silently); judging is pure.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgscan.detect.rules import CATEGORIES, RulePack, rule_ids
from imgscan.errors import ImgscanError
from imgscan.exposures import EXPOSURE_KINDS
from imgscan.model import Finding, GateAction, GateDecision, ScanResult, Severity, Verdict
from imgscan.suppress import load_toml, path_matches

MATCHERS = ("severity", "category", "rule", "path", "exposure", "vendor", "package")
_RULE_KEYS = frozenset({"action", "reason", *MATCHERS})
_TOP_KEYS = frozenset({"fail_on", "rule"})


@dataclass(frozen=True)
class PolicyRule:
    """One `[[rule]]` of a policy: what it does with the findings it matches, and why.

    Each matcher is the tuple of values the file gave (empty: not given); a finding matches
    when every matcher given has a value that matches it. `number` is the rule's position in
    the file, counting from 1; `where` names the rule in messages.
    """

    number: int
    where: str
    action: GateAction
    reason: str
    severity: tuple[Severity, ...] = ()
    category: tuple[str, ...] = ()
    rule: tuple[str, ...] = ()
    path: tuple[str, ...] = ()
    exposure: tuple[str, ...] = ()
    # Package ownership (imgscan/ownership.py): `vendor` true matches findings in files a
    # package installed and nobody modified (npm packages: placed by the lockfile, with no
    # digest to check), false every other finding (None: not given);
    # `package` matches the installing package's name, modified or not.
    vendor: bool | None = None
    package: tuple[str, ...] = ()

    def matches(self, finding: Finding, kinds: Collection[str] = ()) -> bool:
        """Whether this rule decides `finding`, whose fingerprint the exposures of `kinds`
        cite as evidence."""
        if self.severity and finding.severity not in self.severity:
            return False
        if self.category and finding.category not in self.category:
            return False
        if self.rule and finding.rule not in self.rule:
            return False
        if self.exposure and not any(kind in kinds for kind in self.exposure):
            return False
        if self.vendor is not None and self.vendor != _is_vendor(finding):
            return False
        if self.package and (finding.package is None or finding.package.name not in self.package):
            return False
        # The ignore file's own path matcher, so a glob means the same in both files.
        return not self.path or any(path_matches(glob, finding.path) for glob in self.path)


@dataclass(frozen=True)
class Policy:
    """A gate policy: rules in file order, then the threshold for the findings no rule
    decides. `source` is the file it was loaded from (None: the plain `--fail-on` gate)."""

    fail_on: Severity = Severity.LOW
    rules: tuple[PolicyRule, ...] = ()
    source: str | None = None


def load_policy(path: Path) -> Policy:
    """The policy in TOML file `path`. Anything malformed (unreadable file, bad TOML, unknown
    key, action, severity, category or exposure kind, a rule without a matcher or a reason)
    raises `ImgscanError` with one line naming the file and the rule."""
    data = load_toml(path, "policy file")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ImgscanError(
            f"{path}: unknown key(s) {', '.join(map(repr, sorted(unknown)))} "
            "(a policy holds fail_on and [[rule]] tables)"
        )
    fail_on = Severity.LOW
    if "fail_on" in data:
        fail_on = _severity(f"{path}: fail_on", data["fail_on"])
    rules = data.get("rule", [])
    if not isinstance(rules, list):
        raise ImgscanError(f"{path}: expected an array of [[rule]] tables")
    return Policy(
        fail_on=fail_on,
        rules=tuple(_rule(path, number, rule) for number, rule in enumerate(rules, start=1)),
        source=str(path),
    )


def check_rule_ids(policy: Policy, pack: RulePack) -> None:
    """Raise `ImgscanError` when a policy rule names a rule id the pack does not have: such a
    matcher never matches, and a `fail` rule with a typo would let everything through."""
    known = rule_ids(pack)
    for rule in policy.rules:
        for rule_id in rule.rule:
            if rule_id not in known:
                raise ImgscanError(f"{rule.where}: unknown rule id {rule_id!r} (not in the pack)")


def judge(policy: Policy, result: ScanResult) -> Verdict:
    """Which findings of `result` fail the gate, and which policy rule decided each one.

    Pure. Findings are judged in report order (`Finding.sort_key`); each fingerprint appears
    at most once in `failing` and in `decisions` (a value found twice at one place by one rule
    has one fingerprint and one verdict). Only findings a policy rule decided get a decision;
    the others were judged by the threshold `policy.fail_on`.
    """
    kinds: dict[str, set[str]] = {}
    for exposure in result.exposures:
        for cited in exposure.evidence:
            kinds.setdefault(cited, set()).add(exposure.kind)
    failing: dict[str, None] = {}
    decisions: dict[str, GateDecision] = {}
    for finding in sorted(result.findings, key=Finding.sort_key):
        if finding.fingerprint in decisions or finding.fingerprint in failing:
            continue
        rule = next(
            (r for r in policy.rules if r.matches(finding, kinds.get(finding.fingerprint, ()))),
            None,
        )
        if rule is None:
            fails = finding.severity.rank >= policy.fail_on.rank
        else:
            fails = rule.action is GateAction.FAIL
            decisions[finding.fingerprint] = GateDecision(
                finding.fingerprint, rule.action, rule.number, rule.reason
            )
        if fails:
            failing[finding.fingerprint] = None
    return Verdict(policy.fail_on, policy.source, tuple(failing), tuple(decisions.values()))


def _rule(path: Path, number: int, entry: Any) -> PolicyRule:
    where = f"{path}: policy rule {number}"
    if not isinstance(entry, dict):
        raise ImgscanError(f"{where}: must be a table")
    unknown = set(entry) - _RULE_KEYS
    if unknown:
        raise ImgscanError(f"{where}: unknown key(s) {', '.join(map(repr, sorted(unknown)))}")
    action = entry.get("action")
    if action is None:
        raise ImgscanError(f"{where}: needs an action (fail or allow)")
    if action not in tuple(GateAction):
        raise ImgscanError(f"{where}: unknown action {action!r}; choose fail or allow")
    reason = entry.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ImgscanError(f"{where}: needs a reason")
    if not any(key in entry for key in MATCHERS):
        raise ImgscanError(
            f"{where}: needs a matcher ({', '.join(MATCHERS[:-2])}) "
            f"or a package matcher ({', '.join(MATCHERS[-2:])})"
        )
    vendor = entry.get("vendor")
    if vendor is not None and not isinstance(vendor, bool):
        raise ImgscanError(f"{where}: vendor must be true or false")
    values = {
        key: _strings(where, key, entry[key])
        for key in MATCHERS
        if key in entry and key != "vendor"
    }
    _known(where, "category", values.get("category", ()), CATEGORIES)
    _known(where, "exposure kind", values.get("exposure", ()), EXPOSURE_KINDS)
    return PolicyRule(
        number,
        where,
        GateAction(action),
        reason.strip(),
        severity=tuple(_severity(f"{where}: severity", v) for v in values.get("severity", ())),
        category=values.get("category", ()),
        rule=values.get("rule", ()),
        path=values.get("path", ()),
        exposure=values.get("exposure", ()),
        vendor=vendor,
        package=values.get("package", ()),
    )


def _is_vendor(finding: Finding) -> bool:
    """Whether the finding is in a file a package installed and nobody modified since (or, for
    a manager that keeps no digest per file, npm, that its records place in a package)."""
    return finding.package is not None and finding.package.unmodified is not False


def _strings(where: str, key: str, value: Any) -> tuple[str, ...]:
    """A matcher's values: a non-empty string, or a non-empty list of them."""
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise ImgscanError(f"{where}: {key} must be a non-empty string or list of strings")
    return tuple(items)


def _severity(where: str, value: Any) -> Severity:
    names = ", ".join(s.value for s in Severity)
    if not isinstance(value, str) or value.lower() not in tuple(Severity):
        raise ImgscanError(f"{where}: unknown severity {value!r}; choose one of {names}")
    return Severity(value.lower())


def _known(where: str, what: str, given: Iterable[str], known: tuple[str, ...]) -> None:
    for value in given:
        if value not in known:
            raise ImgscanError(
                f"{where}: unknown {what} {value!r}; choose one of {', '.join(known)}"
            )
