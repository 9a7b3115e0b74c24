"""Offline checks of a found value: what its own structure says about it. No network, ever.

A check applies by the shape of the value, whatever rule found it (a GitHub token found by a
generic `password =` rule is still checksummed). `offline_checks` returns the checks that
applied, or raises `NotASecret` when a check proves the value cannot be real (a GitHub or npm
token whose CRC32 does not match: GitHub's own scanning drops those too; a Private Packagist
token whose CRC32 does not match; an age key whose bech32 checksum does not match). Check
details describe the value (algorithm, key size, expiry date) and never contain it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
import time
import uuid
import warnings
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from imgscan.model import Check, CheckResult

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# GitHub classic, OAuth, user-to-server, server-to-server and refresh tokens, and npm tokens:
# 30 base62 characters of entropy, then their CRC32 as 6 base62 characters.
_CHECKSUMMED = re.compile(rb"^(?:gh[pousr]|npm)_([A-Za-z0-9]{30})([A-Za-z0-9]{6})$")
# age identities: bech32 (BIP 173) with the human-readable part "age-secret-key-", written in
# upper case: 52 data characters (32 bytes) and 6 of checksum.
_AGE_SECRET = re.compile(rb"^AGE-SECRET-KEY-1([0-9A-Z]{58})$")
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
# Private Packagist tokens: prefix, 60 hex random, then the CRC32 of prefix + random in 8 hex.
_PACKAGIST = re.compile(rb"^(packagist_[a-z]{3}_[0-9a-f]{60})([0-9a-f]{8})$")
_JWT = re.compile(rb"^(eyJ[A-Za-z0-9_-]+)\.(eyJ[A-Za-z0-9_-]*)\.([A-Za-z0-9_-]*)$")
# The claims of the sample token jwt.io and countless READMEs show.
_JWT_IO_SAMPLE = {"sub": "1234567890", "name": "John Doe", "iat": 1516239022}
_AWS_KEY_ID = re.compile(rb"^(AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}$")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]{8,2048}={0,2}")
_PEM_KEY = re.compile(rb"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----")
_CRYPT = re.compile(rb"^\$(1|2[abxy]|5|6|y|gy|7)\$[^\s:$]*\$[./A-Za-z0-9$]+$")
_CRYPT_NAMES = {
    b"1": "md5-crypt",
    b"2a": "bcrypt",
    b"2b": "bcrypt",
    b"2x": "bcrypt",
    b"2y": "bcrypt",
    b"5": "sha256-crypt",
    b"6": "sha512-crypt",
    b"y": "yescrypt",
    b"gy": "gost-yescrypt",
    b"7": "scrypt",
}
# Passwords that images ship with or that people pick first. Kept short: every live hash is
# hashed once per word, and yescrypt costs tens of milliseconds a time.
COMMON_PASSWORDS = (
    "123456",
    "password",
    "changeme",
    "admin",
    "root",
    "toor",
    "letmein",
    "qwerty",
    "12345678",
    "password1",
    "welcome",
    "ubuntu",
    "debian",
    "centos",
    "vagrant",
    "raspberry",
    "P@ssw0rd",
    "Passw0rd",
    "secret",
    "test",
)


class NotASecret(Exception):
    """A check proved the value cannot be a working secret; the message says why."""


def offline_checks(secret: bytes) -> tuple[Check, ...]:
    """Every check that applies to `secret`, in a fixed order."""
    checks: list[Check] = []
    for check in _CHECKS:
        result = check(secret)
        if result is not None:
            checks.append(result)
    return tuple(checks)


def _base62(number: int, width: int) -> str:
    digits = ""
    while number:
        number, rem = divmod(number, 62)
        digits = _BASE62[rem] + digits
    return digits.rjust(width, "0")


def token_checksum(secret: bytes) -> Check | None:
    """GitHub and npm tokens carry a CRC32 of their random part."""
    match = _CHECKSUMMED.match(secret)
    if match is None:
        return None
    body, checksum = match.group(1), match.group(2).decode()
    if _base62(zlib.crc32(body), 6) != checksum:
        raise NotASecret("token checksum does not match")
    return Check("token-checksum", CheckResult.PASS, "CRC32 checksum matches")


def _bech32_polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i, generator in enumerate(_BECH32_GENERATOR):
            chk ^= generator if (top >> i) & 1 else 0
    return chk


def age_secret_key(secret: bytes) -> Check | None:
    """age identities carry a bech32 checksum; a value that fails it (a placeholder, a typo, a
    made-up example) is no key."""
    match = _AGE_SECRET.match(secret)
    if match is None:
        return None
    data = match.group(1).decode().lower()
    if any(c not in _BECH32 for c in data):
        raise NotASecret("not bech32 (an age key never holds 1, b, i or o after its prefix)")
    hrp = "age-secret-key-"
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    if _bech32_polymod(expanded + [_BECH32.index(c) for c in data]) != 1:
        raise NotASecret("bech32 checksum does not match")
    return Check("age-checksum", CheckResult.PASS, "bech32 checksum matches")


def packagist_checksum(secret: bytes) -> Check | None:
    """Private Packagist tokens end in the CRC32 of their prefix and random part (8 hex digits,
    as Packagist documents), so a made-up or mistyped token fails it."""
    match = _PACKAGIST.match(secret)
    if match is None:
        return None
    if f"{zlib.crc32(match.group(1)):08x}" != match.group(2).decode():
        raise NotASecret("token checksum does not match")
    return Check("token-checksum", CheckResult.PASS, "CRC32 checksum matches")


def _b64url_json(part: bytes) -> Any:
    padded = part + b"=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(padded))


def jwt_claims(secret: bytes, now: float | None = None) -> Check | None:
    """A JWT's header and claims decode, and whether it has expired."""
    match = _JWT.match(secret)
    if match is None:
        return None
    try:
        header = _b64url_json(match.group(1))
        claims = _b64url_json(match.group(2))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        # RecursionError: JSON nested a thousand levels deep, which json.loads gives up on.
        return Check("jwt", CheckResult.FAIL, "header or claims do not decode as JSON")
    if not isinstance(header, dict) or not isinstance(claims, dict) or "alg" not in header:
        return Check("jwt", CheckResult.FAIL, "not a JWT header and claims set")
    if claims == _JWT_IO_SAMPLE:
        raise NotASecret("the jwt.io documentation token")
    alg = str(header["alg"])[:16]
    expiry = claims.get("exp")
    # `expiry == expiry` leaves out NaN, which json.loads accepts and which is no date.
    if isinstance(expiry, int | float) and not isinstance(expiry, bool) and expiry == expiry:
        when = datetime.fromtimestamp(min(max(expiry, 0), 253402300799), UTC)
        stamp = when.strftime("%Y-%m-%d %H:%M UTC")
        if expiry < (time.time() if now is None else now):
            return Check("jwt", CheckResult.FAIL, f"alg {alg}; expired {stamp}")
        return Check("jwt", CheckResult.PASS, f"alg {alg}; expires {stamp}")
    return Check("jwt", CheckResult.PASS, f"alg {alg}; no expiry")


def aws_key_id(secret: bytes) -> Check | None:
    """An AWS access key id: its prefix tells a long-term key from a temporary one."""
    match = _AWS_KEY_ID.match(secret)
    if match is None:
        return None
    kind = "temporary (STS) key" if match.group(1) == b"ASIA" else "long-term access key"
    return Check("aws-key-id", CheckResult.PASS, f"well-formed {kind} id")


def _load_private_key(secret: bytes) -> Any:
    """The key object of a PEM or OpenSSH private key block in `secret`, or None when there is
    none. Raises TypeError for an encrypted key (cryptography's way of saying a password is
    needed), ValueError when it does not parse, UnsupportedAlgorithm for unknown key types."""
    match = _PEM_KEY.search(secret)
    if match is None:
        return None
    from cryptography.hazmat.primitives import serialization

    data = secret.replace(b"\\n", b"\n") if b"\\n" in secret else secret
    data = data[match.start() :]
    # cryptography warns that DSA support is deprecated each time it loads a DSA key: the
    # key is the image's, not ours, and the warning would reach the user's terminal.
    from cryptography.utils import CryptographyDeprecationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        if match.group(1) == b"OPENSSH ":
            return serialization.load_ssh_private_key(data, password=None)
        return serialization.load_pem_private_key(
            data, password=None, unsafe_skip_rsa_key_validation=True
        )


def private_key(secret: bytes) -> Check | None:
    """A PEM or OpenSSH private key parses (with `cryptography`), or is encrypted."""
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        key = _load_private_key(secret)
    except TypeError:
        return Check("private-key", CheckResult.PASS, "encrypted key: needs its passphrase")
    except UnsupportedAlgorithm as exc:
        return Check("private-key", CheckResult.INFO, f"key type not checked: {exc}"[:120])
    except ValueError as exc:
        if "encrypted" in str(exc).lower() or "password" in str(exc).lower():
            return Check("private-key", CheckResult.PASS, "encrypted key: needs its passphrase")
        return Check("private-key", CheckResult.FAIL, "does not parse as a private key")
    if key is None:
        return None
    size = getattr(key, "key_size", None)
    kind = type(key).__name__.removeprefix("_").replace("PrivateKey", "")
    return Check(
        "private-key", CheckResult.PASS, f"{kind} key parses" + (f" ({size} bits)" if size else "")
    )


def public_key_id(public_key: Any) -> str | None:
    """OpenSSH's fingerprint (`SHA256:` + unpadded base64 of the SHA-256 of the key blob, what
    `ssh-keygen -l` prints) of a `cryptography` public key, or None for key types OpenSSH
    does not know. The same id for a private key and for a certificate's subject key is how a
    TLS key is matched with its certificate."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.utils import CryptographyDeprecationWarning

    try:
        # A DSA key (the image's) makes cryptography warn on stderr each time: not ours to fix.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            line = public_key.public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def private_key_id(secret: bytes) -> str | None:
    """`public_key_id` of the private key in `secret`; None when it is encrypted, does not
    parse or has a type OpenSSH does not know. The public half is public: reporting its
    fingerprint leaks nothing, and it says which servers (authorized_keys) and which
    certificate belong to the key."""
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        key = _load_private_key(secret)
    except (TypeError, ValueError, UnsupportedAlgorithm):
        return None
    return None if key is None else public_key_id(key.public_key())


def password_hash(secret: bytes) -> Check | None:
    """A crypt(3) hash is live (not locked); the detail says whether it is a common password."""
    match = _CRYPT.match(secret)
    if match is None:
        return None
    algorithm = _CRYPT_NAMES[match.group(1)]
    if not secret.isascii() or b"\0" in secret:
        return None  # not a crypt(3) string (its salt is ASCII), and crypt() refuses NUL
    hashed = secret.decode("ascii")
    tries = _affordable_tries(match.group(1), hashed)
    common = _matches_common_password(hashed, tries) if tries else False
    if common is None:
        detail = f"live {algorithm} hash (common passwords not tried: no crypt(3) here)"
    elif common:
        detail = f"live {algorithm} hash of a common password (imgscan's built-in list)"
    elif tries == 0:
        detail = f"live {algorithm} hash (too costly to try common passwords on)"
    elif tries < len(COMMON_PASSWORDS):
        detail = f"live {algorithm} hash; not one of the {tries} most common passwords"
    else:
        detail = f"live {algorithm} hash; not one of imgscan's built-in common passwords"
    return Check("password-hash", CheckResult.PASS, detail)


def _affordable_tries(scheme: bytes, hashed: str) -> int:
    """How many common passwords to try on a hash, from its scheme and cost parameter alone
    (never from timing, so a report does not depend on the machine): about a quarter of a
    second per hash at most. sha-crypt at its default 5,000 rounds costs ~2 ms a try, bcrypt
    at cost 12 ~200 ms, yescrypt at its defaults ~20-50 ms. A hash from a hostile image may
    ask for any cost (crypt(3) obeys up to 999,999,999 sha-crypt rounds, 16 GiB of yescrypt
    memory): beyond the defaults, nothing is tried."""
    if scheme in (b"1", b"5", b"6"):
        rounds = re.match(r"^\$\d\$rounds=(\d+)\$", hashed)
        if not rounds:
            return len(COMMON_PASSWORDS)
        digits = rounds.group(1)
        count = int(digits) if len(digits) <= 9 else 10**9  # int() refuses 4300+ digits
        return len(COMMON_PASSWORDS) if count <= 50_000 else 3 if count <= 200_000 else 0
    if scheme.startswith(b"2"):
        cost = re.match(r"^\$2[abxy]\$(\d\d)\$", hashed)
        if cost is None:
            return 0
        value = int(cost.group(1))
        if value <= 8:
            return 10
        if value <= 10:
            return 3
        return 1 if value <= 12 else 0
    params = hashed.split("$")[2]
    if scheme == b"7":  # N up to 2^14 ("C"), and the default r and p
        return 5 if re.fullmatch(r"[./0-9A-C]U\.\.\.\./\.\.\.\.", params[:11]) else 0
    # yescrypt and gost-yescrypt: N up to 2^12 and r up to 32, the "j9T" of every distribution
    # (16 MiB); "jJT" would take 16 GiB and a minute and a half a try.
    return 5 if re.fullmatch(r"j[./0-9][./0-9A-T]", params) else 0


@functools.lru_cache(maxsize=256)  # /etc/shadow and its backup shadow- hold the same hashes
def _matches_common_password(hashed: str, tries: int) -> bool | None:
    """Whether `hashed` is the hash of one of the first `tries` built-in common passwords;
    None if crypt(3) is missing.

    The standard library's `crypt` (deprecated, removed in Python 3.13) calls the system's
    libxcrypt, which knows every scheme Linux distributions write, yescrypt included.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
    except ImportError:
        return None
    for word in COMMON_PASSWORDS[:tries]:
        try:
            if crypt.crypt(word, hashed) == hashed:
                return True
        except OSError:  # a scheme this libxcrypt does not know
            return None
    return False


# Directories that hold test data of the software they ship with: a key in
# /usr/lib/python3/dist-packages/twisted/conch/test/ is the library's fixture, not this
# machine's secret. Names only ("example" and "sample" directories also hold live configs).
_FIXTURE_DIRS = frozenset(
    {
        "test",
        "tests",
        "testing",
        "testdata",
        "test-data",
        "test_data",
        "fixtures",
        "fixture",
        "__tests__",
        "__fixtures__",
        "__mocks__",
        "spec",
    }
)


# A directory name is no evidence that a credential is a fixture: these files hold live
# credentials wherever they sit (cloud credentials, SSH and TLS private keys, password files,
# keytabs, browser and keyring stores), so they are never demoted for their directory.
_CREDENTIAL_NAMES = frozenset(
    {
        # SSH private keys (OpenSSH's default names, host keys are below) and PuTTY's
        "id_rsa",
        "id_dsa",
        "id_ecdsa",
        "id_ed25519",
        "id_ecdsa_sk",
        "id_ed25519_sk",
        "identity",
        # passwords and tokens of clients and of the system
        ".pgpass",
        "pgpass.conf",
        ".netrc",
        "_netrc",
        ".git-credentials",
        ".my.cnf",
        ".vault-token",
        "shadow",
        "shadow-",
        "gshadow",
        "gshadow-",
        "master.passwd",
        "keytab",
        # cloud SDKs' stores
        "application_default_credentials.json",
        "credentials.db",
        "access_tokens.db",
        "accesstokens.json",
        "msal_token_cache.json",
        "azureprofile.json",
        # browsers' and keyrings' stores
        "login data",
        "login data for account",
        "logins.json",
        "key3.db",
        "key4.db",
        "signons.sqlite",
        "login.keyring",
        "user.keystore",
    }
)
_CREDENTIAL_SUFFIXES = (
    ".key",  # TLS private keys (server.key) and others
    "-key.pem",
    "_key.pem",
    ".ppk",
    ".p12",
    ".pfx",
    ".jks",
    ".keystore",
    ".keytab",
    ".keyring",
    ".kdbx",
)
# Files that are credentials by their directory: ~/.aws/credentials, ~/.docker/config.json,
# ~/.kube/config, ~/.azure/*, ~/.config/gcloud/*. Found anywhere below such a directory.
_CREDENTIAL_DIRS = {
    ".aws": frozenset({"credentials", "config"}),
    ".docker": frozenset({"config.json"}),
    ".kube": frozenset({"config"}),
    ".azure": None,  # every file
    "gcloud": None,
    ".gnupg": None,
    "keyrings": None,
}
# Home directories and /etc: what sits there is the machine's or a user's own, not the test
# data of software it ships with (Linux, macOS-style and Windows profiles).
_OWN_PLACES = re.compile(
    r"^(?:/root(?:/|$)|/home/[^/]+/|/var/root/|/users/[^/]+/|/etc/"
    r"|[a-z]:/users/[^/]+/|[a-z]:/documents and settings/[^/]+/)"
)


def fixture_location(path: str) -> Check | None:
    """An INFO check when `path` lies in a test-fixture directory (the caller demotes it).

    Never for a credential file (a cloud credentials file, an SSH or TLS private key, a
    password file, a keytab, a browser or keyring store: `_credential_file`) nor for anything
    in a home directory or under /etc: there a directory named `tests/` or `spec/` is no
    evidence of a fixture, and demoting would let a live key through a gate.
    """
    parts = re.split(r"[/\\!]", path)
    directories = parts[:-1]
    if not any(part.lower() in _FIXTURE_DIRS for part in directories):
        return None
    if _own_place(path) or _credential_file(parts):
        return None
    return Check("location", CheckResult.INFO, "in a test or fixture directory")


def _own_place(path: str) -> bool:
    """Whether `path` (or, for an archive member, the archive holding it) is in a home
    directory or under /etc."""
    outer = path.split("!/", 1)[0].replace("\\", "/").lower()
    return _OWN_PLACES.match(outer) is not None


def _credential_file(parts: list[str]) -> bool:
    """Whether the file whose path components are `parts` is a credential file by its name."""
    name = parts[-1].lower()
    if name in _CREDENTIAL_NAMES or name.endswith(_CREDENTIAL_SUFFIXES):
        return True
    if name.startswith("ssh_host_") and name.endswith("_key"):
        return True
    for directory in parts[:-1]:
        names = _CREDENTIAL_DIRS.get(directory.lower(), frozenset())
        if names is None or name in names:
            return True
    return False


# Keystore passwords worth a try: none, the Java default, and the common list.
_STORE_PASSWORDS = ("", "changeit", *COMMON_PASSWORDS)


def file_checks(rule_id: str, data: bytes) -> tuple[Check, ...]:
    """Checks of a whole small file that a binary (YARA) rule found: whether a key store opens
    with no password or a common one. `data` must be the complete file."""
    check = _FILE_CHECKS.get(rule_id)
    result = check(data) if check is not None else None
    return (result,) if result is not None else ()


def pkcs12_password(data: bytes) -> Check | None:
    """Whether a PKCS#12 file opens with no password or a common one (`cryptography` tries)."""
    from cryptography.hazmat.primitives.serialization import pkcs12

    for index, password in enumerate((None, *(p.encode() for p in _STORE_PASSWORDS))):
        try:
            pkcs12.load_key_and_certificates(data, password)
        except (ValueError, TypeError):
            continue  # wrong password (or not a PKCS#12 it can read)
        return Check("store-password", CheckResult.PASS, _opens(index))
    return Check("store-password", CheckResult.INFO, "does not open with a common password")


def jks_password(data: bytes) -> Check | None:
    """Whether a Java key store's integrity digest is keyed by no password or a common one.

    The store ends with SHA-1(password as UTF-16BE, "Mighty Aphrodite", the store's bytes);
    keystores usually protect their keys with the same password.
    """
    if len(data) < 32 or data[:4] != b"\xfe\xed\xfe\xed":
        return None
    body, digest = data[:-20], data[-20:]
    for index, password in enumerate(_STORE_PASSWORDS, start=1):
        keyed = hashlib.sha1(password.encode("utf-16-be") + b"Mighty Aphrodite" + body)
        if keyed.digest() == digest:
            return Check("store-password", CheckResult.PASS, _opens(index))
    return Check("store-password", CheckResult.INFO, "does not open with a common password")


def _opens(index: int) -> str:
    """How a store opened: 0 no password, 1 an empty one, 2+ one of the common ones."""
    if index == 0:
        return "opens without a password"
    if index == 1:
        return "opens with an empty password"
    return "opens with a common password (imgscan's built-in list)"


_FILE_CHECKS: dict[str, Callable[[bytes], Check | None]] = {
    "pkcs12-private-key": pkcs12_password,
    "java-keystore-private-key": jks_password,
}


def unattend_decode(secret: bytes) -> str | None:
    """The password in a Windows Setup "encrypted" answer-file value (base64 of UTF-16LE
    password + "Password", or + "AdministratorPassword"), or None when `secret` is not one.
    The empty string is a valid result (Windows SIM encodes an empty password that way)."""
    if not _BASE64.fullmatch(secret) or len(secret) % 4:
        return None
    try:
        text = base64.b64decode(secret, validate=True).decode("utf-16-le")
    except (binascii.Error, ValueError):
        return None
    for suffix in ("AdministratorPassword", "Password"):
        if text.endswith(suffix):
            return text[: -len(suffix)]
    return None


def unattend_encoding(secret: bytes) -> Check | None:
    """Windows Setup's "encrypted" answer-file passwords are base64 of UTF-16LE password +
    "Password" (or "AdministratorPassword"): the check says it decodes, never to what."""
    password = unattend_decode(secret)
    if not password:
        return None
    text = base64.b64decode(secret).decode("utf-16-le")
    suffix = text[len(password) :]
    return Check(
        "unattend-encoding",
        CheckResult.PASS,
        f"base64 of the password + '{suffix}': decodes offline",
    )


# Group Policy Preferences encrypt cpassword with AES-256-CBC, a zero IV and this key, which
# Microsoft published in [MS-GPPREF] 2.2.1.1.4 (the reason for MS14-025): anyone decrypts it.
_GPP_KEY = bytes.fromhex("4e9906e8fcb66cc9faf49310620ffee8f496e806cc057990209b09a433b66c1b")
_GPP_SHAPE = re.compile(rb"[A-Za-z0-9+/]{20,512}={0,2}")


def gpp_decrypt(secret: bytes) -> str | None:
    """The password a Group Policy Preferences cpassword holds (base64, padding often
    stripped), or None when `secret` is not one: it must decrypt with the published key to
    PKCS#7-padded UTF-16LE text without control characters. The empty string is a valid
    result (an empty password)."""
    if not _GPP_SHAPE.fullmatch(secret):
        return None
    try:
        data = base64.b64decode(secret.rstrip(b"=") + b"=" * (-len(secret.rstrip(b"=")) % 4))
    except (binascii.Error, ValueError):
        return None
    if not data or len(data) % 16:
        return None
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    decryptor = Cipher(algorithms.AES(_GPP_KEY), modes.CBC(bytes(16))).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        plain = unpadder.update(decryptor.update(data) + decryptor.finalize())
        plain += unpadder.finalize()
        text = plain.decode("utf-16-le")
    except (ValueError, UnicodeDecodeError):
        return None
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return None
    return text


def gpp_cpassword(secret: bytes) -> Check | None:
    """A Group Policy Preferences cpassword that decrypts with Microsoft's published key: the
    check says so (and that the password is not empty), never what it is."""
    password = gpp_decrypt(secret)
    if not password:
        return None
    return Check(
        "gpp-cpassword",
        CheckResult.PASS,
        "decrypts with the published Group Policy Preferences key (MS14-025)",
    )


# A DPAPI blob starts with version 1 and the provider GUID df9d8cd0-1501-11d1-8c7a-00c04fc297eb
# in its little-endian byte order. Files keep it in hex (RDP files' "password 51:b:",
# ConvertFrom-SecureString output) or base64 (Remote Desktop Connection Manager's .rdg).
_DPAPI_HEADER = bytes.fromhex("01000000d08c9ddf0115d1118c7a00c04fc297eb")
_DPAPI_HEX = re.compile(rb"(?i)^01000000d08c9ddf0115d1118c7a00c04fc297eb(?:[0-9a-f]{2}){24,8192}$")
_DPAPI_BASE64 = re.compile(rb"^AQAAANCMnd8BFdERjHoAwE/Cl\+s[A-Za-z0-9+/]{32,16384}={0,2}$")


def dpapi_blob(secret: bytes) -> Check | None:
    """A DPAPI blob in hex or base64: names the master key (a GUID, not a secret) that protects
    it, which lies in the owner's profile (AppData\\Roaming\\Microsoft\\Protect\\<SID>\\<GUID>)
    and opens with the owner's password or the domain's backup key."""
    if _DPAPI_HEX.match(secret):
        blob = bytes.fromhex(secret.decode("ascii"))
    elif _DPAPI_BASE64.match(secret):
        try:
            blob = base64.b64decode(secret + b"=" * (-len(secret) % 4))
        except (binascii.Error, ValueError):
            return None
    else:
        return None
    if not blob.startswith(_DPAPI_HEADER) or len(blob) < 40:
        return None
    # 4 bytes version, 16 provider GUID, 4 master key version, 16 master key GUID.
    guid = str(uuid.UUID(bytes_le=blob[24:40]))
    return Check(
        "dpapi-blob",
        CheckResult.PASS,
        f"DPAPI blob under master key {{{guid}}}: opens offline with that key and its owner's"
        " password",
    )


_CHECKS: tuple[Callable[[bytes], Check | None], ...] = (
    token_checksum,
    packagist_checksum,
    age_secret_key,
    jwt_claims,
    aws_key_id,
    private_key,
    password_hash,
    unattend_encoding,
    gpp_cpassword,
    dpapi_blob,
)
