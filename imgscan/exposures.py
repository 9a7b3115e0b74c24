"""What a copy of the image grants: findings grouped into exposures.

A list of secrets is not what the person deciding whether an image may be copied needs; they
need "a copy can log into postgresql://db.internal:5432/hr as hr_app", "a copy can act as this
host (its SSH host keys)". `build_exposures` turns findings into such statements: each has a
kind, a target, a principal (when the image says), a severity (the worst of its findings), the
findings behind it, and what to do about it, with the virt-sysprep operations that remove the
artifacts where there are some. Pure: it reads only the findings (their rule, category, path,
validation and context), so every reader and every report gets the same exposures.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from imgscan.model import Exposure, Finding, Severity

_HOST_KEY = re.compile(r"^/etc/ssh/ssh_host_[a-z0-9]+_key$")
_TLS_DIRS = ("/etc/ssl/private/", "/etc/pki/tls/private/", "/etc/letsencrypt/")
_HOME = re.compile(r"^(?:/home/(?P<user>[^/]+)|/root|C:\\Users\\(?P<win>[^\\]+))(?:[/\\]|$)")
# What a URL scheme, a port or a host name says about the engine behind a credential.
_SCHEMES = {
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "pgsql": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "mongodb": "mongodb",
    "mongodb+srv": "mongodb",
    "redis": "redis",
    "rediss": "redis",
    "amqp": "amqp",
    "amqps": "amqp",
    "sqlserver": "sqlserver",
    "mssql": "sqlserver",
    "oracle": "oracle",
}
_PORTS = {
    "5432": "postgresql",
    "3306": "mysql",
    "27017": "mongodb",
    "6379": "redis",
    "5672": "amqp",
    "1433": "sqlserver",
    "1521": "oracle",
}
_HOST_HINTS = (
    ("postgres", "postgresql"),
    ("pg", "postgresql"),
    ("mysql", "mysql"),
    ("maria", "mysql"),
    ("mongo", "mongodb"),
    ("redis", "redis"),
    ("mssql", "sqlserver"),
    ("sql", "sqlserver"),
    ("oracle", "oracle"),
)
# Engines named by the rule that found the credential, when its line does not say.
_ENGINES = {
    "pgpass-password": "postgresql",
    "mysql-cnf-password": "mysql",
    "redis-requirepass": "redis",
    "connection-string-password": "sqlserver",
}
_NETWORK_RULES = ("wifi-psk", "ipsec-psk", "openvpn", "wireguard", "networkmanager")
_CLOUDS = {
    "aws": "Amazon Web Services",
    "gcp": "Google Cloud",
    "gcloud": "Google Cloud",
    "google": "Google Cloud",
    "azure": "Microsoft Azure",
    "alibaba": "Alibaba Cloud",
    "digitalocean": "DigitalOcean",
    "ibm": "IBM Cloud",
    "heroku": "Heroku",
    "terraform": "Terraform Cloud",
}


def _engine(rule: str, ctx: dict[str, str]) -> str:
    """The database engine: the URL's scheme, the rule, the port, a hint in the host name."""
    scheme = ctx.get("scheme", "").lower()
    if scheme:
        return _SCHEMES.get(scheme, scheme)
    if rule in _ENGINES:
        return _ENGINES[rule]
    for prefix, engine in _SCHEMES.items():
        if rule.startswith(prefix + "-"):
            return engine
    if ctx.get("port") in _PORTS:
        return _PORTS[ctx["port"]]
    host = ctx.get("host", "").lower()
    return next((engine for hint, engine in _HOST_HINTS if hint in host), "database")


def _owner(path: str) -> str | None:
    match = _HOME.match(path)
    if match is None:
        return None
    return match.group("user") or match.group("win") or "root"


def _classify(f: Finding) -> tuple[str, str, str | None, str, tuple[str, ...]]:
    """(kind, target, principal, remediation, virt-sysprep operations) of one finding."""
    ctx = dict(f.context)
    path = f.path.split("!/", 1)[0]
    if f.category == "private-key" and _HOST_KEY.match(path):
        return (
            "identity",
            "this host's SSH identity (host keys)",
            None,
            "regenerate the SSH host keys in the copy",
            ("ssh-hostkeys",),
        )
    if f.category == "private-key" and path.startswith(_TLS_DIRS):
        return (
            "identity",
            "this host's TLS identity (private key)",
            None,
            "give the copy its own key and certificate; revoke this one if the copy leaves "
            "your control",
            (),
        )
    if f.rule in ("kerberos-keytab", "kerberos-keytab-file"):
        return (
            "identity",
            "this host's Kerberos principals (keytab)",
            None,
            "join the copy to the realm under its own name; rotate the principals' keys",
            ("kerberos-hostkeytab",),
        )
    if f.category == "password-hash":
        common = any("common password" in c.detail for c in f.validation.checks)
        return (
            "account",
            "local account" + (" (common password)" if common else ""),
            ctx.get("user") or _owner(path),
            "set new passwords (or lock the accounts) in the copy",
            (),
        )
    if any(f.rule.startswith(prefix) for prefix in _NETWORK_RULES):
        return (
            "network",
            f"Wi-Fi network {ctx['ssid']}" if "ssid" in ctx else "network / VPN credentials",
            ctx.get("user"),
            "change the network's pre-shared key or the VPN credentials",
            ("net-nmconn",) if "networkmanager" in f.rule or "system-connections" in path else (),
        )
    if f.rule.startswith("netrc") and "host" in ctx:
        return (
            "login",
            ctx["host"],
            ctx.get("user"),
            "change the password on that host (netrc logins are used by ftp, curl and git)",
            (),
        )
    has_target = "host" in ctx or "scheme" in ctx
    if f.category == "database" or (f.category == "password" and has_target):
        engine = _engine(f.rule, ctx)
        host = ctx.get("host", "?")
        target = f"{engine}://{host}" + (f":{ctx['port']}" if "port" in ctx else "")
        target += f"/{ctx['database']}" if "database" in ctx else ""
        return (
            "database",
            target,
            ctx.get("user"),
            "rotate the database password and give the copy its own account",
            (),
        )
    if f.category == "private-key":
        owner = _owner(path)
        ssh_key = "/.ssh/" in path or "\\.ssh\\" in path or "ssh" in f.rule or "putty" in f.rule
        if owner is not None and ssh_key:
            return (
                "ssh",
                "SSH servers that trust this key",
                owner,
                "remove the key from the copy and from authorized_keys where it is trusted",
                ("ssh-userdir",),
            )
        return ("key", f"private key ({f.rule})", owner, "replace the key and revoke it", ())
    if f.category == "cloud":
        provider = _CLOUDS.get(f.rule.split("-")[0], f.rule.split("-")[0])
        principal = f.preview if f.rule == "aws-access-key-id" else None
        return ("cloud", provider, principal, "rotate the key in the provider's console", ())
    if f.category == "kubernetes":
        return (
            "kubernetes",
            "Kubernetes cluster" + (f" {ctx['host']}" if "host" in ctx else ""),
            ctx.get("user"),
            "revoke the credential in the cluster",
            (),
        )
    if f.category in ("saas", "vcs", "token", "container"):
        service = f.rule.split("-")[0]
        return ("saas", service, None, f"revoke the {service} token and issue a new one", ())
    return (
        "credential",
        f"credential in {path}",
        ctx.get("user") or _owner(path),
        "rotate the credential",
        (),
    )


def build_exposures(findings: Iterable[Finding]) -> tuple[Exposure, ...]:
    """Exposures of `findings`, the most severe first. Info findings (test fixtures) are
    listed as findings only: they grant nothing by themselves."""
    groups: dict[tuple[str, str, str | None], list[Finding]] = {}
    about: dict[tuple[str, str, str | None], tuple[str, tuple[str, ...]]] = {}
    for finding in findings:
        if finding.severity is Severity.INFO:
            continue
        kind, target, principal, remediation, sysprep = _classify(finding)
        key = (kind, target, principal)
        groups.setdefault(key, []).append(finding)
        about.setdefault(key, (remediation, sysprep))
    exposures = []
    for (kind, target, principal), members in groups.items():
        remediation, sysprep = about[(kind, target, principal)]
        worst = max(members, key=lambda f: f.severity.rank).severity
        exposures.append(
            Exposure(
                kind=kind,
                target=target,
                principal=principal,
                severity=worst,
                evidence=tuple(sorted(f.fingerprint for f in members)),
                paths=tuple(sorted({f.path for f in members})),
                remediation=remediation,
                sysprep=sysprep,
            )
        )
    return tuple(
        sorted(exposures, key=lambda e: (-e.severity.rank, e.kind, e.target, e.principal or ""))
    )


def sysprep_command(image: str, exposures: Iterable[Exposure]) -> str | None:
    """A virt-sysprep command line that removes what the exposures' operations cover."""
    operations = sorted({op for e in exposures for op in e.sysprep})
    if not operations:
        return None
    return f"virt-sysprep -a {image} --operations {','.join(operations)}"
