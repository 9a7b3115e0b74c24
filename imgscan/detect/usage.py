"""Where the image says its keys are used: clues read from the files around the secrets.

A private key alone says "a copy holds this key"; the image often says more. `~/.ssh/config`
names the hosts a key is for, `known_hosts` the hosts a user connected to, shell history the
`ssh -i key user@host` commands that were run, and a certificate on the image names the host a
TLS key serves. The worker reads these files as it streams them (`clues`), and the exposures
link each key to them (imgscan/exposures.py).

Clues hold host names, user names, file paths and public-key fingerprints, never a secret.
Every parser is bounded: the first `MAX_BYTES` of a file and at most `MAX_CLUES` clues per file,
so a hostile history file costs a bounded amount of work and report.
"""

from __future__ import annotations

import re
import shlex
import warnings
from collections.abc import Iterator

from imgscan.detect.checks import public_key_id
from imgscan.model import Clue

MAX_BYTES = 1 << 20
MAX_CLUES = 200

_SSH_CONFIG = re.compile(r"(?:^|/)\.ssh/config$")
_KNOWN_HOSTS = re.compile(r"(?:^|/)\.ssh/known_hosts2?$")
_HISTORY = re.compile(
    r"(?:^|/)(?:\.bash_history|\.zsh_history|\.histfile|\.sh_history|\.ash_history|\.history"
    r"|\.local/share/fish/fish_history)$"
)
_CERT = re.compile(r"\.(?:crt|pem|cer|cert)$", re.I)
# Trust stores: hundreds of CA certificates that never belong to a key on the image.
_TRUST_STORES = re.compile(
    r"^(?:/usr/share/ca-certificates/|/etc/ssl/certs/ca-certificates\.crt$|/etc/pki/ca-trust/"
    r"|/etc/pki/tls/certs/ca-bundle|/usr/share/pki/|/etc/ca-certificates/)"
    r"|/certifi/cacert\.pem$|/site-packages/pip/_vendor/"
)
_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]{64,16384}?-----END CERTIFICATE-----"
)
_ZSH_EXTENDED = re.compile(r"^: \d+:\d+;")
_FISH_CMD = re.compile(r"^- cmd: ")
# ssh options that take an argument (OpenSSH's getopt string).
_SSH_ARG_OPTS = set("BbcDEeFIiJLlmOoPpQRSWw")
_SCP_ARG_OPTS = set("cDFiJlOoPSX")
_MAX_COMMAND = 8192
_USER = re.compile(r"|[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_GIT_SSH_URL = re.compile(r"^(?:ssh://)?(?:(?P<user>[^@/\s]+)@)?(?P<host>[A-Za-z0-9.-]+)[:/]")


def wants(path: str) -> bool:
    """Whether the file at guest `path` is one clues are read from."""
    inner = path.rsplit("!/", 1)[-1]
    if _SSH_CONFIG.search(inner) or _KNOWN_HOSTS.search(inner) or _HISTORY.search(inner):
        return True
    return bool(_CERT.search(inner)) and not _TRUST_STORES.search(inner)


def read_clues(path: str, data: bytes) -> tuple[Clue, ...]:
    """The clues in `data`, the first bytes of the file at guest `path` (see `wants`)."""
    data = data[:MAX_BYTES]
    inner = path.rsplit("!/", 1)[-1]
    if _CERT.search(inner):
        found: Iterator[Clue] = _certificates(path, data)
    else:
        text = data.decode("utf-8", "replace")
        if _SSH_CONFIG.search(inner):
            found = _ssh_config(path, text)
        elif _KNOWN_HOSTS.search(inner):
            found = _known_hosts(path, text)
        else:
            found = _history(path, text)
    clues: dict[Clue, None] = {}  # a dict: one lookup per clue, however many repeat
    for clue in found:
        clues.setdefault(clue)
        if len(clues) >= MAX_CLUES:
            break
    return tuple(clues)


def _clue(kind: str, path: str, **facts: str) -> Clue:
    if not _USER.fullmatch(facts.get("user") or ""):
        # `ssh://alice:hunter2@host` puts a password where the user goes: a user that is not
        # a plain account name is dropped, so no clue (and no report) ever carries one.
        facts["user"] = ""
    return Clue(kind, path, tuple(sorted((k, v) for k, v in facts.items() if v)))


def _ssh_config(path: str, text: str) -> Iterator[Clue]:
    """One `ssh-config` clue per Host block and IdentityFile: host (HostName, else the Host
    pattern), user, identity (empty: the block uses the default keys)."""
    blocks: list[dict[str, list[str]]] = []
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = re.split(r"\s*=\s*|\s+", line, maxsplit=1)
        keyword, value = parts[0].lower(), (parts[1] if len(parts) > 1 else "").strip()
        if keyword == "host":
            current = {"host": value.split()}
            blocks.append(current)
        elif keyword == "match":
            current = None  # conditions this parser does not evaluate: ignore the block
        elif current is not None and keyword in ("hostname", "user", "identityfile"):
            current.setdefault(keyword, []).append(value.strip('"'))
    for block in blocks:
        patterns = [p for p in block["host"] if not p.startswith("!")]
        hostname = (block.get("hostname") or [""])[0]
        user = (block.get("user") or [""])[0]
        named = [p for p in patterns if not any(c in p for c in "*?")]
        hosts = [hostname] if hostname and "%" not in hostname else named or ["*"]
        # Each distinct value once: "Host a a a ..." and IdentityFile lines repeated thousands
        # of times would otherwise yield their product in duplicates.
        for identity in dict.fromkeys(block.get("identityfile") or [""]):
            for host in dict.fromkeys(hosts):
                yield _clue("ssh-config", path, host=host, user=user, identity=identity)


def _known_hosts(path: str, text: str) -> Iterator[Clue]:
    """One `ssh-known-host` clue per readable host name (hashed entries say nothing)."""
    for raw in text.splitlines():
        fields = raw.split()
        if fields and fields[0].startswith("@"):
            fields = fields[1:]  # @cert-authority / @revoked marker
        if len(fields) < 2 or fields[0].startswith(("#", "|")):
            continue
        for name in fields[0].split(","):
            host = re.sub(r"^\[([^\]]+)\]:(\d+)$", r"\1:\2", name)
            if host and not any(c in host for c in "*?!"):
                yield _clue("ssh-known-host", path, host=host)


def _history(path: str, text: str) -> Iterator[Clue]:
    """`ssh-command` clues from shell history: ssh, scp, sftp and git-over-ssh commands, with
    the host, the remote user and the key given with -i, when the command says."""
    for raw in text.splitlines():
        line = _FISH_CMD.sub("", _ZSH_EXTENDED.sub("", raw)).strip()
        if not any(word in line for word in ("ssh", "scp", "sftp", "git")):
            continue
        for command in re.split(r"&&|\|\||;|\|", line):
            if len(command) > _MAX_COMMAND:
                continue  # shlex takes time quadratic in a long quoted word (17 s for 1 MiB)
            try:
                words = shlex.split(command)
            except ValueError:
                continue
            while words and "=" in words[0] and not words[0].startswith("-"):
                words = words[1:]  # VAR=value prefixes
            if words and words[0] in ("sudo", "exec", "command"):
                words = words[1:]
            if not words:
                continue
            program = words[0].rsplit("/", 1)[-1]
            if program == "ssh":
                yield from _ssh_command(path, words[1:], _SSH_ARG_OPTS, remote_path=False)
            elif program == "sftp":  # [user@]host[:path], like ssh's destination
                yield from _ssh_command(path, words[1:], _SCP_ARG_OPTS, remote_path=False)
            elif program == "scp":  # only the [user@]host:path arguments are remote
                yield from _ssh_command(path, words[1:], _SCP_ARG_OPTS, remote_path=True)
            elif program == "git":
                for word in words[1:]:
                    match = _GIT_SSH_URL.match(word)
                    if match and ("@" in word or word.startswith("ssh://")):
                        yield _clue(
                            "ssh-command", path, host=match["host"], user=match["user"] or ""
                        )


def _ssh_command(
    path: str, args: list[str], arg_opts: set[str], *, remote_path: bool
) -> Iterator[Clue]:
    identity = user = port = ""
    targets: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        if word.startswith("-") and len(word) > 1:
            option = word[1]
            if option in arg_opts:
                value = word[2:] or (args[i + 1] if i + 1 < len(args) else "")
                i += 0 if word[2:] else 1
                if option == "i":
                    identity = value
                elif option == "l":
                    user = value
                elif option in ("p", "P"):
                    port = value
                elif option == "o":
                    key, _, setting = value.partition("=")
                    if key.lower() == "identityfile":
                        identity = setting
                    elif key.lower() == "user":
                        user = setting
            i += 1
            continue
        if remote_path:
            if ":" in word and not word.startswith("/"):
                targets.append(word.split(":", 1)[0])
        elif not targets:
            targets.append(word)
            break  # the rest is the remote command
        i += 1
    for target in targets:
        target = target.removeprefix("ssh://").removeprefix("sftp://")
        who, _, host = target.rpartition("@")
        host = host.split("/", 1)[0]
        if ":" in host and not remote_path:
            host, _, rest = host.partition(":")
            port = rest if rest.isdigit() else port
        if not re.fullmatch(r"[A-Za-z0-9._-]+", host):
            continue
        yield _clue(
            "ssh-command",
            path,
            host=host + (f":{port}" if port and port != "22" else ""),
            user=who or user,
            identity=identity,
        )


def _certificates(path: str, data: bytes) -> Iterator[Clue]:
    """One `certificate` clue per X.509 certificate (PEM blocks, or one DER certificate):
    public_key (the key's OpenSSH-style fingerprint), subject, sans, not_after, ca ("yes"
    for a certificate authority)."""
    blocks: list[bytes] = [m.group(0) for m in _PEM_CERT.finditer(data)][:20]
    for block in blocks or ([data] if data[:1] == b"\x30" else []):
        try:
            # cryptography warns about certificates that break RFC 5280 (a negative serial
            # number in some vendors' bundles): the image's business, not the user's stderr.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                clue = _certificate(path, block)
        except Exception:  # a malformed certificate is no clue, and never costs the file
            continue
        if clue is not None:
            yield clue


def _certificate(path: str, block: bytes) -> Clue | None:
    from cryptography import x509

    cert = (
        x509.load_pem_x509_certificate(block)
        if block.startswith(b"-----")
        else x509.load_der_x509_certificate(block)
    )
    key_id = public_key_id(cert.public_key())
    if key_id is None:
        return None
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(v) for v in names.get_values_for_type(x509.DNSName)]
        sans += [str(v) for v in names.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        sans = []
    return _clue(
        "certificate",
        path,
        public_key=key_id,
        subject=cert.subject.rfc4514_string(),
        sans=", ".join(sans[:20]),
        not_after=cert.not_valid_after_utc.date().isoformat(),
        ca="yes" if ca else "",
    )
