"""Comparing a scan with what testdata/build.py says it planted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imgscan.detect.rules import load_pack
from imgscan.image import ReaderKind
from imgscan.model import ScanResult
from imgscan.options import ScanOptions, default_signatures_dir
from imgscan.scan.scanner import scan_image

# Every test image the builder makes (demo-qcow2 is a copy of server-qcow2).
# Rules whose values are identifiers, not secrets (`identifier = true`: an AWS access key ID):
# reports show them whole, so the checks that no value leaks leave them out.
IDENTIFIER_RULES = frozenset(
    rule.id for rule in load_pack(default_signatures_dir()).patterns if rule.meta.identifier
)

IMAGES = [
    "server-qcow2",
    "server-vmdk",
    "server-stream-vmdk",
    "server-raw",
    "mbr-qcow2",
    "bare-raw",
]


def scan(images: Path, image: dict[str, Any], reader: ReaderKind, **options: Any) -> ScanResult:
    """Scan one manifest image with raw secrets kept, so tests can compare values."""
    return scan_image(
        ScanOptions(image=images / image["file"], reader=reader, show_secrets=True, **options)
    )


# Kinds whose secret is a multi-line block: a rule may capture the block with or without its
# armour lines, so containment either way counts as found.
_BLOCK_KINDS = ("private-key", "gcp-service-account", "kubeconfig-client-key")


def _same(kind: str, planted: str, found: str) -> bool:
    if planted == found:
        return True
    if kind.endswith(_BLOCK_KINDS) and min(len(planted), len(found)) >= 32:
        return planted in found or found in planted
    return False


def missing_planted(result: ScanResult, image: dict[str, Any]) -> list[str]:
    """Planted secrets the scan did not report at their guest path (needs --show-secrets).

    A registry value's path is `<hive>!/<key>:<value>`. A plant with a null secret is
    reported for its presence (an encrypted store): found when its rule (`kind`) reports it
    at its path; a registry one (SAM account, LSA secret) without a value."""
    missing = []
    for item in image["planted"]:
        hits = [f for f in result.findings if f.path == item["path"]]
        if item["secret"] is None:
            valueless = "hive" in item
            if not any(
                f.rule == item["kind"] and (f.secret is None or not valueless) for f in hits
            ):
                missing.append(f"{item['path']} ({item['kind']})")
            continue
        if not any(
            f.secret is not None and _same(item["kind"], item["secret"], f.secret) for f in hits
        ):
            missing.append(f"{item['path']} ({item['kind']})")
    return missing


def reported_decoys(result: ScanResult, image: dict[str, Any]) -> list[str]:
    """Decoys the scan reported: a finding at the decoy's path whose secret is part of it.
    A registry decoy (with a `hive`) is one value: any finding at its path reports it."""
    reported = []
    for item in image["decoys"]:
        for f in result.findings:
            if f.path != item["path"]:
                continue
            if "hive" in item or (f.secret and f.secret in item["value"]):
                reported.append(f"{item['path']} ({item['kind']}): {f.rule}")
    return reported


def finding_keys(result: ScanResult) -> list[tuple[str, int, str, str]]:
    return [(f.path, f.line, f.rule, f.fingerprint) for f in result.findings]


def volume_mismatches(result: ScanResult, image: dict[str, Any]) -> list[str]:
    """Manifest volumes the report does not list as expected. An unlocked LUKS volume's content
    is named after its container (/dev/mapper/luks-sda2) where the manifest uses the guest's
    crypttab name; extra report volumes must be containers whose content is listed."""
    by_device = {v.device: v for v in result.volumes}
    problems = []
    for want in image["volumes"]:
        device = want["device"]
        if want.get("parent"):
            device = "/dev/mapper/luks-" + want["parent"].rsplit("/", 1)[-1]
        got = by_device.pop(device, None)
        actual = None if got is None else (got.fstype, got.mountpoint, got.status.value)
        expected = (want["fstype"], want["mountpoint"], want["status"])
        if actual != expected:
            problems.append(f"{device}: {actual} != {expected}")
    problems += [f"{v.device}: unexpected" for v in by_device.values() if not v.covered]
    return problems
