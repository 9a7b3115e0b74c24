"""Comparing a scan with what testdata/build.py says it planted."""

from __future__ import annotations

from typing import Any

from imgscan.model import ScanResult

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
    """Planted secrets the scan did not report at their guest path (needs --show-secrets)."""
    missing = []
    for item in image["planted"]:
        hits = [f for f in result.findings if f.path == item["path"]]
        if not any(
            f.secret is not None and _same(item["kind"], item["secret"], f.secret) for f in hits
        ):
            missing.append(f"{item['path']} ({item['kind']})")
    return missing


def reported_decoys(result: ScanResult, image: dict[str, Any]) -> list[str]:
    """Decoys the scan reported: a finding at the decoy's path whose secret is part of it."""
    reported = []
    for item in image["decoys"]:
        for f in result.findings:
            if f.path == item["path"] and f.secret and f.secret in item["value"]:
                reported.append(f"{item['path']} ({item['kind']}): {f.rule}")
    return reported


def finding_keys(result: ScanResult) -> list[tuple[str, int, str, str]]:
    return [(f.path, f.line, f.rule, f.fingerprint) for f in result.findings]
