"""The rule pack: loading and checking `patterns/*.toml`, `yara/*.yar`, `files.toml` and
`registry.toml` of a pack directory (the built-in one is `imgscan/signatures/`).

Loading is strict: a malformed entry raises RulePackError naming the file and the rule id, so a
broken pack never scans silently with fewer rules. The schema is in imgscan/signatures/README.md.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex

from imgscan.detect.decoders import DECODERS, PRESENCE_DECODERS
from imgscan.detect.validate import VALIDATORS
from imgscan.errors import RulePackError
from imgscan.model import Severity

# In the order reports list them.
CATEGORIES = (
    "private-key",
    "cloud",
    "vcs",
    "saas",
    "database",
    "password",
    "password-hash",
    "token",
    "container",
    "kubernetes",
    "identity",  # machine identity: what lets a copy pass for this host (machine-id, ...)
)
DEFAULT_WINDOW = 512
MAX_WINDOW = 65536
_ID = re.compile(r"^[a-z0-9][a-z0-9.-]{1,80}$")
# A registry rule's context: a Finding.context key, then a sibling value's name or @key/@parent.
_CONTEXT_KEY = re.compile(r"^[a-z][a-z_]{0,30}$")
_YARA_META = re.compile(
    r"^\s*(id|name|category|severity|preview_prefix)\s*=\s*(\"[^\"]*\"|\d+)", re.M
)


@dataclass(frozen=True)
class Example:
    """A rule example: text to scan, the guest path it sits at, the secret it must yield."""

    text: str
    path: str | None = None
    secret: str | None = None


# Value encodings a rule may declare (RuleMeta.encoding); "" is none.
ENCODINGS = ("", "base64-user-password")


@dataclass(frozen=True)
class RuleMeta:
    """What a finding needs to know about the rule that produced it."""

    id: str
    name: str
    category: str
    severity: Severity
    preview_prefix: int
    # The value names a credential and is no secret itself (an AWS access key ID, which AWS
    # documents as an identifier): the preview shows it whole.
    identifier: bool = False
    # The rule of the identifier this secret belongs with (aws-secret-access-key pairs with
    # aws-access-key-id): the nearest such finding in the same file names its principal.
    pairs_with: str = ""
    # How the value is encoded, when it is (docker's `auth`: base64 of user:password): the
    # user it names is read from it and reported; the password never is.
    encoding: str = ""


@dataclass(frozen=True)
class PatternRule:
    meta: RuleMeta
    keywords: tuple[str, ...]
    pattern: str
    locate: str
    window: int
    validators: tuple[str, ...]
    paths: tuple[str, ...]
    comment: str
    examples: tuple[Example, ...]
    negative_examples: tuple[Example, ...]
    source: str

    @property
    def id(self) -> str:
        return self.meta.id


@dataclass(frozen=True)
class YaraExample:
    rule: str
    data: bytes | None
    text: str | None
    expect: bool


@dataclass(frozen=True)
class YaraSource:
    """One .yar file: its text (compiled by each worker), rule metadata and examples."""

    path: str
    text: str
    rules: tuple[RuleMeta, ...]
    examples: tuple[YaraExample, ...]
    descriptions: tuple[tuple[str, str], ...] = ()  # (rule id, its meta description)


@dataclass(frozen=True)
class FileRule:
    """A credential store known by its path: reported when no content rule fired on the file
    (a binary or odd-format store, an encrypted keyring). Examples are guest paths."""

    meta: RuleMeta
    paths: tuple[str, ...]
    min_size: int
    comment: str
    examples: tuple[str, ...]
    negative_examples: tuple[str, ...]
    source: str

    @property
    def id(self) -> str:
        return self.meta.id


@dataclass(frozen=True)
class RegistryExample:
    """A registry rule example: a key (path below the hive root, "/" separators), the value
    the rule reads as the decoder yields it (`data`: the plaintext, or for `sam-v` the account
    name; the tests encode it as the image would store it), the key's other values, and what
    the finding must say (`secret`, `context`). Templates as in pattern examples."""

    key: str
    data: str
    siblings: tuple[tuple[str, str], ...] = ()
    secret: str | None = None
    context: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RegistryRule:
    """A value in a registry hive: every value named `value` (case-insensitive) in a key whose
    path below the hive root matches one of `keys` (per-segment globs, case-insensitive, as
    registry paths are), read by `decoder` (imgscan/detect/decoders.py). `context` names what to
    report beside it: (Finding.context key, sibling value name, or @key / @parent for the
    key's own name or its parent's). `validators` drop decoded placeholders."""

    meta: RuleMeta
    keys: tuple[str, ...]
    value: str
    decoder: str
    context: tuple[tuple[str, str], ...]
    validators: tuple[str, ...]
    comment: str
    examples: tuple[RegistryExample, ...]
    negative_examples: tuple[RegistryExample, ...]
    source: str

    @property
    def id(self) -> str:
        return self.meta.id


@dataclass(frozen=True)
class RulePack:
    patterns: tuple[PatternRule, ...]
    yara: tuple[YaraSource, ...]
    version: str  # digest of every rule file: identifies the pack in reports and caches
    files: tuple[FileRule, ...] = ()
    registry: tuple[RegistryRule, ...] = ()
    # SHA-256 digests of values vendors publish as examples or test credentials (published.toml):
    # a match whose secret is one of them is not reported, whatever rule found it.
    published: frozenset[bytes] = frozenset()

    def meta(self, rule_id: str) -> RuleMeta:
        rules: list[PatternRule | FileRule | RegistryRule] = [
            *self.patterns,
            *self.files,
            *self.registry,
        ]
        for rule in rules:
            if rule.id == rule_id:
                return rule.meta
        for source in self.yara:
            for meta in source.rules:
                if meta.id == rule_id:
                    return meta
        raise KeyError(rule_id)

    def help(self, rule_id: str) -> str:
        """What a rule looks for and why (its comment or YARA description), for reports."""
        rules: list[PatternRule | FileRule | RegistryRule] = [
            *self.patterns,
            *self.files,
            *self.registry,
        ]
        for rule in rules:
            if rule.id == rule_id:
                return rule.comment
        for source in self.yara:
            for described, text in source.descriptions:
                if described == rule_id:
                    return text
        return self.meta(rule_id).name


def rule_ids(pack: RulePack) -> frozenset[str]:
    """Every rule id of `pack`: pattern, file, registry and YARA rules."""
    known = {r.id for r in pack.patterns} | {r.id for r in pack.files}
    known |= {r.id for r in pack.registry}
    known |= {meta.id for source in pack.yara for meta in source.rules}
    return frozenset(known)


def load_pack(directory: Path) -> RulePack:
    """Load and check every rule under `directory` (patterns/*.toml, yara/*.yar, files.toml,
    registry.toml)."""
    if not directory.is_dir():
        raise RulePackError(f"{directory}: rule pack directory not found")
    patterns: list[PatternRule] = []
    seen: dict[str, str] = {}
    for file in sorted((directory / "patterns").glob("*.toml")):
        for entry in _tables(file, "rules"):
            rule = _pattern_rule(file, entry)
            _claim(seen, file, rule.id)
            patterns.append(rule)
    yara_sources = []
    for file in sorted((directory / "yara").glob("*.yar")):
        raw = file.read_bytes()
        examples_file = file.with_suffix(".examples.toml")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RulePackError(f"{file}: not UTF-8: {exc}") from None
        source = _yara_source(file, text, examples_file)
        for meta in source.rules:
            _claim(seen, file, meta.id)
        yara_sources.append(source)
    files: list[FileRule] = []
    files_toml = directory / "files.toml"
    if files_toml.exists():
        for entry in _tables(files_toml, "files"):
            file_rule = _file_rule(files_toml, entry)
            _claim(seen, files_toml, file_rule.id)
            files.append(file_rule)
    registry: list[RegistryRule] = []
    registry_toml = directory / "registry.toml"
    if registry_toml.exists():
        for entry in _tables(registry_toml, "registry"):
            registry_rule = _registry_rule(registry_toml, entry)
            _claim(seen, registry_toml, registry_rule.id)
            registry.append(registry_rule)
    if not patterns and not yara_sources and not files and not registry:
        raise RulePackError(f"{directory}: no rules found")
    identifiers = {rule.id for rule in patterns if rule.meta.identifier}
    for rule in patterns:
        if rule.meta.pairs_with and rule.meta.pairs_with not in identifiers:
            raise _fail(
                directory, rule.id, f"pairs_with {rule.meta.pairs_with!r} names no identifier rule"
            )
    published_toml = directory / "published.toml"
    published = frozenset(
        _published_digest(published_toml, index, entry)
        for index, entry in enumerate(
            _tables(published_toml, "published") if published_toml.exists() else [], start=1
        )
    )
    return RulePack(
        tuple(patterns),
        tuple(yara_sources),
        pack_digest(directory),
        tuple(files),
        tuple(registry),
        published,
    )


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _published_digest(file: Path, index: int, entry: object) -> bytes:
    """The SHA-256 of one `[[published]]` value; the entry must name the value and its source."""
    if not isinstance(entry, dict):
        raise RulePackError(f"{file}: entry {index}: every [[published]] entry must be a table")
    unknown = sorted(set(entry) - {"sha256", "name", "source"})
    if unknown:
        raise RulePackError(f"{file}: entry {index}: unknown keys {unknown}")
    digest = entry.get("sha256")
    if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
        raise RulePackError(f"{file}: entry {index}: sha256 must be 64 lowercase hex digits")
    for key in ("name", "source"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise RulePackError(f"{file}: entry {index}: {key} is required")
    return bytes.fromhex(digest)


def load_packs(directory: Path, extra: Sequence[Path] = ()) -> RulePack:
    """The pack in `directory` extended by the rules in each of the `extra` directories (laid
    out as a pack: patterns/, yara/, files.toml, registry.toml, published.toml), each loaded
    and checked as a pack is. A rule id already in the pack is an error (an extra directory
    adds rules; `--signatures` replaces the pack). The version covers every directory."""
    pack = load_pack(directory)
    for folder in extra:
        more = load_pack(folder)
        clash = sorted(rule_ids(pack) & rule_ids(more))
        if clash:
            raise RulePackError(
                f"{folder}: rule id {clash[0]!r} is already in the rule pack (an added rule "
                "needs an id of its own)"
            )
        version = hashlib.sha256(f"{pack.version}+{more.version}".encode()).hexdigest()[:16]
        pack = RulePack(
            pack.patterns + more.patterns,
            pack.yara + more.yara,
            version,
            pack.files + more.files,
            pack.registry + more.registry,
            pack.published | more.published,
        )
    return pack


def pack_digest(directory: Path) -> str:
    """16 hex digits of sha256 over every file `load_pack` reads, in the order it reads them:
    the pack's version, without parsing or compiling anything (`imgscan --version` uses it)."""
    digest = hashlib.sha256()
    for file in sorted((directory / "patterns").glob("*.toml")):
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    for file in sorted((directory / "yara").glob("*.yar")):
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
        examples_file = file.with_suffix(".examples.toml")
        if examples_file.exists():
            digest.update(examples_file.read_bytes())
    for file in (
        directory / "files.toml",
        directory / "registry.toml",
        directory / "published.toml",
    ):
        if file.exists():
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def _tables(file: Path, key: str) -> list[object]:
    """The `[[key]]` tables of a TOML rule file."""
    raw = file.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: arrays or tables nested a thousand deep, which tomllib gives up on
        raise RulePackError(f"{file}: not valid TOML: {exc}") from None
    entries = data.get(key)
    if not isinstance(entries, list):
        raise RulePackError(f"{file}: expected an array of [[{key}]] tables")
    return entries


def _claim(seen: dict[str, str], file: Path, rule_id: str) -> None:
    """Record that `file` defines `rule_id`; ids are unique across the whole pack."""
    if rule_id in seen:
        raise RulePackError(f"{file}: rule {rule_id}: id already used in {seen[rule_id]}")
    seen[rule_id] = str(file)


def _file_rule(file: Path, entry: object) -> FileRule:
    if not isinstance(entry, dict):
        raise RulePackError(f"{file}: every [[files]] entry must be a table")
    meta = _meta(file, entry)
    paths = entry.get("paths")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise _fail(file, meta.id, "paths must be a non-empty list of globs")
    min_size = entry.get("min_size", 1)
    if not isinstance(min_size, int) or min_size < 0:
        raise _fail(file, meta.id, "min_size must be a non-negative integer")
    comment = entry.get("comment")
    if not isinstance(comment, str) or not comment.strip():
        raise _fail(file, meta.id, "missing comment saying what the file holds")
    lists = []
    for key in ("examples", "negative_examples"):
        values = entry.get(key)
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) for v in values)
        ):
            raise _fail(file, meta.id, f"{key} must be a non-empty list of guest paths")
        lists.append(tuple(values))
    return FileRule(meta, tuple(paths), min_size, comment, lists[0], lists[1], str(file))


def _string_pairs(value: object) -> tuple[tuple[str, str], ...] | None:
    """A TOML table of strings as sorted pairs, or None if it is not one."""
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return None
    return tuple(sorted(value.items()))


def _registry_examples(
    file: Path, rule_id: str, values: object, key: str
) -> tuple[RegistryExample, ...]:
    if not isinstance(values, list) or not values:
        raise _fail(file, rule_id, f"needs at least one entry in {key}")
    result = []
    for value in values:
        if not isinstance(value, dict) or not isinstance(value.get("key"), str):
            raise _fail(file, rule_id, f"{key}: each entry is a table with key and data")
        data, secret = value.get("data"), value.get("secret")
        siblings = _string_pairs(value.get("siblings", {}))
        context = _string_pairs(value.get("context", {}))
        if not isinstance(data, str) or siblings is None or context is None:
            raise _fail(
                file, rule_id, f"{key}: data must be a string, siblings and context string tables"
            )
        if secret is not None and not isinstance(secret, str):
            raise _fail(file, rule_id, f"{key}: secret must be a string")
        result.append(RegistryExample(value["key"], data, siblings, secret, context))
    return tuple(result)


def _registry_rule(file: Path, entry: object) -> RegistryRule:
    if not isinstance(entry, dict):
        raise RulePackError(f"{file}: every [[registry]] entry must be a table")
    meta = _meta(file, entry)
    keys = entry.get("keys")
    if (
        not isinstance(keys, list)
        or not keys
        or not all(isinstance(k, str) and k and not k.startswith("/") for k in keys)
        or any("**" in k or "\\" in k for k in keys)
    ):
        raise _fail(
            file,
            meta.id,
            "keys must be a non-empty list of key paths below the hive root, with / between "
            "keys and * or ? within one key name (no **)",
        )
    value = entry.get("value")
    if not isinstance(value, str):
        raise _fail(file, meta.id, 'value must be the value name ("" for the default value)')
    decoder = entry.get("decoder", "plain")
    if decoder not in DECODERS:
        raise _fail(file, meta.id, f"decoder must be one of {', '.join(sorted(DECODERS))}")
    context = _string_pairs(entry.get("context", {}))
    if context is None or not all(_CONTEXT_KEY.match(name) and v for name, v in context):
        raise _fail(file, meta.id, "context must map lowercase names to value names")
    default = [] if decoder in PRESENCE_DECODERS else ["placeholder"]
    validators = entry.get("validators", default)
    if not isinstance(validators, list) or not all(v in VALIDATORS for v in validators):
        known = ", ".join(sorted(VALIDATORS))
        raise _fail(file, meta.id, f"validators must name known validators ({known})")
    comment = entry.get("comment")
    if not isinstance(comment, str) or not comment.strip():
        raise _fail(file, meta.id, "missing comment saying what the value holds")
    return RegistryRule(
        meta=meta,
        keys=tuple(keys),
        value=value,
        decoder=decoder,
        context=context,
        validators=tuple(validators),
        comment=comment,
        examples=_registry_examples(file, meta.id, entry.get("examples"), "examples"),
        negative_examples=_registry_examples(
            file, meta.id, entry.get("negative_examples"), "negative_examples"
        ),
        source=str(file),
    )


def _fail(file: Path, rule_id: object, message: str) -> RulePackError:
    return RulePackError(f"{file}: rule {rule_id}: {message}")


def _meta(file: Path, entry: dict[str, Any]) -> RuleMeta:
    rule_id = entry.get("id")
    if not isinstance(rule_id, str) or not _ID.match(rule_id):
        raise _fail(file, rule_id, "missing or malformed id (lowercase letters, digits, - and .)")
    for key in ("name", "category", "severity"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise _fail(file, rule_id, f"missing {key}")
    if entry["category"] not in CATEGORIES:
        raise _fail(file, rule_id, f"unknown category {entry['category']!r}")
    try:
        severity = Severity(entry["severity"])
    except ValueError:
        raise _fail(file, rule_id, f"unknown severity {entry['severity']!r}") from None
    prefix = entry.get("preview_prefix", 0)
    if not isinstance(prefix, int) or not 0 <= prefix <= 64:
        raise _fail(file, rule_id, "preview_prefix must be an integer from 0 to 64")
    identifier = entry.get("identifier", False)
    if not isinstance(identifier, bool):
        raise _fail(file, rule_id, "identifier must be true or false")
    pairs_with = entry.get("pairs_with", "")
    if not isinstance(pairs_with, str) or (pairs_with and not _ID.match(pairs_with)):
        raise _fail(file, rule_id, "pairs_with must be a rule id")
    encoding = entry.get("encoding", "")
    if encoding not in ENCODINGS:
        raise _fail(file, rule_id, f"encoding must be one of {', '.join(map(repr, ENCODINGS))}")
    return RuleMeta(
        rule_id,
        entry["name"],
        entry["category"],
        severity,
        prefix,
        identifier,
        pairs_with,
        encoding,
    )


def _examples(file: Path, rule_id: str, values: object, key: str) -> tuple[Example, ...]:
    if not isinstance(values, list) or not values:
        raise _fail(file, rule_id, f"needs at least one entry in {key}")
    result = []
    for value in values:
        if isinstance(value, str):
            result.append(Example(value))
        elif isinstance(value, dict) and isinstance(value.get("text"), str):
            path, secret = value.get("path"), value.get("secret")
            if path is not None and not isinstance(path, str):
                raise _fail(file, rule_id, f"{key}: path must be a string")
            if secret is not None and not isinstance(secret, str):
                raise _fail(file, rule_id, f"{key}: secret must be a string")
            result.append(Example(value["text"], path, secret))
        else:
            raise _fail(file, rule_id, f"{key}: each entry is a string or a table with text")
    return tuple(result)


def _pattern_rule(file: Path, entry: object) -> PatternRule:
    if not isinstance(entry, dict):
        raise RulePackError(f"{file}: every [[rules]] entry must be a table")
    meta = _meta(file, entry)
    rule_id = meta.id
    pattern = entry.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise _fail(file, rule_id, "missing pattern")
    try:
        compiled = regex.compile(pattern.encode())
    except regex.error as exc:
        raise _fail(file, rule_id, f"pattern does not compile: {exc}") from None
    if "secret" not in compiled.groupindex:
        raise _fail(file, rule_id, "pattern needs a named group (?P<secret>...)")
    locate = entry.get("locate", pattern)
    if not isinstance(locate, str) or not locate:
        raise _fail(file, rule_id, "locate must be a non-empty string")
    keywords = entry.get("keywords")
    if (
        not isinstance(keywords, list)
        or not keywords
        or not all(isinstance(k, str) and k and k == k.lower() for k in keywords)
    ):
        raise _fail(file, rule_id, "keywords must be a non-empty list of lowercase strings")
    window = entry.get("window", DEFAULT_WINDOW)
    if not isinstance(window, int) or not 16 <= window <= MAX_WINDOW:
        raise _fail(file, rule_id, f"window must be an integer from 16 to {MAX_WINDOW}")
    validators = entry.get("validators", [])
    if not isinstance(validators, list) or not all(v in VALIDATORS for v in validators):
        known = ", ".join(sorted(VALIDATORS))
        raise _fail(file, rule_id, f"validators must name known validators ({known})")
    paths = entry.get("paths", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise _fail(file, rule_id, "paths must be a list of globs")
    comment = entry.get("comment")
    if not isinstance(comment, str) or not comment.strip():
        raise _fail(file, rule_id, "missing comment saying why the pattern has its shape")
    return PatternRule(
        meta=meta,
        keywords=tuple(keywords),
        pattern=pattern,
        locate=locate,
        window=window,
        validators=tuple(validators),
        paths=tuple(paths),
        comment=comment,
        examples=_examples(file, rule_id, entry.get("examples"), "examples"),
        negative_examples=_examples(
            file, rule_id, entry.get("negative_examples"), "negative_examples"
        ),
        source=str(file),
    )


def _yara_source(file: Path, text: str, examples_file: Path) -> YaraSource:
    try:
        import yara
    except ImportError as exc:  # pragma: no cover - yara-python is a hard dependency
        raise RulePackError(f"{file}: yara-python is not installed") from exc
    try:
        compiled = yara.compile(source=text)
    except (yara.Error, ValueError) as exc:  # ValueError: a NUL character in the source
        raise RulePackError(f"{file}: does not compile: {exc}") from None
    metas = []
    descriptions = []
    for rule in compiled:
        entry = dict(rule.meta)
        entry.setdefault("id", rule.identifier)
        meta = _meta(file, entry)
        metas.append(meta)
        if isinstance(entry.get("description"), str):
            descriptions.append((meta.id, entry["description"]))
    examples: list[YaraExample] = []
    if examples_file.exists():
        try:
            data = tomllib.loads(examples_file.read_text("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
            # RecursionError: arrays or tables nested a thousand deep, which tomllib gives up on
            raise RulePackError(f"{examples_file}: not valid TOML: {exc}") from None
        items = data.get("examples", [])
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise RulePackError(f"{examples_file}: expected an array of [[examples]] tables")
        for item in items:
            rule_id = item.get("rule")
            if not isinstance(rule_id, str) or rule_id not in {m.id for m in metas}:
                raise RulePackError(f"{examples_file}: example names unknown rule {rule_id!r}")
            hex_data = item.get("hex")
            try:
                raw_data = bytes.fromhex(hex_data.replace(" ", "")) if hex_data else None
            except (AttributeError, ValueError):  # not a string, or not pairs of hex digits
                raise RulePackError(
                    f"{examples_file}: example of {rule_id}: hex must be a string of hex digits"
                ) from None
            examples.append(
                YaraExample(
                    rule=rule_id,
                    data=raw_data,
                    text=item.get("text"),
                    expect=bool(item.get("expect", True)),
                )
            )
    return YaraSource(str(file), text, tuple(metas), tuple(examples), tuple(descriptions))


_WINDOWS_PATH = re.compile(r"^[A-Za-z]:\\")


def glob_form(path: str) -> tuple[str, bool]:
    """A guest path as globs see it, and whether to match regardless of case: Windows paths
    (C:\\Users\\alice\\web.config) are matched as C:/Users/alice/web.config, ignoring case."""
    if _WINDOWS_PATH.match(path):
        return path.replace("\\", "/"), True
    return path, False


def path_glob_regex(glob: str) -> str:
    """A regex for a guest-path glob: `**` crosses directories, `*` and `?` do not."""
    out = []
    i = 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    pattern = "".join(out)
    # A relative glob matches at any depth, as in .gitignore.
    return ("^" if glob.startswith("/") else "^(?:.*/)?") + pattern + "$"
