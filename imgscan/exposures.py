"""What a copy of the image grants: findings grouped into exposures.

A list of secrets is not what the person deciding whether an image may be copied needs; they
need "a copy can log into postgresql://db.internal:5432/hr as hr_app", "a copy can act as this
host (its SSH host keys)". `build_exposures` turns findings into such statements: each has a
kind, a target, a principal (when the image says), a severity (the worst of its findings), the
findings behind it, and what to do about it, with the virt-sysprep operations that remove the
artifacts where there are some. Pure: it reads only the findings (their rule, category, path,
validation and context) and the clues (detect/usage.py: where the image says its keys are
used), so every reader and every report gets the same exposures.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from imgscan.model import Clue, Exposure, Finding, Severity

# Every kind build_exposures gives an exposure (policy files name them).
EXPOSURE_KINDS = (
    "database",
    "cloud",
    "saas",
    "ssh",
    "identity",
    "account",
    "network",
    "login",
    "kubernetes",
    "key",
    "credential",
)
_HOST_KEY = re.compile(r"^/etc/ssh/ssh_host_[a-z0-9]+_key$")
_TLS_DIRS = ("/etc/ssl/private/", "/etc/pki/tls/private/", "/etc/letsencrypt/")
_HOME = re.compile(r"^(?:/home/(?P<user>[^/]+)|/root|C:\\Users\\(?P<win>[^\\]+))(?:[/\\]|$)")
# The keys ssh offers when neither the command line nor ~/.ssh/config names one.
_DEFAULT_KEYS = frozenset(
    ("id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519", "id_ed25519_sk", "id_dsa", "id_xmss")
)
_MAX_TARGET_HOSTS = 4
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
    "upstash-redis-rest-token": "redis",
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
    "gcs": "Google Cloud",
    "yandex": "Yandex Cloud",
    "exoscale": "Exoscale",
    "ovh": "OVHcloud",
    "mongodb": "MongoDB Atlas",
    "confluent": "Confluent Cloud",
    "vercel": "Vercel",
    "deno": "Deno Deploy",
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


def _home(path: str) -> str | None:
    match = _HOME.match(path)
    return match.group(0).rstrip("/\\") if match else None


def _resolve(identity: str, home: str) -> str:
    """An IdentityFile or `ssh -i` argument as a guest path (~ and %d are the home; a relative
    path is taken from the home, where shells and ssh start)."""
    for prefix in ("~/", "%d/"):
        if identity.startswith(prefix):
            return f"{home}/{identity[len(prefix) :]}"
    return identity if identity.startswith("/") else f"{home}/{identity}"


def ssh_hosts(key_path: str, clues: Iterable[Clue]) -> tuple[str, ...]:
    """The hosts the image says the SSH key at `key_path` is used for, as `user@host` or
    `host`: ~/.ssh/config blocks and shell-history commands that name the key, and, for a key
    ssh offers by default (id_rsa, id_ed25519, ...), the blocks and commands that name no key
    and the hosts in the owner's known_hosts."""
    home = _home(key_path)
    if home is None or "!/" in key_path:
        return ()
    default = key_path.rsplit("/", 1)[-1] in _DEFAULT_KEYS
    hosts: set[str] = set()
    for clue in clues:
        own = clue.path.startswith(home + "/")
        identity = clue.get("identity")
        if identity:
            named = _resolve(identity, _home(clue.path) or home)
            if named != key_path or clue.get("host") == "*":
                continue
        elif not (own and default):
            continue
        host = clue.get("host")
        if host and host != "*":
            user = clue.get("user")
            hosts.add(f"{user}@{host}" if user else host)
    # A host named with its user somewhere says more than the bare name: keep that one.
    with_user = {h.split("@", 1)[1] for h in hosts if "@" in h}
    return tuple(sorted(h for h in hosts if "@" in h or h not in with_user))


def _certificate(f: Finding, clues: Iterable[Clue]) -> Clue | None:
    """The certificate on the image whose public key is the private key's, if there is one
    (the one nearest the key's directory when several are)."""
    key_id = dict(f.context).get("public_key")
    if not key_id:
        return None
    matches = [c for c in clues if c.kind == "certificate" and c.get("public_key") == key_id]
    folder = f.path.rsplit("/", 1)[0]
    return min(
        matches,
        key=lambda c: (not c.path.startswith(folder), c.get("ca") == "yes", c.path),
        default=None,
    )


def _host_list(hosts: tuple[str, ...]) -> str:
    shown = ", ".join(hosts[:_MAX_TARGET_HOSTS])
    more = len(hosts) - _MAX_TARGET_HOSTS
    return shown + (f" and {more} more" if more > 0 else "")


_Class = tuple[str, str, str | None, str, tuple[str, ...], tuple[tuple[str, str], ...]]


def _classify(f: Finding, clues: tuple[Clue, ...]) -> _Class:
    """(kind, target, principal, remediation, virt-sysprep operations, details) of one
    finding."""
    kind, target, principal, remediation, sysprep = _classify_finding(f, clues)
    details: list[tuple[str, str]] = []
    if f.category == "private-key":
        encrypted = any("encrypted key" in c.detail for c in f.validation.checks)
        details.append(("encrypted", "yes" if encrypted else "no"))
        key_id = dict(f.context).get("public_key")
        if key_id:
            details.append(("public_key", key_id))
    if kind == "ssh":
        hosts = ssh_hosts(f.path.split("!/", 1)[0], clues)
        if hosts:
            details.append(("hosts", ", ".join(hosts)))
    details.extend(_windows_details(f))
    cert = _certificate(f, clues) if f.category == "private-key" else None
    if cert is not None:
        details.extend(
            (key, cert.get(key)) for key in ("subject", "sans", "not_after") if cert.get(key)
        )
        details.append(("certificate", cert.path))
    return kind, target, principal, remediation, sysprep, tuple(details)


def _network_target(f: Finding, ctx: dict[str, str], path: str) -> str:
    if "ssid" in ctx:
        return f"Wi-Fi network {ctx['ssid']}"
    name = re.sub(r"\.(?:conf|nmconnection|ovpn)$", "", path.rsplit("/", 1)[-1])
    if f.rule.startswith("wireguard"):
        return f"WireGuard VPN {name}"
    if f.rule.startswith("openvpn"):
        return f"OpenVPN {name}"
    return "network / VPN credentials"


_SCRIPT_REMEDIATION = "remove the password from the script or history and change it"
# Windows credentials (registry values, files by path, Windows text formats; the pack's
# registry.toml, files.toml, patterns/windows.toml): rule id -> (kind, remediation). Their
# targets come from `_windows_target`. Without this, a saved RDP password with its host would
# read as a database and a SAM record as an anonymous "local account".
_WINDOWS = {
    "windows-sam-account-hash": (
        "account",
        "set new passwords for the local accounts in the copy (the NT hashes work for "
        "pass-the-hash until then)",
    ),
    "windows-lsa-secret": (
        "credential",
        "change the passwords of the services and accounts whose secrets LSA keeps; give the "
        "copy its own machine account (rejoin the domain)",
    ),
    "windows-dpapi-master-key": (
        "key",
        "change the account's password and remove the secrets DPAPI protects with these keys "
        "(saved RDP, browser and Wi-Fi passwords) from the copy",
    ),
    "windows-autologon-password": (
        "login",
        "turn auto-logon off (delete DefaultPassword) and change the account's password",
    ),
    "putty-proxy-password": ("login", "delete the saved proxy password and change it"),
    "winscp-session-password": ("login", "delete the saved session password and change it"),
    "realvnc-server-password": ("login", "set a new VNC password (or remove the VNC server)"),
    "tightvnc-server-password": ("login", "set a new VNC password (or remove the VNC server)"),
    "rdp-file-password": ("login", "delete the saved password and change it"),
    "rdcman-password": ("login", "delete the saved passwords and change them"),
    "filezilla-password": ("login", "delete the saved site passwords and change them"),
    "windows-net-use-password": ("login", _SCRIPT_REMEDIATION),
    "windows-cli-password": ("login", _SCRIPT_REMEDIATION),
    "powershell-securestring-password": ("login", _SCRIPT_REMEDIATION),
    "windows-unattend-password": (
        "account",
        "delete the answer file from the copy and change the passwords it set",
    ),
    "windows-sysprep-inf-password": (
        "account",
        "delete the answer file from the copy and change the passwords it set",
    ),
    "gpp-cpassword": (
        "account",
        "remove the cpassword from the Group Policy Preferences (MS14-025) and change the "
        "account's password: every domain user can read and decrypt it",
    ),
    "iis-config-password": ("account", "change the account's password; encrypt the section"),
    "keepass-database": (
        "credential",
        "move the database off the image; if its master password is on the image too, change "
        "every password in it",
    ),
    "keepass-master-password-note": (
        "credential",
        "delete the note; change the master password and every password in the database",
    ),
    "aspnet-machine-key": (
        "identity",
        "generate a new machineKey for the copy (with it, anyone forges authentication "
        "cookies and ViewState for the site)",
    ),
}
_SYSTEM_DPAPI = re.compile(r"^[A-Za-z]:\\Windows\\System32\\Microsoft\\Protect\\", re.I)


def _windows_target(f: Finding, ctx: dict[str, str], path: str) -> tuple[str, str | None]:
    """(target, principal) of a finding of a Windows rule (one of `_WINDOWS`)."""
    user = ctx.get("user") or _owner(path)
    if f.rule == "windows-sam-account-hash":
        return "Local account password hashes (SAM)", ctx.get("user")
    if f.rule == "windows-lsa-secret":
        return "LSA secrets (SECURITY hive)", None
    if f.rule == "windows-dpapi-master-key":
        owner = "SYSTEM" if _SYSTEM_DPAPI.match(path) else _owner(path)
        return "DPAPI master keys", owner
    if f.rule == "windows-autologon-password":
        domain = ctx.get("domain")
        account = f"{domain}\\{ctx['user']}" if domain and ctx.get("user") else ctx.get("user")
        return "Windows auto-logon password", account
    if f.rule == "putty-proxy-password":
        proxy = ctx.get("host", "?")
        server = ctx.get("server")
        return f"proxy {proxy}" + (f" (PuTTY session to {server})" if server else ""), user
    if f.rule == "winscp-session-password":
        server = ctx.get("host", "?") + (f":{ctx['port']}" if "port" in ctx else "")
        return f"WinSCP session to {server}", ctx.get("user")
    if f.rule.endswith("vnc-server-password"):
        product = "RealVNC" if f.rule.startswith("realvnc") else "TightVNC"
        return f"VNC server password ({product})", _owner(path)
    host = ctx.get("host")
    if f.rule in ("rdp-file-password", "rdcman-password"):
        return (f"Remote Desktop to {host}" if host else "Remote Desktop servers"), user
    if f.rule == "filezilla-password":
        return (f"FTP/SFTP server {host}" if host else "FTP/SFTP servers (FileZilla)"), user
    if f.rule in ("windows-unattend-password", "windows-sysprep-inf-password"):
        return "Windows setup answer file (Administrator / auto-logon password)", ctx.get("user")
    if f.rule == "gpp-cpassword":
        return "Group Policy Preferences password", ctx.get("user")
    if f.rule == "iis-config-password":
        return "IIS application pool or virtual directory account", ctx.get("user")
    if f.rule.startswith("keepass-"):
        return "KeePass password database", _owner(path)
    if f.rule == "aspnet-machine-key":
        return "ASP.NET machine key of the site", None
    # net use, cmdkey, ConvertTo-SecureString in scripts and shell history
    return (f"Windows logon to {host}" if host else "Windows account password in a script"), user


def _windows_details(f: Finding) -> list[tuple[str, str]]:
    """What a Windows finding adds to its exposure: the LSA secrets' names, whether
    auto-logon is on, which PuTTY/WinSCP sessions."""
    ctx = dict(f.context)
    if f.rule == "windows-lsa-secret" and "secret_name" in ctx:
        return [("secrets", ctx["secret_name"])]
    if f.rule == "windows-autologon-password":
        return [("auto-logon", "on" if ctx.get("autologon") == "1" else "off")]
    if f.rule in ("putty-proxy-password", "winscp-session-password") and "session" in ctx:
        return [("sessions", ctx["session"])]
    return []


def _classify_finding(
    f: Finding, clues: tuple[Clue, ...]
) -> tuple[str, str, str | None, str, tuple[str, ...]]:
    """(kind, target, principal, remediation, virt-sysprep operations) of one finding."""
    ctx = dict(f.context)
    path = f.path.split("!/", 1)[0]
    if f.rule in _WINDOWS:
        kind, remediation = _WINDOWS[f.rule]
        target, principal = _windows_target(f, ctx, path)
        return kind, target, principal, remediation, ()
    if f.category == "private-key" and _HOST_KEY.match(path):
        return (
            "identity",
            "this host's SSH identity (host keys)",
            None,
            "regenerate the SSH host keys in the copy",
            ("ssh-hostkeys",),
        )
    cert = _certificate(f, clues) if f.category == "private-key" else None
    if cert is not None and cert.get("ca") == "yes":
        return (
            "identity",
            f"certificate authority {cert.get('subject')} (can issue certificates)",
            None,
            "move the CA key off the image; if the copy leaves your control, revoke the CA and "
            "reissue what it signed",
            (),
        )
    if cert is not None:
        names = cert.get("sans") or cert.get("subject")
        return (
            "identity",
            f"TLS identity of {names}",
            None,
            "give the copy its own key and certificate; revoke this one if the copy leaves "
            "your control",
            (),
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
    if f.rule == "machine-id":
        return (
            "identity",
            "this host's machine ID",
            None,
            "give the copy a new machine ID (empty /etc/machine-id: systemd makes one at boot)",
            ("machine-id",),
        )
    if f.rule == "cloud-init-instance":
        return (
            "identity",
            "this host's cloud instance (cloud-init data)",
            None,
            "run `cloud-init clean` in the copy, so it sets itself up as a new instance",
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
            _network_target(f, ctx, path),
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
            hosts = ssh_hosts(path, clues)
            return (
                "ssh",
                f"SSH to {_host_list(hosts)}" if hosts else "SSH servers that trust this key",
                owner,
                "remove the key from the copy and from authorized_keys where it is trusted",
                ("ssh-userdir",),
            )
        return ("key", f"private key ({f.rule})", owner, "replace the key and revoke it", ())
    if f.category == "cloud":
        provider = _CLOUDS.get(f.rule.split("-")[0], f.rule.split("-")[0])
        # An identifier (an AWS access key ID) names itself; its secret names the identifier
        # it was found with (scan/worker.py pairs them): one credential, one exposure.
        principal = ctx.get("principal")
        return ("cloud", provider, principal, "rotate the key in the provider's console", ())
    if f.category == "kubernetes":
        return (
            "kubernetes",
            "Kubernetes cluster" + (f" {ctx['host']}" if "host" in ctx else ""),
            ctx.get("user"),
            "revoke the credential in the cluster",
            (),
        )
    if f.category == "container":
        registry = "container registry" + (f" {ctx['host']}" if "host" in ctx else "")
        return (
            "saas",
            registry,
            ctx.get("user"),
            "log the copy out of the registry (docker logout) and rotate the password or token",
            (),
        )
    if f.category in ("saas", "vcs", "token"):
        service = f.rule.split("-")[0]
        return ("saas", service, None, f"revoke the {service} token and issue a new one", ())
    return (
        "credential",
        f"credential in {path}",
        ctx.get("user") or _owner(path),
        "rotate the credential",
        (),
    )


def build_exposures(
    findings: Iterable[Finding], clues: Iterable[Clue] = ()
) -> tuple[Exposure, ...]:
    """Exposures of `findings`, the most severe first, with what `clues` say about where keys
    are used. Info findings (test fixtures) are listed as findings only: they grant nothing
    by themselves."""
    known = tuple(clues)
    groups: dict[tuple[str, str, str | None], list[Finding]] = {}
    about: dict[tuple[str, str, str | None], tuple[str, tuple[str, ...]]] = {}
    details: dict[tuple[str, str, str | None], dict[str, set[str]]] = {}
    for finding in findings:
        if finding.severity is Severity.INFO:
            continue
        kind, target, principal, remediation, sysprep, facts = _classify(finding, known)
        key = (kind, target, principal)
        groups.setdefault(key, []).append(finding)
        about.setdefault(key, (remediation, sysprep))
        merged = details.setdefault(key, {})
        for name, value in facts:
            merged.setdefault(name, set()).add(value)
    exposures = []
    for (kind, target, principal), members in groups.items():
        remediation, sysprep = about[(kind, target, principal)]
        merged = details[(kind, target, principal)]
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
                details=tuple((name, "; ".join(sorted(merged[name]))) for name in sorted(merged)),
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
