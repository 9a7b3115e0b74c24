"""Seeded generators of secret-shaped values for the quality corpus (benchmarks/quality).

Contract: every value comes from one ``random.Random(seed)``, so the same seed yields the same
corpus byte for byte (key material included: RSA primes, EC scalars and Ed25519 seeds are drawn
from the seeded generator, PKCS#1 v1.5 and Ed25519 signatures are deterministic, and the
encrypted key formats are written here with seeded salts and IVs). Nothing here is a real
credential and the repository holds none: each value is assembled at run time from a vendor's
published shape (prefix, length, alphabet, checksum) and random characters.

The shapes were written from the vendors' documentation of their token formats, never from
imgscan's rule pack, so the corpus measures the rules instead of mirroring them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import math
import random
import string
import sys
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

# The wire-format helpers the test images use too (testdata/build.py), whoever imports this.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "testdata"))
from build import b64url, base62, crc24, ssh_mpint, ssh_string, wrap

ALNUM = string.ascii_letters + string.digits
LOWER_ALNUM = string.ascii_lowercase + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
B64URL = ALNUM + "-_"
BASE32 = string.ascii_uppercase + "234567"
CRYPT64 = "./" + string.digits + string.ascii_uppercase + string.ascii_lowercase
BCRYPT64 = "./" + string.ascii_uppercase + string.ascii_lowercase + string.digits
BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"

WORDS = [
    "harbor",
    "falcon",
    "maple",
    "orbit",
    "candle",
    "mosaic",
    "river",
    "copper",
    "velvet",
    "summit",
    "lantern",
    "meadow",
    "granite",
    "willow",
    "ember",
    "thunder",
    "cobalt",
    "saffron",
    "glacier",
    "pepper",
    "nimbus",
    "quartz",
    "juniper",
    "atlas",
    "breeze",
    "cactus",
    "delta",
    "fjord",
    "hazel",
    "indigo",
    "jasper",
    "kestrel",
    "lotus",
    "marble",
    "nectar",
    "onyx",
    "pixel",
    "raven",
    "sierra",
    "tundra",
    "umber",
    "violet",
    "walnut",
    "zephyr",
]
USERS = [
    "alice",
    "bob",
    "carol",
    "deploy",
    "backup",
    "jenkins",
    "ci",
    "svc_report",
    "app",
    "www",
    "admin",
    "ops",
    "etl",
    "grafana",
    "monitor",
    "replicator",
    "billing",
]
DOMAINS = ("acme-corp.com", "internal.acme-corp.com", "hr.example.net", "corp.local", "prod.lan")
_CLAIM_TIME = 1706745600  # 2024-02-01, fixed so a seed reproduces the JWTs
_SMALL_PRIMES = math.prod(
    p for p in range(3, 20000, 2) if all(p % q for q in range(3, int(p**0.5) + 1, 2))
)


def _bech32_polymod(values: Sequence[int]) -> int:
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= generator[i] if (top >> i) & 1 else 0
    return chk


def bech32(hrp: str, data: bytes) -> str:
    """BIP-173 bech32 of ``data`` (age keys use it), lowercase."""
    acc, bits, groups = 0, 0, []
    for byte in data:
        acc = (acc << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            groups.append((acc >> bits) & 31)
    if bits:
        groups.append((acc << (5 - bits)) & 31)
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    polymod = _bech32_polymod([*expanded, *groups, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(BECH32[g] for g in groups + checksum)


# ---------------------------------------------------------------------------------------------
# crypt(3) hashes: md5-crypt, sha256-crypt, sha512-crypt (Drepper's specification)
# ---------------------------------------------------------------------------------------------

_SHA512_ORDER = [
    (i, i + 21, i + 42)
    if i % 3 == 0
    else (i + 21, i + 42, i)
    if i % 3 == 1
    else (i + 42, i, i + 21)
    for i in range(21)
]
_SHA256_ORDER = [
    (0, 10, 20),
    (21, 1, 11),
    (12, 22, 2),
    (3, 13, 23),
    (24, 4, 14),
    (15, 25, 5),
    (6, 16, 26),
    (27, 7, 17),
    (18, 28, 8),
    (9, 19, 29),
]
_MD5_ORDER = [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)]


def _b64_24(b2: int, b1: int, b0: int, n: int) -> str:
    word = (b2 << 16) | (b1 << 8) | b0
    out = ""
    for _ in range(n):
        out += CRYPT64[word & 0x3F]
        word >>= 6
    return out


def sha_crypt(password: str, salt: str, bits: int = 512) -> str:
    """``$6$salt$hash`` (bits=512) or ``$5$salt$hash`` (bits=256), 5000 rounds."""
    new = hashlib.sha512 if bits == 512 else hashlib.sha256
    size = 64 if bits == 512 else 32
    pw, sl = password.encode(), salt.encode()[:16]
    b = new(pw + sl + pw).digest()
    a = new(pw + sl)
    n = len(pw)
    while n > size:
        a.update(b)
        n -= size
    a.update(b[:n])
    n = len(pw)
    while n:
        a.update(b if n & 1 else pw)
        n >>= 1
    c = a.digest()
    dp = new(pw * len(pw)).digest()
    p = (dp * (len(pw) // size + 1))[: len(pw)]
    ds = new(sl * (16 + c[0])).digest()
    s = (ds * (len(sl) // size + 1))[: len(sl)]
    for i in range(5000):
        h = new(p if i & 1 else c)
        if i % 3:
            h.update(s)
        if i % 7:
            h.update(p)
        h.update(c if i & 1 else p)
        c = h.digest()
    if bits == 512:
        out = "".join(_b64_24(c[x], c[y], c[z], 4) for x, y, z in _SHA512_ORDER)
        out += _b64_24(0, 0, c[63], 2)
        return f"$6${sl.decode()}${out}"
    out = "".join(_b64_24(c[x], c[y], c[z], 4) for x, y, z in _SHA256_ORDER)
    out += _b64_24(0, c[31], c[30], 3)
    return f"$5${sl.decode()}${out}"


def md5_crypt(password: str, salt: str, magic: str = "$1$") -> str:
    """``$1$salt$hash`` (md5-crypt) or, with magic ``$apr1$``, Apache's htpasswd variant."""
    pw, sl, mg = password.encode(), salt.encode()[:8], magic.encode()
    final = hashlib.md5(pw + sl + pw).digest()
    ctx = hashlib.md5(pw + mg + sl)
    left = len(pw)
    while left > 0:
        ctx.update(final[: min(16, left)])
        left -= 16
    n = len(pw)
    while n:
        ctx.update(b"\0" if n & 1 else pw[:1])
        n >>= 1
    final = ctx.digest()
    for i in range(1000):
        h = hashlib.md5(pw if i & 1 else final)
        if i % 3:
            h.update(sl)
        if i % 7:
            h.update(pw)
        h.update(final if i & 1 else pw)
        final = h.digest()
    out = "".join(_b64_24(final[x], final[y], final[z], 4) for x, y, z in _MD5_ORDER)
    out += _b64_24(0, 0, final[11], 2)
    return f"{magic}{sl.decode()}${out}"


# ---------------------------------------------------------------------------------------------
# Tiny DER writer for PKCS#8 EncryptedPrivateKeyInfo (PBES2, PBKDF2-SHA256, AES-256-CBC)
# ---------------------------------------------------------------------------------------------


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + body


def _der_oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytes([parts[0] * 40 + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        body += bytes(reversed(chunk))
    return _der(0x06, body)


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes((value.bit_length() + 8) // 8, "big"))


def _seq(*items: bytes) -> bytes:
    return _der(0x30, b"".join(items))


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class Shapes:
    """Secret-shaped values drawn from one seeded ``random.Random``.

    Methods return text exactly as it is written into a corpus file; multi-line values (PEM
    blocks) have no trailing newline.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    # --- primitives ------------------------------------------------------------------------

    def chars(self, alphabet: str, n: int) -> str:
        """``n`` characters of ``alphabet``; the first and last are alphanumeric."""
        while True:
            value = "".join(self.rng.choice(alphabet) for _ in range(n))
            if value[0].isalnum() and value[-1].isalnum():
                return value

    def alnum(self, n: int) -> str:
        return self.chars(ALNUM, n)

    def hex(self, n: int) -> str:
        return self.chars(HEX, n)

    def digits(self, n: int) -> str:
        return self.rng.choice("123456789") + "".join(
            self.rng.choice(string.digits) for _ in range(n - 1)
        )

    def randbytes(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def b64(self, nbytes: int) -> str:
        """Standard base64 (with padding) of ``nbytes`` random bytes, alphanumeric first."""
        while True:
            value = base64.b64encode(self.randbytes(nbytes)).decode()
            if value[0].isalnum():
                return value

    def b64url(self, nbytes: int) -> str:
        return b64url(self.randbytes(nbytes))

    def uuid(self) -> str:
        return str(uuid.UUID(bytes=self.randbytes(16), version=4))

    def pick(self, items: Sequence[str]) -> str:
        return self.rng.choice(items)

    def word(self) -> str:
        return self.rng.choice(WORDS)

    def user(self) -> str:
        return self.rng.choice(USERS)

    def host(self) -> str:
        role = self.rng.choice(("db", "pg", "mysql", "redis", "mq", "api", "cache", "mongo"))
        return f"{role}{self.rng.randint(1, 9):02d}.{self.rng.choice(DOMAINS)}"

    def password(self, style: str | None = None, symbols: str = "!%*+-=?@^_.~") -> str:
        """A password as people and password managers make them.

        Styles: ``random`` (16-28 alphanumerics), ``symbols`` (random with ``symbols``),
        ``human`` (Word + year + symbol), ``phrase`` (three words and a number). Every value
        starts with a letter and has no quote, backslash, space, ``$``, ``#``, ``&`` or ``;``,
        so it can be written unquoted in any config syntax the corpus uses.
        """
        style = style or self.rng.choice(("random", "random", "symbols", "human", "phrase"))
        if style == "human":
            sym = self.rng.choice([c for c in "!@*+-_.?" if c in symbols] or [""])
            return f"{self.word().capitalize()}{self.rng.randint(1995, 2025)}{sym}"
        if style == "phrase":
            sep = "-" if "-" in symbols else ""
            words = [self.word() for _ in range(3)]
            return sep.join(words) + sep + str(self.rng.randint(10, 99))
        n = self.rng.randint(16, 28)
        alphabet = ALNUM + symbols if style == "symbols" and symbols else ALNUM
        while True:
            value = self.rng.choice(string.ascii_letters) + self.chars(alphabet, n - 1)
            if (
                any(c.islower() for c in value)
                and any(c.isupper() for c in value)
                and any(c.isdigit() for c in value)
            ):
                return value

    # --- vendor tokens (shapes from the vendors' documentation) ----------------------------

    def github(self, prefix: str = "ghp_") -> str:
        """GitHub token (and npm's, which copies the format): prefix, 30 base62 characters and
        a base62 CRC32 of them (6 chars)."""
        body = self.alnum(30)
        return prefix + body + base62(zlib.crc32(body.encode()), 6)

    def github_fine_grained(self) -> str:
        return f"github_pat_11{self.chars(UPPER_ALNUM, 20)}_{self.alnum(59)}"

    def aws_key_id(self, prefix: str = "AKIA") -> str:
        return prefix + self.chars(BASE32, 16)

    def aws_secret(self) -> str:
        return self.chars(B64, 40)

    def aws_session_token(self) -> str:
        return "IQoJb3JpZ2luX2Vj" + base64.b64encode(self.randbytes(540)).decode().rstrip("=")

    def jwt_hs256(self, claims: dict[str, object], kid: str | None = None) -> str:
        header: dict[str, str] = {"alg": "HS256", "typ": "JWT"}
        if kid:
            header["kid"] = kid
        while True:
            body = dict(claims, jti=self.hex(16))
            signing_input = (
                b64url(json.dumps(header, separators=(",", ":")).encode())
                + "."
                + b64url(json.dumps(body, separators=(",", ":")).encode())
            )
            mac = hmac.new(self.randbytes(32), signing_input.encode(), hashlib.sha256).digest()
            token = f"{signing_input}.{b64url(mac)}"
            if all(p[0].isalnum() and p[-1].isalnum() for p in token.split(".")):
                return token

    def jwt_rs256(self, key: rsa.RSAPrivateKey, claims: dict[str, object]) -> str:
        header = {"alg": "RS256", "kid": self.b64url(32)}
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        sig = key.sign(signing_input.encode(), asym_padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(sig)}"

    def k8s_sa_token(self, key: rsa.RSAPrivateKey, namespace: str, account: str) -> str:
        iss = "https://kubernetes.default.svc.cluster.local"
        claims: dict[str, object] = {
            "aud": [iss],
            "exp": _CLAIM_TIME + 31536000,
            "iat": _CLAIM_TIME,
            "iss": iss,
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": account, "uid": self.uuid()},
            },
            "nbf": _CLAIM_TIME,
            "sub": f"system:serviceaccount:{namespace}:{account}",
        }
        return self.jwt_rs256(key, claims)

    def app_jwt(self) -> str:
        return self.jwt_hs256(
            {
                "sub": self.user(),
                "iss": f"https://auth.{self.pick(DOMAINS)}",
                "iat": _CLAIM_TIME,
                "exp": _CLAIM_TIME + 86400 * 365,
                "scope": "read write",
            }
        )

    def slack(self, prefix: str) -> str:
        if prefix == "xoxp":
            return f"xoxp-{self.digits(12)}-{self.digits(12)}-{self.digits(13)}-{self.hex(32)}"
        if prefix == "xapp":
            return f"xapp-1-A{self.chars(UPPER_ALNUM, 10)}-{self.digits(13)}-{self.hex(64)}"
        return f"{prefix}-{self.digits(12)}-{self.digits(13)}-{self.alnum(24)}"

    def slack_webhook(self) -> str:
        t, b = self.chars(UPPER_ALNUM, 10), self.chars(UPPER_ALNUM, 10)
        return f"https://hooks.slack.com/services/T{t}/B{b}/{self.alnum(24)}"

    def stripe(self, prefix: str = "sk_live_") -> str:
        if self.rng.random() < 0.5:
            return prefix + self.alnum(24)
        return prefix + "51" + self.alnum(97)

    def sendgrid(self) -> str:
        return f"SG.{self.chars(B64URL, 22)}.{self.chars(B64URL, 43)}"

    def openai(self) -> str:
        if self.rng.random() < 0.5:
            return f"sk-proj-{self.chars(B64URL, 74)}T3BlbkFJ{self.chars(B64URL, 74)}"
        return f"sk-{self.alnum(20)}T3BlbkFJ{self.alnum(20)}"

    def anthropic(self) -> str:
        return f"sk-ant-api03-{self.chars(B64URL, 93)}AA"

    def azure_storage_key(self) -> str:
        return self.b64(64)

    def azure_client_secret(self) -> str:
        return f"{self.chars(ALNUM, 3)}{self.rng.randint(0, 9)}Q~{self.chars(B64URL + '.~', 34)}"

    def azure_sas_sig(self) -> str:
        return (
            base64.b64encode(self.randbytes(32))
            .decode()
            .replace("+", "%2B")
            .replace("/", "%2F")
            .replace("=", "%3D")
        )

    def gcp_api_key(self) -> str:
        return "AIza" + self.chars(B64URL, 35)

    def twilio_sid(self, prefix: str) -> str:
        return prefix + self.hex(32)

    def telegram(self) -> str:
        return f"{self.digits(10)}:AA{self.chars(B64URL, 33)}"

    def discord_bot(self) -> str:
        user_id = base64.b64encode(self.digits(18).encode()).decode().rstrip("=")
        return f"{user_id}.{self.chars(B64URL, 6)}.{self.chars(B64URL, 38)}"

    def pypi(self) -> str:
        return "pypi-AgEIcHlwaS5vcmcCJD" + self.chars(B64URL, 150)

    def atlassian(self) -> str:
        return f"ATATT3xFfGF0{self.chars(B64URL, 170)}={self.chars('0123456789ABCDEF', 8)}"

    def mapbox(self, prefix: str = "sk") -> str:
        payload = b64url(json.dumps({"u": self.user(), "a": "cl" + self.alnum(23)}).encode())
        return f"{prefix}.{payload}.{self.chars(B64URL, 22)}"

    def age_secret(self) -> tuple[str, str]:
        """(AGE-SECRET-KEY-1..., age1... public recipient)."""
        raw = self.randbytes(32)
        public = x25519.X25519PrivateKey.from_private_bytes(raw).public_key()
        pub_raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return bech32("age-secret-key-", raw).upper(), bech32("age", pub_raw)

    def wireguard(self) -> tuple[str, str]:
        """(private key, public key), base64 of X25519 keys as ``wg genkey | wg pubkey``."""
        raw = bytearray(self.randbytes(32))
        raw[0] &= 248
        raw[31] = (raw[31] & 127) | 64
        key = x25519.X25519PrivateKey.from_private_bytes(bytes(raw))
        pub = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(bytes(raw)).decode(), base64.b64encode(pub).decode()

    # --- password hashes ---------------------------------------------------------------------

    def crypt_salt(self, n: int = 16) -> str:
        return "".join(self.rng.choice(CRYPT64) for _ in range(n))

    def sha512_crypt(self, password: str | None = None) -> str:
        return sha_crypt(password or self.password(), self.crypt_salt(16), 512)

    def sha256_crypt(self, password: str | None = None) -> str:
        return sha_crypt(password or self.password(), self.crypt_salt(16), 256)

    def md5_crypt(self, magic: str = "$1$") -> str:
        return md5_crypt(self.password(), self.crypt_salt(8), magic)

    def yescrypt(self) -> str:
        """A ``$y$`` hash of Debian's default parameters (shape: salt and hash are random)."""
        return f"$y$j9T${self.crypt_salt(22)}${self.crypt_salt(43)}"

    def bcrypt(self, version: str = "2y", cost: int = 10) -> str:
        """A bcrypt hash (shape: 22-char salt and 31-char hash are random)."""
        body = "".join(self.rng.choice(BCRYPT64) for _ in range(53))
        return f"${version}${cost:02d}${body}"

    def ldap_ssha(self) -> str:
        salt = self.randbytes(8)
        digest = hashlib.sha1(self.password().encode() + salt).digest()
        return "{SSHA}" + base64.b64encode(digest + salt).decode()

    def htpasswd_sha(self) -> str:
        return "{SHA}" + base64.b64encode(hashlib.sha1(self.password().encode()).digest()).decode()

    def mysql_native(self) -> str:
        inner = hashlib.sha1(self.password().encode()).digest()
        return "*" + hashlib.sha1(inner).hexdigest().upper()

    def scram_sha256(self) -> str:
        """PostgreSQL's SCRAM-SHA-256 verifier, computed for real (4096 iterations)."""
        salt = self.randbytes(16)
        salted = hashlib.pbkdf2_hmac("sha256", self.password().encode(), salt, 4096)
        client = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored = hashlib.sha256(client).digest()
        server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        b = base64.b64encode
        return f"SCRAM-SHA-256$4096:{b(salt).decode()}${b(stored).decode()}:{b(server).decode()}"

    def grub_pbkdf2(self) -> str:
        salt = self.randbytes(64)
        digest = hashlib.pbkdf2_hmac("sha512", self.password().encode(), salt, 10000)
        return f"grub.pbkdf2.sha512.10000.{salt.hex().upper()}.{digest.hex().upper()}"

    def django_pbkdf2(self) -> str:
        """Django's ``pbkdf2_sha256$600000$salt$hash`` (shape: hash is random)."""
        return f"pbkdf2_sha256$600000${self.alnum(22)}${self.b64(32)}"

    def mosquitto_hash(self) -> str:
        salt = self.randbytes(12)
        digest = hashlib.pbkdf2_hmac("sha512", self.password().encode(), salt, 101)
        b = base64.b64encode
        return f"$7$101${b(salt).decode()}${b(digest).decode()}"

    # --- key material --------------------------------------------------------------------------

    def _prime(self, bits: int) -> int:
        while True:
            candidate = self.rng.getrandbits(bits) | (3 << (bits - 2)) | 1
            if math.gcd(candidate, _SMALL_PRIMES) != 1 or (candidate - 1) % 65537 == 0:
                continue
            if pow(2, candidate - 1, candidate) == 1 and self._probable_prime(candidate):
                return candidate

    def _probable_prime(self, n: int, rounds: int = 6) -> bool:
        d, r = n - 1, 0
        while d % 2 == 0:
            d //= 2
            r += 1
        for _ in range(rounds):
            x = pow(self.rng.randrange(2, n - 2), d, n)
            if x in (1, n - 1):
                continue
            for _ in range(r - 1):
                x = pow(x, 2, n)
                if x == n - 1:
                    break
            else:
                return False
        return True

    def rsa_key(self, bits: int = 2048) -> rsa.RSAPrivateKey:
        """An RSA key from seeded primes (e = 65537)."""
        e = 65537
        while True:
            p, q = self._prime(bits // 2), self._prime(bits // 2)
            if p != q and (p * q).bit_length() == bits:
                break
        if p < q:
            p, q = q, p
        d = pow(e, -1, (p - 1) * (q - 1))
        numbers = rsa.RSAPrivateNumbers(
            p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), rsa.RSAPublicNumbers(e, p * q)
        )
        return numbers.private_key()

    def ec_key(self) -> ec.EllipticCurvePrivateKey:
        order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
        return ec.derive_private_key(self.rng.randrange(1, order), ec.SECP256R1())

    def ed25519_key(self) -> ed25519.Ed25519PrivateKey:
        return ed25519.Ed25519PrivateKey.from_private_bytes(self.randbytes(32))

    @staticmethod
    def pem_private(key: PrivateKey, fmt: str = "pkcs8") -> str:
        """Unencrypted PEM: ``traditional`` (BEGIN RSA/EC PRIVATE KEY) or ``pkcs8``."""
        private_format = (
            serialization.PrivateFormat.TraditionalOpenSSL
            if fmt == "traditional"
            else serialization.PrivateFormat.PKCS8
        )
        return (
            key.private_bytes(
                serialization.Encoding.PEM, private_format, serialization.NoEncryption()
            )
            .decode()
            .rstrip("\n")
        )

    def pem_encrypted_traditional(self, key: rsa.RSAPrivateKey, passphrase: str) -> str:
        """``Proc-Type: 4,ENCRYPTED`` PEM (AES-128-CBC, OpenSSL's EVP_BytesToKey with MD5)."""
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        iv = self.randbytes(16)
        secret = hashlib.md5(passphrase.encode() + iv[:8]).digest()
        padder = padding.PKCS7(128).padder()
        data = padder.update(der) + padder.finalize()
        enc = Cipher(algorithms.AES(secret), modes.CBC(iv)).encryptor()
        body = enc.update(data) + enc.finalize()
        lines = [
            "-----BEGIN RSA PRIVATE KEY-----",
            "Proc-Type: 4,ENCRYPTED",
            f"DEK-Info: AES-128-CBC,{iv.hex().upper()}",
            "",
            *wrap(base64.b64encode(body).decode()),
            "-----END RSA PRIVATE KEY-----",
        ]
        return "\n".join(lines)

    def pem_encrypted_pkcs8(self, key: PrivateKey, passphrase: str) -> str:
        """``BEGIN ENCRYPTED PRIVATE KEY`` (PBES2: PBKDF2-HMAC-SHA256 2048, AES-256-CBC)."""
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        salt, iv, iterations = self.randbytes(16), self.randbytes(16), 2048
        secret = hashlib.pbkdf2_hmac("sha256", passphrase.encode(), salt, iterations, 32)
        padder = padding.PKCS7(128).padder()
        data = padder.update(der) + padder.finalize()
        enc = Cipher(algorithms.AES(secret), modes.CBC(iv)).encryptor()
        body = enc.update(data) + enc.finalize()
        algorithm = _seq(
            _der_oid("1.2.840.113549.1.5.13"),
            _seq(
                _seq(
                    _der_oid("1.2.840.113549.1.5.12"),
                    _seq(
                        _der(0x04, salt),
                        _der_int(iterations),
                        _seq(_der_oid("1.2.840.113549.2.9"), b"\x05\x00"),
                    ),
                ),
                _seq(_der_oid("2.16.840.1.101.3.4.1.42"), _der(0x04, iv)),
            ),
        )
        info = _seq(algorithm, _der(0x04, body))
        lines = [
            "-----BEGIN ENCRYPTED PRIVATE KEY-----",
            *wrap(base64.b64encode(info).decode()),
            "-----END ENCRYPTED PRIVATE KEY-----",
        ]
        return "\n".join(lines)

    @staticmethod
    def _ssh_key_parts(key: PrivateKey) -> tuple[bytes, bytes]:
        """(public blob, private fields) of an OpenSSH private key section."""
        if isinstance(key, ed25519.Ed25519PrivateKey):
            pub = key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            seed = key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            name = b"ssh-ed25519"
            return ssh_string(name) + ssh_string(pub), (
                ssh_string(name) + ssh_string(pub) + ssh_string(seed + pub)
            )
        if isinstance(key, rsa.RSAPrivateKey):
            nums = key.private_numbers()
            pubn = nums.public_numbers
            name = b"ssh-rsa"
            public = ssh_string(name) + ssh_mpint(pubn.e) + ssh_mpint(pubn.n)
            private = (
                ssh_string(name)
                + ssh_mpint(pubn.n)
                + ssh_mpint(pubn.e)
                + ssh_mpint(nums.d)
                + ssh_mpint(nums.iqmp)
                + ssh_mpint(nums.p)
                + ssh_mpint(nums.q)
            )
            return public, private
        point = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        name = b"ecdsa-sha2-nistp256"
        public = ssh_string(name) + ssh_string(b"nistp256") + ssh_string(point)
        private = public + ssh_mpint(key.private_numbers().private_value)
        return public, private

    def openssh_private(self, key: PrivateKey, comment: str, encrypted: bool = False) -> str:
        """``BEGIN OPENSSH PRIVATE KEY`` (openssh-key-v1), optionally aes256-ctr + bcrypt KDF.

        An encrypted key's ciphertext is real AES-256-CTR output under a random key: a scanner
        cannot tell it from one derived with bcrypt_pbkdf from a passphrase.
        """
        public, private = self._ssh_key_parts(key)
        check = self.randbytes(4)
        section = check + check + private + ssh_string(comment.encode())
        block = 16 if encrypted else 8
        pad = 1
        while len(section) % block:
            section += bytes([pad])
            pad += 1
        if encrypted:
            enc = Cipher(algorithms.AES(self.randbytes(32)), modes.CTR(self.randbytes(16)))
            encryptor = enc.encryptor()
            section = encryptor.update(section) + encryptor.finalize()
            head = (
                ssh_string(b"aes256-ctr")
                + ssh_string(b"bcrypt")
                + ssh_string(ssh_string(self.randbytes(16)) + (16).to_bytes(4, "big"))
            )
        else:
            head = ssh_string(b"none") + ssh_string(b"none") + ssh_string(b"")
        blob = b"openssh-key-v1\0" + head + (1).to_bytes(4, "big")
        blob += ssh_string(public) + ssh_string(section)
        lines = [
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            *wrap(base64.b64encode(blob).decode(), 70),
            "-----END OPENSSH PRIVATE KEY-----",
        ]
        return "\n".join(lines)

    @staticmethod
    def openssh_public(key: PrivateKey, comment: str) -> str:
        line = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        return f"{line.decode()} {comment}".strip()

    @staticmethod
    def pem_public(key: PrivateKey) -> str:
        return (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
            .rstrip("\n")
        )

    def putty_ppk(self, comment: str, encrypted: bool = False) -> str:
        """PuTTY-User-Key-File-3 for an Ed25519 key (MAC computed as PuTTY does unencrypted;
        an encrypted file carries Argon2id parameters and a random private blob)."""
        key = self.ed25519_key()
        algorithm = b"ssh-ed25519"
        pub_raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        public_blob = ssh_string(algorithm) + ssh_string(pub_raw)
        private_blob = ssh_mpint(int.from_bytes(seed, "little"))
        if encrypted:
            private_blob = self.randbytes(48)
        mac_data = b"".join(
            ssh_string(part)
            for part in (
                algorithm,
                b"aes256-cbc" if encrypted else b"none",
                comment.encode(),
                public_blob,
                private_blob,
            )
        )
        mac = hmac.new(self.randbytes(32) if encrypted else b"", mac_data, hashlib.sha256)
        pub_lines = wrap(base64.b64encode(public_blob).decode())
        priv_lines = wrap(base64.b64encode(private_blob).decode())
        lines = [f"PuTTY-User-Key-File-3: {algorithm.decode()}"]
        if encrypted:
            lines += [
                "Encryption: aes256-cbc",
                f"Comment: {comment}",
                f"Public-Lines: {len(pub_lines)}",
                *pub_lines,
                "Key-Derivation: Argon2id",
                "Argon2-Memory: 8192",
                "Argon2-Passes: 13",
                "Argon2-Parallelism: 1",
                f"Argon2-Salt: {self.randbytes(16).hex()}",
            ]
        else:
            lines += [
                "Encryption: none",
                f"Comment: {comment}",
                f"Public-Lines: {len(pub_lines)}",
                *pub_lines,
            ]
        lines += [f"Private-Lines: {len(priv_lines)}", *priv_lines]
        lines.append(f"Private-MAC: {mac.hexdigest()}")
        return "\n".join(lines)

    def pgp_private_block(self) -> str:
        """An armoured OpenPGP secret-key block (random packet body, valid CRC-24)."""
        body = self.randbytes(940)
        packet = bytes([0x95, 0x03, 0xB1, 0x04]) + _CLAIM_TIME.to_bytes(4, "big") + b"\x01" + body
        checksum = base64.b64encode(crc24(packet).to_bytes(3, "big")).decode()
        lines = [
            "-----BEGIN PGP PRIVATE KEY BLOCK-----",
            "",
            *wrap(base64.b64encode(packet).decode()),
            f"={checksum}",
            "-----END PGP PRIVATE KEY BLOCK-----",
        ]
        return "\n".join(lines)

    def pgp_public_block(self) -> str:
        """An armoured OpenPGP public-key block (as apt keyrings ship)."""
        body = self.randbytes(520)
        packet = bytes([0x99, 0x02, 0x0D, 0x04]) + _CLAIM_TIME.to_bytes(4, "big") + b"\x01" + body
        checksum = base64.b64encode(crc24(packet).to_bytes(3, "big")).decode()
        lines = [
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "",
            *wrap(base64.b64encode(packet).decode()),
            f"={checksum}",
            "-----END PGP PUBLIC KEY BLOCK-----",
        ]
        return "\n".join(lines)

    def pgp_signature(self) -> str:
        body = self.randbytes(300)
        packet = bytes([0x89, 0x01, 0x2C, 0x04, 0x00, 0x01, 0x0A]) + body
        checksum = base64.b64encode(crc24(packet).to_bytes(3, "big")).decode()
        lines = [
            "-----BEGIN PGP SIGNATURE-----",
            "",
            *wrap(base64.b64encode(packet).decode()),
            f"={checksum}",
            "-----END PGP SIGNATURE-----",
        ]
        return "\n".join(lines)

    def openvpn_static_key(self) -> str:
        lines = [
            "-----BEGIN OpenVPN Static key V1-----",
            *(self.hex(32) for _ in range(16)),
            "-----END OpenVPN Static key V1-----",
        ]
        return "\n".join(lines)

    def certificate(
        self,
        cn: str,
        subject_key: PrivateKey,
        issuer: tuple[str, rsa.RSAPrivateKey] | None = None,
        ca: bool = False,
    ) -> x509.Certificate:
        """A certificate for ``subject_key``; signed by ``issuer`` (cn, RSA key), else self-signed
        (then ``subject_key`` must be RSA). PKCS#1 v1.5 signatures keep it deterministic."""
        if issuer is None:
            if not isinstance(subject_key, rsa.RSAPrivateKey):
                raise TypeError("a self-signed corpus certificate needs an RSA key")
            issuer = (cn, subject_key)
        now = dt.datetime(2024, 1, 15, tzinfo=dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]))
            .public_key(subject_key.public_key())
            .serial_number(self.rng.getrandbits(120) + 1)
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=3650 if ca else 398))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        return builder.sign(issuer[1], hashes.SHA256())

    @staticmethod
    def cert_pem(cert: x509.Certificate) -> str:
        return cert.public_bytes(serialization.Encoding.PEM).decode().rstrip("\n")

    @staticmethod
    def jwk_private(key: rsa.RSAPrivateKey) -> dict[str, str]:
        """An RSA private key as a JWK (certbot's private_key.json)."""
        nums = key.private_numbers()

        def enc(n: int) -> str:
            return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))

        return {
            "n": enc(nums.public_numbers.n),
            "e": enc(nums.public_numbers.e),
            "d": enc(nums.d),
            "p": enc(nums.p),
            "q": enc(nums.q),
            "dp": enc(nums.dmp1),
            "dq": enc(nums.dmq1),
            "qi": enc(nums.iqmp),
            "kty": "RSA",
        }
