"""Where the image says its keys are used: ssh config, known_hosts, shell history, certificates,
and how the exposures link keys to them.

Keys and certificates are generated at test time.
"""

from __future__ import annotations

import build as testdata
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from imgscan.detect.checks import private_key_id
from imgscan.detect.usage import MAX_CLUES, read_clues, wants
from imgscan.exposures import build_exposures, ssh_hosts
from imgscan.model import Check, CheckResult, Clue, Finding, Severity, Validation


def _facts(clues: tuple[Clue, ...]) -> list[dict[str, str]]:
    return [dict(c.facts) for c in clues]


def test_which_files_are_read() -> None:
    assert wants("/home/alice/.ssh/config")
    assert wants("/root/.ssh/known_hosts")
    assert wants("/home/bob/.zsh_history")
    assert wants("/home/bob/.local/share/fish/fish_history")
    assert wants("/etc/nginx/ssl/www.crt")
    assert wants("/var/backups/etc.tar!/etc/ssl/certs/www.pem")
    assert not wants("/etc/ssl/certs/ca-certificates.crt")
    assert not wants("/usr/share/ca-certificates/mozilla/ISRG_Root_X1.crt")
    assert not wants("/etc/ssh/sshd_config")


def test_ssh_config_blocks() -> None:
    text = b"""# comment
Host git gitlab.corp
    HostName git.corp.example
    User git
    IdentityFile ~/.ssh/deploy_ed25519
    IdentityFile=%d/.ssh/backup_key
Host db.corp
    User alice
Host *
    IdentityFile ~/.ssh/everywhere
Match host x
    IdentityFile ~/.ssh/ignored
"""
    facts = _facts(read_clues("/home/alice/.ssh/config", text))
    assert facts == [
        {"host": "git.corp.example", "user": "git", "identity": "~/.ssh/deploy_ed25519"},
        {"host": "git.corp.example", "user": "git", "identity": "%d/.ssh/backup_key"},
        {"host": "db.corp", "user": "alice"},
        {"host": "*", "identity": "~/.ssh/everywhere"},
    ]


def test_known_hosts_skips_hashed_and_reads_markers_and_ports() -> None:
    text = (
        b"github.com,140.82.121.3 ssh-ed25519 AAAAC3Nz\n"
        b"|1|aGFzaA==|c2FsdA== ssh-ed25519 AAAAC3Nz\n"
        b"[git.corp]:2222 ssh-rsa AAAAB3Nz\n"
        b"@cert-authority *.corp ssh-rsa AAAAB3Nz\n"
        b"# a comment\n"
    )
    hosts = [f["host"] for f in _facts(read_clues("/root/.ssh/known_hosts", text))]
    assert hosts == ["github.com", "140.82.121.3", "git.corp:2222"]


def test_shell_history_commands() -> None:
    text = (
        b"ls -la\n"
        b"ssh -i ~/.ssh/ops_key -p 2222 admin@bastion.corp 'uptime'\n"
        b": 1700000000:0;ssh -l bob -o IdentityFile=/keys/k db.corp\n"
        b"- cmd: sftp -i key me@files.corp\n"
        b"scp -P 2200 local.txt backup@store.corp:/srv/ && echo done\n"
        b"sudo ssh ssh://u@h3.corp:2201\n"
        b"git clone git@git.corp:team/app.git\n"
        b"ssh 'unbalanced\n"
    )
    facts = _facts(read_clues("/home/alice/.bash_history", text))
    assert facts == [
        {"host": "bastion.corp:2222", "user": "admin", "identity": "~/.ssh/ops_key"},
        {"host": "db.corp", "user": "bob", "identity": "/keys/k"},
        {"host": "files.corp", "user": "me", "identity": "key"},
        {"host": "store.corp:2200", "user": "backup"},
        {"host": "h3.corp:2201", "user": "u"},
        {"host": "git.corp", "user": "git"},
    ]


def test_a_password_in_a_destination_never_becomes_a_user() -> None:
    password = "Zq8wPx3kT" + "v2"  # not credential-shaped: only where it ends up matters
    text = (
        f"ssh ssh://ops:{password}@h1.corp\n"
        f"sftp ops:{password}@h2.corp\n"
        f"git clone ssh://ops:{password}@h3.corp/repo.git\n"
        f"ssh -o User=ops:{password} h4.corp\n"
    ).encode()
    clues = read_clues("/root/.bash_history", text)
    assert clues and password not in repr(clues)
    assert all(not c.get("user") for c in clues)


def test_clues_per_file_are_bounded() -> None:
    text = b"".join(b"ssh host%d.corp\n" % i for i in range(MAX_CLUES * 3))
    assert len(read_clues("/root/.bash_history", text)) == MAX_CLUES


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_certificates_pem_der_and_garbage() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = testdata.make_cert("www.corp.example", key, san="www.corp.example")
    ca = testdata.make_cert("Corp CA", key, ca=True)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    der = cert.public_bytes(serialization.Encoding.DER)
    garbage = b"-----BEGIN CERTIFICATE-----\n" + b"A" * 80 + b"\n-----END CERTIFICATE-----\n"
    key_id = private_key_id(_pem_key(key))
    assert key_id is not None and key_id.startswith("SHA256:")

    (got,) = _facts(read_clues("/etc/nginx/www.pem", garbage + pem))
    assert got == {
        "public_key": key_id,
        "subject": "CN=www.corp.example",
        "sans": "www.corp.example",
        "not_after": cert.not_valid_after_utc.date().isoformat(),
    }
    assert _facts(read_clues("/etc/nginx/www.cer", der)) == [got]
    (authority,) = _facts(
        read_clues("/etc/pki/ca.crt", ca.public_bytes(serialization.Encoding.PEM))
    )
    assert authority["ca"] == "yes"
    assert read_clues("/etc/nginx/junk.crt", b"\x30\x82garbage") == ()


def _key_finding(path: str, key_id: str | None = None, encrypted: bool = False) -> Finding:
    detail = "encrypted key: needs its passphrase" if encrypted else "Ed25519 key parses"
    return Finding(
        "openssh-private-key",
        "private-key",
        Severity.CRITICAL,
        path,
        1,
        "…(400)",
        f"fp1:{path}",
        validation=Validation((Check("private-key", CheckResult.PASS, detail),)),
        context=(("public_key", key_id),) if key_id else (),
    )


def test_ssh_hosts_of_named_and_default_keys() -> None:
    clues = (
        Clue("ssh-config", "/home/alice/.ssh/config", (("host", "a.corp"), ("identity", "~/k1"))),
        Clue("ssh-config", "/home/alice/.ssh/config", (("host", "b.corp"), ("user", "al"))),
        Clue("ssh-known-host", "/home/alice/.ssh/known_hosts", (("host", "b.corp"),)),
        Clue("ssh-known-host", "/home/alice/.ssh/known_hosts", (("host", "c.corp"),)),
        Clue("ssh-known-host", "/home/bob/.ssh/known_hosts", (("host", "bob-only.corp"),)),
        Clue(
            "ssh-command",
            "/root/.bash_history",
            (("host", "d.corp"), ("identity", "/home/alice/k1"), ("user", "ops")),
        ),
        Clue("ssh-command", "/root/.bash_history", (("host", "root-only.corp"),)),
    )
    # k1 is named by alice's config (~ is her home) and by root's history (absolute path).
    assert ssh_hosts("/home/alice/k1", clues) == ("a.corp", "ops@d.corp")
    # id_ed25519 is offered by default: the block without a key and her known hosts.
    assert ssh_hosts("/home/alice/.ssh/id_ed25519", clues) == ("al@b.corp", "c.corp")
    assert ssh_hosts("/home/alice/.ssh/other_key", clues) == ()
    assert ssh_hosts("/srv/keys/id_rsa", clues) == ()


def test_exposures_carry_hosts_certificate_and_encryption() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    key_id = private_key_id(_pem_key(key))
    cert = testdata.make_cert("www.corp.example", key, san="www.corp.example")
    (cert_clue,) = read_clues(
        "/etc/nginx/ssl/www.crt", cert.public_bytes(serialization.Encoding.PEM)
    )
    ssh_key = ed25519.Ed25519PrivateKey.generate()
    ssh_id = private_key_id(
        ssh_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    clues = (
        cert_clue,
        Clue("ssh-known-host", "/home/alice/.ssh/known_hosts", (("host", "git.corp"),)),
    )
    exposures = {
        e.kind: e
        for e in build_exposures(
            [
                _key_finding("/etc/nginx/ssl/www.key", key_id),
                _key_finding("/home/alice/.ssh/id_ed25519", ssh_id, encrypted=True),
            ],
            clues,
        )
    }
    tls = exposures["identity"]
    assert tls.target == "TLS identity of www.corp.example"
    details = dict(tls.details)
    assert details["certificate"] == "/etc/nginx/ssl/www.crt"
    assert details["subject"] == "CN=www.corp.example"
    ssh = exposures["ssh"]
    assert ssh.target == "SSH to git.corp" and ssh.principal == "alice"
    assert dict(ssh.details) == {"encrypted": "yes", "hosts": "git.corp", "public_key": ssh_id}
