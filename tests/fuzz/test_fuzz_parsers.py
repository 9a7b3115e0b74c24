"""Fuzzing the parsers of files that come from the image, and of the user's own input files.

Files from the image are hostile: a parser must return (a result, or nothing) for any bytes and
stay within its documented bounds (usage clues: MAX_BYTES read, MAX_CLUES returned; offline
checks: only NotASecret escapes, a bounded cost per value). The user's ignore, baseline and
policy files are input, not image content: anything malformed is an ImgscanError (one line,
exit code 2), never a traceback.

Every value that looks like a credential is generated here at test time.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import tempfile
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgscan.detect.checks import NotASecret, offline_checks
from imgscan.detect.context import secret_context
from imgscan.detect.usage import MAX_BYTES, MAX_CLUES, read_clues
from imgscan.errors import ImgscanError
from imgscan.image.inspect import parse_os_release, parse_passwd
from imgscan.image.layout import parse_crypttab, parse_fstab
from imgscan.model import Check, Clue, OsUser
from imgscan.policy import Policy, load_policy
from imgscan.suppress import load_baseline, load_ignore

from .fuzzing import (
    Seeds,
    corpus,
    corpus_cases,
    encoded,
    examples,
    fuzz,
    json_values,
    lines,
    mutated,
    nested,
    time_limit,
    toml_document,
)

# --- usage clues: ssh config, known_hosts, shell history, certificates -----------------------

SSH_CONFIG_WORDS = [
    "Host", "HostName", "User", "IdentityFile", "Match", "host", "#", "*", "?", "!", "%h",
    '"', "=", "bastion", "db-*", "~/.ssh/id_rsa", "a", "a a a",
]  # fmt: skip
KNOWN_HOSTS_WORDS = [
    "@cert-authority", "@revoked", "|1|abc=|def=", "[h]:2222", "[h]:x", "h,h2", "ssh-ed25519",
    "AAAA", "#", "*", "?", "!", ",", "[", "]:",
]  # fmt: skip
HISTORY_WORDS = [
    "ssh", "scp", "sftp", "git", "clone", "/usr/bin/ssh", "sudo", "exec", "command", "-i", "-l",
    "-p", "-P", "-o", "-J", "-oIdentityFile=k", "IdentityFile=", "User=", "u@h", "h:path", "u@h:",
    "ssh://", "sftp://u@h:22/x", "@", ":", "&&", "||", ";", "|", "'", '"', "\\", "A=b",
    ": 1700000000:0;", "- cmd: ", "git@h:repo", "-", "--", "a" * 40,
]  # fmt: skip
USAGE_PATHS = {
    "ssh-config": ["/root/.ssh/config", "/srv/backup.tar!/home/a/.ssh/config"],
    "known-hosts": ["/home/a/.ssh/known_hosts", "/home/a/.ssh/known_hosts2"],
    "shell-history": [
        "/root/.bash_history",
        "/home/a/.zsh_history",
        "/home/a/.local/share/fish/fish_history",
        "/root/.history",
    ],
    "certificates": ["/etc/ssl/private/server.pem", "/srv/app/tls.CRT", "/a.zip!/b/c.cer"],
}
USAGE_WORDS = {
    "ssh-config": SSH_CONFIG_WORDS,
    "known-hosts": KNOWN_HOSTS_WORDS,
    "shell-history": HISTORY_WORDS,
    "certificates": ["-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----", "MIIB", "A" * 64],
}


def check_clues(path: str, data: bytes) -> None:
    """read_clues never raises, returns at most MAX_CLUES distinct clues of the file, in
    bounded time whatever the file holds."""
    with time_limit(10):
        clues = read_clues(path, data)
    assert isinstance(clues, tuple) and len(clues) <= MAX_CLUES
    assert len(set(clues)) == len(clues)
    for clue in clues:
        assert isinstance(clue, Clue) and clue.path == path
        assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in clue.facts)


@pytest.mark.parametrize("target", sorted(USAGE_PATHS))
def test_usage_corpus(target: str) -> None:
    for data in corpus(target):
        for path in USAGE_PATHS[target]:
            check_clues(path, data)


def _usage_input(target: str) -> st.SearchStrategy[tuple[str, bytes]]:
    words = USAGE_WORDS[target]
    data = st.one_of(
        mutated(corpus(target), tokens=[w.encode() for w in words], max_size=MAX_BYTES),
        encoded(lines(words)),
        st.binary(max_size=512),
    )
    return st.tuples(st.sampled_from(USAGE_PATHS[target]), data)


@fuzz
@given(st.sampled_from(sorted(USAGE_PATHS)).flatmap(_usage_input))
def test_usage_clues(case: tuple[str, bytes]) -> None:
    check_clues(*case)


# The shapes that make a per-line or per-pair cost explode: a few lines, each a keyword and a
# value repeated up to thousands of times, each line repeated up to thousands of times.
AMPLIFIED = {
    "ssh-config": (["Host", "IdentityFile", "HostName", "User", "Match"], ["a", "b*", '"k"']),
    "known-hosts": (["@revoked", "h,h2", "[h]:22"], ["h,", "ssh-rsa", "*"]),
    "shell-history": (["ssh", "scp", "sftp -i k", "git clone", ": 1:0;ssh"], ["a", "u@h:", "-o"]),
}
_COUNTS = [1, 3, 300, 5000, 1_000_000]


# A line: keyword, opening quote, a word repeated `count` times; the line repeated `lines` times.
Line = tuple[str, str, str, int, int]


def _amplified(target: str) -> st.SearchStrategy[list[Line]]:
    keywords, words = AMPLIFIED[target]
    line = st.tuples(
        st.sampled_from(keywords),
        st.sampled_from(["", "", "'", '"']),
        st.tuples(st.sampled_from(words), st.sampled_from(["", " "])).map("".join),
        st.sampled_from(_COUNTS),
        st.sampled_from(_COUNTS),
    )
    return st.lists(line, min_size=1, max_size=3)


def _text_of(lines: list[Line]) -> bytes:
    """The file the lines describe, cut at MAX_BYTES (built here, so that a failing example
    prints as its few-line recipe)."""
    out = b""
    for keyword, opener, word, count, repeat in lines:
        room = MAX_BYTES - len(out)
        line = f"{keyword} {opener}{word * min(count, room // len(word))}\n".encode()
        out += line * min(repeat, max(1, room // len(line)))
    return out[:MAX_BYTES]


@fuzz
@settings(max_examples=examples(40))
@given(
    st.sampled_from(sorted(AMPLIFIED)).flatmap(
        lambda target: st.tuples(st.sampled_from(USAGE_PATHS[target]), _amplified(target))
    )
)
def test_usage_clues_of_a_hostile_size(case: tuple[str, list[Line]]) -> None:
    path, lines = case
    check_clues(path, _text_of(lines))


# --- secret_context -------------------------------------------------------------------------

CONTEXT_WORDS = [
    "host", "user", "port", "database", "DB_HOST", "Server", "Data Source", "User Id",
    "Password", "postgres://", "jdbc:postgresql://", "jdbc:oracle:thin:@", "machine", "login",
    "password", ":", "=", "=>", ";", "@", "/", "'", '"', "export ", "  ", "secret",
]  # fmt: skip


def check_context(buf: bytes, start: int, end: int) -> None:
    """secret_context never raises, and no value it returns holds the secret."""
    with time_limit(10):
        context = secret_context(buf, start, end)
    assert isinstance(context, tuple)
    secret = buf[start:end].decode("utf-8", "replace")
    for key, value in context:
        assert isinstance(key, str) and isinstance(value, str) and value
        if secret and "\ufffd" not in secret:
            assert secret not in value


def _values_after_separators(buf: bytes) -> list[tuple[int, int]]:
    spans = [m.span(1) for m in re.finditer(rb"[=:@ ]\s*([^\s:;@/'\"]+)", buf)]
    return [*spans, (0, len(buf)), (0, 0), (len(buf), len(buf))]


@pytest.mark.parametrize("data", corpus_cases("secret-context"))
def test_context_corpus(data: bytes) -> None:
    for start, end in _values_after_separators(data):
        check_context(data, start, end)


@st.composite
def _context_input(draw: st.DrawFn) -> tuple[bytes, int, int]:
    buf = draw(
        mutated(corpus("secret-context"), tokens=[w.encode() for w in CONTEXT_WORDS])
        | encoded(lines(CONTEXT_WORDS, max_lines=40))
    )
    start = draw(st.integers(0, len(buf)))
    end = draw(st.integers(start, min(len(buf), start + draw(st.sampled_from([8, 40, 1 << 20])))))
    return buf, start, end


@fuzz
@given(_context_input())
def test_secret_context(case: tuple[bytes, int, int]) -> None:
    check_context(*case)


# --- fstab, crypttab, os-release, passwd ----------------------------------------------------

FSTAB_WORDS = [
    "UUID=", "LABEL=", "PARTUUID=", "/dev/sda1", "/dev/vg0/root", "/", "/home", "\\040", "\\0",
    "\\777", "none", "swap", "ext4", "btrfs", "subvol=@", "subvolid=256", "defaults", "#", "0",
]  # fmt: skip
OS_RELEASE_WORDS = ["ID", "VERSION_ID", "PRETTY_NAME", "=", '"', "'", "\\", "#", "$", "`"]
PASSWD_WORDS = [":", "root", "x", "0", "1000", "65534", "/home/a", "/bin/bash", "/sbin/nologin"]
PASSWD_WORDS += ["\u00b2", "\u0661", "9" * 5000]  # digits str.isdigit() accepts, int() may not


# passwd-shaped lines: seven fields or so, each a word of the format or any text.
_passwd_lines = st.lists(
    st.lists(st.sampled_from(PASSWD_WORDS) | st.text(max_size=8), min_size=5, max_size=8).map(
        ":".join
    ),
    max_size=8,
).map("\n".join)


def check_layout_and_os(text: str) -> None:
    """The parsers of the guest's own configuration files accept any text."""
    with time_limit(10):
        fstab = parse_fstab(text)
        crypttab = parse_crypttab(text)
        release = parse_os_release(text)
        users = parse_passwd(text)
    assert all(entry.mountpoint.startswith("/") for entry in fstab)
    assert all(isinstance(name, str) and isinstance(source, str) for name, source in crypttab)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in release.items())
    assert all(isinstance(user, OsUser) and isinstance(user.uid, int) for user in users)


@pytest.mark.parametrize("target", ["fstab", "crypttab", "os-release", "passwd"])
def test_guest_config_corpus(target: str) -> None:
    for data in corpus(target):
        check_layout_and_os(data.decode("utf-8", "replace"))


@fuzz
@given(
    st.one_of(
        *(
            mutated(corpus(target), tokens=[w.encode() for w in words], max_size=1 << 16)
            for target, words in (
                ("fstab", FSTAB_WORDS),
                ("crypttab", FSTAB_WORDS),
                ("os-release", OS_RELEASE_WORDS),
                ("passwd", PASSWD_WORDS),
            )
        )
    ).map(lambda data: data.decode("utf-8", "replace"))
    | lines(FSTAB_WORDS + OS_RELEASE_WORDS + PASSWD_WORDS)
    | _passwd_lines
)
def test_guest_config(text: str) -> None:
    check_layout_and_os(text)


# --- offline checks -------------------------------------------------------------------------

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CRYPT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def check_offline(value: bytes) -> None:
    """offline_checks lets only NotASecret escape, returns checks whose details never hold
    the value, and costs a bounded time per value (common passwords are tried on hashes:
    the costliest default, scrypt's, takes under a second)."""
    with time_limit(5):
        try:
            checks = offline_checks(value)
        except NotASecret:
            return
    assert isinstance(checks, tuple) and all(isinstance(c, Check) for c in checks)
    text = value.decode("utf-8", "replace")
    for check in checks:
        assert isinstance(check.detail, str)
        if len(value) >= 16:
            assert text not in check.detail


@pytest.mark.parametrize("data", corpus_cases("offline-checks"))
def test_offline_checks_corpus(data: bytes) -> None:
    check_offline(data)


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _token(prefix: str, body: str, good: bool, tail: str) -> bytes:
    checksum = ""
    number = zlib.crc32(body.encode())
    while number:
        number, rem = divmod(number, 62)
        checksum = _BASE62[rem] + checksum
    return (prefix + body + (checksum.rjust(6, "0") if good else tail)).encode()


_tokens = st.builds(
    _token,
    st.sampled_from(["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "npm_"]),
    st.text(_BASE62, min_size=30, max_size=30),
    st.booleans(),
    st.text(_BASE62, min_size=6, max_size=6),
)
_jwt_json = json_values(["alg", "typ", "exp", "sub", "name", "iat", "kid"])
_jwt_part = st.one_of(
    st.dictionaries(st.sampled_from(["alg", "exp", "sub", "iat"]), _jwt_json).map(
        lambda obj: _b64url(json.dumps(obj).encode())
    ),
    _jwt_json.map(lambda obj: _b64url(json.dumps(obj).encode())),
    nested("[", "]").map(lambda deep: _b64url(b'{"alg":"x","exp":' + deep.encode() + b"}")),
    st.sampled_from([b'{"alg":"none","exp":NaN}', b'{"exp":Infinity,"alg":1}']).map(_b64url),
    st.text("eyJ_-AZaz09", max_size=60).map(lambda s: ("eyJ" + s).encode()),
)
_jwts = st.tuples(_jwt_part, _jwt_part, st.text(_BASE62 + "-_", max_size=40)).map(
    lambda t: t[0] + b"." + t[1] + b"." + t[2].encode()
)
_aws = st.tuples(
    st.sampled_from(["AKIA", "ASIA", "ABIA", "ACCA"]), st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
).map(lambda t: (t[0] + t[1]).encode())
_salt = st.text(_CRYPT_ALPHABET, max_size=16).map(str.encode) | st.binary(max_size=8).filter(
    lambda b: not re.search(rb"[\s:$]", b)
)
_crypt_params = st.one_of(
    st.just(b""),
    st.integers(0, 10**12).map(lambda n: b"rounds=%d" % n),
    st.sampled_from(
        [b"rounds=" + b"9" * 5000, b"j9T", b"jFT", b"jJT", b"j/T", b"CU..../....", b"04"]
    ),
    st.text(_CRYPT_ALPHABET, min_size=1, max_size=12).map(str.encode),
)


@st.composite
def _crypt_hashes(draw: st.DrawFn) -> bytes:
    scheme = draw(st.sampled_from([b"1", b"2a", b"2b", b"2y", b"5", b"6", b"y", b"gy", b"7"]))
    params = draw(_crypt_params)
    if scheme.startswith(b"2"):
        params = b"%02d" % draw(st.integers(0, 99))
    parts = [params] if params else []
    body = draw(st.text(_CRYPT_ALPHABET, min_size=1, max_size=86)).encode()
    return b"$" + scheme + b"$" + b"$".join([*parts, draw(_salt), body])


@functools.cache
def _private_keys() -> tuple[bytes, ...]:
    """PEM and OpenSSH private keys of every type, plain and encrypted, generated once per
    session (never stored)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
    from cryptography.utils import CryptographyDeprecationWarning

    keys: list[PrivateKeyTypes] = [
        rsa.generate_private_key(65537, 1024),
        ec.generate_private_key(ec.SECP256R1()),
        ed25519.Ed25519PrivateKey.generate(),
        dsa.generate_private_key(1024),
    ]
    encodings = [
        (ser.PrivateFormat.PKCS8, ser.NoEncryption()),
        (ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption()),
        (ser.PrivateFormat.PKCS8, ser.BestAvailableEncryption(b"fuzz")),
        (ser.PrivateFormat.OpenSSH, ser.NoEncryption()),
        (ser.PrivateFormat.OpenSSH, ser.BestAvailableEncryption(b"fuzz")),
    ]
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)  # DSA: still on images
        for key in keys:
            for fmt, encryption in encodings:
                try:
                    out.append(key.private_bytes(ser.Encoding.PEM, fmt, encryption))
                except (ValueError, UnsupportedAlgorithm):
                    continue  # no encoding of this key type in this format (or needs bcrypt)
    return tuple(out)


@st.composite
def _private_key_blocks(draw: st.DrawFn) -> bytes:
    block = draw(
        mutated(
            Seeds("private keys made now", _private_keys()),
            tokens=[b"-----BEGIN ", b"PRIVATE KEY-----", b"\n", b"\\n", b"A" * 64, b"="],
            max_ops=3,
        )
    )
    return block.replace(b"\n", b"\\n") if draw(st.booleans()) else block


_unattend = st.tuples(st.text(max_size=12), st.sampled_from(["Password", "AdministratorPassword"]))


# imgscan still reads OpenSSH DSA keys, which cryptography warns are going away.
@pytest.mark.filterwarnings("ignore:SSH DSA keys are deprecated")
@fuzz
@given(
    st.one_of(
        _tokens,
        _jwts,
        _aws,
        _crypt_hashes(),
        _private_key_blocks(),
        _unattend.map(lambda t: base64.b64encode((t[0] + t[1]).encode("utf-16-le", "replace"))),
        mutated(corpus("offline-checks"), tokens=[b"$", b".", b"eyJ", b"=", b"\x00", b"\xff"]),
        st.binary(max_size=128),
    )
)
def test_offline_checks(value: bytes) -> None:
    check_offline(value)


# --- the user's ignore, baseline and policy files -------------------------------------------

IGNORE_KEYS = ["ignore", "rule", "path", "fingerprint", "reason", "expires"]
POLICY_KEYS = ["fail_on", "rule", "action", "reason", "severity", "category", "path", "exposure"]
POLICY_KEYS += ["fail", "allow", "high", "info", "identity", "password", "**", "C:\\x\\**"]
BASELINE_KEYS = ["schema", "imgscan.baseline/v1", "findings", "fingerprint", "rule", "path"]
TOML_TOKENS = [b"[[", b"]]", b"[", b"]", b"{", b"}", b"=", b'"', b"'''", b'"""', b"\n", b","]
JSON_TOKENS = [b"[", b"]", b"{", b"}", b'"', b":", b",", b"null", b"NaN", b"1e999", b"\\u0000"]

Loader = Callable[[Path], object]
LOADERS: dict[str, tuple[Loader, list[str], list[bytes]]] = {
    "ignore": (load_ignore, IGNORE_KEYS, TOML_TOKENS),
    "policy": (load_policy, POLICY_KEYS, TOML_TOKENS),
    "baseline": (load_baseline, BASELINE_KEYS, JSON_TOKENS),
}


def check_user_file(target: str, data: bytes) -> None:
    """A user's file loads, or raises ImgscanError with a message naming it. (Not always one
    line: an unknown key is shown as written, so a quoted key holding a newline breaks it.)"""
    load = LOADERS[target][0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"input.{target}"
        path.write_bytes(data)
        try:
            with time_limit(10):
                loaded = load(path)
        except ImgscanError as exc:
            assert str(exc).startswith(str(path))
            return
    if target == "policy":
        assert isinstance(loaded, Policy)


@pytest.mark.parametrize("target", sorted(LOADERS))
def test_user_file_corpus(target: str) -> None:
    for data in corpus(target):
        check_user_file(target, data)


def _user_file(target: str) -> st.SearchStrategy[tuple[str, bytes]]:
    _, keys, tokens = LOADERS[target]
    if target == "baseline":
        text = st.one_of(
            json_values(keys).map(lambda obj: json.dumps(obj).encode()),
            st.dictionaries(st.sampled_from(keys), json_values(keys)).map(
                lambda obj: json.dumps({"schema": "imgscan.baseline/v1", **obj}).encode()
            ),
            nested("[", "]").map(str.encode),
            nested('{"a":', "}").map(str.encode),
        )
    else:
        text = st.one_of(
            toml_document(keys, [keys[0] if target == "ignore" else "rule"]).map(str.encode),
            nested("[", "]").map(lambda deep: f"fail_on = {deep}\n".encode()),
            nested("{a=", "}").map(lambda deep: f"x = {deep}\n".encode()),
        )
    data = text | mutated(corpus(target), tokens=tokens) | st.binary(max_size=256)
    return st.tuples(st.just(target), data)


@fuzz
@given(st.sampled_from(sorted(LOADERS)).flatmap(_user_file))
def test_user_files(case: tuple[str, bytes]) -> None:
    check_user_file(*case)
