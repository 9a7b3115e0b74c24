"""Gate policies: loading is strict, judging is first-match-wins, and the CLI gates on it."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_cli import run

from imgscan.cli import EXIT_CLEAN, EXIT_ERROR, EXIT_FINDINGS, exit_code
from imgscan.detect.rules import RulePack
from imgscan.errors import ImgscanError
from imgscan.model import (
    Exposure,
    Finding,
    GateAction,
    ImageInfo,
    ReaderInfo,
    ScanResult,
    Severity,
    Stats,
    Volume,
    VolumeStatus,
)
from imgscan.policy import EXPOSURE_KINDS, Policy, check_rule_ids, judge, load_policy

ALL_SEVERITIES = '["critical", "high", "medium", "low", "info"]'

# Stand-ins for scan findings: fingerprints are labels, not digests of anything.
HOST_KEY = Finding(
    "openssh-private-key",
    "private-key",
    Severity.CRITICAL,
    "/etc/ssh/ssh_host_ed25519_key",
    1,
    "-----BEGIN…(399)",
    "fp1:host-key",
)
DB_PASSWORD = Finding(
    "generic-password-unquoted", "password", Severity.HIGH, "/srv/app/.env", 3, "…(12)", "fp1:db"
)
USER_KEY = Finding(
    "openssh-private-key",
    "private-key",
    Severity.CRITICAL,
    "/home/alice/.ssh/id_ed25519",
    1,
    "-----BEGIN…(399)",
    "fp1:user-key",
)
WINDOWS_CONFIG = Finding(
    "connection-string-password",
    "database",
    Severity.MEDIUM,
    "C:\\inetpub\\wwwroot\\Web.config",
    12,
    "…(10)",
    "fp1:web-config",
)
MACHINE_ID = Finding(
    "machine-id", "identity", Severity.LOW, "/etc/machine-id", 1, "…(32)", "fp1:machine-id"
)
FIXTURE = Finding(
    "aws-access-key-id",
    "cloud",
    Severity.INFO,
    "/usr/lib/python3/dist-packages/botocore/tests/creds.txt",
    1,
    "AKIA…(20)",
    "fp1:fixture",
)
FINDINGS = (HOST_KEY, DB_PASSWORD, USER_KEY, WINDOWS_CONFIG, MACHINE_ID, FIXTURE)


def _exposure(kind: str, *findings: Finding) -> Exposure:
    return Exposure(
        kind=kind,
        target=f"{kind} target",
        principal=None,
        severity=max((f.severity for f in findings), key=lambda s: s.rank),
        evidence=tuple(f.fingerprint for f in findings),
        paths=tuple(f.path for f in findings),
        remediation="do something about it",
    )


def _result(*findings: Finding, complete: bool = True) -> ScanResult:
    status = VolumeStatus.SCANNED if complete else VolumeStatus.UNSUPPORTED
    cited = set(findings)
    exposures = [
        _exposure(kind, *[f for f in group if f in cited])
        for kind, group in (
            ("identity", (HOST_KEY, MACHINE_ID)),
            ("database", (DB_PASSWORD, WINDOWS_CONFIG)),
            ("ssh", (USER_KEY,)),
        )
        if cited & set(group)
    ]
    return ScanResult(
        ImageInfo("disk.qcow2", "qcow2", 1 << 20),
        ReaderInfo("native"),
        (Volume("/dev/sda1", "ext4", "/", status),),
        (),
        findings,
        Stats(1, 1, 0.1),
        exposures=tuple(exposures),
    )


def _policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def _judge(tmp_path: Path, text: str, *findings: Finding) -> tuple[list[str], dict[str, int]]:
    """(fingerprints that fail, {fingerprint: number of the rule that decided it})."""
    verdict = judge(load_policy(_policy(tmp_path, text)), _result(*(findings or FINDINGS)))
    return list(verdict.failing), {d.fingerprint: d.rule for d in verdict.decisions}


# -- loading ----------------------------------------------------------------------------------


def test_a_policy_loads_with_its_defaults(tmp_path: Path) -> None:
    path = _policy(
        tmp_path,
        """
fail_on = "High"

[[rule]]
action = "fail"
exposure = "identity"
reason = "  a copy must never carry this host's identity  "

[[rule]]
action = "allow"
severity = ["info", "low"]
path = "/usr/**"
reason = "fixtures of installed software"
""",
    )
    policy = load_policy(path)
    assert policy.fail_on is Severity.HIGH
    assert policy.source == str(path)
    first, second = policy.rules
    assert (first.number, first.action, first.exposure) == (1, GateAction.FAIL, ("identity",))
    assert first.reason == "a copy must never carry this host's identity"
    assert second.severity == (Severity.INFO, Severity.LOW) and second.path == ("/usr/**",)
    # No fail_on, no rules: the plain gate, at the default threshold.
    assert load_policy(_policy(tmp_path, "")) == Policy(source=str(tmp_path / "policy.toml"))


_RULE = '[[rule]]\naction = "fail"\nreason = "r"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[rules]]\naction = 'fail'\n", "unknown key(s) 'rules' (a policy holds fail_on and"),
        ('fail_on = "severe"\n', "fail_on: unknown severity 'severe'; choose one of critical"),
        ("fail_on = 3\n", "fail_on: unknown severity 3"),
        ('rule = "fail"\n', "expected an array of [[rule]] tables"),
        ("rule = [1]\n", "policy rule 1: must be a table"),
        (_RULE + 'severity = "high"\nexposures = "identity"\n', "policy rule 1: unknown key(s)"),
        ('[[rule]]\nreason = "r"\nseverity = "high"\n', "policy rule 1: needs an action"),
        (
            '[[rule]]\naction = "deny"\nreason = "r"\nseverity = "high"\n',
            "policy rule 1: unknown action 'deny'; choose fail or allow",
        ),
        ('[[rule]]\naction = "fail"\nseverity = "high"\n', "policy rule 1: needs a reason"),
        (_RULE, "policy rule 1: needs a matcher (severity, category, rule, path, exposure)"),
        (_RULE + 'severity = "severe"\n', "policy rule 1: severity: unknown severity 'severe'"),
        (
            _RULE + 'severity = "high"\n' + _RULE + 'exposure = ["identity", "host"]\n',
            "policy rule 2: unknown exposure kind 'host'; choose one of database",
        ),
        (_RULE + 'category = "clod"\n', "policy rule 1: unknown category 'clod'"),
        (_RULE + "severity = []\n", "severity must be a non-empty string or list of strings"),
        (_RULE + 'path = ""\n', "path must be a non-empty string or list of strings"),
        (_RULE + "rule = [1, 2]\n", "rule must be a non-empty string or list of strings"),
        ("[[rule]\n", "not valid TOML"),
    ],
)
def test_malformed_policies_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = _policy(tmp_path, text)
    with pytest.raises(ImgscanError) as caught:
        load_policy(path)
    error = str(caught.value)
    assert "\n" not in error
    assert error.startswith(f"{path}: ")
    assert message in error, error


def test_an_unreadable_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImgscanError, match="cannot read policy file: No such file"):
        load_policy(tmp_path / "missing.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'fail_on = "h\xe9"\n')
    with pytest.raises(ImgscanError, match="not valid TOML"):
        load_policy(bad)


def test_rule_ids_are_checked_against_the_pack(tmp_path: Path, pack: RulePack) -> None:
    known = load_policy(_policy(tmp_path, _RULE + 'rule = ["openssh-private-key", "jwt"]\n'))
    check_rule_ids(known, pack)
    typo = load_policy(_policy(tmp_path, _RULE + 'rule = ["openssh-private-key", "jwtt"]\n'))
    with pytest.raises(ImgscanError, match=r"policy rule 1: unknown rule id 'jwtt'"):
        check_rule_ids(typo, pack)


# -- judging ----------------------------------------------------------------------------------


def test_without_rules_the_threshold_decides() -> None:
    verdict = judge(Policy(fail_on=Severity.HIGH), _result(*FINDINGS))
    assert set(verdict.failing) == {"fp1:host-key", "fp1:db", "fp1:user-key"}
    assert verdict.decisions == () and verdict.policy is None
    assert verdict.fail_on is Severity.HIGH
    assert judge(Policy(), _result()).failing == ()


def test_the_first_matching_rule_decides(tmp_path: Path) -> None:
    failing, decided = _judge(
        tmp_path,
        """
[[rule]]
action = "allow"
path = "/srv/**"
reason = "lab application"

[[rule]]
action = "fail"
severity = "high"
reason = "nothing high"
""",
    )
    assert decided == {"fp1:db": 1}  # rule 2 would fail it, but rule 1 came first
    # Everything else is at or above the default threshold (low), except the fixture.
    assert failing == ["fp1:machine-id", "fp1:host-key", "fp1:user-key", "fp1:web-config"]


def test_allow_overrides_the_threshold(tmp_path: Path) -> None:
    failing, decided = _judge(
        tmp_path,
        'fail_on = "low"\n[[rule]]\naction = "allow"\nseverity = "critical"\nreason = "r"\n',
    )
    assert set(decided) == {"fp1:host-key", "fp1:user-key"}
    assert failing == ["fp1:machine-id", "fp1:db", "fp1:web-config"]


def test_fail_below_the_threshold(tmp_path: Path) -> None:
    failing, decided = _judge(
        tmp_path,
        'fail_on = "critical"\n[[rule]]\naction = "fail"\ncategory = "password"\nreason = "r"\n',
    )
    assert decided == {"fp1:db": 1}
    assert failing == ["fp1:host-key", "fp1:user-key", "fp1:db"]  # report order: by path


def test_exposure_matches_the_findings_an_exposure_cites(tmp_path: Path) -> None:
    failing, decided = _judge(
        tmp_path,
        """
fail_on = "critical"

[[rule]]
action = "fail"
exposure = "identity"
reason = "a copy must never carry this host's identity"

[[rule]]
action = "allow"
severity = ["critical", "high", "medium", "low", "info"]
reason = "everything else may be copied"
""",
    )
    # The low machine-id fails by its exposure; the critical user key is allowed by rule 2.
    assert failing == ["fp1:machine-id", "fp1:host-key"]
    assert decided == {
        "fp1:host-key": 1,
        "fp1:machine-id": 1,
        "fp1:db": 2,
        "fp1:user-key": 2,
        "fp1:web-config": 2,
        "fp1:fixture": 2,  # an info fixture belongs to no exposure
    }


def test_path_globs_mean_what_they_mean_in_an_ignore_file(tmp_path: Path) -> None:
    text = 'fail_on = "critical"\n[[rule]]\naction = "fail"\npath = {}\nreason = "r"\n'
    _, decided = _judge(tmp_path, text.format('"**/.ssh/*"'))
    assert decided == {"fp1:user-key": 1}
    _, decided = _judge(tmp_path, text.format('"/etc/*"'))  # * does not cross directories
    assert decided == {"fp1:machine-id": 1}
    _, decided = _judge(tmp_path, text.format('["c:/INETPUB/**", "/etc/ssh/ssh_host_*_key"]'))
    assert decided == {"fp1:web-config": 1, "fp1:host-key": 1}  # Windows: case-insensitive


def test_matchers_are_anded_and_lists_ored(tmp_path: Path) -> None:
    _, decided = _judge(
        tmp_path,
        """
[[rule]]
action = "allow"
category = ["private-key", "identity"]
rule = ["openssh-private-key", "machine-id"]
severity = ["critical", "low"]
path = ["/etc/**"]
reason = "r"
""",
    )
    assert set(decided) == {"fp1:host-key", "fp1:machine-id"}  # the user key is not in /etc


def test_a_fingerprint_is_judged_once(tmp_path: Path) -> None:
    again = Finding(
        HOST_KEY.rule, HOST_KEY.category, HOST_KEY.severity, HOST_KEY.path, 9, "…", "fp1:host-key"
    )
    verdict = judge(Policy(), _result(HOST_KEY, again))
    assert verdict.failing == ("fp1:host-key",)


def test_exit_code_uses_the_verdict() -> None:
    result = _result(*FINDINGS)
    assert exit_code(result, Severity.LOW, False) == EXIT_FINDINGS
    assert exit_code(_result(FIXTURE), Severity.LOW, False) == EXIT_CLEAN
    assert exit_code(_result(FIXTURE), Severity.INFO, False) == EXIT_FINDINGS
    # A judged result: its verdict (here: nothing fails) decides, not the fail_on argument.
    judged = replace(result, gate=judge(Policy(), _result(FIXTURE)))
    assert exit_code(judged, Severity.LOW, False) == EXIT_CLEAN
    # Incomplete coverage fails closed whatever the verdict says.
    incomplete = _result(FIXTURE, complete=False)
    assert exit_code(replace(incomplete, gate=judge(Policy(), incomplete))) == EXIT_ERROR
    assert exit_code(incomplete, Severity.LOW, True) == EXIT_CLEAN


# -- the command ------------------------------------------------------------------------------

IDENTITY_ONLY = f"""
fail_on = "info"  # overridden by --fail-on critical in the test

[[rule]]
action = "fail"
exposure = "identity"
reason = "a copy must never carry this host's identity"

[[rule]]
action = "allow"
severity = {ALL_SEVERITIES}
reason = "everything else may be copied"
"""


def _report(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def test_a_policy_fails_an_image_on_its_host_identity(images: Path, tmp_path: Path) -> None:
    policy = _policy(tmp_path, IDENTITY_ONLY)
    proc = run(
        "scan", images / "server.qcow2", "--fail-on", "critical", "--policy", policy, "-f", "json"
    )
    assert proc.returncode == 1, proc.stderr
    report = _report(proc)
    gate = report["gate"]
    assert gate["fail_on"] == "critical" and gate["policy"] == str(policy)
    identity = {fp for e in report["exposures"] if e["kind"] == "identity" for fp in e["evidence"]}
    host_keys = {
        f["fingerprint"]
        for f in report["findings"]
        if f["path"].startswith("/etc/ssh/ssh_host_") and f["severity"] != "info"
    }
    assert host_keys and host_keys <= identity
    assert set(gate["failing"]) == identity
    # Every finding was decided by a rule: identity ones failed by 1, the rest allowed by 2.
    decisions = {d["fingerprint"]: d for d in gate["decisions"]}
    assert set(decisions) == {f["fingerprint"] for f in report["findings"]}
    for fp, decision in decisions.items():
        expected = ("fail", 1) if fp in identity else ("allow", 2)
        assert (decision["action"], decision["rule"]) == expected
        assert decision["reason"]
    summary = proc.stderr.strip().splitlines()[-1]
    assert f"{len(identity)} fail the gate (fail-on critical; policy rule 1 failed" in summary
    assert "policy rule 2 allowed" in summary and "everything else may be copied" in summary
    # Every kind the scan gives an exposure is one a policy may name.
    assert {e["kind"] for e in report["exposures"]} <= set(EXPOSURE_KINDS)
    # The Markdown comment and the HTML page state the same verdict.
    args = ("scan", images / "server.qcow2", "--fail-on", "critical", "--policy", policy)
    markdown = run(*args, "-f", "markdown").stdout
    assert f"Gate: **{len(identity)} finding(s) fail** (fail-on critical, policy `" in markdown
    page = run(*args, "-f", "html").stdout
    assert f'<dd id="gate"><span class="bad">{len(identity)} finding(s) fail the gate' in page


def test_a_policy_that_allows_everything_passes(images: Path, tmp_path: Path) -> None:
    policy = _policy(
        tmp_path, f'[[rule]]\naction = "allow"\nseverity = {ALL_SEVERITIES}\nreason = "lab"\n'
    )
    proc = run("scan", images / "server.qcow2", "--policy", policy, "-f", "json")
    assert proc.returncode == 0, proc.stderr
    gate = _report(proc)["gate"]
    assert gate["failing"] == [] and gate["fail_on"] == "low"
    assert {d["action"] for d in gate["decisions"]} == {"allow"}
    # A policy never makes an image that was not read completely pass.
    assert run("scan", images / "mbr.qcow2", "--policy", policy).returncode == 2


def test_fail_on_comes_from_the_policy_unless_given(images: Path, tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        'fail_on = "critical"\n[[rule]]\naction = "allow"\nseverity = "critical"\n'
        'reason = "keys are rotated when copied"\n',
    )
    proc = run("scan", images / "server.qcow2", "--policy", policy, "-f", "json")
    assert proc.returncode == 0, proc.stderr
    assert _report(proc)["gate"]["fail_on"] == "critical"
    proc = run("scan", images / "server.qcow2", "--policy", policy, "--fail-on", "high")
    assert proc.returncode == 1, proc.stderr
    assert "fail the gate (fail-on high;" in proc.stderr
    # Without a policy the gate is the threshold, and the JSON says so.
    gate = _report(run("scan", images / "server.qcow2", "-f", "json"))["gate"]
    assert gate["fail_on"] == "low" and gate["policy"] is None and gate["decisions"] == []
    assert gate["failing"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[[rule]]\naction = "block"\nseverity = "high"\nreason = "r"\n', "unknown action"),
        ('[[rule]]\naction = "fail"\nrule = "no-such-rule"\nreason = "r"\n', "unknown rule id"),
    ],
)
def test_a_malformed_policy_exits_2_before_scanning(
    images: Path, tmp_path: Path, text: str, needle: str
) -> None:
    policy = _policy(tmp_path, text)
    proc = run("scan", images / "server.qcow2", "--policy", policy)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"imgscan: error: {policy}: policy rule 1: ")
    assert needle in lines[0]


@pytest.mark.parametrize("doc", ["README.md", "docs/registry-hook.md"])
def test_the_documented_policies_load(tmp_path: Path, doc: str) -> None:
    text = (Path(__file__).resolve().parent.parent / doc).read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```toml\n")[1:] if "[[rule]]" in b]
    assert blocks
    # Every policy a document shows loads; the gate example (the one that sets fail_on) also
    # decides the sample findings as the document says.
    for block in blocks:
        load_policy(_policy(tmp_path, block))
    examples = [block for block in blocks if "fail_on" in block]
    assert examples
    for block in examples:
        policy = load_policy(_policy(tmp_path, block))
        assert policy.fail_on is Severity.HIGH
        # The identity rule comes first, the rule that allows info last (a document may put
        # rules between them that no sample finding meets, such as one for vendor keys).
        allow = len(policy.rules)
        assert policy.rules[-1].action == "allow" and policy.rules[0].exposure == ("identity",)
        failing, decided = _judge(tmp_path, block)
        assert failing == ["fp1:machine-id", "fp1:host-key", "fp1:user-key", "fp1:db"]
        assert decided == {"fp1:host-key": 1, "fp1:machine-id": 1, "fp1:fixture": allow}
