"""Exposures: what a copy of the server image grants, with targets and principals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_cli import run

from imgscan.detect.context import secret_context

SECRET = b"Zq8-wPx3_kT"  # not credential-shaped on purpose: only its position matters here


@pytest.mark.parametrize(
    ("text", "context"),
    [
        (
            b"DATABASE_URL=postgres://hr_app:%s@db.internal:5432/hr\n",
            {
                "scheme": "postgres",
                "user": "hr_app",
                "host": "db.internal",
                "port": "5432",
                "database": "hr",
            },
        ),
        (
            b"db.internal:5432:hr:hr_app:%s\n",
            {"host": "db.internal", "port": "5432", "database": "hr", "user": "hr_app"},
        ),
        (
            b"[database]\nhost = db01.corp\nport = 3306\nuser = billing\npassword = %s\n",
            {"host": "db01.corp", "port": "3306", "user": "billing"},
        ),
        (
            b"Server=sql01;Database=Billing;User Id=billing_app;Password=%s;\n",
            {"host": "sql01", "database": "Billing", "user": "billing_app"},
        ),
        (
            b"url=jdbc:sqlserver://db:1433;databaseName=hr;user=sa;password=%s\n",
            {"scheme": "sqlserver", "host": "db", "port": "1433", "database": "hr", "user": "sa"},
        ),
        (
            b"machine git.internal login deploy password %s\n",
            {"host": "git.internal", "user": "deploy"},
        ),
        (b"-----BEGIN KEY-----\n%s\n", {}),
    ],
)
def test_context_of_a_secret(text: bytes, context: dict[str, str]) -> None:
    data = text % SECRET
    start = data.index(SECRET)
    got = dict(secret_context(data, start, start + len(SECRET)))
    assert got == context
    assert SECRET.decode() not in "".join(got.values())


def test_the_server_image_exposures(images: Path) -> None:
    proc = run("scan", images / "server.qcow2", "--format", "json")
    report: dict[str, Any] = json.loads(proc.stdout)
    exposures = {(e["kind"], e["target"], e["principal"]): e for e in report["exposures"]}
    assert ("database", "postgresql://db.internal:5432/hr", "hr_app") in exposures
    assert ("ssh", "SSH servers that trust this key", "alice") in exposures
    host_keys = exposures[("identity", "this host's SSH identity (host keys)", None)]
    assert host_keys["sysprep"] == ["ssh-hostkeys"] and host_keys["severity"] == "critical"
    # The TLS key is matched with its certificate on the image, by public key.
    tls = exposures[("identity", "TLS identity of hr.example.internal", None)]
    assert tls["details"]["certificate"] == "/etc/ssl/certs/server.crt"
    assert tls["details"]["subject"] == "CN=hr.example.internal"
    assert exposures[("identity", "this host's machine ID", None)]["sysprep"] == ["machine-id"]
    assert ("identity", "this host's cloud instance (cloud-init data)", None) in exposures
    assert ("network", "WireGuard VPN wg0", None) in exposures
    # alice's id_rsa: named by her ~/.ssh/config (git.internal) and by root's history
    # (ssh -i /home/alice/.ssh/id_rsa deploy@app02...); offered by default to the hosts in
    # her history and known_hosts.
    (alice_rsa,) = [
        e
        for e in report["exposures"]
        if e["kind"] == "ssh" and "/home/alice/.ssh/id_rsa" in e["paths"]
    ]
    assert alice_rsa["principal"] == "alice" and alice_rsa["target"].startswith("SSH to ")
    hosts = alice_rsa["details"]["hosts"].split(", ")
    assert {"git@git.internal", "deploy@app02.example.internal", "github.com"} <= set(hosts)
    assert {"alice@db.internal", "backup@backup.example.internal"} <= set(hosts)
    assert alice_rsa["details"]["encrypted"] == "no"
    assert any(kind == "account" and principal == "root" for kind, _, principal in exposures)
    assert any(kind == "cloud" and target == "Amazon Web Services" for kind, target, _ in exposures)
    # docker's `auth` is base64 of user:password: the user is the principal (never the rest).
    assert ("saas", "container registry", "deploy") in exposures
    assert (
        "--operations" in report["sysprep_command"] and "ssh-hostkeys" in report["sysprep_command"]
    )
    # Every finding is behind exactly the exposures that cite it, and none is lost.
    cited = {fp for e in report["exposures"] for fp in e["evidence"]}
    assert cited == {f["fingerprint"] for f in report["findings"] if f["severity"] != "info"}
    assert "What a copy of this image grants (" in run("scan", images / "server.qcow2").stdout


def test_sysprep_operations_exist() -> None:
    import shutil
    import subprocess

    from imgscan.exposures import build_exposures
    from imgscan.model import Finding, Severity

    def finding(rule: str, category: str, path: str) -> Finding:
        return Finding(rule, category, Severity.HIGH, path, 1, "…(9)", f"fp1:{rule}{path}")

    exposures = build_exposures(
        [
            finding("openssh-private-key", "private-key", "/etc/ssh/ssh_host_ed25519_key"),
            finding("openssh-private-key", "private-key", "/home/alice/.ssh/id_ed25519"),
            finding("kerberos-keytab", "private-key", "/etc/krb5.keytab"),
            finding("networkmanager-secret", "password", "/etc/NetworkManager/x.nmconnection"),
        ]
    )
    named = {op for e in exposures for op in e.sysprep}
    assert named == {"ssh-hostkeys", "ssh-userdir", "kerberos-hostkeytab", "net-nmconn"}
    tool = shutil.which("virt-sysprep")
    assert tool is not None, "libguestfs-tools is installed by dev.sh"
    listed = subprocess.run([tool, "--list-operations"], capture_output=True, text=True, check=True)
    assert named <= {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


def test_an_aws_key_is_one_exposure_named_by_its_id(tmp_path: Path) -> None:
    """Each access key ID with the secret key of its profile is one exposure, named by the ID
    (an identifier, shown whole); a secret key with no ID in its file stands alone."""
    import secrets
    import string
    import subprocess

    def key_id() -> str:
        return "AKIA" + "".join(
            secrets.choice(string.ascii_uppercase + "234567") for _ in range(16)
        )

    def secret_key() -> str:
        alphabet = string.ascii_letters + string.digits + "/+"
        return "".join(secrets.choice(alphabet) for _ in range(40))

    (first, first_secret), (second, second_secret) = (
        (key_id(), secret_key()),
        (key_id(), secret_key()),
    )
    root = tmp_path / "tree"
    (root / "root" / ".aws").mkdir(parents=True)
    (root / "root" / ".aws" / "credentials").write_text(
        f"[default]\naws_access_key_id = {first}\naws_secret_access_key = {first_secret}\n\n"
        f"[deploy]\naws_access_key_id = {second}\naws_secret_access_key = {second_secret}\n"
    )
    (root / "srv").mkdir()
    (root / "srv" / "lone.env").write_text(f"AWS_SECRET_ACCESS_KEY={secret_key()}\n")
    image = tmp_path / "aws.raw"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(root), str(image), "4M"], check=True)
    report: dict[str, Any] = json.loads(run("scan", image, "--format", "json").stdout)
    clouds = {e["principal"]: e for e in report["exposures"] if e["kind"] == "cloud"}
    assert set(clouds) == {first, second, None}
    by_fp = {f["fingerprint"]: f for f in report["findings"]}
    for key in (first, second):
        rules = sorted(by_fp[fp]["rule"] for fp in clouds[key]["evidence"])
        assert rules == ["aws-access-key-id", "aws-secret-access-key"]
        assert clouds[key]["paths"] == ["/root/.aws/credentials"]
    assert clouds[None]["paths"] == ["/srv/lone.env"]
    previews = {f["preview"] for f in report["findings"] if f["rule"] == "aws-access-key-id"}
    assert previews == {first, second}  # the ID is shown; the secret keys never are
    assert first_secret not in json.dumps(report) and second_secret not in json.dumps(report)
