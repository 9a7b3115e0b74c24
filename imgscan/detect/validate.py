"""Offline validators: judge a confirmed match without any network access.

A validator takes the captured secret and returns None when the match stands, or a short reason
when the match is a decoy and must be dropped (a placeholder, a template reference, a locked
password hash). Rules name validators in their `validators` list.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable

from imgscan.detect.checks import gpp_decrypt, unattend_decode

Validator = Callable[[bytes], "str | None"]

# Values that configuration files and documentation use in place of a real secret.
PLACEHOLDER_WORDS = frozenset(
    {
        "changeme",
        "password_here",
        "username_here",
        "database_name_here",
        "put your unique phrase here",
        "change_me",
        "change-me",
        "changeit",
        "password",
        "passw0rd",
        "passwd",
        "pass",
        "secret",
        "example",
        "your_password",
        "yourpassword",
        "your-password",
        "mypassword",
        "my_password",
        "placeholder",
        "redacted",
        "none",
        "null",
        "nil",
        "true",
        "false",
        "test",
        "testing",
        "dummy",
        "sample",
        "default",
        "todo",
        "tbd",
        "fixme",
        "empty",
        "unset",
        "undefined",
        "required",
        "optional",
        "string",
        "value",
        "your_secret",
        "yoursecret",
        "your_token",
        "xxx",
        "foo",
        "bar",
        "foobar",
        "secret123",
        "password123",
        "insert_here",
        "anonymous",
        "anonymous@",
        # Documentation's own examples: Oracle's and SQLAlchemy's scott/tiger, the password
        # of a well-known joke that docs and tests reuse.
        "tiger",
        "hunter2",
    }
)
# Characters written for letters in "p@ssw0rd"-style spellings of a placeholder word.
_LEET = bytes.maketrans(b"@4310!5$7", b"aaeiolsst")
# "your-password-here", "my_api_key", "insert-token-here": a description of the value.
_DESCRIPTION = re.compile(
    rb"(?i)^(?:(?:your|my|the|some|insert|enter|put)[-_ .]?(?:[a-z]+[-_ .]?){0,3}"
    rb"(?:password|passwd|pass|pwd|secret|key|token|here|value)|"
    rb"(?:[a-z]+[-_ .]){1,4}here)$"
)
# "test1234", "demo_01", "sample": a sample value, whatever digits follow.
_SAMPLE = re.compile(rb"(?i)^(?:test|testing|demo|sample|example|dummy|fake|mock)[-_]?[0-9]{0,8}$")

_TEMPLATE_REFERENCE = re.compile(
    rb"""^(?:
        \$\{[^}]*\}?            # ${VAR} and ${VAR:-default}
      | \$\(?[A-Za-z_][A-Za-z0-9_]*\)?  # $VAR, $(VAR)
      | \$env:[A-Za-z_][A-Za-z0-9_]*  # $env:VAR (PowerShell)
      | %\([^)]*\)[sd]?         # %(password)s
      | %[A-Za-z_][A-Za-z0-9_]*%  # %VAR% (Windows)
      | \{\{.*\}\}              # {{ password }} (Jinja, Helm, Go templates)
      | \{[A-Za-z_][A-Za-z0-9_.]*\}  # {password} (str.format)
      | <[^<>]{1,64}>           # <password>, <your-token>
      | \[[^\[\]]{1,64}\]       # [password]
      | @[A-Za-z_][A-Za-z0-9_]*@  # @PASSWORD@ (autoconf)
      | __[A-Z0-9_]+__          # __PASSWORD__
    )$""",
    re.X,
)
_CODE_REFERENCE = re.compile(
    rb"(?i)^(?:os\.environ|os\.getenv|getenv|env\(|process\.env|system\.getenv|environment\.|"
    rb"settings\.|config\.|vault:|secret:|ENC\[|!vault|lookup\()"
)


# DB_PASSWORD, API_TOKEN: a configuration value that names the variable holding the secret
# (node-config's custom-environment-variables.json, Spring's ${} defaults, compose files).
_ENV_NAME = re.compile(rb"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_SECRET_WORD = re.compile(rb"PASS|SECRET|TOKEN|KEY|PWD|AUTH|CRED")


def placeholder(secret: bytes) -> str | None:
    """Drop values that stand in for a secret rather than being one."""
    value = secret.strip().strip(b"'\"")
    if not value:
        return "empty value"
    lowered = value.lower()
    if _TEMPLATE_REFERENCE.match(value):
        return "template or environment reference"
    if _CODE_REFERENCE.match(value):
        return "reference to a value kept elsewhere"
    if b"example" in lowered:
        return "documentation example"
    if len(set(lowered)) == 1:
        return "placeholder made of one repeated character"
    if lowered.decode("utf-8", "replace") in PLACEHOLDER_WORDS:
        return "placeholder word"
    if re.fullmatch(rb"(?:x+|\*+|\.+|-+|_+|0+|#+|\?+)", lowered):
        return "masked value"
    if lowered.translate(_LEET).decode("utf-8", "replace") in PLACEHOLDER_WORDS:
        return "placeholder word"
    if _DESCRIPTION.match(value):
        return "a description of the value, not a value"
    if _SAMPLE.match(value):
        return "sample value"
    if _sequential(lowered):
        return "sequential characters (1234567890abcdef)"
    if _filler(lowered):
        return "a prefix and filler (sk-xxxxxxxx, TOKEN_00000000)"
    if _ENV_NAME.fullmatch(value) and _SECRET_WORD.search(value):
        return "name of an environment variable"
    return None


def _sequential(value: bytes) -> bool:
    """Whether `value` is (nearly) runs of consecutive characters, as typed for an example:
    `1234567890abcdef`, `0123456789abcdef0123456789abcdef`, `abcdefgh12345678`. A real key
    of 16 random characters has about one such step by chance; at least 80 % of steps here."""
    if len(value) < 8:
        return False
    steps = sum(1 for a, b in itertools.pairwise(value) if b - a == 1)
    return steps >= 0.8 * (len(value) - 1)


def _filler(value: bytes) -> bool:
    """Whether half of `value` or more is one character repeated (x, 0, *, ...), as in a
    token shape with its random part filled in: `sk-lf-00000000-0000-0000-0000-000000000000`,
    `CLOJARS_xxxxxxxxxxxxxxxx`. A random token of this length almost never repeats one
    character more than a few times."""
    if len(value) < 12:
        return False
    most = max(value.count(bytes([c])) for c in set(value))
    return most * 2 >= len(value) and most >= 8


def shadow_hash(secret: bytes) -> str | None:
    """Drop /etc/shadow fields that are not a usable hash: locked, disabled or empty."""
    value = secret.strip()
    if not value or value in (b"*", b"!", b"!!", b"!*", b"x", b"*LK*", b"NP"):
        return "no password set"
    if value.startswith((b"!", b"*")):
        return "account locked"
    return None


# The password of the cpassword that Microsoft's Group Policy Preferences documentation, the
# MS14-025 write-ups and every GPP-decryption tool show (Get-GPPPassword, gpp-decrypt).
_GPP_DOCUMENTATION_PASSWORDS = frozenset({"Local*P4ssword!"})


def gpp_cpassword(secret: bytes) -> str | None:
    """Drop a Group Policy Preferences cpassword that decrypts (with the key Microsoft
    published) to an empty password, to a placeholder or to the documentation's sample. One
    that does not decrypt stays: it is reported unconfirmed (the `gpp-cpassword` check
    confirms the others)."""
    password = gpp_decrypt(secret)
    if password is None:
        return None
    if not password:
        return "decrypts to an empty password"
    if password in _GPP_DOCUMENTATION_PASSWORDS:
        return "documentation example"
    return placeholder(password.encode("utf-8"))


def unattend_password(secret: bytes) -> str | None:
    """Drop a Windows Setup answer-file value stored "encrypted" (<PlainText>false</PlainText>:
    base64 of UTF-16LE password + "Password" or "AdministratorPassword") whose password is
    empty or a placeholder. Plain-text values are the `placeholder` validator's."""
    password = unattend_decode(secret)
    if password is None:
        return None
    if not password:
        return "encodes an empty password"
    return placeholder(password.encode("utf-8"))


def published_value(digests: frozenset[bytes]) -> Validator:
    """A validator that drops a secret equal to a value vendors publish as an example or test
    credential (the pack's published.toml holds their SHA-256). Every pattern rule runs it."""

    def check(secret: bytes) -> str | None:
        if digests and hashlib.sha256(secret).digest() in digests:
            return "a value its vendor publishes as an example or test credential"
        return None

    return check


VALIDATORS: dict[str, Validator] = {
    "placeholder": placeholder,
    "shadow_hash": shadow_hash,
    "gpp_cpassword": gpp_cpassword,
    "unattend_password": unattend_password,
}
