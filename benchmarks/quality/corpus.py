"""Build a labelled corpus of secrets and decoys laid out like a server's file systems.

``build_corpus(dest, seed)`` writes ``dest/fs/`` (the files, as they would sit under ``/`` in a
guest: etc/, home/, root/, srv/, var/, opt/, usr/) and ``dest/labels.json``, which lists every
planted value:

* ``secrets``: true secrets a scanner should report (passwords, tokens, keys, hashes), each with
  its path (relative to ``fs/``), kind, category (imgscan's category vocabulary), exact value,
  byte offset, first and last line, and ``block`` (multi-line key material, where a scanner may
  capture the block with or without its armour);
* ``decoys``: text modelled on what distributions and applications really hold that a scanner
  should not report (documentation examples, placeholders, environment references, test
  fixtures, hashes, UUIDs, commit ids, public keys, certificates, empty or locked fields,
  commented-out defaults, policy settings, prose), with the same fields; their ``category`` is
  the decoy group.

Contracts (checked by :func:`verify_corpus` and tests/quality/test_harness.py):

* every value sits at its recorded byte offset and lines;
* no two labels of one file share a line, so a scanner that reports only file and line (trivy,
  detect-secrets) is scored unambiguously;
* the same seed gives the same corpus; values are generated at run time (shapes.py), the source
  holds no credential;
* the corpus is written from vendors' token formats and real file layouts, never from imgscan's
  rule pack (imgscan/signatures/), so recall measured on it means something.

Provider tokens (one kind per provider credential, with look-alike decoys) are data:
providers.toml, planted by providers.py; their kinds join SECRET_KINDS and DECOY_KINDS.

Run ``python benchmarks/quality/corpus.py DEST [--seed N]`` to build one by hand.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import providers
from shapes import B64URL, DOMAINS, Shapes, wrap

from imgscan.detect.rules import CATEGORIES as PACK_CATEGORIES

# The rule pack's categories of secrets, in report order. Machine identity (a machine-id, a
# cloud-init instance record) is a file the pack reports by its path, not a value the corpus can
# plant and score, so the corpus leaves that category out.
CATEGORIES = tuple(c for c in PACK_CATEGORIES if c != "identity")

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
LOWER_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
UPPER_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
B64 = LETTERS + "0123456789+/"

DEFAULT_SEED = 20261126
LABELS = "labels.json"
FS = "fs"
FORMAT = "imgscan-quality-corpus/1"


# kind -> imgscan category. A kind names what the value is and, for passwords, where it sits.
SECRET_KINDS: dict[str, str] = {
    # private-key
    "rsa-private-key": "private-key",
    "ec-private-key": "private-key",
    "pkcs8-private-key": "private-key",
    "openssh-private-key": "private-key",
    "openssh-encrypted-private-key": "private-key",
    "encrypted-pem-private-key": "private-key",
    "encrypted-pkcs8-private-key": "private-key",
    "putty-private-key": "private-key",
    "putty-encrypted-private-key": "private-key",
    "pgp-private-key": "private-key",
    "openvpn-static-key": "private-key",
    "wireguard-private-key": "private-key",
    "wireguard-preshared-key": "private-key",
    "age-secret-key": "private-key",
    "jwk-private-key": "private-key",
    "escaped-pem-private-key": "private-key",
    # cloud
    "aws-access-key-id": "cloud",
    "aws-secret-access-key": "cloud",
    "aws-temporary-access-key-id": "cloud",
    "aws-session-token": "cloud",
    "gcp-service-account-key": "cloud",
    "gcp-api-key": "cloud",
    "gcp-oauth-client-secret": "cloud",
    "google-oauth-refresh-token": "cloud",
    "azure-storage-account-key": "cloud",
    "azure-sas-signature": "cloud",
    "azure-ad-client-secret": "cloud",
    "azure-service-bus-key": "cloud",
    "digitalocean-token": "cloud",
    "alibaba-access-key-id": "cloud",
    "alibaba-access-key-secret": "cloud",
    "heroku-api-key": "cloud",
    "cloudflare-api-token": "cloud",
    "terraform-cloud-token": "cloud",
    "hashicorp-vault-token": "cloud",
    "databricks-token": "cloud",
    "tailscale-auth-key": "cloud",
    # vcs
    "github-classic-pat": "vcs",
    "github-oauth-token": "vcs",
    "github-app-token": "vcs",
    "github-fine-grained-pat": "vcs",
    "gitlab-pat": "vcs",
    "gitlab-runner-token": "vcs",
    "gitlab-deploy-token": "vcs",
    "bitbucket-app-password": "vcs",
    "git-credentials-password": "vcs",
    # saas
    "slack-bot-token": "saas",
    "slack-user-token": "saas",
    "slack-app-token": "saas",
    "slack-webhook-url": "saas",
    "stripe-secret-key": "saas",
    "stripe-restricted-key": "saas",
    "stripe-webhook-secret": "saas",
    "sendgrid-api-key": "saas",
    "twilio-auth-token": "saas",
    "twilio-api-key-sid": "saas",
    "twilio-api-key-secret": "saas",
    "mailgun-api-key": "saas",
    "mailchimp-api-key": "saas",
    "openai-api-key": "saas",
    "anthropic-api-key": "saas",
    "huggingface-token": "saas",
    "datadog-api-key": "saas",
    "datadog-app-key": "saas",
    "newrelic-user-key": "saas",
    "newrelic-license-key": "saas",
    "shopify-access-token": "saas",
    "square-access-token": "saas",
    "telegram-bot-token": "saas",
    "discord-bot-token": "saas",
    "discord-webhook-url": "saas",
    "postman-api-key": "saas",
    "linear-api-key": "saas",
    "atlassian-api-token": "saas",
    "notion-token": "saas",
    "mapbox-secret-token": "saas",
    "grafana-service-account-token": "saas",
    "npm-token": "saas",
    "npmrc-auth": "saas",
    "pypi-token": "saas",
    "rubygems-api-key": "saas",
    "crates-io-token": "saas",
    "nuget-api-key": "saas",
    "okta-api-token": "saas",
    "sentry-auth-token": "saas",
    "sonarqube-token": "saas",
    "pusher-app-secret": "saas",
    "algolia-admin-key": "saas",
    "kaggle-api-key": "saas",
    "firebase-fcm-server-key": "saas",
    # database
    "postgres-url-password": "database",
    "mysql-url-password": "database",
    "mongodb-url-password": "database",
    "redis-url-password": "database",
    "amqp-url-password": "database",
    "jdbc-password": "database",
    "ado-connection-string-password": "database",
    "pgpass-password": "database",
    "mycnf-password": "database",
    "php-define-db-password": "database",
    "django-db-password": "database",
    "spring-datasource-password": "database",
    "rails-database-yml-password": "database",
    "dotenv-db-password": "database",
    "redis-requirepass": "database",
    "mysql-cli-password": "database",
    "pgpassword-env": "database",
    "redis-cli-password": "database",
    "mssql-cli-password": "database",
    "sql-create-user-password": "database",
    "odbc-password": "database",
    "xml-db-password": "database",
    "php-db-password": "database",
    "python-db-password": "database",
    "yaml-db-password": "database",
    # password
    "dotenv-password": "password",
    "netrc-password": "password",
    "curl-basic-auth": "password",
    "sshpass-password": "password",
    "wget-password": "password",
    "url-basic-auth": "password",
    "http-basic-auth-header": "password",
    "postfix-sasl-password": "password",
    "exim-client-password": "password",
    "ldap-bind-password": "password",
    "wifi-psk": "password",
    "ipsec-psk": "password",
    "cifs-password": "password",
    "xml-password": "password",
    "ini-password": "password",
    "yaml-password": "password",
    "systemd-env-password": "password",
    "php-env-password": "password",
    "ansible-password": "password",
    # Issue 4 asks for Ansible vault files to be reported: the vault password often sits on the
    # same host, so the encrypted data is a lead to secrets (imgscan reports it at low severity).
    "ansible-vault": "password",
    "ansible-vault-password-file": "password",
    "tfvars-password": "password",
    "tfstate-password": "password",
    "chpasswd-password": "password",
    "htpasswd-cli-password": "password",
    "openssl-pass-argument": "password",
    "keytool-password": "password",
    "smbclient-password": "password",
    "ipmitool-password": "password",
    "lftp-password": "password",
    "rabbitmqctl-password": "password",
    "rdp-cli-password": "password",
    "snmp-community": "password",
    "keepalived-auth-pass": "password",
    "haproxy-password": "password",
    "openvpn-auth-file-password": "password",
    "ppp-chap-secret": "password",
    "kickstart-password": "password",
    "cloud-init-password": "password",
    "source-code-password": "password",
    "log-leaked-password": "password",
    "proxy-url-password": "password",
    "maven-settings-password": "password",
    "gradle-property-password": "password",
    "composer-http-basic-password": "password",
    "mosquitto-cli-password": "password",
    # password-hash
    "shadow-sha512crypt": "password-hash",
    "shadow-sha256crypt": "password-hash",
    "shadow-md5crypt": "password-hash",
    "shadow-yescrypt": "password-hash",
    "htpasswd-apr1": "password-hash",
    "htpasswd-bcrypt": "password-hash",
    "htpasswd-sha1": "password-hash",
    "bcrypt-db-hash": "password-hash",
    "mysql-native-hash": "password-hash",
    "postgres-scram-hash": "password-hash",
    "postgres-md5-hash": "password-hash",
    "ldap-ssha-hash": "password-hash",
    "grub-pbkdf2-hash": "password-hash",
    "mosquitto-pbkdf2-hash": "password-hash",
    "dovecot-crypt-hash": "password-hash",
    "haproxy-crypt-hash": "password-hash",
    "kickstart-crypt-hash": "password-hash",
    "cloud-init-crypt-hash": "password-hash",
    "django-pbkdf2-hash": "password-hash",
    # token
    "jwt": "token",
    "bearer-token": "token",
    "django-secret-key": "token",
    "rails-secret-key-base": "token",
    "rails-master-key": "token",
    "flask-secret-key": "token",
    "wordpress-auth-salt": "token",
    "laravel-app-key": "token",
    "session-secret": "token",
    "jwt-signing-secret": "token",
    "oauth-client-secret": "token",
    "generic-api-key": "token",
    "api-token-db-row": "token",
    "nextcloud-secret": "token",
    "aspnet-machine-key": "token",
    "airflow-fernet-key": "token",
    "grafana-secret-key": "token",
    # container
    "docker-config-auth": "container",
    "docker-login-password": "container",
    "dockerhub-pat": "container",
    "container-env-password": "container",
    "helm-repo-password": "container",
    # kubernetes
    "kubeconfig-token": "kubernetes",
    "kubeconfig-client-key-data": "kubernetes",
    "k8s-secret-data": "kubernetes",
    "k8s-secret-string-data": "kubernetes",
    "k8s-serviceaccount-token": "kubernetes",
    "k3s-token": "kubernetes",
    "kubeadm-bootstrap-token": "kubernetes",
    "k8s-encryption-key": "kubernetes",
    "k8s-env-literal": "kubernetes",
}

# decoy kind -> decoy group
DECOY_KINDS: dict[str, str] = {
    "aws-doc-example": "doc-example",
    "doc-token-example": "doc-example",
    "doc-url-example": "doc-example",
    "jwt-doc-example": "doc-example",
    "placeholder-word": "placeholder",
    "template-reference": "placeholder",
    "masked-value": "placeholder",
    "env-reference": "env-reference",
    "code-env-reference": "env-reference",
    "secret-file-reference": "env-reference",
    "test-fixture-secret": "test-fixture",
    "test-fixture-key": "test-fixture",
    "test-fixture-token": "test-fixture",
    "sha256-hex": "hash",
    "sha1-hex": "hash",
    "md5-hex": "hash",
    "sri-integrity": "hash",
    "go-sum-hash": "hash",
    "wheel-record-hash": "hash",
    "docker-digest": "hash",
    "ssh-fingerprint": "hash",
    "uuid": "uuid",
    "machine-id": "uuid",
    "git-commit": "commit-id",
    "ssh-public-key": "public-key",
    "pem-public-key": "public-key",
    "pgp-public-key": "public-key",
    "age-public-key": "public-key",
    "wireguard-public-key": "public-key",
    "publishable-key": "public-key",
    "certificate": "certificate",
    "certificate-base64": "certificate",
    "pgp-signature": "base64-blob",
    "data-uri": "base64-blob",
    "base64-blob": "base64-blob",
    "encrypted-blob": "base64-blob",
    "empty-password": "empty-value",
    "password-prompt": "empty-value",
    "locked-shadow": "locked-account",
    "commented-example": "commented-example",
    "password-policy": "policy-setting",
    "config-reference": "policy-setting",
    "password-prose": "prose",
    "cloud-identifier": "identifier",
}

# Provider tokens are data (providers.toml, read by providers.py): their kinds join the tables.
PROVIDERS = providers.load(decoy_kinds=DECOY_KINDS)
for _table, _added in (
    (SECRET_KINDS, PROVIDERS.secret_kinds),
    (DECOY_KINDS, PROVIDERS.decoy_kinds),
):
    for _kind, _group in _added.items():
        if _table.setdefault(_kind, _group) != _group:
            raise RuntimeError(f"providers.toml: kind {_kind} is already {_table[_kind]}")

_MARK = re.compile("\x00([0-9]+)\x00")

# AWS's documentation example credentials (public; every AWS SDK and doc page ships them).
AWS_DOC_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_DOC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_DOC_KEY_ID_2 = "AKIAI44QH8DHBEXAMPLE"
AWS_DOC_SECRET_2 = "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY"
AWS_DOC_STS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
AWS_DOC_STS_TOKEN = (
    "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRX"
    "mxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI"
)


class CorpusError(RuntimeError):
    """The generator broke one of its own contracts (a bug in corpus.py)."""


@dataclass(frozen=True)
class Label:
    """One planted value. ``line``/``end_line`` are 1-based and inclusive; ``offset`` counts
    bytes from the start of the file; ``role`` is ``secret`` or ``decoy``."""

    path: str
    role: str
    kind: str
    category: str
    value: str
    offset: int
    line: int
    end_line: int
    block: bool = False

    @property
    def end(self) -> int:
        """Byte offset just past the value."""
        return self.offset + len(self.value.encode())


@dataclass(frozen=True)
class Corpus:
    """A built corpus: ``root`` holds ``fs/`` and ``labels.json``."""

    root: Path
    seed: int
    labels: tuple[Label, ...]

    @property
    def fs(self) -> Path:
        return self.root / FS

    @property
    def secrets(self) -> list[Label]:
        return [lab for lab in self.labels if lab.role == "secret"]

    @property
    def decoys(self) -> list[Label]:
        return [lab for lab in self.labels if lab.role == "decoy"]

    def files(self) -> list[str]:
        """Every file under fs/, relative, sorted."""
        return sorted(p.relative_to(self.fs).as_posix() for p in self.fs.rglob("*") if p.is_file())


@dataclass
class _Mark:
    role: str
    kind: str
    value: str
    block: bool


@dataclass
class FileBuilder:
    """Text of one corpus file with labelled values inserted through markers.

    ``s()`` / ``d()`` register a secret / decoy and return a marker to put in the text; the
    marker is replaced by the value when the file is rendered, which records the exact offset
    and lines. Every marker must be used exactly once.
    """

    path: str
    chunks: list[str] = field(default_factory=list)
    marks: list[_Mark] = field(default_factory=list)

    def s(self, value: str, kind: str, block: bool = False) -> str:
        if kind not in SECRET_KINDS:
            raise CorpusError(f"{self.path}: unknown secret kind {kind}")
        return self._mark(_Mark("secret", kind, value, block))

    def d(self, value: str, kind: str) -> str:
        if kind not in DECOY_KINDS:
            raise CorpusError(f"{self.path}: unknown decoy kind {kind}")
        return self._mark(_Mark("decoy", kind, value, False))

    def _mark(self, mark: _Mark) -> str:
        if not mark.value:
            raise CorpusError(f"{self.path}: empty {mark.role} value ({mark.kind})")
        self.marks.append(mark)
        return f"\x00{len(self.marks) - 1}\x00"

    def text(self, text: str) -> FileBuilder:
        """Append ``text``, dedented (write templates indented with the code)."""
        self.chunks.append(textwrap.dedent(text))
        return self

    def raw(self, text: str) -> FileBuilder:
        self.chunks.append(text)
        return self

    def lines(self, lines: Iterable[str]) -> FileBuilder:
        self.chunks.append("".join(line + "\n" for line in lines))
        return self

    def render(self) -> tuple[bytes, list[Label]]:
        out = bytearray()
        labels: list[Label] = []
        newlines = 0
        used: set[int] = set()
        for i, piece in enumerate(_MARK.split("".join(self.chunks))):
            if i % 2 == 0:
                data = piece.encode()
                out += data
                newlines += data.count(b"\n")
                continue
            index = int(piece)
            if index in used:
                raise CorpusError(f"{self.path}: marker {index} used twice")
            used.add(index)
            mark = self.marks[index]
            data = mark.value.encode()
            category = (SECRET_KINDS if mark.role == "secret" else DECOY_KINDS)[mark.kind]
            line = newlines + 1
            end_line = line + data.count(b"\n")
            labels.append(
                Label(
                    self.path,
                    mark.role,
                    mark.kind,
                    category,
                    mark.value,
                    len(out),
                    line,
                    end_line,
                    mark.block,
                )
            )
            out += data
            newlines += data.count(b"\n")
        if len(used) != len(self.marks):
            raise CorpusError(f"{self.path}: {len(self.marks) - len(used)} marker(s) never used")
        spans = sorted((lab.line, lab.end_line, lab.kind) for lab in labels)
        for (_, end1, kind1), (start2, _, kind2) in pairwise(spans):
            if start2 <= end1:
                raise CorpusError(f"{self.path}:{start2}: {kind1} and {kind2} share a line")
        return bytes(out), labels


class CorpusBuilder:
    """The files of one corpus, by relative path."""

    def __init__(self) -> None:
        self.files: dict[str, FileBuilder] = {}

    def file(self, path: str) -> FileBuilder:
        if path in self.files:
            raise CorpusError(f"{path}: written twice")
        self.files[path] = FileBuilder(path)
        return self.files[path]

    def write(self, fs: Path) -> list[Label]:
        labels: list[Label] = []
        for path, builder in sorted(self.files.items()):
            data, file_labels = builder.render()
            target = fs / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            labels += file_labels
        return labels


def js(obj: Any, indent: int | None = 2) -> str:
    """JSON text of ``obj`` that keeps markers usable (values must need no JSON escaping)."""
    return json.dumps(obj, indent=indent).replace("\\u0000", "\x00")


# =============================================================================================
# Writers: each adds a few files. ``c`` collects files, ``g`` draws values.
# =============================================================================================

Writer = Callable[[CorpusBuilder, Shapes], None]
_SHELL_SAFE = "%+-=@^_.,:"  # symbols a password may hold in an unquoted shell word
_URL_SAFE = "-._~"


@dataclass
class _Keys:
    """Key material shared by several writers (RSA keys are the slow part of a build)."""

    server: Any = None
    kube_ca: Any = None
    kube_sa: Any = None
    alice: Any = None
    gcp: Any = None
    legacy: Any = None
    root_ca: Any = None
    certbot: Any = None


KEYS = _Keys()


def _jwt_doc_example() -> str:
    """jwt.io's documentation token, computed (HS256, key 'your-256-bit-secret')."""
    import hmac

    def enc(obj: dict[str, object]) -> str:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing = (
        enc({"alg": "HS256", "typ": "JWT"})
        + "."
        + enc({"sub": "1234567890", "name": "John Doe", "iat": 1516239022})
    )
    mac = hmac.new(b"your-256-bit-secret", signing.encode(), hashlib.sha256).digest()
    return signing + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _sha256(g: Shapes) -> str:
    return hashlib.sha256(g.randbytes(32)).hexdigest()


def _sha1(g: Shapes) -> str:
    return hashlib.sha1(g.randbytes(20)).hexdigest()


def _sri(g: Shapes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(g.randbytes(16)).digest()).decode()


# --- accounts and password hashes -------------------------------------------------------------

_SYSTEM_ACCOUNTS = (
    ("daemon", "*"),
    ("bin", "*"),
    ("sys", "*"),
    ("sync", "*"),
    ("games", "*"),
    ("man", "*"),
    ("lp", "*"),
    ("mail", "*"),
    ("news", "*"),
    ("uucp", "*"),
    ("proxy", "*"),
    ("www-data", "*"),
    ("backup", "*"),
    ("list", "*"),
    ("irc", "*"),
    ("_apt", "*"),
    ("nobody", "*"),
    ("systemd-network", "!*"),
    ("systemd-timesync", "!*"),
    ("messagebus", "!"),
    ("sshd", "!"),
    ("postgres", "!"),
    ("mysql", "!"),
    ("redis", "!"),
    ("_chrony", "!"),
)


def _w_shadow(c: CorpusBuilder, g: Shapes) -> None:
    for path, people in (
        ("etc/shadow", ("root", "alice", "bob", "deploy", "carol", "legacy")),
        ("etc/shadow-", ("root", "alice", "bob")),
    ):
        f = c.file(path)
        rows = []
        for user in people:
            choice = {
                "root": ("shadow-sha512crypt", g.sha512_crypt),
                "alice": ("shadow-yescrypt", g.yescrypt),
                "bob": ("shadow-sha512crypt", g.sha512_crypt),
                "deploy": ("shadow-sha256crypt", g.sha256_crypt),
                "legacy": ("shadow-md5crypt", g.md5_crypt),
            }.get(user)
            if user == "carol":
                rows.append(
                    f"carol:{f.d('!' + g.sha512_crypt(), 'locked-shadow')}:19612:0:99999:7:::"
                )
            elif choice:
                kind, make = choice
                rows.append(f"{user}:{f.s(make(), kind)}:19{g.rng.randint(100, 700)}:0:99999:7:::")
            if user == "root":
                for name, field_ in _SYSTEM_ACCOUNTS[: 25 if path == "etc/shadow" else 8]:
                    rows.append(f"{name}:{f.d(field_, 'locked-shadow')}:19523:0:99999:7:::")
        f.lines(rows)
    passwd = ["root:x:0:0:root:/root:/bin/bash"]
    passwd += [
        f"{n}:x:{i + 1}:{i + 1}::/nonexistent:/usr/sbin/nologin"
        for i, (n, _) in enumerate(_SYSTEM_ACCOUNTS)
    ]
    passwd += [
        f"{u}:x:{1000 + i}:{1000 + i}:{u},,,:/home/{u}:/bin/bash"
        for i, u in enumerate(("alice", "bob", "deploy", "carol", "legacy"))
    ]
    c.file("etc/passwd").lines(passwd)


def _w_policy(c: CorpusBuilder, g: Shapes) -> None:
    f = c.file("etc/login.defs")
    f.text(f"""\
        #
        # /etc/login.defs - Configuration control definitions for the login package.
        #
        MAIL_DIR        /var/mail
        FAILLOG_ENAB		yes
        LOG_UNKFAIL_ENAB	no
        #
        # Password aging controls:
        #
        #	PASS_MAX_DAYS	Maximum number of days a password may be used.
        #	PASS_MIN_DAYS	Minimum number of days allowed between password changes.
        #	PASS_WARN_AGE	Number of days warning given before a password expires.
        #
        {f.d("PASS_MAX_DAYS	99999", "password-policy")}
        {f.d("PASS_MIN_DAYS	0", "password-policy")}
        PASS_WARN_AGE	7
        UID_MIN			 1000
        UMASK		022
        {f.d("ENCRYPT_METHOD YESCRYPT", "password-policy")}
        """)
    f = c.file("etc/security/pwquality.conf")
    f.text(f"""\
        # Configuration for systemwide password quality limits
        # Defaults:
        #
        # Number of characters in the new password that must not be present in the
        # old password.
        # difok = 1
        #
        # Minimum acceptable size for the new password (plus one if
        # credits are not disabled which is the default).
        {f.d("minlen = 12", "password-policy")}
        {f.d("dcredit = -1", "password-policy")}
        # Whether to check for the words from the passwd entry GECOS string of the user.
        {f.d("gecoscheck = 1", "password-policy")}
        """)
    unix = "password\t[success=1 default=ignore]\tpam_unix.so obscure yescrypt"
    f = c.file("etc/pam.d/common-password")
    f.text(f"""\
        #
        # /etc/pam.d/common-password - password-related modules common to all services
        #
        # This file is included from other service-specific PAM config files,
        # and should contain a list of modules that define the services to be
        # used to change user passwords.  The default is pam_unix.
        {f.d(unix, "config-reference")}
        password	requisite			pam_deny.so
        password	required			pam_permit.so
        """)
    f = c.file("etc/ssh/sshd_config")
    f.text(f"""\
        Include /etc/ssh/sshd_config.d/*.conf
        #Port 22
        #HostKey /etc/ssh/ssh_host_rsa_key
        #HostKey /etc/ssh/ssh_host_ed25519_key
        PermitRootLogin prohibit-password
        #PubkeyAuthentication yes
        AuthorizedKeysFile	.ssh/authorized_keys .ssh/authorized_keys2
        # To disable tunneled clear text passwords, change to no here!
        {f.d("PasswordAuthentication no", "config-reference")}
        {f.d("#PermitEmptyPasswords no", "config-reference")}
        KbdInteractiveAuthentication no
        UsePAM yes
        X11Forwarding yes
        Subsystem	sftp	/usr/lib/openssh/sftp-server
        """)
    f = c.file("etc/mysql/conf.d/validate_password.cnf")
    f.text(f"""\
        [mysqld]
        plugin-load-add = validate_password.so
        {f.d("validate_password.length = 14", "password-policy")}
        {f.d("validate_password.policy = STRONG", "password-policy")}
        {f.d("default_password_lifetime = 180", "password-policy")}
        """)
    f = c.file("etc/gitlab/password_policy.yml")
    f.text(f"""\
        # Managed by ansible: role gitlab, task password policy
        {f.d("password_min_length: 12", "password-policy")}
        {f.d("password_uppercase_required: true", "password-policy")}
        {f.d("password_expiry_days: 90", "password-policy")}
        """)


# --- shell histories ----------------------------------------------------------------------------

_FILLER_COMMANDS = (
    "ls -la",
    "cd /srv/app",
    "sudo systemctl restart nginx",
    "tail -f /var/log/syslog",
    "git pull --rebase",
    "docker ps -a",
    "kubectl get pods -A",
    "df -h",
    "sudo apt update && sudo apt -y upgrade",
    "vim /etc/nginx/sites-available/default",
    "journalctl -u app.service --since today",
    "htop",
    "free -m",
    "cat /etc/os-release",
    "ss -tlnp",
    "du -sh /var/lib/docker",
    "sudo -i",
    "history | grep ssh",
    "exit",
    "ip a",
    "crontab -l",
    "less /var/log/nginx/error.log",
    "terraform plan -out plan.tfplan",
    "ansible-playbook -i inventory site.yml --check",
    "python3 -m venv .venv && . .venv/bin/activate",
    "pip install -r requirements.txt",
    "npm ci",
    "make deploy",
    "systemctl status postgresql",
    "watch -n1 'ss -s'",
)


# (command, kind of the secret {S} in it, how the secret is made); {user} {host} {domain} {ip}
_HISTORY_SECRETS: tuple[tuple[str, str, str], ...] = (
    ("mysql -u root -p'{S}' -h {host} shop", "mysql-cli-password", "pw"),
    ("mysql -uapp -p{S} appdb < dump.sql", "mysql-cli-password", "pwr"),
    ("PGPASSWORD={S} psql -h {host} -U {user} reporting", "pgpassword-env", "pw"),
    ("export PGPASSWORD='{S}'", "pgpassword-env", "pw"),
    ("curl -u admin:{S} https://jenkins.corp.local/api/json", "curl-basic-auth", "pw"),
    (
        "curl -sS -H 'Authorization: Bearer {S}' https://api.{domain}/v2/orders",
        "bearer-token",
        "a40",
    ),
    (
        "curl --header 'PRIVATE-TOKEN: {S}' https://gitlab.corp.local/api/v4/projects",
        "gitlab-pat",
        "glpat",
    ),
    ("docker login -u {user} -p {S} registry.{domain}", "docker-login-password", "pwr"),
    (
        "echo '{S}' | docker login --username ci --password-stdin ghcr.io",
        "docker-login-password",
        "pw",
    ),
    (
        "sshpass -p '{S}' ssh -o StrictHostKeyChecking=no {user}@{host}",
        "sshpass-password",
        "pw",
    ),
    ("export AWS_ACCESS_KEY_ID={S}", "aws-access-key-id", "akia"),
    ("export AWS_SECRET_ACCESS_KEY={S}", "aws-secret-access-key", "awssecret"),
    (
        "git clone https://{user}:{S}@github.com/acme-corp/infra.git",
        "github-classic-pat",
        "ghp",
    ),
    ("redis-cli -h {host} -a {S} info keyspace", "redis-cli-password", "pwr"),
    ('mongosh "mongodb://admin:{S}@{host}:27017/admin"', "mongodb-url-password", "url"),
    ("htpasswd -b /etc/nginx/.htpasswd {user} {S}", "htpasswd-cli-password", "pw"),
    ("echo 'root:{S}' | chpasswd", "chpasswd-password", "pw"),
    (
        "openssl pkcs12 -export -in cert.pem -inkey key.pem -out bundle.p12 -passout pass:{S}",
        "openssl-pass-argument",
        "pwr",
    ),
    (
        "keytool -importkeystore -srckeystore bundle.p12 -destkeystore app.jks -storepass {S}",
        "keytool-password",
        "pwr",
    ),
    ("smbclient //fs01/finance -U '{user}%{S}'", "smbclient-password", "pw"),
    (
        "ipmitool -I lanplus -H {ip} -U ADMIN -P {S} chassis status",
        "ipmitool-password",
        "pwr",
    ),
    ("vault login {S}", "hashicorp-vault-token", "hvs"),
    ("export GITHUB_TOKEN={S}", "github-classic-pat", "ghp"),
    ("npm config set //registry.npmjs.org/:_authToken {S}", "npm-token", "npm"),
    (
        "helm repo add internal https://charts.corp.local --username {user} --password {S}",
        "helm-repo-password",
        "pwr",
    ),
    (
        "mysqldump -u backup -p{S} --all-databases | gzip > all.sql.gz",
        "mysql-cli-password",
        "pwr",
    ),
    (
        "wget --user={user} --password={S} https://downloads.corp.local/release.tar.gz",
        "wget-password",
        "pwr",
    ),
    ("lftp -u {user},{S} sftp://files.{domain}", "lftp-password", "pwr"),
    ("rabbitmqctl add_user billing {S}", "rabbitmqctl-password", "pwr"),
    (
        "az login --service-principal -u {uuid} -p {S} --tenant corp.onmicrosoft.com",
        "azure-ad-client-secret",
        "azure",
    ),
    (
        "sudo mount -t cifs //fs01/backup /mnt/backup -o username={user},password={S}",
        "cifs-password",
        "pwr",
    ),
    (
        "sqlcmd -S mssql01.corp.local -U sa -P '{S}' -Q 'SELECT @@VERSION'",
        "mssql-cli-password",
        "pw",
    ),
    ("xfreerdp /v:win-jump01 /u:{user} /p:{S} /cert:ignore", "rdp-cli-password", "pwr"),
    ("export OPENAI_API_KEY={S}", "openai-api-key", "openai"),
    ("export ANTHROPIC_API_KEY={S}", "anthropic-api-key", "anthropic"),
    ("huggingface-cli login --token {S}", "huggingface-token", "hf"),
    ('psql "postgresql://{user}:{S}@{host}:5432/warehouse"', "postgres-url-password", "url"),
    ("snmpwalk -v2c -c {S} 10.20.0.1 system", "snmp-community", "a14"),
    (
        "mosquitto_pub -h mqtt.corp.local -u sensor -P {S} -t test -m hello",
        "mosquitto-cli-password",
        "pwr",
    ),
    ("export DIGITALOCEAN_TOKEN={S}", "digitalocean-token", "dop"),
    ("export VAULT_TOKEN={S}", "hashicorp-vault-token", "hvs"),
    ("export STRIPE_API_KEY={S}", "stripe-secret-key", "stripe"),
)

# (command, kind of the decoy {D} in it, the decoy); the decoy may be generated (see below)
_HISTORY_DECOYS: tuple[tuple[str, str, str], ...] = (
    ("{D}", "password-prompt", "mysql -u root -p"),
    ("export DB_PASSWORD={D}", "secret-file-reference", '"$(cat /run/secrets/db_password)"'),
    ("curl -u admin {D}", "password-prompt", "https://grafana.corp.local/api/health"),
    ("{D}", "password-prompt", "psql -h db01.prod.lan -U app -W app"),
    ("export PGPASSWORD={D}", "env-reference", "${DB_PASSWORD}"),
    ("git checkout {D}", "git-commit", "@sha1"),
    ("docker pull nginx@sha256:{D}", "docker-digest", "@sha256"),
    ("echo '{D}  debian-12.5.0-amd64-netinst.iso' | sha256sum -c", "sha256-hex", "@sha256"),
    (
        "kubectl create secret generic db --from-literal=password={D}",
        "env-reference",
        "$DB_PASSWORD",
    ),
    ("vault kv get {D}", "config-reference", "-field=password secret/prod/db"),
    ("docker login {D}", "password-prompt", "registry.corp.local"),
    ("{D}", "password-prose", "passwd alice"),
)


def _history_value(g: Shapes, how: str) -> str:
    """A value for _HISTORY_SECRETS (``how``) or _HISTORY_DECOYS (``@sha1``, ``@sha256``)."""
    makers: dict[str, Callable[[], str]] = {
        "pw": lambda: g.password(None, _SHELL_SAFE),
        "pwr": lambda: g.password("random"),
        "url": lambda: g.password(None, _URL_SAFE),
        "a14": lambda: g.alnum(14),
        "a40": lambda: g.alnum(40),
        "glpat": lambda: "glpat-" + g.chars(B64URL, 20),
        "akia": g.aws_key_id,
        "awssecret": g.aws_secret,
        "ghp": g.github,
        "npm": lambda: g.github("npm_"),
        "hvs": lambda: "hvs." + g.alnum(24),
        "azure": g.azure_client_secret,
        "openai": g.openai,
        "anthropic": g.anthropic,
        "hf": lambda: "hf_" + g.chars(LETTERS, 34),
        "dop": lambda: "dop_v1_" + g.hex(64),
        "stripe": g.stripe,
        "@sha1": lambda: _sha1(g),
        "@sha256": lambda: _sha256(g),
    }
    return makers[how]() if how in makers else how


def _bash_history(c: CorpusBuilder, g: Shapes, path: str, n_secrets: int, n_decoys: int) -> None:
    f = c.file(path)
    user = g.user()
    lines = []
    for command, kind, how in g.rng.sample(_HISTORY_SECRETS, n_secrets):
        lines.append(
            command.format(
                S=f.s(_history_value(g, how), kind),
                user=user,
                host=g.host(),
                domain=g.pick(DOMAINS),
                ip=f"10.20.0.{g.rng.randint(2, 250)}",
                uuid=g.uuid(),
            )
        )
    for command, kind, value in g.rng.sample(_HISTORY_DECOYS, n_decoys):
        lines.append(command.format(D=f.d(_history_value(g, value), kind)))
    lines += g.rng.choices(_FILLER_COMMANDS, k=3 * len(lines))
    g.rng.shuffle(lines)
    f.lines(lines)


def _w_histories(c: CorpusBuilder, g: Shapes) -> None:
    _bash_history(c, g, "root/.bash_history", 12, 5)
    _bash_history(c, g, "home/alice/.bash_history", 10, 4)
    _bash_history(c, g, "home/bob/.bash_history", 12, 4)
    _bash_history(c, g, "home/deploy/.bash_history", 10, 4)
    _bash_history(c, g, "home/carol/.zsh_history", 6, 3)
    sql = "sql-create-user-password"
    f = c.file("root/.mysql_history")
    f.lines(
        [
            "show databases;",
            "use shop;",
            f"CREATE USER 'report'@'10.%' IDENTIFIED BY '{f.s(g.password(), sql)}';",
            "GRANT SELECT ON shop.* TO 'report'@'10.%';",
            f"ALTER USER 'app'@'%' IDENTIFIED BY '{f.s(g.password(), sql)}';",
            "FLUSH PRIVILEGES;",
            "select count(*) from orders;",
        ]
    )
    f = c.file("var/lib/postgresql/.psql_history")
    f.lines(
        [
            "\\l",
            "\\c reporting",
            f"ALTER ROLE etl WITH LOGIN PASSWORD '{f.s(g.password(), sql)}';",
            "SELECT usename, valuntil FROM pg_user;",
            "\\q",
        ]
    )


# --- per-user credentials files -------------------------------------------------------------------


def _w_root_dotfiles(c: CorpusBuilder, g: Shapes) -> None:
    f = c.file("root/.pgpass")
    f.lines(
        [
            f"{g.host()}:5432:reporting:etl:{f.s(g.password(), 'pgpass-password')}",
            f"localhost:5432:*:postgres:{f.s(g.password(), 'pgpass-password')}",
            f"*:*:*:replicator:{f.s(g.password('random'), 'pgpass-password')}",
        ]
    )
    f = c.file("root/.my.cnf")
    f.text(f"""\
        [client]
        user=root
        password={f.s(g.password(), "mycnf-password")}
        host=localhost

        [mysqldump]
        single-transaction
        """)
    f = c.file("root/.aws/credentials")
    f.text(f"""\
        [default]
        aws_access_key_id = {f.s(g.aws_key_id(), "aws-access-key-id")}
        aws_secret_access_key = {f.s(g.aws_secret(), "aws-secret-access-key")}

        [backup]
        aws_access_key_id={f.s(g.aws_key_id(), "aws-access-key-id")}
        aws_secret_access_key={f.s(g.aws_secret(), "aws-secret-access-key")}

        [ci-temp]
        aws_access_key_id = {f.s(g.aws_key_id("ASIA"), "aws-temporary-access-key-id")}
        aws_secret_access_key = {f.s(g.aws_secret(), "aws-secret-access-key")}
        aws_session_token = {f.s(g.aws_session_token(), "aws-session-token")}
        """)
    f = c.file("root/.aws/config")
    f.text(f"""\
        [default]
        region = eu-west-1
        output = json

        [profile prod-admin]
        role_arn = arn:aws:iam::{f.d(g.digits(12), "cloud-identifier")}:role/OrgAccessRole
        source_profile = default
        mfa_serial = arn:aws:iam::{f.d(g.digits(12), "cloud-identifier")}:mfa/root-admin
        """)
    auths = {
        "registry.corp.local": f"ci:{g.password('random')}",
        "https://index.docker.io/v1/": "acmecorp:dckr_pat_" + g.chars(B64URL, 27),
    }
    f = c.file("root/.docker/config.json")
    doc = {
        "auths": {
            reg: {"auth": f.s(base64.b64encode(cred.encode()).decode(), "docker-config-auth")}
            for reg, cred in auths.items()
        },
        "HttpHeaders": {"User-Agent": "Docker-Client/24.0.7 (linux)"},
    }
    f.raw(js(doc, 1) + "\n")
    f = c.file("root/.netrc")
    f.lines(
        [
            f"machine ftp.{g.pick(DOMAINS)} login mirror password "
            + f.s(g.password(), "netrc-password"),
            "machine api.heroku.com",
            "  login ops@acme-corp.com",
            f"  password {f.s(g.uuid(), 'heroku-api-key')}",
        ]
    )
    bitbucket = "ATBB" + g.alnum(32)
    f = c.file("root/.git-credentials")
    f.lines(
        [
            f"https://ops-bot:{f.s(g.github(), 'git-credentials-password')}@github.com",
            f"https://deploy:{f.s(g.password('random'), 'git-credentials-password')}@git.corp",
            f"https://x-token-auth:{f.s(bitbucket, 'bitbucket-app-password')}@bitbucket.org",
        ]
    )
    f = c.file("root/.s3cfg")
    f.text(f"""\
        [default]
        access_key = {f.s(g.aws_key_id(), "aws-access-key-id")}
        bucket_location = EU
        check_ssl_certificate = True
        gpg_command = /usr/bin/gpg
        gpg_passphrase =
        host_base = s3.amazonaws.com
        secret_key = {f.s(g.aws_secret(), "aws-secret-access-key")}
        use_https = True
        """)
    f = c.file("root/.config/rclone/rclone.conf")
    f.text(f"""\
        [offsite]
        type = s3
        provider = Alibaba
        access_key_id = {f.s("LTAI" + g.alnum(20), "alibaba-access-key-id")}
        secret_access_key = {f.s(g.alnum(30), "alibaba-access-key-secret")}
        endpoint = oss-eu-central-1.aliyuncs.com
        acl = private
        """)
    f = c.file("root/.vault-token")
    f.raw(f.s("hvs." + g.alnum(24), "hashicorp-vault-token"))
    f = c.file("root/.terraform.d/credentials.tfrc.json")
    token = g.alnum(14) + ".atlasv1." + g.chars(B64URL, 67)
    f.raw(
        js({"credentials": {"app.terraform.io": {"token": f.s(token, "terraform-cloud-token")}}})
        + "\n"
    )
    f = c.file("root/.config/gh/hosts.yml")
    f.text(f"""\
        github.com:
            user: ops-bot
            oauth_token: {f.s(g.github("gho_"), "github-oauth-token")}
            git_protocol: https
        """)


def _w_alice(c: CorpusBuilder, g: Shapes) -> None:
    nexus = base64.b64encode(("alice:" + g.password("random")).encode()).decode()
    f = c.file("home/alice/.npmrc")
    f.text(f"""\
        registry=https://registry.npmjs.org/
        //registry.npmjs.org/:_authToken={f.s(g.github("npm_"), "npm-token")}
        @acme:registry=https://npm.pkg.github.com
        //npm.pkg.github.com/:_authToken={f.d("${GITHUB_TOKEN}", "env-reference")}
        //nexus.corp.local/repository/npm/:_auth={f.s(nexus, "npmrc-auth")}
        save-exact=true
        """)
    f = c.file("home/alice/.pypirc")
    f.text(f"""\
        [distutils]
        index-servers =
            pypi
            internal

        [pypi]
        username = __token__
        password = {f.s(g.pypi(), "pypi-token")}

        [internal]
        repository = https://pypi.corp.local/
        username = alice
        password = {f.s(g.password(), "ini-password")}
        """)
    f = c.file("home/alice/.cargo/credentials.toml")
    f.text(f"""\
        [registry]
        token = "{f.s("cio" + g.alnum(32), "crates-io-token")}"
        """)
    f = c.file("home/alice/.gem/credentials")
    f.text(f"""\
        ---
        :rubygems_api_key: {f.s("rubygems_" + g.hex(48), "rubygems-api-key")}
        """)
    f = c.file("home/alice/.m2/settings.xml")
    f.text(f"""\
        <?xml version="1.0" encoding="UTF-8"?>
        <settings xmlns="http://maven.apache.org/SETTINGS/1.2.0">
          <servers>
            <server>
              <id>nexus-releases</id>
              <username>alice</username>
              <password>{f.s(g.password(), "maven-settings-password")}</password>
            </server>
            <server>
              <id>nexus-snapshots</id>
              <username>alice</username>
              <password>{f.d("{COQLCE6DU6GtcS5P=}", "encrypted-blob")}</password>
            </server>
            <server>
              <id>github</id>
              <username>alice</username>
              <password>{f.s(g.github(), "github-classic-pat")}</password>
            </server>
          </servers>
        </settings>
        """)
    f = c.file("home/alice/.gradle/gradle.properties")
    f.text(f"""\
        org.gradle.jvmargs=-Xmx2g
        org.gradle.parallel=true
        nexusUsername=alice
        nexusPassword={f.s(g.password(), "gradle-property-password")}
        signing.keyId=24875D73
        signing.password={f.s(g.password("phrase"), "gradle-property-password")}
        signing.secretKeyRingFile=/home/alice/.gnupg/secring.gpg
        """)
    secret, public = g.age_secret()
    f = c.file("home/alice/.config/sops/age/keys.txt")
    f.text(f"""\
        # created: 2024-02-11T10:21:44+01:00
        # public key: {f.d(public, "age-public-key")}
        {f.s(secret, "age-secret-key")}
        """)
    f = c.file("home/alice/.composer/auth.json")
    doc = {
        "github-oauth": {"github.com": f.s(g.github("gho_"), "github-oauth-token")},
        "http-basic": {
            "repo.packagist.com": {
                "username": "token",
                "password": f.s(g.password("random"), "composer-http-basic-password"),
            }
        },
    }
    f.raw(js(doc, 4) + "\n")
    f = c.file("home/alice/.gitconfig")
    f.text(f"""\
        [user]
        \tname = Alice Martin
        \temail = alice@acme-corp.com
        \tsigningkey = {f.d(g.hex(40).upper(), "sha1-hex")}
        [credential]
        \thelper = store
        [pull]
        \trebase = true
        """)


def _w_carol(c: CorpusBuilder, g: Shapes) -> None:
    f = c.file("home/carol/.kaggle/kaggle.json")
    f.raw(js({"username": "carolds", "key": f.s(g.hex(32), "kaggle-api-key")}, None))
    f = c.file("home/carol/.cache/huggingface/token")
    f.raw(f.s("hf_" + g.chars(LETTERS, 34), "huggingface-token"))
    f = c.file("home/carol/.config/gcloud/application_default_credentials.json")
    doc = {
        "account": "",
        "client_id": f.d(
            g.digits(12) + "-" + g.chars(LOWER_ALNUM, 32) + ".apps.googleusercontent.com",
            "cloud-identifier",
        ),
        "client_secret": f.s("GOCSPX-" + g.chars(B64URL, 28), "gcp-oauth-client-secret"),
        "quota_project_id": "acme-analytics",
        "refresh_token": f.s("1//0" + g.chars(B64URL, 99), "google-oauth-refresh-token"),
        "type": "authorized_user",
        "universe_domain": "googleapis.com",
    }
    f.raw(js(doc) + "\n")
    f = c.file("home/carol/notebooks/churn-analysis.ipynb")
    key = g.openai()
    cell = [
        "import openai\n",
        "import pandas as pd\n",
        f'openai.api_key = "{f.s(key, "openai-api-key")}"\n',
        "df = pd.read_parquet('s3://acme-analytics/churn/2024-02.parquet')\n",
    ]
    nb = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["# Churn analysis, February\n"]},
            {
                "cell_type": "code",
                "execution_count": 3,
                "metadata": {},
                "outputs": [],
                "source": cell,
            },
        ],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    f.raw(js(nb, 1) + "\n")


def _w_bob(c: CorpusBuilder, g: Shapes) -> None:
    f = c.file("home/bob/.netrc")
    f.lines(
        [
            f"default login anonymous password {f.d('anonymous@', 'placeholder-word')}",
            f"machine backup.{g.pick(DOMAINS)}",
            "    login bob",
            f"    password {f.s(g.password(), 'netrc-password')}",
            f"machine api.github.com login bob password {f.s(g.github(), 'github-classic-pat')}",
        ]
    )
    f = c.file("home/bob/.pgpass")
    f.lines([f"{g.host()}:6432:billing:bob:{f.s(g.password(), 'pgpass-password')}"])
    f = c.file("home/bob/keys/jump-host.ppk")
    f.raw(f.s(g.putty_ppk("bob@jump"), "putty-private-key", block=True) + "\n")
    f = c.file("home/bob/keys/vpn-gw.ppk")
    f.raw(
        f.s(g.putty_ppk("bob@vpn-gw", encrypted=True), "putty-encrypted-private-key", block=True)
        + "\n"
    )
    f = c.file("home/bob/backup/gpg-secret-key.asc")
    f.raw(f.s(g.pgp_private_block(), "pgp-private-key", block=True) + "\n")
    f = c.file("home/bob/.ansible/vault_pass.txt")
    f.raw(f.s(g.password("phrase"), "ansible-vault-password-file") + "\n")
    f = c.file("home/bob/.config/containers/auth.json")
    doc = {
        "auths": {
            "quay.io": {
                "auth": f.s(
                    base64.b64encode(f"bob:{g.password('random')}".encode()).decode(),
                    "docker-config-auth",
                )
            }
        }
    }
    f.raw(js(doc, 1) + "\n")


# --- key material --------------------------------------------------------------------------------


def _w_keys(c: CorpusBuilder, g: Shapes) -> None:
    KEYS.server, KEYS.kube_ca, KEYS.kube_sa = g.rsa_key(), g.rsa_key(), g.rsa_key()
    KEYS.alice, KEYS.gcp, KEYS.legacy, KEYS.root_ca = (g.rsa_key() for _ in range(4))
    host_ed, host_ec = g.ed25519_key(), g.ec_key()
    for name, key, kind in (("ed25519", host_ed, "openssh"), ("ecdsa", host_ec, "openssh")):
        f = c.file(f"etc/ssh/ssh_host_{name}_key")
        f.raw(f.s(g.openssh_private(key, "root@app01"), f"{kind}-private-key", block=True) + "\n")
        f = c.file(f"etc/ssh/ssh_host_{name}_key.pub")
        f.raw(f.d(g.openssh_public(key, "root@app01"), "ssh-public-key") + "\n")

    alice_ed = g.ed25519_key()
    f = c.file("home/alice/.ssh/id_rsa")
    f.raw(
        f.s(g.openssh_private(KEYS.alice, "alice@app01"), "openssh-private-key", block=True) + "\n"
    )
    f = c.file("home/alice/.ssh/id_rsa.pub")
    f.raw(f.d(g.openssh_public(KEYS.alice, "alice@app01"), "ssh-public-key") + "\n")
    f = c.file("home/alice/.ssh/id_ed25519")
    f.raw(
        f.s(
            g.openssh_private(alice_ed, "alice@laptop", encrypted=True),
            "openssh-encrypted-private-key",
            block=True,
        )
        + "\n"
    )
    f = c.file("home/alice/.ssh/id_ed25519.pub")
    f.raw(f.d(g.openssh_public(alice_ed, "alice@laptop"), "ssh-public-key") + "\n")
    deploy_ed, root_ec = g.ed25519_key(), g.ec_key()
    f = c.file("home/deploy/.ssh/id_ed25519")
    f.raw(f.s(g.openssh_private(deploy_ed, "deploy@ci"), "openssh-private-key", block=True) + "\n")
    f = c.file("root/.ssh/id_ecdsa")
    f.raw(
        f.s(
            g.openssh_private(root_ec, "root@app01", encrypted=True),
            "openssh-encrypted-private-key",
            block=True,
        )
        + "\n"
    )

    for path, n in (
        ("root/.ssh/authorized_keys", 3),
        ("home/alice/.ssh/authorized_keys", 2),
        ("home/deploy/.ssh/authorized_keys", 4),
    ):
        f = c.file(path)
        rows = []
        for i in range(n):
            key = g.ed25519_key() if i % 2 else g.ec_key()
            who = f"{g.user()}@{g.pick(('laptop', 'bastion', 'ci-runner', 'workstation'))}"
            prefix = 'from="10.20.0.0/16",no-agent-forwarding ' if i == 2 else ""
            rows.append(prefix + f.d(g.openssh_public(key, who), "ssh-public-key"))
        f.lines(rows)
    for path in (
        "root/.ssh/known_hosts",
        "home/alice/.ssh/known_hosts",
        "home/deploy/.ssh/known_hosts",
    ):
        f = c.file(path)
        rows = []
        for i in range(3):
            key_line = g.openssh_public(g.ed25519_key() if i % 2 else g.ec_key(), "")
            if i == 0:
                salt = g.randbytes(20)
                mac = hashlib.sha1(salt + b"db01").digest()
                host = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(mac).decode()}"
            else:
                host = g.host()
            rows.append(f"{host} {f.d(key_line, 'ssh-public-key')}")
        f.lines(rows)

    f = c.file("etc/ssl/private/api.acme-corp.com.key")
    f.raw(f.s(g.pem_private(KEYS.server, "traditional"), "rsa-private-key", block=True) + "\n")
    server_cert = g.certificate(
        "api.acme-corp.com", KEYS.server, ("Acme Internal Issuing CA", KEYS.root_ca)
    )
    root_cert = g.certificate("Acme Internal Root CA", KEYS.root_ca, ca=True)
    f = c.file("etc/ssl/certs/api.acme-corp.com.crt")
    f.lines(
        [f.d(g.cert_pem(server_cert), "certificate"), f.d(g.cert_pem(root_cert), "certificate")]
    )
    f = c.file("etc/ssl/private/ssl-cert-snakeoil.key")
    f.raw(f.s(g.pem_private(g.ec_key(), "pkcs8"), "pkcs8-private-key", block=True) + "\n")
    f = c.file("etc/pki/tls/private/legacy-erp.key")
    f.raw(
        f.s(
            g.pem_encrypted_traditional(KEYS.legacy, g.password()),
            "encrypted-pem-private-key",
            block=True,
        )
        + "\n"
    )
    f = c.file("opt/erp/certs/client-signing.key")
    f.raw(
        f.s(
            g.pem_encrypted_pkcs8(g.ec_key(), g.password()),
            "encrypted-pkcs8-private-key",
            block=True,
        )
        + "\n"
    )
    f = c.file("etc/ssl/certs/ca-certificates.crt")
    bundle = []
    for name in (
        "ISRG Root X1",
        "DigiCert Global Root G2",
        "Acme Internal Root CA",
        "GlobalSign Root R46",
        "Amazon Root CA 1",
    ):
        cert = g.certificate(name, g.ec_key(), (name, KEYS.root_ca), ca=True)
        bundle.append(f.d(g.cert_pem(cert), "certificate"))
    f.lines(bundle)

    le = "etc/letsencrypt/live/shop.acme-corp.com"
    le_key = g.ec_key()
    f = c.file(f"{le}/privkey.pem")
    f.raw(f.s(g.pem_private(le_key, "pkcs8"), "pkcs8-private-key", block=True) + "\n")
    f = c.file(f"{le}/fullchain.pem")
    leaf = g.certificate("shop.acme-corp.com", le_key, ("R3", KEYS.root_ca))
    inter = g.certificate("R3", g.ec_key(), ("ISRG Root X1", KEYS.root_ca), ca=True)
    f.lines([f.d(g.cert_pem(leaf), "certificate"), f.d(g.cert_pem(inter), "certificate")])
    jwk = g.jwk_private(KEYS.legacy)
    f = c.file(
        "etc/letsencrypt/accounts/acme-v02.api.letsencrypt.org/directory/3f0c9a1e/private_key.json"
    )
    d_value = jwk.pop("d")
    f.raw(
        '{"n": "'
        + jwk["n"]
        + '", "e": "AQAB", "d": "'
        + f.s(d_value, "jwk-private-key")
        + '", "p": "'
        + jwk["p"]
        + '", "q": "'
        + jwk["q"]
        + '", "dp": "'
        + jwk["dp"]
        + '", "dq": "'
        + jwk["dq"]
        + '", "qi": "'
        + jwk["qi"]
        + '", "kty": "RSA"}'
    )

    f = c.file("etc/apt/keyrings/docker.asc")
    f.raw(f.d(g.pgp_public_block(), "pgp-public-key") + "\n")
    f = c.file("etc/apt/trusted.gpg.d/corp-repo.asc")
    f.raw(f.d(g.pgp_public_block(), "pgp-public-key") + "\n")
    f = c.file("var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease")
    rows = [
        "-----BEGIN PGP SIGNED MESSAGE-----",
        "Hash: SHA256",
        "",
        "Origin: Debian",
        "Label: Debian",
        "Suite: stable",
        "Codename: bookworm",
        "Date: Sat, 10 Feb 2024 10:01:31 UTC",
        "SHA256:",
    ]
    for comp in (
        "main/binary-amd64/Packages",
        "main/binary-amd64/Packages.xz",
        "contrib/binary-amd64/Packages",
        "main/i18n/Translation-en.xz",
        "non-free-firmware/binary-amd64/Packages",
    ):
        rows.append(f" {f.d(_sha256(g), 'sha256-hex')} {g.rng.randint(1000, 9000000):>9} {comp}")
    rows.append(f.d(g.pgp_signature(), "pgp-signature"))
    f.lines(rows)


# --- kubernetes ----------------------------------------------------------------------------------


def _kubeconfig(f: FileBuilder, g: Shapes, user: str, token: str | None, client_key: Any) -> None:
    ca_cert = g.certificate("kubernetes", KEYS.kube_ca, ca=True)
    ca_data = base64.b64encode((g.cert_pem(ca_cert) + "\n").encode()).decode()
    lines = [
        "apiVersion: v1",
        "clusters:",
        "- cluster:",
        f"    certificate-authority-data: {f.d(ca_data, 'certificate-base64')}",
        "    server: https://10.20.0.10:6443",
        "  name: prod",
        "contexts:",
        "- context:",
        "    cluster: prod",
        f"    user: {user}",
        f"  name: {user}@prod",
        f"current-context: {user}@prod",
        "kind: Config",
        "preferences: {}",
        "users:",
        f"- name: {user}",
        "  user:",
    ]
    if client_key is not None:
        cert = g.certificate(user, client_key, ("kubernetes", KEYS.kube_ca))
        cert_data = base64.b64encode((g.cert_pem(cert) + "\n").encode()).decode()
        key_data = base64.b64encode(
            (g.pem_private(client_key, "traditional") + "\n").encode()
        ).decode()
        lines.append(f"    client-certificate-data: {f.d(cert_data, 'certificate-base64')}")
        lines.append(
            f"    client-key-data: {f.s(key_data, 'kubeconfig-client-key-data', block=True)}"
        )
    if token is not None:
        lines.append(f"    token: {f.s(token, 'kubeconfig-token')}")
    f.lines(lines)


def _w_kubernetes(c: CorpusBuilder, g: Shapes) -> None:
    _kubeconfig(c.file("root/.kube/config"), g, "kubernetes-admin", None, g.ec_key())
    _kubeconfig(c.file("etc/kubernetes/admin.conf"), g, "kubernetes-admin", None, g.ec_key())
    sa_token = g.k8s_sa_token(KEYS.kube_sa, "ci", "deployer")
    _kubeconfig(c.file("home/deploy/.kube/config"), g, "deployer", sa_token, None)
    _kubeconfig(c.file("home/alice/.kube/config"), g, "alice", g.alnum(32) + g.hex(12), None)
    f = c.file("etc/kubernetes/pki/ca.key")
    f.raw(f.s(g.pem_private(KEYS.kube_ca, "traditional"), "rsa-private-key", block=True) + "\n")
    f = c.file("etc/kubernetes/pki/ca.crt")
    f.raw(f.d(g.cert_pem(g.certificate("kubernetes", KEYS.kube_ca, ca=True)), "certificate") + "\n")
    f = c.file("etc/kubernetes/pki/sa.key")
    f.raw(f.s(g.pem_private(KEYS.kube_sa, "traditional"), "rsa-private-key", block=True) + "\n")
    f = c.file("etc/kubernetes/pki/sa.pub")
    f.raw(f.d(g.pem_public(KEYS.kube_sa), "pem-public-key") + "\n")
    f = c.file("var/run/secrets/kubernetes.io/serviceaccount/token")
    f.raw(f.s(g.k8s_sa_token(KEYS.kube_sa, "shop", "default"), "k8s-serviceaccount-token"))
    f = c.file("etc/kubernetes/enc/encryption-config.yaml")
    f.text(f"""\
        apiVersion: apiserver.config.k8s.io/v1
        kind: EncryptionConfiguration
        resources:
          - resources:
              - secrets
            providers:
              - aescbc:
                  keys:
                    - name: key1
                      secret: {f.s(g.b64(32), "k8s-encryption-key")}
              - identity: {{}}
        """)
    k3s = f"K10{g.hex(64)}::server:{g.hex(32)}"
    f = c.file("etc/rancher/k3s/config.yaml")
    f.text(f"""\
        write-kubeconfig-mode: "0644"
        tls-san:
          - k3s.prod.lan
        token: {f.s(k3s, "k3s-token")}
        disable:
          - traefik
        """)
    f = c.file("var/lib/rancher/k3s/server/token")
    f.raw(f.s(f"K10{g.hex(64)}::server:{g.hex(32)}", "k3s-token") + "\n")
    f = c.file("home/deploy/k8s/join-worker.sh")
    bootstrap = g.chars(LOWER_ALNUM, 6) + "." + g.chars(LOWER_ALNUM, 16)
    f.text(f"""\
        #!/bin/sh
        # generated by kubeadm token create --print-join-command
        kubeadm join 10.20.0.10:6443 --token {f.s(bootstrap, "kubeadm-bootstrap-token")} \\
            --discovery-token-ca-cert-hash {f.d("sha256:" + _sha256(g), "sha256-hex")}
        """)
    db_pw, api_key, smtp_pw = g.password("random"), g.alnum(40), g.password()
    f = c.file("home/deploy/k8s/shop-secrets.yaml")
    f.text(f"""\
        apiVersion: v1
        kind: Secret
        metadata:
          name: shop-secrets
          namespace: shop
        type: Opaque
        data:
          DB_PASSWORD: {f.s(base64.b64encode(db_pw.encode()).decode(), "k8s-secret-data")}
          PAYMENT_API_KEY: {f.s(base64.b64encode(api_key.encode()).decode(), "k8s-secret-data")}
        stringData:
          SMTP_PASSWORD: {f.s(smtp_pw, "k8s-secret-string-data")}
        """)
    f = c.file("home/deploy/k8s/shop-deployment.yaml")
    f.text(f"""\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: shop
          namespace: shop
        spec:
          replicas: 3
          template:
            spec:
              containers:
                - name: shop
                  image: registry.corp.local/shop@{f.d("sha256:" + _sha256(g), "docker-digest")}
                  env:
                    - name: DB_PASSWORD
                      valueFrom:
                        secretKeyRef:
                          name: shop-secrets
                          key: DB_PASSWORD
                    - name: LEGACY_API_TOKEN
                      value: "{f.s(g.alnum(32), "k8s-env-literal")}"
                    - name: FEATURE_FLAGS_SDK_KEY
                      value: {f.d("${FEATURE_FLAGS_SDK_KEY}", "env-reference")}
        """)
    f = c.file("home/deploy/k8s/sealed-db.yaml")
    f.text(f"""\
        apiVersion: bitnami.com/v1alpha1
        kind: SealedSecret
        metadata:
          name: db
          namespace: shop
        spec:
          encryptedData:
            password: {f.d("AgB" + base64.b64encode(g.randbytes(300)).decode(), "encrypted-blob")}
        """)
    f = c.file("home/deploy/helm/shop/values-prod.yaml")
    f.text(f"""\
        replicaCount: 3
        image:
          repository: registry.corp.local/shop
          tag: "2.14.1"
        postgresql:
          enabled: true
          auth:
            username: shop
            password: {f.s(g.password(), "yaml-db-password")}
            existingSecret: {f.d('""', "empty-password")}
        redis:
          auth:
            enabled: true
            password: "{f.s(g.password("random"), "yaml-db-password")}"
        ingress:
          enabled: true
          hosts:
            - shop.acme-corp.com
        """)
    f = c.file("home/deploy/.config/helm/repositories.yaml")
    f.text(f"""\
        apiVersion: ""
        generated: "2024-02-01T09:12:44.381920142Z"
        repositories:
        - caFile: ""
          certFile: ""
          insecure_skip_tls_verify: false
          keyFile: ""
          name: internal
          pass_credentials_all: false
          password: {f.s(g.password("random"), "helm-repo-password")}
          url: https://charts.corp.local
          username: deploy
        - name: bitnami
          url: https://charts.bitnami.com/bitnami
          password: {f.d('""', "empty-password")}
        """)
    f = c.file("home/deploy/.docker/config.json")
    doc = {
        "auths": {
            "registry.gitlab.com": {
                "auth": f.s(
                    base64.b64encode(("deploy:gldt-" + g.chars(B64URL, 20)).encode()).decode(),
                    "docker-config-auth",
                )
            },
            "ghcr.io": {
                "auth": f.s(
                    base64.b64encode(f"acme-ci:{g.github()}".encode()).decode(),
                    "docker-config-auth",
                )
            },
        },
        "credsStore": "",
    }
    f.raw(js(doc, 1) + "\n")


# --- /etc services ------------------------------------------------------------------------


def _w_etc_databases(c: CorpusBuilder, g: Shapes) -> None:
    debian_pw = g.alnum(16)
    f = c.file("etc/mysql/debian.cnf")
    f.text(f"""\
        # Automatically generated for Debian scripts. DO NOT TOUCH!
        [client]
        host     = localhost
        user     = debian-sys-maint
        password = {f.s(debian_pw, "mycnf-password")}
        socket   = /var/run/mysqld/mysqld.sock
        [mysql_upgrade]
        host     = localhost
        user     = debian-sys-maint
        password = {f.s(debian_pw, "mycnf-password")}
        socket   = /var/run/mysqld/mysqld.sock
        """)
    f = c.file("etc/mysql/my.cnf")
    f.text(f"""\
        # The MariaDB configuration file
        #
        # The MariaDB/MySQL tools read configuration files in the following order:
        # 0. "/etc/mysql/my.cnf" symlinks to this file, reason why all the rest is read.
        # 1. "/etc/mysql/mariadb.cnf" (this file) to set global defaults,
        # 2. "/etc/mysql/conf.d/*.cnf" to set global options.
        # 4. "~/.my.cnf" to set user-specific options.
        #
        # If the same option is defined multiple times, the last one will apply.
        #
        # One can use all long options that the program supports.
        # Run program with --help to get a list of available options and with
        # --print-defaults to see which it would actually understand and use.
        #
        [client-server]
        # Port or socket location where to connect
        # port = 3306
        socket = /run/mysqld/mysqld.sock
        [client]
        {f.d("#password = your_password", "commented-example")}
        !includedir /etc/mysql/conf.d/
        """)
    f = c.file("etc/redis/redis.conf")
    f.text(f"""\
        # Redis configuration file example.
        bind 127.0.0.1 -::1
        protected-mode yes
        port 6379
        tcp-backlog 511
        timeout 0
        ################################## SECURITY ###################################
        # IMPORTANT NOTE: starting with Redis 6 "requirepass" is just a compatibility
        # layer on top of the new ACL system.
        #
        {f.d("# requirepass foobared", "commented-example")}
        requirepass {f.s(g.password("random"), "redis-requirepass")}
        # masteruser <username>
        masterauth {f.s(g.password("random"), "redis-requirepass")}
        maxmemory-policy allkeys-lru
        appendonly no
        """)
    f = c.file("etc/odbc.ini")
    f.text(f"""\
        [ERP]
        Description = ERP warehouse
        Driver      = ODBC Driver 18 for SQL Server
        Server      = tcp:mssql01.corp.local,1433
        Database    = erp
        UID         = erp_reader
        PWD         = {f.s(g.password(), "odbc-password")}
        TrustServerCertificate = yes
        """)
    f = c.file("etc/postgresql/15/main/postgresql.conf")
    f.text(f"""\
        # -----------------------------
        # PostgreSQL configuration file
        # -----------------------------
        data_directory = '/var/lib/postgresql/15/main'
        hba_file = '/etc/postgresql/15/main/pg_hba.conf'
        listen_addresses = '*'
        port = 5432
        max_connections = 200
        # - Authentication -
        #authentication_timeout = 1min
        {f.d("#password_encryption = scram-sha-256", "password-policy")}
        #db_user_namespace = off
        ssl = on
        ssl_cert_file = '/etc/ssl/certs/ssl-cert-snakeoil.pem'
        ssl_key_file = '/etc/ssl/private/ssl-cert-snakeoil.key'
        """)
    f = c.file("etc/pgbouncer/userlist.txt")
    f.lines(
        [
            f'"shop" "{f.s(g.password("random"), "pgpass-password")}"',
            f'"stats" "{f.s(g.scram_sha256(), "postgres-scram-hash")}"',
        ]
    )


def _w_etc_web(c: CorpusBuilder, g: Shapes) -> None:
    basic = base64.b64encode(f"svc-shop:{g.password('random')}".encode()).decode()
    f = c.file("etc/nginx/sites-available/api.conf")
    f.text(f"""\
        upstream legacy_erp {{
            server 10.20.3.15:8080;
        }}
        server {{
            listen 443 ssl http2;
            server_name api.acme-corp.com;
            ssl_certificate     /etc/ssl/certs/api.acme-corp.com.crt;
            ssl_certificate_key /etc/ssl/private/api.acme-corp.com.key;
            location /erp/ {{
                proxy_pass http://legacy_erp/;
                proxy_set_header Authorization "Basic {f.s(basic, "http-basic-auth-header")}";
                proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            }}
            location /admin/ {{
                auth_basic "Restricted";
                auth_basic_user_file /etc/nginx/.htpasswd;
            }}
        }}
        """)
    f = c.file("etc/nginx/.htpasswd")
    f.lines(
        [
            f"admin:{f.s(g.md5_crypt('$apr1$'), 'htpasswd-apr1')}",
            f"ops:{f.s(g.bcrypt('2y', 10), 'htpasswd-bcrypt')}",
            f"monitor:{f.s(g.htpasswd_sha(), 'htpasswd-sha1')}",
        ]
    )
    f = c.file("var/www/.htpasswd")
    f.lines([f"editor:{f.s(g.bcrypt('2y', 12), 'htpasswd-bcrypt')}"])
    f = c.file("etc/apache2/sites-available/intranet.conf")
    f.text(f"""\
        <VirtualHost *:443>
            ServerName intranet.corp.local
            DocumentRoot /var/www/intranet
            SetEnv DB_HOST db01.prod.lan
            SetEnv DB_PASS {f.s(g.password("random"), "php-env-password")}
            SSLEngine on
            SSLCertificateFile /etc/ssl/certs/ssl-cert-snakeoil.pem
            #SSLCertificateKeyFile /etc/ssl/private/ssl-cert-snakeoil.key
            <Location /server-status>
                Require ip 10.20.0.0/16
            </Location>
        </VirtualHost>
        """)
    must, tref, xml = "<must-be-changed>", "template-reference", "xml-password"
    f = c.file("etc/tomcat9/tomcat-users.xml")
    f.text(f"""\
        <?xml version="1.0" encoding="UTF-8"?>
        <tomcat-users xmlns="http://tomcat.apache.org/xml" version="1.0">
        <!--
          By default, no user is included in the "manager-gui" role required
          to operate the "/manager/html" web application.  If you wish to use this app,
          you must define such a user - the username and password are arbitrary.
        -->
        <!--
          <user username="admin" password="{f.d(must, tref)}" roles="manager-gui"/>
          <user username="robot" password="{f.d(must, tref)}" roles="manager-script"/>
        -->
          <role rolename="manager-gui"/>
          <user username="tcadmin" password="{f.s(g.password(), xml)}" roles="manager-gui"/>
          <user username="deployer" password="{f.s(g.password(), xml)}" roles="manager-script"/>
        </tomcat-users>
        """)
    f = c.file("etc/php/8.2/fpm/pool.d/www.conf")
    f.text(f"""\
        [www]
        user = www-data
        group = www-data
        listen = /run/php/php8.2-fpm.sock
        pm = dynamic
        pm.max_children = 5
        ; Pass environment variables like LD_LIBRARY_PATH. All $VARIABLEs are taken from
        ; the current environment.
        ;env[TMP] = /tmp
        env[DB_PASSWORD] = {f.s(g.password(), "php-env-password")}
        php_admin_value[memory_limit] = 256M
        """)
    f = c.file("etc/php/8.2/cli/php.ini")
    f.text(f"""\
        [MySQLi]
        mysqli.max_persistent = -1
        mysqli.allow_persistent = On
        mysqli.default_port = 3306
        mysqli.default_socket =
        mysqli.default_host =
        mysqli.default_user =
        ; Default password for mysqli_connect() (doesn't apply in safe mode).
        ; Note that this is generally a *bad* idea to store passwords in this file.
        {f.d("mysqli.default_pw =", "empty-password")}
        mysqli.reconnect = Off
        """)


def _w_etc_mail_auth(c: CorpusBuilder, g: Shapes) -> None:
    f = c.file("etc/postfix/sasl_passwd")
    f.lines(
        [
            f"[smtp.sendgrid.net]:587 apikey:{f.s(g.sendgrid(), 'sendgrid-api-key')}",
            "[smtp.office365.com]:587 noreply@acme-corp.com:"
            + f.s(g.password(), "postfix-sasl-password"),
        ]
    )
    f = c.file("etc/postfix/main.cf")
    f.text(f"""\
        smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)
        biff = no
        append_dot_mydomain = no
        relayhost = [smtp.sendgrid.net]:587
        smtp_sasl_auth_enable = yes
        {f.d("smtp_sasl_password_maps = hash:/etc/postfix/sasl_passwd", "config-reference")}
        smtp_sasl_security_options = noanonymous
        smtp_tls_security_level = encrypt
        """)
    f = c.file("etc/exim4/passwd.client")
    f.text(f"""\
        # password file used when the local exim is authenticating to a remote
        # host as a client.
        #
        # see exim4_passwd_client(5) for more documentation
        #
        # Example:
        {f.d("### target.mail.server.example:login:password", "commented-example")}
        smtp.mailgun.org:postmaster@mg.acme-corp.com:{f.s(g.password(), "exim-client-password")}
        """)
    f = c.file("etc/nslcd.conf")
    f.text(f"""\
        # /etc/nslcd.conf
        uid nslcd
        gid nslcd
        uri ldaps://ldap.corp.local/
        base dc=corp,dc=local
        binddn cn=nslcd,ou=services,dc=corp,dc=local
        bindpw {f.s(g.password(), "ldap-bind-password")}
        tls_reqcert demand
        tls_cacertfile /etc/ssl/certs/ca-certificates.crt
        """)
    f = c.file("etc/sssd/sssd.conf")
    f.text(f"""\
        [sssd]
        services = nss, pam
        domains = corp.local

        [domain/corp.local]
        id_provider = ldap
        ldap_uri = ldaps://ldap.corp.local
        ldap_search_base = dc=corp,dc=local
        ldap_default_bind_dn = cn=sssd,ou=services,dc=corp,dc=local
        {f.d("ldap_default_authtok_type = password", "config-reference")}
        ldap_default_authtok = {f.s(g.password(), "ldap-bind-password")}
        cache_credentials = true
        """)
    f = c.file("etc/ldap/slapd.conf")
    f.text(f"""\
        database        mdb
        suffix          "dc=corp,dc=local"
        rootdn          "cn=admin,dc=corp,dc=local"
        rootpw          {f.s(g.ldap_ssha(), "ldap-ssha-hash")}
        directory       /var/lib/ldap
        """)
    dovecot = "dovecot-crypt-hash"
    f = c.file("etc/dovecot/users")
    f.lines(
        [
            f"alice@acme-corp.com:{{SHA512-CRYPT}}{f.s(g.sha512_crypt(), dovecot)}::::::",
            f"helpdesk@acme-corp.com:{{SHA512-CRYPT}}{f.s(g.sha512_crypt(), dovecot)}::::::",
        ]
    )
    f = c.file("etc/mosquitto/passwd")
    f.lines(
        [
            f"sensor:{f.s(g.mosquitto_hash(), 'mosquitto-pbkdf2-hash')}",
            f"dashboard:{f.s(g.mosquitto_hash(), 'mosquitto-pbkdf2-hash')}",
        ]
    )
    f = c.file("etc/ppp/chap-secrets")
    f.text(f"""\
        # Secrets for authentication using CHAP
        {f.d("# client	server	secret			IP addresses", "commented-example")}
        branch-office	*	{f.s(g.password("random"), "ppp-chap-secret")}	*
        """)
    f = c.file("boot/grub/grub.cfg")
    f.text(f"""\
        #
        # DO NOT EDIT THIS FILE
        #
        # It is automatically generated by grub-mkconfig using templates
        # from /etc/grub.d and settings from /etc/default/grub
        #
        set superusers="root"
        password_pbkdf2 root {f.s(g.grub_pbkdf2(), "grub-pbkdf2-hash")}
        insmod part_gpt
        insmod ext2
        set root='hd0,gpt2'
        search --no-floppy --fs-uuid --set=root {f.d(g.uuid(), "uuid")}
        menuentry 'Debian GNU/Linux' --class debian --unrestricted {{
            linux /vmlinuz-6.1.0-18-amd64 root=UUID={f.d(g.uuid(), "uuid")} ro quiet
        }}
        """)


def _w_etc_network(c: CorpusBuilder, g: Shapes) -> None:
    priv, _ = g.wireguard()
    _, peer1 = g.wireguard()
    _, peer2 = g.wireguard()
    f = c.file("etc/wireguard/wg0.conf")
    f.text(f"""\
        [Interface]
        Address = 10.99.0.1/24
        ListenPort = 51820
        PrivateKey = {f.s(priv, "wireguard-private-key")}
        PostUp = iptables -A FORWARD -i %i -j ACCEPT

        [Peer]
        # alice laptop
        PublicKey = {f.d(peer1, "wireguard-public-key")}
        PresharedKey = {f.s(g.b64(32), "wireguard-preshared-key")}
        AllowedIPs = 10.99.0.2/32

        [Peer]
        # branch office
        PublicKey = {f.d(peer2, "wireguard-public-key")}
        AllowedIPs = 10.99.0.0/24, 192.168.50.0/24
        Endpoint = branch.acme-corp.com:51820
        """)
    f = c.file("etc/openvpn/server/ta.key")
    f.text(f"""\
        #
        # 2048 bit OpenVPN static key
        #
        {f.s(g.openvpn_static_key(), "openvpn-static-key", block=True)}
        """)
    ovpn_key = g.ec_key()
    ca = g.certificate("Acme VPN CA", KEYS.root_ca, ca=True)
    cert = g.certificate("office-gw", ovpn_key, ("Acme VPN CA", KEYS.root_ca))
    f = c.file("etc/openvpn/client/office.conf")
    f.text(f"""\
        client
        dev tun
        proto udp
        remote vpn.acme-corp.com 1194
        resolv-retry infinite
        nobind
        persist-key
        persist-tun
        {f.d(";tls-auth ta.key 1", "commented-example")}
        auth-user-pass /etc/openvpn/client/auth.txt
        <ca>
        {f.d(g.cert_pem(ca), "certificate")}
        </ca>
        <cert>
        {f.d(g.cert_pem(cert), "certificate")}
        </cert>
        <key>
        {f.s(g.pem_private(ovpn_key, "pkcs8"), "pkcs8-private-key", block=True)}
        </key>
        <tls-crypt>
        {f.s(g.openvpn_static_key(), "openvpn-static-key", block=True)}
        </tls-crypt>
        """)
    f = c.file("etc/openvpn/client/auth.txt")
    f.lines(["office-gw", f.s(g.password(), "openvpn-auth-file-password")])
    f = c.file("etc/ipsec.secrets")
    f.text(f"""\
        # This file holds shared secrets or RSA private keys for authentication.
        # RSA private key for this host, authenticating it to any other host
        # which knows the public part.
        {f.d('# : PSK "<secret>"', "commented-example")}
        : PSK "{f.s(g.password("random"), "ipsec-psk")}"
        203.0.113.10 198.51.100.20 : PSK {f.s("0s" + g.b64(32), "ipsec-psk")}
        """)
    f = c.file("etc/wpa_supplicant/wpa_supplicant.conf")
    f.text(f"""\
        ctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev
        update_config=1
        country=DE
        network={{
            ssid="ACME-Office"
            {f.d('#psk="very secret passphrase"', "commented-example")}
            psk="{f.s(g.password("phrase"), "wifi-psk")}"
            key_mgmt=WPA-PSK
        }}
        network={{
            ssid="ACME-Lab"
            psk={f.s(g.hex(64), "wifi-psk")}
        }}
        """)
    f = c.file("etc/NetworkManager/system-connections/Office.nmconnection")
    f.text(f"""\
        [connection]
        id=Office
        uuid={f.d(g.uuid(), "uuid")}
        type=wifi
        interface-name=wlp2s0

        [wifi]
        mode=infrastructure
        ssid=ACME-Office

        [wifi-security]
        auth-alg=open
        key-mgmt=wpa-psk
        psk={f.s(g.password(), "wifi-psk")}

        [ipv4]
        method=auto
        """)
    f = c.file("etc/NetworkManager/system-connections/Corp-8021x.nmconnection")
    f.text(f"""\
        [connection]
        id=Corp-8021x
        uuid={f.d(g.uuid(), "uuid")}
        type=ethernet

        [802-1x]
        ca-cert=/etc/ssl/certs/ca-certificates.crt
        eap=peap;
        identity=alice
        password={f.s(g.password(), "wifi-psk")}
        phase2-auth=mschapv2
        """)
    f = c.file("etc/fstab")
    cifs = f.s(g.password("random"), "cifs-password")
    f.text(f"""\
        # /etc/fstab: static file system information.
        # <file system> <mount point>   <type>  <options>       <dump>  <pass>
        UUID={f.d(g.uuid(), "uuid")} /               ext4    errors=remount-ro 0       1
        UUID={f.d(g.uuid(), "uuid")} /boot/efi       vfat    umask=0077      0       1
        UUID={f.d(g.uuid(), "uuid")} none            swap    sw              0       0
        //fs01.corp.local/finance /mnt/finance cifs username=svc,password={cifs},uid=1000 0 0
        //fs01.corp.local/backup /mnt/backup cifs credentials=/etc/samba/creds-backup,uid=34 0 0
        """)
    f = c.file("etc/samba/creds-backup")
    f.lines(
        ["username=svc_backup", f"password={f.s(g.password(), 'cifs-password')}", "domain=CORP"]
    )
    f = c.file("etc/crypttab")
    f.lines([f"data_crypt UUID={f.d(g.uuid(), 'uuid')} none luks,discard"])
    chat = r"passwd chat = *Enter\snew\s*\spassword:* %n\n *Retype\snew\s*\spassword:* %n\n ."
    f = c.file("etc/samba/smb.conf")
    f.text(f"""\
        [global]
           workgroup = CORP
           server role = standalone server
           {f.d("passdb backend = tdbsam", "config-reference")}
           obey pam restrictions = yes
           {f.d("unix password sync = yes", "config-reference")}
           passwd program = /usr/bin/passwd %u
           {f.d(chat, "password-prose")}
           pam password change = yes
           map to guest = bad user
        """)
    f = c.file("etc/snmp/snmpd.conf")
    f.text(f"""\
        sysLocation    Server Room, Frankfurt
        sysContact     ops@acme-corp.com
        agentaddress  udp:161
        {f.d("#rocommunity public  localhost", "commented-example")}
        rocommunity {f.s(g.alnum(16), "snmp-community")} 10.20.0.0/16
        """)
    f = c.file("etc/apt/auth.conf.d/corp.conf")
    f.lines(
        [f"machine apt.corp.local login apt-reader password {f.s(g.password(), 'netrc-password')}"]
    )
    f = c.file("etc/apt/apt.conf.d/95proxy")
    proxy = f.s(g.password(None, _URL_SAFE), "proxy-url-password")
    f.lines([f'Acquire::http::Proxy "http://proxyuser:{proxy}@proxy.corp.local:3128/";'])
    f = c.file("etc/pip.conf")
    proxy = f.s(g.password(None, _URL_SAFE), "proxy-url-password")
    f.text(f"""\
        [global]
        index-url = https://pypi-reader:{proxy}@pypi.corp.local/simple
        trusted-host = pypi.corp.local
        timeout = 60
        """)
    f = c.file("etc/machine-id")
    f.lines([f.d(g.hex(32), "machine-id")])
    f = c.file("var/lib/dbus/machine-id")
    f.lines([f.d(g.hex(32), "machine-id")])


def _w_etc_apps(c: CorpusBuilder, g: Shapes) -> None:
    f = c.file("etc/systemd/system/report-worker.service")
    f.text(f"""\
        [Unit]
        Description=Nightly report worker
        After=network-online.target postgresql.service

        [Service]
        Type=simple
        User=svc_report
        WorkingDirectory=/opt/report
        Environment=PYTHONUNBUFFERED=1
        Environment="DB_PASSWORD={f.s(g.password(), "systemd-env-password")}"
        Environment=SLACK_TOKEN={f.s(g.slack("xoxb"), "slack-bot-token")}
        EnvironmentFile=-/etc/default/report-worker
        ExecStart=/opt/report/.venv/bin/python -m report.worker
        Restart=on-failure

        [Install]
        WantedBy=multi-user.target
        """)
    f = c.file("etc/default/report-worker")
    f.text(f"""\
        # Defaults for report-worker, sourced by systemd
        REPORT_BUCKET=acme-reports
        SENTRY_AUTH_TOKEN={f.s("sntryu_" + g.hex(64), "sentry-auth-token")}
        DATADOG_API_KEY={f.s(g.hex(32), "datadog-api-key")}
        """)
    f = c.file("etc/cron.d/db-backup")
    pg = f.s(g.password("random"), "pgpassword-env")
    my = f.s(g.password("random"), "mysql-cli-password")
    f.text(f"""\
        SHELL=/bin/sh
        PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin
        # m h dom mon dow user  command
        15 2 * * * postgres PGPASSWORD={pg} pg_dump -h db01 -U backup shop > /var/backups/shop.sql
        45 2 * * * root mysqldump -u backup -p{my} --single-transaction erp > /var/backups/erp.sql
        """)
    f = c.file("etc/grafana/grafana.ini")
    f.text(f"""\
        ##################### Grafana Configuration Example #####################
        [database]
        type = postgres
        host = db01.prod.lan:5432
        name = grafana
        user = grafana
        # If the password contains # or ; you have to wrap it with triple quotes.
        {f.d("password =", "empty-password")}

        [security]
        # default admin user, created on startup
        admin_user = admin
        # default admin password, can be changed before first start of grafana
        {f.d(";admin_password = admin", "commented-example")}
        admin_password = {f.s(g.password(), "ini-password")}
        # used for signing
        secret_key = {f.s(g.alnum(20), "grafana-secret-key")}
        """)
    f = c.file("etc/rabbitmq/rabbitmq.conf")
    f.text(f"""\
        listeners.tcp.default = 5672
        {f.d("# default_pass = guest", "commented-example")}
        default_user = billing
        default_pass = {f.s(g.password("random"), "ini-password")}
        management.tcp.port = 15672
        """)
    f = c.file("etc/keepalived/keepalived.conf")
    f.text(f"""\
        vrrp_instance VI_1 {{
            state MASTER
            interface eth0
            virtual_router_id 51
            priority 150
            advert_int 1
            authentication {{
                auth_type PASS
                auth_pass {f.s(g.alnum(8), "keepalived-auth-pass")}
            }}
            virtual_ipaddress {{
                10.20.0.100/24
            }}
        }}
        """)
    f = c.file("etc/haproxy/haproxy.cfg")
    f.text(f"""\
        global
            log /dev/log local0
            maxconn 4096
        userlist ops_users
            user ops password {f.s(g.sha512_crypt(), "haproxy-crypt-hash")}
            user dev insecure-password {f.s(g.password("random"), "haproxy-password")}
        listen stats
            bind *:8404
            stats enable
            stats uri /stats
            stats auth admin:{f.s(g.password("random"), "haproxy-password")}
        """)
    f = c.file("etc/zabbix/zabbix_server.conf")
    f.text(f"""\
        ### Option: DBPassword
        #	Database password.
        #	Comment this line if no password is used.
        #
        # Mandatory: no
        # Default:
        {f.d("# DBPassword=", "commented-example")}
        DBHost=localhost
        DBName=zabbix
        DBUser=zabbix
        DBPassword={f.s(g.password(), "ini-password")}
        """)
    smtp_example = "# gitlab_rails['smtp_password'] = \"secret\""
    root_example = "# gitlab_rails['initial_root_password'] = \"password\""
    f = c.file("etc/gitlab/gitlab.rb")
    f.text(f"""\
        external_url 'https://gitlab.corp.local'
        ### GitLab email server settings
        ###! Docs: https://docs.gitlab.com/omnibus/settings/smtp.html
        gitlab_rails['smtp_enable'] = true
        gitlab_rails['smtp_address'] = "smtp.office365.com"
        gitlab_rails['smtp_user_name'] = "gitlab@acme-corp.com"
        {f.d(smtp_example, "commented-example")}
        gitlab_rails['smtp_password'] = "{f.s(g.password(), "source-code-password")}"
        {f.d(root_example, "commented-example")}
        gitlab_rails['db_adapter'] = "postgresql"
        gitlab_rails['db_password'] = "{f.s(g.password("random"), "source-code-password")}"
        """)
    f = c.file("etc/gitlab-runner/config.toml")
    f.text(f"""\
        concurrent = 4
        check_interval = 0

        [session_server]
          session_timeout = 1800

        [[runners]]
          name = "ci-runner-01"
          url = "https://gitlab.corp.local/"
          id = 17
          token = "{f.s("glrt-" + g.chars(B64URL, 20), "gitlab-runner-token")}"
          executor = "docker"
          [runners.docker]
            image = "debian:bookworm"
        """)
    ansible, vault_ref = "ansible-password", "{{ vault_db_admin_password }}"
    f = c.file("etc/ansible/hosts")
    f.text(f"""\
        [db]
        db01.prod.lan ansible_user=admin ansible_password={f.s(g.password("random"), ansible)}
        db02.prod.lan ansible_user=admin ansible_password={f.d(vault_ref, "template-reference")}

        [web:vars]
        ansible_become_pass={f.s(g.password("random"), "ansible-password")}
        """)
    f = c.file("etc/environment")
    f.lines(
        [
            'PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"',
            'https_proxy="http://proxyuser:'
            + f.s(g.password(None, _URL_SAFE), "proxy-url-password")
            + '@proxy.corp.local:3128"',
            'no_proxy="localhost,127.0.0.1,.corp.local"',
        ]
    )
    f = c.file("etc/datadog-agent/datadog.yaml")
    f.text(f"""\
        #########################
        ## Basic Configuration ##
        #########################
        ## @param api_key - string - required
        ## @env DD_API_KEY - string - required
        ## The Datadog API key used by your Agent to submit metrics and events to Datadog.
        api_key: {f.s(g.hex(32), "datadog-api-key")}
        ## @param app_key - string - optional
        {f.d("# app_key: <APP_KEY>", "commented-example")}
        site: datadoghq.eu
        logs_enabled: true
        """)
    f = c.file("etc/newrelic-infra.yml")
    f.text(f"""\
        license_key: {f.s(g.hex(36) + "NRAL", "newrelic-license-key")}
        display_name: app01
        log:
          level: info
        """)


def _w_provisioning(c: CorpusBuilder, g: Shapes) -> None:
    f = c.file("var/lib/cloud/instance/user-data.txt")
    f.text(f"""\
        #cloud-config
        hostname: app01
        users:
          - name: ops
            groups: sudo
            shell: /bin/bash
            lock_passwd: false
            passwd: {f.s(g.sha512_crypt(), "cloud-init-crypt-hash")}
            ssh_authorized_keys:
              - {f.d(g.openssh_public(g.ed25519_key(), "ops@bastion"), "ssh-public-key")}
        chpasswd:
          expire: false
          list: |
            root:{f.s(g.password(), "cloud-init-password")}
        runcmd:
          - [ systemctl, enable, --now, nginx ]
        """)
    f = c.file("root/anaconda-ks.cfg")
    f.text(f"""\
        #version=RHEL9
        # Use graphical install
        text
        keyboard --xlayouts='de'
        lang en_US.UTF-8
        network --bootproto=dhcp --hostname=erp01.corp.local
        # Root password
        rootpw --iscrypted {f.s(g.sha512_crypt(), "kickstart-crypt-hash")}
        user --name=admin --password={f.s(g.password(), "kickstart-password")} --plaintext
        timezone Europe/Berlin --utc
        %packages
        @^minimal-environment
        %end
        """)


# --- web applications ----------------------------------------------------------------------------

_WP_SALT = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!@#%^&*()-_[]{}<>~`+=,.;:/?|"
)
_WP_KEYS = (
    "AUTH_KEY",
    "SECURE_AUTH_KEY",
    "LOGGED_IN_KEY",
    "NONCE_KEY",
    "AUTH_SALT",
    "SECURE_AUTH_SALT",
    "LOGGED_IN_SALT",
    "NONCE_SALT",
)


def _w_wordpress(c: CorpusBuilder, g: Shapes) -> None:
    f = c.file("var/www/html/wp-config.php")
    salts = "\n".join(
        f"define( '{name}',{' ' * (17 - len(name))}'"
        + f.s(g.chars(_WP_SALT, 64), "wordpress-auth-salt")
        + "' );"
        for name in _WP_KEYS
    )
    f.text(f"""\
        <?php
        /**
         * The base configuration for WordPress
         *
         * @package WordPress
         */

        // ** Database settings - You can get this info from your web host ** //
        /** The name of the database for WordPress */
        define( 'DB_NAME', 'wp_shop' );

        /** Database username */
        define( 'DB_USER', 'wp_shop' );

        /** Database password */
        define( 'DB_PASSWORD', '{f.s(g.password(), "php-define-db-password")}' );

        /** Database hostname */
        define( 'DB_HOST', 'db01.prod.lan' );
        define( 'DB_CHARSET', 'utf8mb4' );

        /**#@+
         * Authentication unique keys and salts.
         */
        """)
    f.raw(salts + "\n")
    f.text("""\
        /**#@-*/
        $table_prefix = 'wp_';
        define( 'WP_DEBUG', false );
        if ( ! defined( 'ABSPATH' ) ) {
        \tdefine( 'ABSPATH', __DIR__ . '/' );
        }
        require_once ABSPATH . 'wp-settings.php';
        """)
    f = c.file("var/www/html/wp-config-sample.php")
    f.text(f"""\
        <?php
        // ** Database settings - You can get this info from your web host ** //
        /** The name of the database for WordPress */
        define( 'DB_NAME', 'database_name_here' );

        /** Database username */
        define( 'DB_USER', 'username_here' );

        /** Database password */
        define( 'DB_PASSWORD', '{f.d("password_here", "placeholder-word")}' );

        /** Database hostname */
        define( 'DB_HOST', 'localhost' );
        """)
    f.raw(
        "\n".join(
            f"define( '{name}',{' ' * (17 - len(name))}'"
            + f.d("put your unique phrase here", "placeholder-word")
            + "' );"
            for name in _WP_KEYS
        )
        + "\n"
    )
    f = c.file("var/www/html/includes/db.php")
    f.text(f"""\
        <?php
        // legacy intranet, do not touch (see INC-2231)
        $db_host = 'db01.prod.lan';
        $db_user = 'intranet';
        $db_pass = '{f.s(g.password(), "php-db-password")}';
        $db_name = 'intranet';
        $mysqli = new mysqli($db_host, $db_user, $db_pass, $db_name);

        // the reporting replica reads its password from the environment
        $replica_pass = {f.d("getenv('REPLICA_DB_PASSWORD')", "code-env-reference")};
        """)
    f = c.file("var/www/html/api/payments.php")
    f.text(f"""\
        <?php
        require_once __DIR__ . '/../vendor/autoload.php';

        \\Stripe\\Stripe::setApiKey('{f.s(g.stripe(), "stripe-secret-key")}');
        $publishableKey = '{f.d("pk_live_" + g.alnum(24), "publishable-key")}';

        function charge(int $amount, string $token): \\Stripe\\Charge {{
            return \\Stripe\\Charge::create(['amount' => $amount, 'source' => $token]);
        }}
        """)


def _w_django(c: CorpusBuilder, g: Shapes) -> None:
    django_alphabet = "abcdefghijklmnopqrstuvwxyz0123456789!@#%^&*(-_=+)"
    validator = "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"
    f = c.file("srv/django/hrportal/hrportal/settings.py")
    f.text(f"""\
        \"\"\"
        Django settings for hrportal project.

        Generated by 'django-admin startproject' using Django 4.2.
        \"\"\"
        import os
        from pathlib import Path

        BASE_DIR = Path(__file__).resolve().parent.parent

        # SECURITY WARNING: keep the secret key used in production secret!
        SECRET_KEY = '{f.s(g.chars(django_alphabet, 50), "django-secret-key")}'

        # SECURITY WARNING: don't run with debug turned on in production!
        DEBUG = False
        ALLOWED_HOSTS = ['hr.acme-corp.com']

        DATABASES = {{
            'default': {{
                'ENGINE': 'django.db.backends.postgresql',
                'NAME': 'hrportal',
                'USER': 'hrportal',
                'PASSWORD': '{f.s(g.password(), "django-db-password")}',
                'HOST': 'db01.prod.lan',
                'PORT': '5432',
            }},
            'replica': {{
                'ENGINE': 'django.db.backends.postgresql',
                'NAME': 'hrportal',
                'USER': 'hrportal_ro',
                'PASSWORD': {f.d("os.environ.get('REPLICA_DB_PASSWORD')", "code-env-reference")},
                'HOST': 'db02.prod.lan',
            }},
        }}

        # Password validation
        # https://docs.djangoproject.com/en/4.2/ref/settings/#auth-password-validators
        AUTH_PASSWORD_VALIDATORS = [
            {{'NAME': '{f.d(validator, "config-reference")}'}},
            {{'NAME': 'django.contrib.auth.password_validation.MinimumLengthValidator'}},
        ]
        PASSWORD_HASHERS = ['django.contrib.auth.hashers.Argon2PasswordHasher']

        EMAIL_HOST = 'smtp.office365.com'
        EMAIL_HOST_USER = 'hr-portal@acme-corp.com'
        EMAIL_HOST_PASSWORD = '{f.s(g.password(), "source-code-password")}'
        EMAIL_USE_TLS = True

        AWS_STORAGE_BUCKET_NAME = 'acme-hr-documents'
        AWS_ACCESS_KEY_ID = os.environ["AWS_ACCESS_KEY_ID"]
        AWS_SECRET_ACCESS_KEY = {f.d('os.environ["AWS_SECRET_ACCESS_KEY"]', "code-env-reference")}
        """)
    f = c.file("srv/django/hrportal/hrportal/local_settings.py.example")
    f.text(f"""\
        # Copy to local_settings.py and fill in.
        SECRET_KEY = '{f.d("your-secret-key-here", "placeholder-word")}'
        DATABASES = {{'default': {{'PASSWORD': '{f.d("changeme", "placeholder-word")}'}}}}
        EMAIL_HOST_PASSWORD = '{f.d("<smtp password>", "template-reference")}'
        """)
    f = c.file("srv/django/hrportal/requirements.txt")
    rows = ["# pip-compile --generate-hashes requirements.in"]
    for pkg, ver in (
        ("asgiref", "3.7.2"),
        ("django", "4.2.10"),
        ("psycopg2-binary", "2.9.9"),
        ("sqlparse", "0.4.4"),
        ("gunicorn", "21.2.0"),
        ("argon2-cffi", "23.1.0"),
    ):
        rows.append(f"{pkg}=={ver} \\")
        rows.append(f"    --hash=sha256:{f.d(_sha256(g), 'sha256-hex')} \\")
        rows.append(f"    --hash=sha256:{f.d(_sha256(g), 'sha256-hex')}")
    rows.append(
        f"hr-theme @ git+https://gitlab.corp.local/web/hr-theme.git@{f.d(_sha1(g), 'git-commit')}"
    )
    f.lines(rows)
    xkcd, fixture = "correct horse battery staple", "test-fixture-secret"
    f = c.file("srv/django/hrportal/employees/tests/test_auth.py")
    f.text(f"""\
        from django.contrib.auth import get_user_model
        from django.test import TestCase


        class LoginTests(TestCase):
            def setUp(self):
                self.user = get_user_model().objects.create_user(
                    username="jdoe", password="{f.d(xkcd, fixture)}"
                )

            def test_login(self):
                ok = self.client.login(username="jdoe", password="{f.d(xkcd, fixture)}")
                self.assertTrue(ok)

            def test_api_token(self):
                token = "{f.d("test-token-0123456789abcdef", "test-fixture-token")}"
                response = self.client.get("/api/me", HTTP_AUTHORIZATION=f"Token {{token}}")
                self.assertEqual(response.status_code, 401)

            def test_jwt_decoding(self):
                token = "{f.d(_jwt_doc_example(), "jwt-doc-example")}"
                self.assertEqual(decode(token, "your-256-bit-secret")["name"], "John Doe")
        """)


def _w_rails(c: CorpusBuilder, g: Shapes) -> None:
    f = c.file("srv/rails/billing/config/database.yml")
    f.text(f"""\
        default: &default
          adapter: postgresql
          encoding: unicode
          pool: <%= ENV.fetch("RAILS_MAX_THREADS") {{ 5 }} %>

        development:
          <<: *default
          database: billing_development
          {f.d("password:", "empty-password")}

        test:
          <<: *default
          database: billing_test
          password: {f.d("<%= ENV['TEST_DB_PASSWORD'] %>", "template-reference")}

        production:
          <<: *default
          database: billing_production
          username: billing
          password: {f.s(g.password(), "rails-database-yml-password")}
          host: db01.prod.lan
        """)
    f = c.file("srv/rails/billing/config/master.key")
    f.raw(f.s(g.hex(32), "rails-master-key"))
    f = c.file("srv/rails/billing/config/credentials.yml.enc")
    blob = base64.b64encode(g.randbytes(420)).decode()
    f.raw(
        f.d(
            f"{blob}--{g.b64(12)}--{g.b64(16)}",
            "encrypted-blob",
        )
    )
    f = c.file("srv/rails/billing/config/secrets.yml")
    f.text(f"""\
        development:
          secret_key_base: {f.d("<%= ENV['SECRET_KEY_BASE'] %>", "template-reference")}
        production:
          secret_key_base: {f.s(g.hex(128), "rails-secret-key-base")}
        """)
    f = c.file("srv/rails/billing/config/initializers/stripe.rb")
    f.text(f"""\
        # frozen_string_literal: true

        Rails.configuration.stripe = {{
          publishable_key: ENV.fetch('STRIPE_PUBLISHABLE_KEY', nil),
          secret_key: {f.d("ENV.fetch('STRIPE_SECRET_KEY', nil)", "code-env-reference")}
        }}
        # TODO: move to credentials, temporary for the migration (BILL-812)
        Stripe.api_key = '{f.s(g.stripe("rk_live_"), "stripe-restricted-key")}'
        """)
    erb = "<%= Rails.application.credentials.dig(:aws, :access_key_id) %>"
    f = c.file("srv/rails/billing/config/storage.yml")
    f.text(f"""\
        local:
          service: Disk
          root: <%= Rails.root.join("storage") %>

        amazon:
          service: S3
          access_key_id: {f.d(erb, "template-reference")}
          secret_access_key: <%= Rails.application.credentials.dig(:aws, :secret_access_key) %>
          region: eu-central-1
          bucket: acme-billing-<%= Rails.env %>
        """)
    f = c.file("srv/rails/billing/REVISION")
    f.lines([f.d(_sha1(g), "git-commit")])


def _w_laravel_nextcloud(c: CorpusBuilder, g: Shapes) -> None:
    f = c.file("var/www/crm/.env")
    f.text(f"""\
        APP_NAME=CRM
        APP_ENV=production
        APP_KEY=base64:{f.s(g.b64(32), "laravel-app-key")}
        APP_DEBUG=false
        APP_URL=https://crm.acme-corp.com

        LOG_CHANNEL=stack

        DB_CONNECTION=mysql
        DB_HOST=db01.prod.lan
        DB_PORT=3306
        DB_DATABASE=crm
        DB_USERNAME=crm
        DB_PASSWORD={f.s(g.password(), "dotenv-db-password")}

        REDIS_HOST=127.0.0.1
        REDIS_PASSWORD={f.d("null", "placeholder-word")}
        REDIS_PORT=6379

        MAIL_MAILER=smtp
        MAIL_HOST=smtp.mailgun.org
        MAIL_USERNAME=postmaster@mg.acme-corp.com
        MAIL_PASSWORD={f.s(g.password("random"), "dotenv-password")}
        MAILGUN_SECRET={f.s("key-" + g.hex(32), "mailgun-api-key")}

        PUSHER_APP_ID={g.digits(7)}
        PUSHER_APP_KEY={f.d(g.hex(20), "cloud-identifier")}
        PUSHER_APP_SECRET={f.s(g.hex(20), "pusher-app-secret")}
        PUSHER_APP_CLUSTER=eu

        AWS_ACCESS_KEY_ID={f.s(g.aws_key_id(), "aws-access-key-id")}
        AWS_SECRET_ACCESS_KEY={f.s(g.aws_secret(), "aws-secret-access-key")}
        AWS_DEFAULT_REGION=eu-central-1
        """)
    f = c.file("var/www/crm/.env.example")
    f.text(f"""\
        APP_NAME=Laravel
        APP_ENV=local
        {f.d("APP_KEY=", "empty-password")}
        APP_DEBUG=true
        DB_CONNECTION=mysql
        DB_HOST=127.0.0.1
        DB_DATABASE=laravel
        DB_USERNAME=root
        {f.d("DB_PASSWORD=", "empty-password")}
        REDIS_PASSWORD={f.d("null", "placeholder-word")}
        MAIL_PASSWORD={f.d("null", "placeholder-word")}
        AWS_ACCESS_KEY_ID=
        {f.d("AWS_SECRET_ACCESS_KEY=", "empty-password")}
        PUSHER_APP_SECRET=
        """)
    f = c.file("var/www/crm/composer.lock")
    pkgs = []
    for name, ver in (
        ("laravel/framework", "v10.43.0"),
        ("guzzlehttp/guzzle", "7.8.1"),
        ("monolog/monolog", "3.5.0"),
        ("symfony/console", "v6.4.3"),
        ("nesbot/carbon", "2.72.3"),
    ):
        pkgs.append(
            "        {\n"
            f'            "name": "{name}",\n'
            f'            "version": "{ver}",\n'
            '            "source": {\n'
            '                "type": "git",\n'
            f'                "url": "https://github.com/{name}.git",\n'
            f'                "reference": "{f.d(_sha1(g), "git-commit")}"\n'
            "            },\n"
            '            "dist": {\n'
            '                "type": "zip",\n'
            f'                "shasum": "{f.d(_sha1(g), "sha1-hex")}"\n'
            "            }\n"
            "        }"
        )
    f.raw(
        '{\n    "_readme": [\n        "This file locks the dependencies of your project"\n    ],\n'
        f'    "content-hash": "{f.d(g.hex(32), "md5-hex")}",\n    "packages": [\n'
        + ",\n".join(pkgs)
        + "\n    ]\n}\n"
    )
    f = c.file("var/www/nextcloud/config/config.php")
    f.text(f"""\
        <?php
        $CONFIG = array (
          'instanceid' => '{f.d("oc" + g.chars(LOWER_ALNUM, 10), "cloud-identifier")}',
          'passwordsalt' => '{f.s(g.chars(B64, 30), "nextcloud-secret")}',
          'secret' => '{f.s(g.chars(B64, 48), "nextcloud-secret")}',
          'trusted_domains' =>
          array (
            0 => 'cloud.acme-corp.com',
          ),
          'datadirectory' => '/var/www/nextcloud/data',
          'dbtype' => 'mysql',
          'version' => '28.0.2.5',
          'dbname' => 'nextcloud',
          'dbhost' => 'localhost',
          'dbuser' => 'nextcloud',
          'dbpassword' => '{f.s(g.password(), "php-db-password")}',
          'installed' => true,
          'mail_smtpname' => 'cloud@acme-corp.com',
          'mail_smtppassword' => '{f.s(g.password(), "source-code-password")}',
        );
        """)


def _w_dotnet_java(c: CorpusBuilder, g: Shapes) -> None:
    f = c.file("var/www/payroll/appsettings.json")
    doc = {
        "Logging": {"LogLevel": {"Default": "Information", "Microsoft.AspNetCore": "Warning"}},
        "ConnectionStrings": {
            "DefaultConnection": "Server=mssql01;Database=Payroll;User Id=payroll;Password="
            + f.s(g.password(), "ado-connection-string-password")
            + ";TrustServerCertificate=True",
            "Storage": "DefaultEndpointsProtocol=https;AccountName=acmepayroll;AccountKey="
            + f.s(g.azure_storage_key(), "azure-storage-account-key")
            + ";EndpointSuffix=core.windows.net",
        },
        "AzureAd": {
            "Instance": "https://login.microsoftonline.com/",
            "TenantId": f.d(g.uuid(), "uuid"),
            "ClientId": f.d(g.uuid(), "uuid"),
            "ClientSecret": f.s(g.azure_client_secret(), "azure-ad-client-secret"),
        },
        "Jwt": {"Issuer": "payroll", "Key": f.s(g.b64(48), "jwt-signing-secret")},
        "ServiceBus": "Endpoint=sb://acme-payroll.servicebus.windows.net/;"
        "SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey="
        + f.s(g.b64(32), "azure-service-bus-key"),
    }
    f.raw(js(doc) + "\n")
    f = c.file("var/www/payroll/appsettings.Development.json")
    doc = {
        "ConnectionStrings": {
            "DefaultConnection": "Server=localhost;Database=Payroll;Trusted_Connection=True"
        },
        "AzureAd": {"ClientSecret": f.d("<client-secret>", "template-reference")},
        "Jwt": {"Key": f.d("${JWT_KEY}", "env-reference")},
    }
    f.raw(js(doc) + "\n")
    f = c.file("var/www/intranet-legacy/web.config")
    ado = f.s(g.password(), "ado-connection-string-password")
    f.text(f"""\
        <?xml version="1.0" encoding="utf-8"?>
        <configuration>
          <connectionStrings>
            <add name="Intranet" providerName="System.Data.SqlClient"
                 connectionString="Data Source=mssql01;User ID=intranet;Password={ado};" />
          </connectionStrings>
          <appSettings>
            <add key="SendGridKey" value="{f.s(g.sendgrid(), "sendgrid-api-key")}" />
            <add key="Environment" value="Production" />
          </appSettings>
          <system.web>
            <machineKey
              validationKey="{f.s(g.hex(128).upper(), "aspnet-machine-key")}"
              decryptionKey="{f.s(g.hex(64).upper(), "aspnet-machine-key")}"
              validation="HMACSHA256" decryption="AES" />
            <compilation debug="false" targetFramework="4.8" />
          </system.web>
        </configuration>
        """)
    f = c.file("opt/billing/config/application.properties")
    f.text(f"""\
        spring.application.name=billing
        server.port=8080
        spring.datasource.url=jdbc:postgresql://db01.prod.lan:5432/billing
        spring.datasource.username=billing
        spring.datasource.password={f.s(g.password(), "spring-datasource-password")}
        spring.jpa.hibernate.ddl-auto=validate
        spring.rabbitmq.host=mq01.prod.lan
        spring.rabbitmq.password={f.d("${RABBIT_PASSWORD}", "env-reference")}
        spring.mail.host=smtp.office365.com
        spring.mail.username=billing@acme-corp.com
        spring.mail.password={f.s(g.password(), "ini-password")}
        jwt.secret={f.s(g.b64(48), "jwt-signing-secret")}
        management.endpoints.web.exposure.include=health,info
        """)
    f = c.file("opt/billing/config/application-prod.yml")
    jdbc = f.s(g.password(None, _URL_SAFE), "jdbc-password")
    f.text(f"""\
        spring:
          datasource:
            url: jdbc:mysql://mysql01:3306/billing?useSSL=true&user=billing&password={jdbc}
        twilio:
          account-sid: {f.d("AC" + g.hex(32), "cloud-identifier")}
          auth-token: {f.s(g.hex(32), "twilio-auth-token")}
          api-key: {f.s("SK" + g.hex(32), "twilio-api-key-sid")}
          api-secret: {f.s(g.alnum(32), "twilio-api-key-secret")}
        mailchimp:
          api-key: {f.s(g.hex(32) + "-us" + str(g.rng.randint(1, 21)), "mailchimp-api-key")}
        """)
    f = c.file("opt/tomcat/conf/context.xml")
    f.text(f"""\
        <?xml version="1.0" encoding="UTF-8"?>
        <Context>
            <WatchedResource>WEB-INF/web.xml</WatchedResource>
            <Resource name="jdbc/erp" auth="Container" type="javax.sql.DataSource"
                      maxTotal="20" maxIdle="10" username="erp_app"
                      password="{f.s(g.password(), "xml-db-password")}"
                      driverClassName="oracle.jdbc.OracleDriver"
                      url="jdbc:oracle:thin:@//oracle01.corp.local:1521/ERP"/>
        </Context>
        """)
    f = c.file("opt/tomcat/conf/server.xml")
    f.text(f"""\
        <?xml version="1.0" encoding="UTF-8"?>
        <Server port="8005" shutdown="SHUTDOWN">
          <Service name="Catalina">
            <Connector port="8443" protocol="org.apache.coyote.http11.Http11NioProtocol"
                       maxThreads="150" SSLEnabled="true">
              <SSLHostConfig>
                <Certificate certificateKeystoreFile="conf/erp.jks"
                             certificateKeystorePassword="{f.s(g.password(), "xml-password")}"
                             type="RSA" />
              </SSLHostConfig>
            </Connector>
          </Service>
        </Server>
        """)
    f = c.file("opt/erp/hibernate.cfg.xml")
    oracle = f.s(g.password("random"), "jdbc-password")
    xml = f.s(g.password(), "xml-db-password")
    f.text(f"""\
        <?xml version="1.0" encoding="utf-8"?>
        <!DOCTYPE hibernate-configuration PUBLIC "-//Hibernate/Hibernate Configuration DTD 3.0//EN"
            "http://www.hibernate.org/dtd/hibernate-configuration-3.0.dtd">
        <hibernate-configuration>
          <session-factory>
            <property name="hibernate.connection.driver_class">oracle.jdbc.OracleDriver</property>
            <property name="hibernate.connection.url"
              >jdbc:oracle:thin:erp_batch/{oracle}@oracle01.corp.local:1521/ERP</property>
            <property name="hibernate.connection.username">erp_batch</property>
            <property name="hibernate.connection.password">{xml}</property>
          </session-factory>
        </hibernate-configuration>
        """)
    f = c.file("opt/airflow/airflow.cfg")
    pg = f.s(g.password(None, _URL_SAFE), "postgres-url-password")
    f.text(f"""\
        [core]
        dags_folder = /opt/airflow/dags
        executor = LocalExecutor
        # Secret key to save connection passwords in the db
        fernet_key = {f.s(g.b64url(32) + "=", "airflow-fernet-key")}

        [database]
        sql_alchemy_conn = postgresql+psycopg2://airflow:{pg}@db01.prod.lan:5432/airflow

        [webserver]
        base_url = https://airflow.corp.local
        secret_key = {f.s(g.b64(16), "session-secret")}

        [smtp]
        smtp_host = smtp.office365.com
        smtp_user = airflow@acme-corp.com
        {f.d("# smtp_password =", "commented-example")}
        """)


# --- a Node.js shop -----------------------------------------------------------------------


def _w_node_shop(c: CorpusBuilder, g: Shapes) -> None:
    root = "srv/shop"
    f = c.file(f"{root}/.env")
    pg = f.s(g.password(None, _URL_SAFE), "postgres-url-password")
    mongo = f.s(g.password(None, _URL_SAFE), "mongodb-url-password")
    fcm_key = "AAAA" + g.chars(B64URL, 7) + ":APA91b" + g.chars(B64URL, 134)
    fcm = f.s(fcm_key, "firebase-fcm-server-key")
    f.text(f"""\
        NODE_ENV=production
        PORT=3000
        DATABASE_URL=postgres://shop:{pg}@db01.prod.lan:5432/shop
        REDIS_URL=redis://:{f.s(g.password("random"), "redis-url-password")}@cache01.prod.lan:6379/0
        AMQP_URL=amqp://shop:{f.s(g.password("random"), "amqp-url-password")}@mq01.prod.lan/shop
        MONGO_URL=mongodb+srv://catalog:{mongo}@cluster0.x7k2p.mongodb.net/catalog
        STRIPE_SECRET_KEY={f.s(g.stripe(), "stripe-secret-key")}
        STRIPE_PUBLISHABLE_KEY={f.d("pk_live_" + g.alnum(24), "publishable-key")}
        STRIPE_WEBHOOK_SECRET={f.s("whsec_" + g.alnum(32), "stripe-webhook-secret")}
        SENDGRID_API_KEY={f.s(g.sendgrid(), "sendgrid-api-key")}
        TWILIO_ACCOUNT_SID={f.d("AC" + g.hex(32), "cloud-identifier")}
        TWILIO_AUTH_TOKEN={f.s(g.hex(32), "twilio-auth-token")}
        JWT_SECRET={f.s(g.alnum(48), "jwt-signing-secret")}
        SESSION_SECRET={f.s(g.hex(64), "session-secret")}
        OPENAI_API_KEY={f.s(g.openai(), "openai-api-key")}
        SLACK_WEBHOOK_URL={f.s(g.slack_webhook(), "slack-webhook-url")}
        MAPBOX_PUBLIC_TOKEN={f.d(g.mapbox("pk"), "publishable-key")}
        MAPBOX_SECRET_TOKEN={f.s(g.mapbox("sk"), "mapbox-secret-token")}
        ALGOLIA_APP_ID={f.d(g.chars(UPPER_ALNUM, 10), "cloud-identifier")}
        ALGOLIA_ADMIN_KEY={f.s(g.hex(32), "algolia-admin-key")}
        SHOPIFY_ADMIN_TOKEN={f.s("shpat_" + g.hex(32), "shopify-access-token")}
        SQUARE_ACCESS_TOKEN={f.s("EAAA" + g.chars(B64URL, 60), "square-access-token")}
        AWS_ACCESS_KEY_ID={f.s(g.aws_key_id(), "aws-access-key-id")}
        AWS_SECRET_ACCESS_KEY={f.s(g.aws_secret(), "aws-secret-access-key")}
        S3_BUCKET=acme-shop-assets
        FIREBASE_SERVER_KEY={fcm}
        GOOGLE_MAPS_API_KEY={f.s(g.gcp_api_key(), "gcp-api-key")}
        """)
    hook = "https://hooks.slack.com/services/XXXXXXXXX/XXXXXXXXX/" + "X" * 24
    f = c.file(f"{root}/.env.example")
    f.text(f"""\
        NODE_ENV=development
        PORT=3000
        DATABASE_URL={f.d("postgres://user:password@localhost:5432/shop", "doc-url-example")}
        REDIS_URL={f.d("redis://localhost:6379/0", "doc-url-example")}
        STRIPE_SECRET_KEY={f.d("sk_test_" + "x" * 24, "masked-value")}
        STRIPE_WEBHOOK_SECRET={f.d("whsec_...", "masked-value")}
        SENDGRID_API_KEY={f.d("your_api_key_here", "placeholder-word")}
        TWILIO_AUTH_TOKEN={f.d("<twilio auth token>", "template-reference")}
        JWT_SECRET={f.d("changeme", "placeholder-word")}
        SESSION_SECRET={f.d("CHANGE_ME", "placeholder-word")}
        OPENAI_API_KEY={f.d("sk-...", "masked-value")}
        SLACK_WEBHOOK_URL={f.d(hook, "masked-value")}
        AWS_SECRET_ACCESS_KEY={f.d("********", "masked-value")}
        """)
    f = c.file(f"{root}/config/default.json")
    f.text(f"""\
        {{
          "server": {{ "port": 3000 }},
          "db": {{
            "host": "localhost",
            "user": "shop",
            "password": {f.d('""', "empty-password")}
          }},
          "mail": {{ "from": "shop@acme-corp.com", "apiKey": "" }}
        }}
        """)
    f = c.file(f"{root}/config/custom-environment-variables.json")
    doc = {
        "db": {"password": f.d("DB_PASSWORD", "env-reference")},
        "mail": {"apiKey": f.d("SENDGRID_API_KEY", "env-reference")},
    }
    f.raw(js(doc) + "\n")
    f = c.file(f"{root}/src/db.js")
    f.text(f"""\
        'use strict';
        const {{ Pool }} = require('pg');

        const pool = new Pool({{
          host: process.env.DB_HOST || 'localhost',
          user: 'shop',
          password: {f.d("process.env.DB_PASSWORD", "code-env-reference")},
          database: 'shop',
          max: 20,
        }});

        module.exports = pool;
        """)
    f = c.file(f"{root}/src/legacy/mailer.js")
    hook = "https://discord.com/api/webhooks/" + g.digits(18) + "/" + g.chars(B64URL, 68)
    discord = f.s(hook, "discord-webhook-url")
    f.text(f"""\
        // TODO(2023-11): remove once the notification service is live
        const sgMail = require('@sendgrid/mail');
        sgMail.setApiKey('{f.s(g.sendgrid(), "sendgrid-api-key")}');

        const discord = '{discord}';

        exports.send = (to, subject, html) =>
          sgMail.send({{ to, from: 'shop@acme-corp.com', subject, html }});
        """)
    f = c.file(f"{root}/src/config.js")
    f.text(f"""\
        module.exports = {{
          stripeKey: {f.d("process.env.STRIPE_SECRET_KEY", "code-env-reference")},
          sessionSecret: process.env.SESSION_SECRET,
          adminPassword: '{f.s(g.password(), "source-code-password")}',
          linearApiKey: '{f.s("lin_api_" + g.alnum(40), "linear-api-key")}',
          notionToken: '{f.s("ntn_" + g.digits(11) + g.alnum(35), "notion-token")}',
        }};
        """)
    f = c.file(f"{root}/package-lock.json")
    entries = []
    for name in (
        "express",
        "pg",
        "stripe",
        "@sendgrid/mail",
        "jsonwebtoken",
        "lodash",
        "axios",
        "body-parser",
        "cookie-parser",
        "debug",
        "dotenv",
        "helmet",
        "ioredis",
        "joi",
        "morgan",
        "ms",
        "qs",
        "uuid",
        "winston",
        "zod",
    ):
        ver = f"{g.rng.randint(1, 9)}.{g.rng.randint(0, 20)}.{g.rng.randint(0, 9)}"
        base = name.split("/")[-1]
        entries.append(
            f'    "node_modules/{name}": {{\n'
            f'      "version": "{ver}",\n'
            f'      "resolved": "https://registry.npmjs.org/{name}/-/{base}-{ver}.tgz",\n'
            f'      "integrity": "{f.d(_sri(g), "sri-integrity")}"\n'
            "    }"
        )
    f.raw(
        '{\n  "name": "shop",\n  "version": "2.14.1",\n  "lockfileVersion": 3,\n'
        + '  "requires": true,\n  "packages": {\n'
        + ",\n".join(entries)
        + "\n  }\n}\n"
    )
    f = c.file(f"{root}/yarn.lock")
    rows = [
        "# THIS IS AN AUTOGENERATED FILE. DO NOT EDIT THIS FILE DIRECTLY.",
        "# yarn lockfile v1",
        "",
    ]
    for name in ("accepts", "array-flatten", "content-disposition", "cookie", "depd", "etag"):
        ver = f"{g.rng.randint(1, 3)}.{g.rng.randint(0, 9)}.{g.rng.randint(0, 9)}"
        rows += [
            f"{name}@^{ver}:",
            f'  version "{ver}"',
            f'  resolved "https://registry.yarnpkg.com/{name}/-/{name}-{ver}.tgz#'
            + f.d(_sha1(g), "sha1-hex")
            + '"',
            f"  integrity {f.d(_sri(g), 'sri-integrity')}",
            "",
        ]
    f.lines(rows)
    for name in ("lodash", "jsonwebtoken"):
        f = c.file(f"{root}/node_modules/{name}/package.json")
        f.text(f"""\
            {{
              "name": "{name}",
              "version": "4.17.21",
              "license": "MIT",
              "gitHead": "{f.d(_sha1(g), "git-commit")}",
              "_integrity": "{f.d(_sri(g), "sri-integrity")}",
              "_shasum": "{f.d(_sha1(g), "sha1-hex")}"
            }}
            """)
    f = c.file(f"{root}/node_modules/jsonwebtoken/README.md")
    f.text(f"""\
        # jsonwebtoken

        ## Usage

        ### jwt.sign(payload, secretOrPrivateKey, [options, callback])

        Synchronous Sign with default (HMAC SHA256)

        ```js
        var jwt = require('jsonwebtoken');
        var token = jwt.sign({{ foo: 'bar' }}, '{f.d("shhhhh", "doc-token-example")}');
        ```

        Sign with RSA SHA256

        ```js
        // sign with RSA SHA256
        var privateKey = fs.readFileSync('private.key');
        var token = jwt.sign({{ foo: 'bar' }}, privateKey, {{ algorithm: 'RS256' }});
        ```

        A token looks like this:

            {f.d(_jwt_doc_example(), "jwt-doc-example")}
        """)
    f = c.file(f"{root}/node_modules/aws-sdk/README.md")
    f.text(f"""\
        # AWS SDK for JavaScript

        Set credentials in the environment:

            export AWS_ACCESS_KEY_ID={f.d(AWS_DOC_KEY_ID, "aws-doc-example")}
            export AWS_SECRET_ACCESS_KEY={f.d(AWS_DOC_SECRET, "aws-doc-example")}

        or in `~/.aws/credentials`:

            [default]
            aws_access_key_id = {f.d(AWS_DOC_KEY_ID_2, "aws-doc-example")}
            aws_secret_access_key = {f.d(AWS_DOC_SECRET_2, "aws-doc-example")}
        """)
    f = c.file(f"{root}/node_modules/stripe/test/fixtures/config.json")
    fixture = {
        "apiKey": f.d("sk_test_123", "test-fixture-token"),
        "webhookSecret": f.d("whsec_test_secret", "test-fixture-token"),
        "password": f.d("test-password", "test-fixture-secret"),
    }
    f.raw(js(fixture) + "\n")
    f = c.file(f"{root}/test/fixtures/users.json")
    doc2 = [
        {
            "id": f.d(g.uuid(), "uuid"),
            "email": "jane@example.com",
            "password": f.d("Passw0rd!", "test-fixture-secret"),
        },
        {
            "id": f.d(g.uuid(), "uuid"),
            "email": "john@example.com",
            "password": f.d("hunter2", "test-fixture-secret"),
        },
    ]
    f.raw(js(doc2) + "\n")
    f = c.file(f"{root}/public/index.html")
    sri1 = f.d("sha384-" + g.b64(48), "sri-integrity")
    sri2 = f.d("sha384-" + g.b64(48), "sri-integrity")
    sitekey = f.d("6Le" + g.chars(B64URL, 37), "publishable-key")
    pixel = base64.b64encode(b"\x89PNG\r\n\x1a\n" + g.randbytes(60)).decode()
    f.text(f"""\
        <!doctype html>
        <html lang="en">
        <head>
          <meta charset="utf-8">
          <title>ACME Shop</title>
          <link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/bootstrap@5.3.2/css/b.min.css"
                integrity="{sri1}" crossorigin="anonymous">
          <script src="https://cdn.jsdelivr.net/npm/bootstrap@5.3.2/dist/js/bootstrap.bundle.min.js"
                  integrity="{sri2}" crossorigin="anonymous"></script>
          <script src="https://www.google.com/recaptcha/api.js" async defer></script>
        </head>
        <body>
          <img alt="" src="{f.d("data:image/png;base64," + pixel, "data-uri")}">
          <form method="post" action="/login">
            <label for="password">{f.d("Password", "password-prose")}</label>
            <input type="password" id="password" name="password" autocomplete="current-password">
            <div class="g-recaptcha" data-sitekey="{sitekey}"></div>
            <a href="/reset">{f.d("Forgot your password?", "password-prose")}</a>
          </form>
        </body>
        </html>
        """)


# --- scripts and infrastructure code --------------------------------------------------------------


def _w_scripts(c: CorpusBuilder, g: Shapes) -> None:
    f = c.file("opt/tools/backup_s3.py")
    f.text(f"""\
        #!/usr/bin/env python3
        \"\"\"Nightly upload of database dumps to S3.\"\"\"
        import os
        import sys

        import boto3

        BUCKET = {f.d('os.environ["BACKUP_BUCKET"]', "code-env-reference")}

        s3 = boto3.client(
            "s3",
            aws_access_key_id="{f.s(g.aws_key_id(), "aws-access-key-id")}",
            aws_secret_access_key="{f.s(g.aws_secret(), "aws-secret-access-key")}",
            region_name="eu-central-1",
        )


        def main(paths: list[str]) -> int:
            for path in paths:
                s3.upload_file(path, BUCKET, os.path.basename(path))
            return 0


        if __name__ == "__main__":
            sys.exit(main(sys.argv[1:]))
        """)
    f = c.file("opt/tools/notify.py")
    f.text(f"""\
        import os
        import requests

        SLACK_WEBHOOK = "{f.s(g.slack_webhook(), "slack-webhook-url")}"
        TELEGRAM_TOKEN = "{f.s(g.telegram(), "telegram-bot-token")}"
        DISCORD_BOT_TOKEN = "{f.s(g.discord_bot(), "discord-bot-token")}"
        FALLBACK_WEBHOOK = {f.d('os.getenv("FALLBACK_WEBHOOK")', "code-env-reference")}


        def notify(text: str) -> None:
            requests.post(SLACK_WEBHOOK, json={{"text": text}}, timeout=10)
            requests.post(
                f"https://api.telegram.org/bot{{TELEGRAM_TOKEN}}/sendMessage",
                json={{"chat_id": -1001234567890, "text": text}},
                timeout=10,
            )
        """)
    f = c.file("opt/report/report/db.py")
    prompt = f.d("getpass.getpass()", "code-env-reference")
    f.text(f"""\
        import getpass

        import psycopg2


        def connect(interactive: bool = False):
            if interactive:
                return psycopg2.connect(host="db01", user="report", password={prompt})
            return psycopg2.connect(
                host="db01.prod.lan",
                dbname="reporting",
                user="report",
                password="{f.s(g.password(), "python-db-password")}",
            )
        """)
    f = c.file("opt/report/report/settings.py")
    my = f.s(g.password(None, _URL_SAFE), "mysql-url-password")
    f.text(f"""\
        import os

        SECRET_KEY = "{f.s(g.hex(64), "flask-secret-key")}"
        SQLALCHEMY_DATABASE_URI = "mysql+pymysql://report:{my}@mysql01.prod.lan/report"
        GITHUB_APP_TOKEN = "{f.s(g.github("ghs_"), "github-app-token")}"
        HF_TOKEN = {f.d('os.environ.get("HF_TOKEN")', "code-env-reference")}
        ANTHROPIC_API_KEY = "{f.s(g.anthropic(), "anthropic-api-key")}"
        DATABRICKS_TOKEN = "{f.s("dapi" + g.hex(32), "databricks-token")}"
        """)
    f = c.file("opt/tools/sync_issues.rb")
    fine_grained = f.s(g.github_fine_grained(), "github-fine-grained-pat")
    env_token = f.d("ENV.fetch('GITHUB_TOKEN')", "code-env-reference")
    f.text(f"""\
        #!/usr/bin/env ruby
        require 'octokit'
        require 'jira-ruby'

        client = Octokit::Client.new(access_token: '{fine_grained}')
        backup_client = Octokit::Client.new(access_token: {env_token})
        jira = JIRA::Client.new(
          username: 'automation@acme-corp.com',
          password: '{f.s(g.atlassian(), "atlassian-api-token")}',
          site: 'https://acme.atlassian.net',
          auth_type: :basic
        )
        """)
    f = c.file("usr/local/bin/db-backup.sh")
    pg = f.s(g.password(None, _SHELL_SAFE), "pgpassword-env")
    my = f.s(g.password(None, _SHELL_SAFE), "mysql-cli-password")
    account_key = f.s(g.azure_storage_key(), "azure-storage-account-key")
    sas = "sv=2022-11-02&ss=b&srt=o&sp=w&se=2025-12-31T23:59:59Z&spr=https&sig="
    sig = f.s(g.azure_sas_sig(), "azure-sas-signature")
    f.text(f"""\
        #!/bin/bash
        # Nightly backup of all databases. Installed by ansible role "backup".
        set -euo pipefail
        STAMP=$(date +%F)
        export PGPASSWORD='{pg}'
        pg_dumpall -h db01.prod.lan -U backup | gzip > /var/backups/pg-$STAMP.sql.gz
        mysqldump -h mysql01 -u backup --password='{my}' --all-databases > /var/backups/my.sql
        export AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=https;\\
        AccountName=acmebackup;AccountKey={account_key};EndpointSuffix=core.windows.net"
        az storage blob upload-batch -d backups -s /var/backups --pattern "*$STAMP*"
        STATUS_URL="https://acmebackup.blob.core.windows.net/status/last?{sas}{sig}"
        curl -fsS "$STATUS_URL" -X PUT -d "$STAMP"
        """)
    f = c.file("opt/deploy/deploy.sh")
    dockerhub = f.s("dckr_pat_" + g.chars(B64URL, 27), "dockerhub-pat")
    ci_password = f.d('"$CI_REGISTRY_PASSWORD"', "env-reference")
    tailscale = f.s("tskey-auth-k" + g.alnum(10) + "CNTRL-" + g.alnum(33), "tailscale-auth-key")
    token_ref = f.d("${GITHUB_TOKEN}", "env-reference")
    f.text(f"""\
        #!/bin/sh
        set -e
        : "${{REGISTRY:=registry.corp.local}}"
        GITHUB_TOKEN={f.s(g.github(), "github-classic-pat")}
        DOCKERHUB_TOKEN={dockerhub}
        echo "$DOCKERHUB_TOKEN" | docker login -u acmecorp --password-stdin
        docker login -u deploy -p {ci_password} "$REGISTRY"
        export DIGITALOCEAN_ACCESS_TOKEN={f.s("dop_v1_" + g.hex(64), "digitalocean-token")}
        export CLOUDFLARE_API_TOKEN={f.s(g.chars(B64URL, 40), "cloudflare-api-token")}
        export TS_AUTHKEY={tailscale}
        curl -H "Authorization: token {token_ref}" https://api.github.com/repos/acme/shop
        """)
    f = c.file("usr/local/bin/renew-integrations.sh")
    atlassian = f.s(g.atlassian(), "atlassian-api-token")
    postman = f.s("PMAK-" + g.hex(24) + "-" + g.hex(34), "postman-api-key")
    grafana = f.s("glsa_" + g.alnum(32) + "_" + g.hex(8), "grafana-service-account-token")
    newrelic = f.s("NRAK-" + g.chars(UPPER_ALNUM, 27), "newrelic-user-key")
    nuget = f.s("oy2" + g.chars(LOWER_ALNUM, 43), "nuget-api-key")
    xoxp = f.s(g.slack("xoxp"), "slack-user-token")
    xapp = f.s(g.slack("xapp"), "slack-app-token")
    sonar = f.s("sqp_" + g.hex(40), "sonarqube-token")
    f.text(f"""\
        #!/bin/bash
        # rotate integration secrets; old values kept until the rotation job is fixed
        OKTA_TOKEN={f.s("00" + g.chars(B64URL, 40), "okta-api-token")}
        curl -s -H "Authorization: SSWS $OKTA_TOKEN" https://acme.okta.com/api/v1/users?limit=1
        curl -s -u ops@acme-corp.com:{atlassian} https://acme.atlassian.net/rest/api/3/myself
        curl -s https://api.getpostman.com/me -H "X-Api-Key: {postman}"
        curl -s -H "Authorization: Bearer {grafana}" https://grafana.corp.local/api/search
        DD_API_KEY={f.s(g.hex(32), "datadog-api-key")}
        DD_APP_KEY={f.s(g.hex(40), "datadog-app-key")}
        curl -s -H "DD-API-KEY: $DD_API_KEY" -H "DD-APPLICATION-KEY: $DD_APP_KEY" $DD_URL/validate
        curl -s -H "Api-Key: {newrelic}" https://api.eu.newrelic.com/graphql
        curl -s -H "Authorization: Bearer {xoxp}" $SLACK/auth.test
        curl -s -H "Authorization: Bearer {xapp}" $SLACK/apps.connections.open
        curl -s -u {sonar}: https://sonar.corp.local/api/authentication/validate
        dotnet nuget push pkg.nupkg --api-key {nuget} --source https://api.nuget.org/v3/index.json
        """)


def _w_infra(c: CorpusBuilder, g: Shapes) -> None:
    f = c.file("home/deploy/infra/terraform.tfvars")
    f.text(f"""\
        region       = "eu-central-1"
        environment  = "prod"
        db_username  = "shop"
        db_password  = "{f.s(g.password(), "tfvars-password")}"
        do_token     = "{f.s("dop_v1_" + g.hex(64), "digitalocean-token")}"
        cloudflare_api_token = "{f.s(g.chars(B64URL, 40), "cloudflare-api-token")}"
        datadog_api_key      = "{f.s(g.hex(32), "datadog-api-key")}"
        {f.d('# db_password = "changeme"', "commented-example")}
        """)
    f = c.file("home/deploy/infra/variables.tf")
    f.text(f"""\
        variable "db_password" {{
          description = "{f.d("Master password of the RDS instance", "password-prose")}"
          type        = string
          sensitive   = true
        }}

        variable "do_token" {{
          type      = string
          sensitive = true
        }}
        """)
    f = c.file("home/deploy/infra/terraform.tfstate")
    state = {
        "version": 4,
        "terraform_version": "1.7.3",
        "serial": 42,
        "lineage": f.d(g.uuid(), "uuid"),
        "resources": [
            {
                "mode": "managed",
                "type": "aws_db_instance",
                "name": "shop",
                "instances": [
                    {
                        "attributes": {
                            "arn": "arn:aws:rds:eu-central-1:"
                            + f.d(g.digits(12), "cloud-identifier")
                            + ":db:shop",
                            "engine": "postgres",
                            "password": f.s(g.password(), "tfstate-password"),
                            "username": "shop",
                        }
                    }
                ],
            },
            {
                "mode": "managed",
                "type": "random_password",
                "name": "redis",
                "instances": [
                    {
                        "attributes": {
                            "length": 32,
                            "result": f.s(g.password("random"), "tfstate-password"),
                        }
                    }
                ],
            },
            {
                "mode": "managed",
                "type": "aws_iam_access_key",
                "name": "ci",
                "instances": [
                    {
                        "attributes": {
                            "id": f.s(g.aws_key_id(), "aws-access-key-id"),
                            "secret": f.s(g.aws_secret(), "aws-secret-access-key"),
                            "user": "ci-deployer",
                        }
                    }
                ],
            },
        ],
    }
    f.raw(js(state) + "\n")
    f = c.file("home/deploy/infra/gcp-sa.json")
    pem = g.pem_private(KEYS.gcp, "pkcs8") + "\n"
    escaped = json.dumps(pem)[1:-1]
    sa_key = f.s(escaped.removesuffix("\\n"), "gcp-service-account-key", block=True)
    sa = (
        "{\n"
        '  "type": "service_account",\n'
        '  "project_id": "acme-prod-3f9a",\n'
        f'  "private_key_id": "{f.d(g.hex(40), "sha1-hex")}",\n'
        f'  "private_key": "{sa_key}\\n",\n'
        '  "client_email": "terraform@acme-prod-3f9a.iam.gserviceaccount.com",\n'
        f'  "client_id": "{f.d(g.digits(21), "cloud-identifier")}",\n'
        '  "auth_uri": "https://accounts.google.com/o/oauth2/auth",\n'
        '  "token_uri": "https://oauth2.googleapis.com/token"\n'
        "}\n"
    )
    f.raw(sa)
    f = c.file("home/deploy/app/docker-compose.yml")
    f.text(f"""\
        services:
          db:
            image: mariadb:11.2
            environment:
              MYSQL_ROOT_PASSWORD: {f.s(g.password("random"), "container-env-password")}
              MYSQL_DATABASE: shop
              MYSQL_PASSWORD: {f.d("${DB_PASSWORD}", "env-reference")}
          pg:
            image: postgres:16
            environment:
              POSTGRES_PASSWORD: "{f.s(g.password(), "container-env-password")}"
              POSTGRES_PASSWORD_FILE: {f.d("/run/secrets/db_password", "secret-file-reference")}
          cache:
            image: redis:7
            command: redis-server --requirepass {f.s(g.password("random"), "redis-requirepass")}
          app:
            image: registry.corp.local/shop:2.14.1
            env_file: .env
            environment:
              - NODE_ENV=production
              - SENTRY_AUTH_TOKEN={f.d("${SENTRY_AUTH_TOKEN:-}", "env-reference")}
        """)
    f = c.file("home/deploy/app/.gitlab-ci.yml")
    ci_password = f.d('"$CI_REGISTRY_PASSWORD"', "env-reference")
    trigger = f.s("glptt-" + g.hex(40), "gitlab-deploy-token")
    f.text(f"""\
        stages: [build, deploy]
        variables:
          SONAR_HOST_URL: https://sonar.corp.local
          SONAR_TOKEN: "{f.s("sqp_" + g.hex(40), "sonarqube-token")}"
        build:
          stage: build
          script:
            - docker login -u "$CI_REGISTRY_USER" -p {ci_password} "$CI_REGISTRY"
            - docker build -t "$CI_REGISTRY_IMAGE:$CI_COMMIT_SHA" .
        deploy:
          stage: deploy
          script:
            - curl -X POST -F token={trigger} -F ref=main $CI_API_V4_URL/projects/42/trigger
        """)
    f = c.file("home/deploy/app/.github/workflows/deploy.yml")
    f.text(f"""\
        name: deploy
        on:
          push:
            branches: [main]
        jobs:
          deploy:
            runs-on: ubuntu-latest
            steps:
              - uses: actions/checkout@{f.d(_sha1(g), "git-commit")}
              - uses: docker/login-action@v3
                with:
                  username: ${{{{ github.actor }}}}
                  password: {f.d("${{ secrets.GITHUB_TOKEN }}", "template-reference")}
              - run: ./deploy.sh
                env:
                  SLACK_WEBHOOK: {f.d("${{ secrets.SLACK_WEBHOOK }}", "template-reference")}
                  NPM_TOKEN: {f.s(g.github("npm_"), "npm-token")}
        """)
    f = c.file("home/deploy/ansible/group_vars/all/vars.yml")
    f.text(f"""\
        ---
        app_user: shop
        db_host: db01.prod.lan
        db_password: "{f.d("{{ vault_db_password }}", "template-reference")}"
        smtp_password: "{f.d("{{ lookup('env', 'SMTP_PASSWORD') }}", "template-reference")}"
        """)
    f = c.file("home/deploy/ansible/group_vars/all/vault.yml")
    vault = "\n".join(wrap(g.randbytes(320).hex(), 80))
    f.raw("$ANSIBLE_VAULT;1.1;AES256\n" + f.s(vault, "ansible-vault", block=True) + "\n")
    f = c.file("home/deploy/ansible/host_vars/db01.prod.lan.yml")
    f.text(f"""\
        ---
        mysql_root_password: {f.s(g.password(), "ansible-password")}
        mysql_replication_user: repl
        mysql_replication_password: "{f.s(g.password("random"), "ansible-password")}"
        """)
    f = c.file("home/deploy/app/secrets.enc.yaml")
    enc_lines = []
    for name in ("db_password", "api_key", "smtp_password"):
        blob = base64.b64encode(g.randbytes(24)).decode()
        iv = base64.b64encode(g.randbytes(32)).decode()
        tag = base64.b64encode(g.randbytes(16)).decode()
        enc_lines.append(
            f"{name}: "
            + f.d(f"ENC[AES256_GCM,data:{blob},iv:{iv},tag:{tag},type:str]", "encrypted-blob")
        )
    _, age_pub = g.age_secret()
    enc_lines += [
        "sops:",
        "    age:",
        f"        - recipient: {f.d(age_pub, 'age-public-key')}",
        '    lastmodified: "2024-02-20T08:11:02Z"',
        "    version: 3.8.1",
    ]
    f.lines(enc_lines)


def _w_dumps(c: CorpusBuilder, g: Shapes) -> None:
    sql = "sql-create-user-password"
    f = c.file("var/backups/shop-2024-03-01.sql")
    rows = [
        "-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB, for debian-linux-gnu (x86_64)",
        "--",
        "-- Host: localhost    Database: shop",
        "-- ------------------------------------------------------",
        "/*!40101 SET NAMES utf8mb4 */;",
        "DROP TABLE IF EXISTS `users`;",
        "CREATE TABLE `users` (`id` int, `email` varchar(255), `password_hash` varchar(255));",
        "LOCK TABLES `users` WRITE;",
        "INSERT INTO `users` VALUES",
    ]
    for i, email in enumerate(
        ("admin@acme-corp.com", "jane@acme-corp.com", "support@acme-corp.com")
    ):
        sep = "," if i < 2 else ";"
        rows.append(f"({i + 1},'{email}','{f.s(g.bcrypt('2b', 12), 'bcrypt-db-hash')}'){sep}")
    rows += [
        "UNLOCK TABLES;",
        "CREATE TABLE `api_tokens` (`id` int, `name` varchar(64), `token` varchar(128));",
        "INSERT INTO `api_tokens` VALUES",
        f"(1,'erp-sync','{f.s(g.hex(40), 'api-token-db-row')}'),",
        f"(2,'warehouse','{f.s(g.alnum(48), 'api-token-db-row')}');",
        "CREATE TABLE `files` (`id` int, `sha256` char(64), `path` varchar(255));",
        "INSERT INTO `files` VALUES",
        f"(1,'{f.d(_sha256(g), 'sha256-hex')}','invoices/2024/02/INV-1042.pdf'),",
        f"(2,'{f.d(_sha256(g), 'sha256-hex')}','invoices/2024/02/INV-1043.pdf');",
        f"CREATE USER 'shop_ro'@'%' IDENTIFIED BY '{f.s(g.password(), sql)}';",
        "CREATE USER 'legacy'@'10.%' IDENTIFIED WITH mysql_native_password AS "
        + f"'{f.s(g.mysql_native(), 'mysql-native-hash')}';",
        "-- Dump completed on 2024-03-01  2:45:12",
    ]
    f.lines(rows)
    f = c.file("var/backups/pg_dumpall-2024-03-01.sql")
    f.lines(
        [
            "--",
            "-- PostgreSQL database cluster dump",
            "--",
            "SET default_transaction_read_only = off;",
            "CREATE ROLE etl;",
            "ALTER ROLE etl WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION "
            + f"NOBYPASSRLS PASSWORD '{f.s(g.scram_sha256(), 'postgres-scram-hash')}';",
            "CREATE ROLE legacy_app;",
            f"ALTER ROLE legacy_app WITH PASSWORD '{f.s('md5' + g.hex(32), 'postgres-md5-hash')}';",
            "CREATE ROLE readonly;",
            f.d("ALTER ROLE readonly WITH NOLOGIN;", "empty-password"),
        ]
    )
    f = c.file("var/backups/hrportal-users.json")
    doc = [
        {
            "model": "auth.user",
            "pk": 1,
            "fields": {
                "username": "admin",
                "password": f.s(g.django_pbkdf2(), "django-pbkdf2-hash"),
                "is_superuser": True,
            },
        },
        {
            "model": "auth.user",
            "pk": 2,
            "fields": {
                "username": "hr-lead",
                "password": f.s(g.django_pbkdf2(), "django-pbkdf2-hash"),
                "is_superuser": False,
            },
        },
    ]
    f.raw(js(doc) + "\n")


# --- logs ----------------------------------------------------------------------------------

_PATHS = (
    "/api/v2/orders",
    "/api/v2/cart",
    "/login",
    "/static/app.js",
    "/api/v2/products?page=2",
    "/healthz",
)


def _access_lines(g: Shapes, n: int) -> list[str]:
    out = []
    for i in range(n):
        ip = f"10.20.{g.rng.randint(0, 9)}.{g.rng.randint(2, 250)}"
        out.append(
            f"{ip} - - [01/Mar/2024:06:{i // 60 % 60:02d}:{i % 60:02d} +0000] "
            f'"GET {g.pick(_PATHS)} HTTP/1.1" {g.pick(("200", "200", "304", "404"))} '
            f'{g.rng.randint(200, 90000)} "-" "Mozilla/5.0"'
        )
    return out


def _w_logs(c: CorpusBuilder, g: Shapes) -> None:
    prose = "password-prose"
    f = c.file("var/log/shop/app.log")
    lines: list[str] = []
    for i in range(1500):
        ts = f"2024-03-01T06:{i // 60 % 60:02d}:{i % 60:02d}.{g.rng.randint(0, 999):03d}Z"
        lines.append(f"{ts} INFO  [http] {g.pick(_PATHS)} completed in {g.rng.randint(2, 900)}ms")
        if i == 400:
            lines.append(
                f"{ts} DEBUG [http] request id={g.rng.randint(100000, 999999)} "
                f'headers={{"authorization":"Bearer {f.s(g.app_jwt(), "jwt")}"}}'
            )
        if i == 700:
            lines.append(
                f"{ts} INFO  [auth] {f.d('password reset requested for user 4411', prose)}"
            )
        if i == 1100:
            lines.append(
                f"{ts} ERROR [db] connection failed: could not connect to postgresql://shop:"
                + f.s(g.password(None, _URL_SAFE), "log-leaked-password")
                + "@db02.prod.lan:5432/shop (timeout)"
            )
        if i == 1300:
            lines.append(f"{ts} INFO  [deploy] build {f.d(_sha1(g), 'git-commit')} started")
        if i % 250 == 0:
            lines.append(f"{ts} INFO  [jobs] job {f.d(g.uuid(), 'uuid')} done")
    f.lines(lines)
    f = c.file("var/log/nginx/access.log")
    lines = _access_lines(g, 900)
    idx = 600
    lines.insert(
        idx,
        '10.20.4.17 - - [01/Mar/2024:07:12:09 +0000] "GET /api/v2/export?access_token='
        + f.s(g.alnum(40), "bearer-token")
        + ' HTTP/1.1" 200 5120 "-" "python-requests/2.31.0"',
    )
    lines.insert(
        200,
        '10.20.4.17 - - [01/Mar/2024:06:03:20 +0000] "GET /api/v2/orders?request_id='
        + f.d(g.uuid(), "uuid")
        + ' HTTP/1.1" 200 812 "-" "curl/8.5.0"',
    )
    f.lines(lines)
    f = c.file("var/log/auth.log")
    failed = "Failed password for invalid user {} from 203.0.113.50 port {} ssh2"
    fingerprint = "SHA256:" + g.b64(32).rstrip("=")
    f.lines(
        [
            f"Mar  1 06:01:12 app01 sshd[2211]: {f.d(failed.format('admin', 51022), prose)}",
            f"Mar  1 06:01:15 app01 sshd[2211]: {f.d(failed.format('oracle', 51030), prose)}",
            "Mar  1 06:02:44 app01 sshd[2290]: Accepted publickey for deploy from 10.20.0.5 "
            f"port 40112 ssh2: ED25519 {f.d(fingerprint, 'ssh-fingerprint')}",
            "Mar  1 06:02:44 app01 sshd[2290]: pam_unix(sshd:session): session opened for user "
            "deploy(uid=1002) by (uid=0)",
            "Mar  1 06:05:01 app01 sudo:   deploy : TTY=pts/0 ; PWD=/home/deploy ; USER=root ; "
            "COMMAND=/usr/bin/systemctl restart shop",
            "Mar  1 06:09:30 app01 passwd[2410]: "
            + f.d("pam_unix(passwd:chauthtok): password changed for alice", prose),
        ]
    )
    f = c.file("var/log/cloud-init-output.log")
    fingerprint = "SHA256:" + g.b64(32).rstrip("=")
    note = "ssh-keygen: generated random password for user ops, see /root/ops-password"
    f.lines(
        [
            "Cloud-init v. 23.4.4-0ubuntu0~22.04.1 running 'modules:config' at "
            "Fri, 01 Mar 2024 05:58:31 +0000.",
            "ci-info: no authorized SSH keys fingerprints found for user ubuntu.",
            "Generating public/private ed25519 key pair.",
            "The key fingerprint is:",
            f"{f.d(fingerprint, 'ssh-fingerprint')} root@app01",
            f.d(note, prose),
        ]
    )


# --- distribution and package content (decoys) ----------------------------------------------------


def _w_docs(c: CorpusBuilder, g: Shapes) -> None:
    f = c.file("usr/share/doc/awscli/examples/configure/_description.rst")
    f.text(f"""\
        Configure AWS CLI options. If this command is run with no arguments, you will be prompted
        for configuration values such as your AWS Access Key Id and your AWS Secret Access Key.

        ::

            $ aws configure
            AWS Access Key ID [None]: {f.d(AWS_DOC_KEY_ID, "aws-doc-example")}
            AWS Secret Access Key [None]: {f.d(AWS_DOC_SECRET, "aws-doc-example")}
            Default region name [None]: us-west-2
            Default output format [None]: json

        To update just the region name::

            $ aws configure
            AWS Access Key ID [****************MPLE]:
            AWS Secret Access Key [****************EKEY]:
        """)
    never_stored = "The password is never stored in plain text; the CLI asks for it on first use."
    f = c.file("usr/share/doc/shop-cli/README.md")
    f.text(f"""\
        # shop-cli

        ## Configuration

        Export your credentials before running the CLI:

        ```sh
        export SHOP_API_TOKEN={f.d("<your-token>", "template-reference")}
        export GITHUB_TOKEN={f.d("ghp_" + "x" * 36, "masked-value")}
        export SLACK_BOT_TOKEN={f.d("xoxb-your-bot-token", "doc-token-example")}
        export STRIPE_KEY={f.d("sk_live_" + "X" * 24, "masked-value")}
        export DATABASE_URL={f.d("postgres://user:password@localhost/db", "doc-url-example")}
        export REDIS_URL={f.d("redis://:password@localhost:6379", "doc-url-example")}
        export API_KEY={f.d("your_api_key_here", "placeholder-word")}
        ```

        Or put them in `~/.config/shop/config.ini`:

        ```ini
        [auth]
        token = {f.d("%(SHOP_TOKEN)s", "template-reference")}
        password = {f.d("{password}", "template-reference")}
        ```

        {f.d(never_stored, "password-prose")}
        {f.d("Use `mysql://root:secret@localhost/test` for tests.", "doc-url-example")}
        {f.d("Tokens are shown as ************************ in logs.", "masked-value")}
        """)
    insecure = "Specifying a password on the command line should be considered insecure."
    f = c.file("usr/share/man/man1/mysql.1.txt")
    f.text(f"""\
        MYSQL(1)                     MariaDB Database System                    MYSQL(1)

        OPTIONS
               {f.d("--password[=password], -p[password]", "password-prose")}

                   The password to use when connecting to the server. If you use the
                   short option form (-p), you cannot have a space between the option
                   and the password. If you omit the password value following the
                   --password or -p option on the command line, mysql prompts for one.

                   {f.d(insecure, "password-prose")}

               --user=user_name, -u user_name
                   The MariaDB user name to use when connecting to the server.
        """)
    f = c.file("usr/share/doc/redis-server/examples/redis.conf")
    f.text(f"""\
        # Require clients to issue AUTH <PASSWORD> before processing any other
        # commands.  This might be useful in environments in which you do not trust
        # others with access to the host running redis-server.
        #
        {f.d("# requirepass foobared", "commented-example")}
        {f.d("# masterauth <master-password>", "commented-example")}
        """)
    f = c.file("usr/lib/python3/dist-packages/requests-2.28.1.dist-info/RECORD")
    rows = []
    for mod in (
        "__init__",
        "__version__",
        "_internal_utils",
        "adapters",
        "api",
        "auth",
        "certs",
        "compat",
        "cookies",
        "exceptions",
        "help",
        "hooks",
        "models",
        "packages",
        "sessions",
        "status_codes",
    ):
        digest = (
            base64.urlsafe_b64encode(hashlib.sha256(g.randbytes(16)).digest()).rstrip(b"=").decode()
        )
        size = g.rng.randint(400, 9000)
        rows.append(f"requests/{mod}.py,sha256={f.d(digest, 'wheel-record-hash')},{size}")
    rows.append("requests-2.28.1.dist-info/RECORD,,")
    f.lines(rows)
    f = c.file("var/lib/dpkg/info/openssh-server.md5sums")
    rows = []
    for path in (
        "lib/systemd/system/ssh.service",
        "lib/systemd/system/ssh.socket",
        "usr/sbin/sshd",
        "usr/share/doc/openssh-server/changelog.Debian.gz",
        "usr/share/man/man5/sshd_config.5.gz",
        "usr/share/man/man8/sshd.8.gz",
        "usr/share/openssh/sshd_config",
        "usr/lib/openssh/sftp-server",
    ):
        rows.append(f"{f.d(g.hex(32), 'md5-hex')}  {path}")
    f.lines(rows)
    f = c.file("var/lib/dpkg/status")
    f.text(f"""\
        Package: openssh-server
        Status: install ok installed
        Priority: optional
        Section: net
        Installed-Size: 1813
        Maintainer: Debian OpenSSH Maintainers <debian-ssh@lists.debian.org>
        Architecture: amd64
        Version: 1:9.2p1-2+deb12u2
        Conffiles:
         /etc/default/ssh {f.d(g.hex(32), "md5-hex")}
         /etc/init.d/ssh {f.d(g.hex(32), "md5-hex")}
         /etc/pam.d/sshd {f.d(g.hex(32), "md5-hex")}
        Description: secure shell (SSH) server, for secure access from remote machines

        Package: libpam-pwquality
        Status: install ok installed
        Version: 1.4.5-1+b1
        Description: {f.d("PAM module to check password strength", "password-prose")}
        """)
    f = c.file("opt/svc/go.sum")
    rows = []
    for mod in (
        "github.com/google/uuid v1.6.0",
        "github.com/jackc/pgx/v5 v5.5.3",
        "github.com/rs/zerolog v1.32.0",
        "golang.org/x/crypto v0.19.0",
        "golang.org/x/sys v0.17.0",
    ):
        digest = base64.b64encode(hashlib.sha256(g.randbytes(8)).digest()).decode()
        rows.append(f"{mod} h1:{f.d(digest, 'go-sum-hash')}")
        digest = base64.b64encode(hashlib.sha256(g.randbytes(8)).digest()).decode()
        rows.append(f"{mod}/go.mod h1:{f.d(digest, 'go-sum-hash')}")
    f.lines(rows)
    f = c.file("opt/svc/Cargo.lock")
    rows = ["# This file is automatically @generated by Cargo.", "version = 3", ""]
    for name, ver in (
        ("aho-corasick", "1.1.2"),
        ("base64", "0.21.7"),
        ("hmac", "0.12.1"),
        ("ring", "0.17.8"),
        ("sha2", "0.10.8"),
        ("tokio", "1.36.0"),
    ):
        rows += [
            "[[package]]",
            f'name = "{name}"',
            f'version = "{ver}"',
            'source = "registry+https://github.com/rust-lang/crates.io-index"',
            f'checksum = "{f.d(_sha256(g), "sha256-hex")}"',
            "",
        ]
    f.lines(rows)
    f = c.file("opt/report/poetry.lock")
    rows = []
    for name in ("certifi", "charset-normalizer", "idna", "psycopg2-binary"):
        rows += [
            "[[package]]",
            f'name = "{name}"',
            "files = [",
            f'    {{file = "{name}.whl", hash = "sha256:{f.d(_sha256(g), "sha256-hex")}"}},',
            "]",
            "",
        ]
    rows += ["[metadata]", f'content-hash = "{f.d(_sha256(g), "sha256-hex")}"']
    f.lines(rows)
    f = c.file("root/downloads/SHA256SUMS")
    f.lines(
        [
            f"{f.d(_sha256(g), 'sha256-hex')}  debian-12.5.0-amd64-netinst.iso",
            f"{f.d(_sha256(g), 'sha256-hex')}  debian-12.5.0-amd64-DVD-1.iso",
            f"{f.d(_sha256(g), 'sha256-hex')}  debian-edu-12.5.0-amd64-netinst.iso",
        ]
    )
    f = c.file("usr/lib/python3/dist-packages/twisted/conch/test/keydata.py")
    test_key = g.ec_key()
    test_pub = g.openssh_public(test_key, "test@test.example")
    f.text(f"""\
        # -*- test-case-name: twisted.conch.test.test_keys -*-
        # Copyright (c) Twisted Matrix Laboratories.
        # See LICENSE for details.
        \"\"\"
        Data used by test_keys as well as others.
        \"\"\"
        privateECDSA_openssh = b\"\"\"\\
        {f.d(g.pem_private(test_key, "traditional"), "test-fixture-key")}
        \"\"\"

        publicECDSA_openssh = b"{f.d(test_pub, "ssh-public-key")}"
        """)
    f = c.file("usr/lib/python3/dist-packages/botocore/data/sts/2011-06-15/examples-1.json")
    doc = {
        "version": "1.0",
        "examples": {
            "AssumeRole": [
                {
                    "output": {
                        "Credentials": {
                            "AccessKeyId": f.d(AWS_DOC_KEY_ID, "aws-doc-example"),
                            "Expiration": "2011-07-15T23:28:33.359Z",
                            "SecretAccessKey": f.d(AWS_DOC_STS_SECRET, "aws-doc-example"),
                            "SessionToken": f.d(AWS_DOC_STS_TOKEN, "aws-doc-example"),
                        }
                    }
                }
            ]
        },
    }
    f.raw(js(doc, 4) + "\n")


WRITERS: tuple[Writer, ...] = (
    _w_shadow,
    _w_policy,
    _w_histories,
    _w_root_dotfiles,
    _w_alice,
    _w_carol,
    _w_bob,
    _w_keys,
    _w_kubernetes,
    _w_etc_databases,
    _w_etc_web,
    _w_etc_mail_auth,
    _w_etc_network,
    _w_etc_apps,
    _w_provisioning,
    _w_wordpress,
    _w_django,
    _w_rails,
    _w_laravel_nextcloud,
    _w_dotnet_java,
    _w_node_shop,
    _w_scripts,
    _w_infra,
    _w_dumps,
    _w_logs,
    _w_docs,
    providers.writer(PROVIDERS),
)


# =============================================================================================
# Public API
# =============================================================================================


def build_corpus(dest: Path, seed: int = DEFAULT_SEED) -> Corpus:
    """Write a corpus into ``dest`` (created; an earlier corpus there is replaced) and return it.

    Refuses a non-empty ``dest`` that does not hold a corpus, so it never deletes other files.
    """
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        if not (dest / LABELS).is_file():
            raise CorpusError(f"{dest}: not empty and not a corpus; refusing to overwrite")
        shutil.rmtree(dest / FS, ignore_errors=True)
        (dest / LABELS).unlink()
    dest.mkdir(parents=True, exist_ok=True)
    shapes = Shapes(seed)
    builder = CorpusBuilder()
    for writer in WRITERS:
        writer(builder, shapes)
    labels = builder.write(dest / FS)
    ordered = [lab for lab in labels if lab.role == "secret"]
    ordered += [lab for lab in labels if lab.role == "decoy"]
    corpus = Corpus(dest, seed, tuple(ordered))
    write_labels(corpus)
    return corpus


def write_labels(corpus: Corpus) -> None:
    """Write ``corpus.labels`` to ``corpus.root/labels.json`` (the format load_corpus reads)."""
    doc = {
        "format": FORMAT,
        "seed": corpus.seed,
        "generator": "benchmarks/quality/corpus.py",
        "secrets": [_label_json(lab) for lab in corpus.labels if lab.role == "secret"],
        "decoys": [_label_json(lab) for lab in corpus.labels if lab.role == "decoy"],
    }
    (corpus.root / LABELS).write_text(json.dumps(doc, indent=1) + "\n")


def _label_json(label: Label) -> dict[str, Any]:
    data = asdict(label)
    del data["role"]
    return data


def load_corpus(dest: Path) -> Corpus:
    """Read a corpus written by :func:`build_corpus`."""
    dest = Path(dest)
    doc = json.loads((dest / LABELS).read_text())
    if doc.get("format") != FORMAT:
        raise CorpusError(f"{dest / LABELS}: not a {FORMAT} labels file")
    labels = [Label(role="secret", **item) for item in doc["secrets"]]
    labels += [Label(role="decoy", **item) for item in doc["decoys"]]
    return Corpus(dest, int(doc["seed"]), tuple(labels))


def verify_corpus(corpus: Corpus) -> list[str]:
    """Problems with a corpus's labels; empty when every contract holds.

    Checks: each value is at its offset, on its lines; kinds and categories are known; no two
    labels of a file share a line; no value is labelled secret and decoy in the same file.
    """
    problems = []
    cache: dict[str, bytes] = {}
    by_file: dict[str, list[Label]] = {}
    for lab in corpus.labels:
        by_file.setdefault(lab.path, []).append(lab)
        if lab.path not in cache:
            file = corpus.fs / lab.path
            if not file.is_file():
                problems.append(f"{lab.path}: missing file")
                cache[lab.path] = b""
                continue
            cache[lab.path] = file.read_bytes()
        data = cache[lab.path]
        value = lab.value.encode()
        where = f"{lab.path}@{lab.offset} ({lab.kind})"
        if data[lab.offset : lab.offset + len(value)] != value:
            problems.append(f"{where}: value not at its offset")
        if data.count(b"\n", 0, lab.offset) + 1 != lab.line:
            problems.append(f"{where}: wrong line {lab.line}")
        if lab.line + value.count(b"\n") != lab.end_line:
            problems.append(f"{where}: wrong end line {lab.end_line}")
        kinds = SECRET_KINDS if lab.role == "secret" else DECOY_KINDS
        if kinds.get(lab.kind) != lab.category:
            problems.append(f"{where}: kind/category {lab.category} unknown")
        if lab.role == "secret" and lab.category not in CATEGORIES:
            problems.append(f"{where}: category {lab.category} is not an imgscan category")
    for path, labels in by_file.items():
        spans = sorted(labels, key=lambda lab: lab.line)
        for a, b in pairwise(spans):
            if b.line <= a.end_line:
                problems.append(f"{path}:{b.line}: {a.kind} and {b.kind} share a line")
        secrets = {lab.value for lab in labels if lab.role == "secret"}
        for lab in labels:
            if lab.role == "decoy" and lab.value in secrets:
                problems.append(f"{path}: {lab.value!r} labelled both secret and decoy")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="directory to write (fs/ and labels.json)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    corpus = build_corpus(args.dest, args.seed)
    kinds = {lab.kind for lab in corpus.secrets}
    print(
        f"{corpus.root}: {len(corpus.files())} files, {len(corpus.secrets)} secrets "
        f"of {len(kinds)} kinds, {len(corpus.decoys)} decoys"
    )
    problems = verify_corpus(corpus)
    for problem in problems:
        print("problem:", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
