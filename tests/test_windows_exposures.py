"""Exposures of Windows findings (imgscan/exposures.py): registry values, encrypted stores
reported for their presence, and Windows text formats each say what a copy grants, to whom."""

from __future__ import annotations

from imgscan.exposures import EXPOSURE_KINDS, build_exposures
from imgscan.model import Exposure, Finding, Severity

SOFTWARE = "C:\\Windows\\System32\\config\\SOFTWARE"
SAM = "C:\\Windows\\System32\\config\\SAM"
SECURITY = "C:\\Windows\\System32\\config\\SECURITY"
NTUSER = "C:\\Users\\alice\\NTUSER.DAT"


def _finding(rule: str, path: str, category: str = "password", **context: str) -> Finding:
    return Finding(
        rule=rule,
        category=category,
        severity=Severity.HIGH,
        path=path,
        line=0,
        preview="…(8)",
        fingerprint=f"fp1:{rule}:{path}",
        context=tuple(sorted(context.items())),
    )


def _one(*findings: Finding) -> Exposure:
    (exposure,) = build_exposures(findings)
    assert exposure.kind in EXPOSURE_KINDS
    return exposure


def test_registry_values() -> None:
    winlogon = f"{SOFTWARE}!/Microsoft/Windows NT/CurrentVersion/Winlogon:DefaultPassword"
    e = _one(
        _finding("windows-autologon-password", winlogon, user="alice", domain="CORP", autologon="1")
    )
    assert (e.kind, e.target, e.principal) == (
        "login",
        "Windows auto-logon password",
        "CORP\\alice",
    )
    assert dict(e.details) == {"auto-logon": "on"}
    putty = f"{NTUSER}!/Software/SimonTatham/PuTTY/Sessions/jump:ProxyPassword"
    e = _one(_finding("putty-proxy-password", putty, host="proxy.corp", server="bastion.corp"))
    # No proxy user saved: the profile's owner is who saved it.
    assert (e.kind, e.target, e.principal) == (
        "login",
        "proxy proxy.corp (PuTTY session to bastion.corp)",
        "alice",
    )
    winscp = f"{NTUSER}!/Software/Martin Prikryl/WinSCP 2/Sessions/s:Password"
    e = _one(_finding("winscp-session-password", winscp, host="files", port="22", user="deploy"))
    assert (e.target, e.principal) == ("WinSCP session to files:22", "deploy")
    e = _one(_finding("tightvnc-server-password", f"{SOFTWARE}!/TightVNC/Server:Password"))
    assert (e.kind, e.target, e.principal) == ("login", "VNC server password (TightVNC)", None)


def test_encrypted_stores_reported_for_presence() -> None:
    users = [
        _finding(
            "windows-sam-account-hash",
            f"{SAM}!/SAM/Domains/Account/Users/{rid}:V",
            "password-hash",
            user=name,
        )
        for name, rid in (("Administrator", "000001F4"), ("alice", "000003E9"))
    ]
    got = {(e.kind, e.target, e.principal) for e in build_exposures(users)}
    assert got == {
        ("account", "Local account password hashes (SAM)", "Administrator"),
        ("account", "Local account password hashes (SAM)", "alice"),
    }
    secrets = [
        _finding(
            "windows-lsa-secret", f"{SECURITY}!/Policy/Secrets/{n}/CurrVal:(default)", secret_name=n
        )
        for n in ("_SC_Backup", "DPAPI_SYSTEM")
    ]
    e = _one(*secrets)
    assert (e.kind, e.target, e.principal) == ("credential", "LSA secrets (SECURITY hive)", None)
    assert dict(e.details) == {"secrets": "DPAPI_SYSTEM; _SC_Backup"}
    keys = [
        _finding("windows-dpapi-master-key", path, "private-key")
        for path in (
            "C:\\Users\\alice\\AppData\\Roaming\\Microsoft\\Protect\\S-1-5-21-1-2-3-1001\\0a-1",
            "C:\\Windows\\System32\\Microsoft\\Protect\\S-1-5-18\\User\\0b-2",
        )
    ]
    got = {(e.kind, e.target, e.principal) for e in build_exposures(keys)}
    assert got == {("key", "DPAPI master keys", "alice"), ("key", "DPAPI master keys", "SYSTEM")}


def test_windows_text_formats() -> None:
    rdp = _finding(
        "rdp-file-password",
        "C:\\Users\\alice\\Documents\\ts01.rdp",
        host="ts01.corp.internal",
        user="CORP\\alice",
    )
    # A host in the context does not make an RDP password a database credential.
    e = _one(rdp)
    assert (e.kind, e.target, e.principal) == (
        "login",
        "Remote Desktop to ts01.corp.internal",
        "CORP\\alice",
    )
    gpp = _finding("gpp-cpassword", "C:\\Windows\\SYSVOL\\domain\\Policies\\{X}\\Groups.xml")
    assert _one(gpp).kind == "account"
    kdbx = _finding("keepass-database", "C:\\Users\\alice\\Documents\\Passwords.kdbx")
    note = _finding("keepass-master-password-note", "C:\\Users\\alice\\Documents\\keepass.txt")
    e = _one(kdbx, note)  # the database and the note about it: one exposure
    assert (e.target, e.principal, len(e.evidence)) == ("KeePass password database", "alice", 2)
