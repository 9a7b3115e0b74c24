"""Credentials in Windows *files* on the Windows test image, and the decoys beside them.

build_windows.py plants these together with its own (registry, web.config, PowerShell token):
its ``PLANTED``, ``DECOYS`` and ``make_values()`` include this module's. The files live in
``trees-windows/win-server/c/`` as templates; ``{{NAME}}`` placeholders are filled from
:func:`make_values`, which returns fresh random values every build, already in the encoding the
file stores them in:

* a saved RDP connection's ``password 51:b:`` DPAPI blob (hex; a well-formed header around
  random ciphertext: no key opens it, the scanner only needs its shape), and the same kind of blob
  in base64 in a Remote Desktop Connection Manager group (.rdg);
* FileZilla's base64 ``<Pass>`` (sitemanager.xml) and a clear one (recentservers.xml);
* unattend.xml values with ``<PlainText>false</PlainText>``: base64 of UTF-16LE password +
  "AdministratorPassword" / "Password", what Windows SIM writes;
* a Group Policy Preferences ``cpassword``: AES-256-CBC with the key Microsoft published
  ([MS-GPPREF] 2.2.1.1.4), zero IV, PKCS#7, UTF-16LE, base64 without padding, as the Group
  Policy editor writes it;
* an IIS ``[enc:IISWASOnlyCngProvider:...:enc]`` value (random bytes in appcmd's framing).

The KeePass database (``Users/alice/Documents/Passwords.kdbx``) is a static KDBX 4 header in
the tree: the manifest can only carry text secrets (a planted value is located by its UTF-8
bytes and compared with the report's decoded secret), so it is not a manifest plant; the
master-password note next to it is.
"""

from __future__ import annotations

import base64
import secrets
import struct
import uuid

import build as base
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SYSTEM = "win-server"

# [MS-GPPREF] 2.2.1.1.4: the AES-256 key every Group Policy Preferences cpassword uses.
GPP_KEY = bytes.fromhex("4e9906e8fcb66cc9faf49310620ffee8f496e806cc057990209b09a433b66c1b")
# DPAPI's provider GUID, the same in every blob.
DPAPI_PROVIDER = uuid.UUID("df9d8cd0-1501-11d1-8c7a-00c04fc297eb")
# The public KMS client setup key (GVLK) of Windows Server 2022 Standard, from Microsoft's
# "Key Management Services (KMS) client activation and product keys": not a secret.
GVLK_SERVER_2022_STANDARD = "VDYBN-27WPP-V4HQT-9VMD4-VMK7H"

ALICE = "C:\\Users\\alice"
DOCS = f"{ALICE}\\Documents"
FILEZILLA = f"{ALICE}\\AppData\\Roaming\\FileZilla"
PSREADLINE = (
    f"{ALICE}\\AppData\\Roaming\\Microsoft\\Windows\\PowerShell\\PSReadLine"
    "\\ConsoleHost_history.txt"
)
PANTHER = "C:\\Windows\\Panther"
SYSPREP_DIR = "C:\\Windows\\System32\\sysprep"
INETSRV = "C:\\Windows\\System32\\inetsrv\\config\\applicationHost.config"
API_WEBCONFIG = "C:\\inetpub\\billing-api\\web.config"
POLICY = "C:\\Windows\\SYSVOL\\domain\\Policies\\{31B2F340-016D-11D2-945F-00C04FB984F9}"
POLICY2 = "C:\\Windows\\SYSVOL\\domain\\Policies\\{6AC1786C-016F-11D2-945F-00C04FB984F9}"
PREFS = f"{POLICY}\\Machine\\Preferences"
PREFS2 = f"{POLICY2}\\User\\Preferences"


def _plant(path: str, kind: str, value: str, after: str | None = None) -> base.Plant:
    return base.Plant(SYSTEM, path, kind, value, after)


def _decoy(path: str, kind: str, value: str, after: str | None = None) -> base.Decoy:
    return base.Decoy(SYSTEM, path, kind, value, after)


#: Credential stores reported for their presence (their content is encrypted): (guest path,
#: rule). The manifest lists them as plants without a secret.
STORES = ((f"{DOCS}\\Passwords.kdbx", "keepass-database"),)

#: Files stored as UTF-16LE with a byte-order mark, as Windows writes them (mstsc saves .rdp
#: files so): the builder re-encodes them after rendering.
UTF16 = (f"{DOCS}\\ts01.rdp",)

PLANTED = (
    _plant(f"{DOCS}\\ts01.rdp", "rdp-file-password", "WIN_RDP_PASSWORD_BLOB"),
    _plant(f"{DOCS}\\servers.rdg", "rdcman-password", "WIN_RDCMAN_BLOB"),
    _plant(f"{FILEZILLA}\\sitemanager.xml", "filezilla-password", "WIN_FZ_SITE_PASS_B64"),
    _plant(f"{FILEZILLA}\\recentservers.xml", "filezilla-password", "WIN_FZ_RECENT_PASS"),
    _plant(f"{PANTHER}\\unattend.xml", "windows-unattend-password", "WIN_UNATTEND_ADMIN_B64"),
    _plant(
        f"{PANTHER}\\unattend.xml",
        "windows-unattend-password",
        "WIN_UNATTEND_AUTOLOGON_PASSWORD",
    ),
    _plant(f"{SYSPREP_DIR}\\unattend.xml", "windows-unattend-password", "WIN_UNATTEND_LOCAL_B64"),
    _plant("C:\\sysprep\\sysprep.inf", "windows-sysprep-inf-password", "WIN_SYSPREP_ADMIN"),
    _plant("C:\\sysprep\\sysprep.inf", "windows-sysprep-inf-password", "WIN_SYSPREP_DOMAIN"),
    _plant(INETSRV, "iis-config-password", "WIN_IIS_POOL_PASSWORD"),
    _plant(INETSRV, "iis-config-password", "WIN_IIS_VDIR_ENC"),
    _plant(API_WEBCONFIG, "connection-string-password", "WIN_API_DB_PASSWORD"),
    _plant(API_WEBCONFIG, "aspnet-machine-key", "WIN_MACHINEKEY_VALIDATION"),
    _plant(API_WEBCONFIG, "aspnet-machine-key", "WIN_MACHINEKEY_DECRYPTION"),
    _plant(
        "C:\\Scripts\\map-drives.ps1", "powershell-securestring-password", "WIN_PS1_SECURESTRING"
    ),
    _plant("C:\\Scripts\\map-drives.ps1", "windows-net-use-password", "WIN_PS1_NETUSE"),
    _plant("C:\\Scripts\\deploy.bat", "windows-cli-password", "WIN_BAT_CMDKEY"),
    _plant("C:\\Scripts\\deploy.bat", "windows-net-use-password", "WIN_BAT_NETUSE"),
    _plant(PSREADLINE, "windows-cli-password", "WIN_PSHIST_CMDKEY"),
    _plant(PSREADLINE, "powershell-securestring-password", "WIN_PSHIST_SECURESTRING"),
    _plant(PSREADLINE, "windows-net-use-password", "WIN_PSHIST_NETUSE"),
    _plant(f"{PREFS}\\Groups\\Groups.xml", "gpp-cpassword", "WIN_GPP_GROUPS_CPASSWORD"),
    _plant(f"{PREFS2}\\Drives\\Drives.xml", "gpp-cpassword", "WIN_GPP_DRIVES_CPASSWORD"),
    _plant(f"{DOCS}\\keepass.txt", "keepass-master-password-note", "WIN_KEEPASS_MASTER"),
)

DECOYS = (
    # Windows Setup blanks the passwords of the answer file it keeps after setup.
    _decoy(f"{PANTHER}\\Unattend\\unattend.xml", "unattend-deleted", "*SENSITIVE*DATA*DELETED*"),
    _decoy(
        f"{PANTHER}\\Unattend\\unattend.xml",
        "unattend-encoded-placeholder",
        "@WIN_UNATTEND_PLACEHOLDER_B64",
    ),
    _decoy("C:\\Windows\\System32\\sysprep.inf", "sysprep-env-reference", "%JOIN_PASSWORD%"),
    _decoy(INETSRV, "msbuild-reference", "$(ServicePassword)"),
    _decoy(
        f"{POLICY}\\Machine\\Preferences\\Services\\Services.xml", "gpp-empty", "@WIN_GPP_EMPTY"
    ),
    _decoy("C:\\Scripts\\map-drives.ps1", "powershell-env-reference", "$env:SCANNER_PASSWORD"),
    _decoy("C:\\Scripts\\deploy.bat", "batch-variable", "%DEPLOY_PASS%"),
    _decoy("C:\\Scripts\\activate.cmd", "kms-client-key", GVLK_SERVER_2022_STANDARD),
    _decoy("C:\\Scripts\\README.txt", "documentation-placeholder", "<password>"),
    _decoy(PSREADLINE, "powershell-env-reference", "$env:DEPLOY_PASSWORD"),
    _decoy(f"{DOCS}\\keepass-howto.txt", "keepass-prose", "required"),
    _decoy(f"{DOCS}\\keepass-howto.txt", "keepass-masked", "********"),
)


def gpp_cpassword(password: str) -> str:
    """``password`` as Group Policy Preferences store it (what the published key undoes)."""
    padder = padding.PKCS7(128).padder()
    data = padder.update(password.encode("utf-16-le")) + padder.finalize()
    encryptor = Cipher(algorithms.AES(GPP_KEY), modes.CBC(bytes(16))).encryptor()
    return base64.b64encode(encryptor.update(data) + encryptor.finalize()).decode().rstrip("=")


def unattend_value(password: str, setting: str) -> str:
    """An answer-file value with ``<PlainText>false</PlainText>``: base64 of UTF-16LE
    ``password`` + ``setting`` ("AdministratorPassword" or "Password")."""
    return base64.b64encode((password + setting).encode("utf-16-le")).decode()


def dpapi_blob_hex() -> str:
    """An RDP file's ``password 51:b:`` value: the hex (upper case, as mstsc writes it) of a
    DPAPI blob with a real header (provider and a fresh master key GUID, description "Psw",
    AES-256 and SHA-512 ids) around random salt, ciphertext and signature."""
    description = "Psw".encode("utf-16-le") + b"\0\0"
    blob = b"".join(
        (
            struct.pack("<I", 1),
            DPAPI_PROVIDER.bytes_le,
            struct.pack("<I", 1),
            uuid.uuid4().bytes_le,
            struct.pack("<II", 0, len(description)),
            description,
            struct.pack("<III", 0x6610, 256, 32),  # CALG_AES_256, key bits, salt length
            secrets.token_bytes(32),
            struct.pack("<IIII", 0, 0x800E, 512, 32),  # no HMAC key, CALG_SHA_512, bits, len
            secrets.token_bytes(32),
            struct.pack("<I", 48),
            secrets.token_bytes(48),
            struct.pack("<I", 64),
            secrets.token_bytes(64),
        )
    )
    return blob.hex().upper()


def make_values() -> dict[str, str]:
    """The values of this module's templates (fresh random values every build)."""
    pw = base.rand_password
    return {
        "WIN_RDP_PASSWORD_BLOB": dpapi_blob_hex(),
        "WIN_RDCMAN_BLOB": base64.b64encode(bytes.fromhex(dpapi_blob_hex())).decode(),
        "WIN_FZ_SITE_PASS_B64": base64.b64encode(pw(16).encode()).decode(),
        "WIN_FZ_RECENT_PASS": pw(14),
        "WIN_UNATTEND_ADMIN_B64": unattend_value(pw(16), "AdministratorPassword"),
        "WIN_UNATTEND_AUTOLOGON_PASSWORD": pw(16),
        "WIN_UNATTEND_LOCAL_B64": unattend_value(pw(14), "Password"),
        "WIN_UNATTEND_PLACEHOLDER_B64": unattend_value("changeme", "Password"),
        "WIN_SYSPREP_ADMIN": pw(14),
        "WIN_SYSPREP_DOMAIN": pw(16),
        "WIN_IIS_POOL_PASSWORD": pw(18),
        "WIN_IIS_VDIR_ENC": "[enc:IISWASOnlyCngProvider:"
        + base64.b64encode(secrets.token_bytes(256)).decode()
        + ":enc]",
        "WIN_API_DB_PASSWORD": pw(20),
        "WIN_MACHINEKEY_VALIDATION": base.rand_chars("0123456789ABCDEF", 128),
        "WIN_MACHINEKEY_DECRYPTION": base.rand_chars("0123456789ABCDEF", 64),
        "WIN_PS1_SECURESTRING": pw(16),
        "WIN_PS1_NETUSE": pw(14),
        "WIN_BAT_CMDKEY": pw(14),
        "WIN_BAT_NETUSE": pw(15),
        "WIN_PSHIST_CMDKEY": pw(13),
        "WIN_PSHIST_SECURESTRING": pw(17),
        "WIN_PSHIST_NETUSE": pw(12),
        "WIN_GPP_GROUPS_CPASSWORD": gpp_cpassword(pw(16)),
        "WIN_GPP_DRIVES_CPASSWORD": gpp_cpassword(pw(14)),
        "WIN_GPP_EMPTY": gpp_cpassword(""),
        "WIN_KEEPASS_MASTER": pw(22),
    }
