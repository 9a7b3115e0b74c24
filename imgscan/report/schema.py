"""The published JSON Schemas of imgscan's machine-readable outputs (package data in
imgscan/schemas/): `imgscan.report/v1` (`scan -f json`) and `imgscan.batch-summary/v1`
(`batch --summary-format json`, `results summary --format json`). `imgscan schema NAME` prints
one; programs validate what they read against it."""

from __future__ import annotations

import importlib.resources
import json
from typing import Any

# Schema name (the `schema` field of a document, and `imgscan schema`'s argument) -> file.
SCHEMAS = {
    "report": ("imgscan.report/v1", "report-v1.json"),
    "summary": ("imgscan.batch-summary/v1", "batch-summary-v1.json"),
}


def schema_text(name: str) -> str:
    """The JSON Schema document `name` (a key of SCHEMAS), as shipped."""
    _, file = SCHEMAS[name]
    return (importlib.resources.files("imgscan") / "schemas" / file).read_text("utf-8")


def validate(document: dict[str, Any]) -> None:
    """Raise jsonschema's ValidationError when `document` (a report or a batch summary, by its
    `schema` field) does not follow its published schema; ValueError for an unknown schema."""
    import jsonschema

    for name, (tag, _) in SCHEMAS.items():
        if document.get("schema") == tag:
            jsonschema.validate(document, json.loads(schema_text(name)))
            return
    raise ValueError(f"unknown schema {document.get('schema')!r}")
