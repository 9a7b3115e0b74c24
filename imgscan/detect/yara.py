"""YARA rules for binary and structural formats (key stores, password databases).

YARA sees the first chunk of every file (1 MiB by default): these rules describe file formats
by their header and structure, and conditions such as `$magic at 0` only mean something at the
real start of the file. Each worker compiles the sources itself (compiled rules do not pickle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yara

from imgscan.detect.rules import RuleMeta, YaraSource

_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class YaraHit:
    meta: RuleMeta
    start: int
    secret: bytes


class YaraMatcher:
    def __init__(self, sources: tuple[YaraSource, ...]) -> None:
        self._metas = {meta.id: meta for source in sources for meta in source.rules}
        self._rules: Any = (
            yara.compile(sources={str(i): s.text for i, s in enumerate(sources)})
            if sources
            else None
        )

    def find(self, data: bytes) -> list[YaraHit]:
        """Matches of every YARA rule in `data` (the start of one file)."""
        if self._rules is None:
            return []
        hits = []
        for match in self._rules.match(data=data, timeout=_TIMEOUT_SECONDS):
            meta = self._metas.get(str(match.meta.get("id", match.rule)))
            if meta is None:
                continue
            # A rule marks the bytes that are the secret as $secret; otherwise its first string.
            chosen = [s for s in match.strings if s.identifier == "$secret"] or match.strings[:1]
            instances = [instance for string in chosen for instance in string.instances]
            if instances:
                first = min(instances, key=lambda i: i.offset)
                hits.append(YaraHit(meta, first.offset, bytes(first.matched_data)))
            else:  # a condition-only rule: the file itself is the finding
                hits.append(YaraHit(meta, 0, data[:64]))
        return hits
