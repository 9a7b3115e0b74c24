"""The quality harness of issue 4 (benchmarks/quality) keeps its own promises.

Checked here: the corpus generator (size, variety, every label at its offset and line, labels
that never contradict each other, determinism, no credential in the sources), the scoring
arithmetic on a hand-made case, the peer-report parsers, and one run of the harness on a few
corpus files. The detection figures themselves are not asserted: the rule pack changes in
parallel, so they are reported by ``benchmarks/quality/run.py`` (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
import shutil
import sys
from itertools import pairwise
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from imgscan.detect.engine import Engine

QUALITY = Path(__file__).resolve().parents[2] / "benchmarks" / "quality"
sys.path.insert(0, str(QUALITY))

import providers  # noqa: E402  (benchmarks/quality/providers.py)
import run as harness  # noqa: E402  (benchmarks/quality/run.py)
from corpus import (  # noqa: E402
    CATEGORIES,
    DECOY_KINDS,
    SECRET_KINDS,
    Corpus,
    Label,
    build_corpus,
    load_corpus,
    verify_corpus,
    write_labels,
)
from peers import (  # noqa: E402
    parse_credsweeper,
    parse_detect_secrets,
    parse_gitleaks,
    parse_kingfisher,
    parse_trivy,
)
from scoring import Finding, score  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("quality") / "corpus")


# --- the generator --------------------------------------------------------------------------


def test_corpus_is_big_and_varied(corpus: Corpus) -> None:
    kinds = {lab.kind for lab in corpus.secrets}
    assert len(corpus.secrets) >= 300
    assert len(kinds) >= 60
    assert len(corpus.decoys) >= 300
    per_category = {cat: sum(lab.category == cat for lab in corpus.secrets) for cat in CATEGORIES}
    assert all(n >= 10 for n in per_category.values()), per_category
    assert {lab.category for lab in corpus.secrets} <= set(CATEGORIES)
    # secrets sit in many files, several to a file sometimes, not each alone at offset 0
    files = {lab.path for lab in corpus.secrets}
    assert len(files) >= 100
    assert sum(lab.offset > 0 for lab in corpus.secrets) > len(corpus.secrets) * 0.8


def test_every_label_is_at_its_offset_and_line(corpus: Corpus) -> None:
    for lab in corpus.labels:
        data = (corpus.fs / lab.path).read_bytes()
        value = lab.value.encode()
        assert data[lab.offset : lab.offset + len(value)] == value, lab
        assert data.count(b"\n", 0, lab.offset) + 1 == lab.line, lab
        assert lab.end_line == lab.line + value.count(b"\n"), lab
    assert verify_corpus(corpus) == []


def test_labels_do_not_contradict(corpus: Corpus) -> None:
    by_path: dict[str, list[Label]] = {}
    for lab in corpus.labels:
        by_path.setdefault(lab.path, []).append(lab)
        table = SECRET_KINDS if lab.role == "secret" else DECOY_KINDS
        assert table[lab.kind] == lab.category
    for path, labels in by_path.items():
        labels.sort(key=lambda lab: lab.offset)
        for a, b in pairwise(labels):
            assert a.end <= b.offset, f"{path}: {a.kind} and {b.kind} overlap"
            assert a.end_line < b.line, f"{path}: {a.kind} and {b.kind} share a line"
        secret_values = {lab.value for lab in labels if lab.role == "secret"}
        assert not [lab for lab in labels if lab.role == "decoy" and lab.value in secret_values]


def test_labels_round_trip(corpus: Corpus) -> None:
    assert load_corpus(corpus.root).labels == corpus.labels


def test_same_seed_same_corpus(corpus: Corpus, tmp_path: Path) -> None:
    again = build_corpus(tmp_path / "again", corpus.seed)
    assert again.labels == corpus.labels
    assert all(
        (again.fs / rel).read_bytes() == (corpus.fs / rel).read_bytes() for rel in corpus.files()
    )


def test_sources_hold_no_generated_value(corpus: Corpus) -> None:
    sources = "".join(path.read_text() for path in QUALITY.glob("*.py"))
    values = {lab.value for lab in corpus.secrets if len(lab.value) >= 8}
    assert not [value for value in values if value in sources]


def test_key_material_is_real(corpus: Corpus) -> None:
    loaded = 0
    for lab in corpus.secrets:
        text = lab.value.encode()
        if lab.kind in ("rsa-private-key", "ec-private-key", "pkcs8-private-key"):
            serialization.load_pem_private_key(text, None)
            loaded += 1
        elif lab.kind == "openssh-private-key":
            serialization.load_ssh_private_key(text, None)
            loaded += 1
    assert loaded >= 8


def test_provider_data_is_planted(corpus: Corpus) -> None:
    """Every kind and decoy of providers.toml is in the corpus; the data holds shapes only."""
    data = providers.load(decoy_kinds=DECOY_KINDS)
    secret_kinds = {lab.kind for lab in corpus.secrets}
    assert set(data.secret_kinds) <= secret_kinds
    planted = [item for items in data.files.values() for item in items]
    decoys = [lab for lab in corpus.decoys if lab.path in data.files]
    assert len(decoys) == sum(item.role == "decoy" for item in planted) >= 50
    text = providers.DATA.read_text()
    values = {lab.value for lab in corpus.secrets if lab.path in data.files}
    assert not [value for value in values if value in text]


def test_provider_data_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "providers.toml"
    bad.write_text(
        '[secret_kinds]\nfoo-key = "saas"\n\n[[entries]]\nkind = "foo-key"\n'
        'file = "a.env"\nline = "FOO=x"\nvalue = "<hex:8>"\n'
    )
    with pytest.raises(ValueError, match="foo-key"):
        providers.load(bad)  # a line with no @@ for the value
    bad.write_text('[[decoys]]\nkind = "no-such-kind"\nfile = "a"\nline = "@@"\nvalue = "x"\n')
    with pytest.raises(ValueError, match="no-such-kind"):
        providers.load(bad)


def test_refuses_to_overwrite_other_files(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("not a corpus")
    with pytest.raises(RuntimeError, match="refusing"):
        build_corpus(tmp_path)
    assert (tmp_path / "keep.txt").exists()


# --- scoring --------------------------------------------------------------------------------


def _label(role: str, kind: str, value: str, offset: int, line: int, **kw: object) -> Label:
    category = SECRET_KINDS[kind] if role == "secret" else DECOY_KINDS[kind]
    block = bool(kw.get("block", False))
    end_line = line + value.count("\n")
    return Label(str(kw.get("path", "etc/app.conf")), role, kind, category, value, offset, line,
                 end_line, block)  # fmt: skip


PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "b3BlbnNzaC1rZXktdjEAAAAA" * 3 + "\n-----END"
HAND_MADE = [
    _label("secret", "ini-password", "found-it-123", 10, 2),
    _label("secret", "aws-secret-access-key", "missed-value-456", 40, 3),
    _label("secret", "openssh-private-key", PEM, 0, 1, block=True, path="root/.ssh/id"),
    _label("decoy", "placeholder-word", "changeme", 80, 5),
    _label("decoy", "uuid", "7c9e6679-7425-40de-944b-e07fc1f90ae7", 120, 7),
]


def test_score_value_mode_arithmetic() -> None:
    findings = [
        Finding("etc/app.conf", "r-password", 2, 2, "found-it-123", 10, "password"),
        Finding("etc/app.conf", "r-password", 5, 5, "changeme", 80, "password"),
        Finding("etc/app.conf", "r-token", 9, 9, "unlabelled-thing", 300, "token"),
        Finding("root/.ssh/id", "r-key", 2, 2, PEM.splitlines()[1], 36, "private-key"),
        Finding("etc/app.conf", "r-partial", 3, 3, "missed-val", 40, "cloud"),  # not exact
    ]
    result = score(HAND_MADE, findings, "value")
    assert (result.found, result.secrets) == (2, 3)
    assert result.recall == pytest.approx(2 / 3)
    assert [lab.value for lab in result.missed] == ["missed-value-456"]
    assert (result.decoys_reported, result.decoys) == (1, 2)
    assert result.decoy_rate == pytest.approx(0.5)
    assert (result.true_findings, result.findings) == (2, 5)
    assert result.precision == pytest.approx(2 / 5)
    assert len(result.false_findings) == 3
    assert result.false_on_decoys == 1
    assert result.false_locations == 3
    assert result.location_precision == pytest.approx(2 / (2 + 3))
    assert result.by_category["password"] == [1, 1]
    assert result.by_category["cloud"] == [0, 1]
    assert result.by_category["private-key"] == [1, 1]
    assert result.by_category["vcs"] == [0, 0]
    assert result.findings_by_rule_category["password"] == [1, 2]
    assert result.decoys_by_group == {"placeholder": [1, 1], "uuid": [0, 1]}


def test_score_line_mode_and_digests() -> None:
    import hashlib

    digest = hashlib.sha1(b"missed-value-456").hexdigest()
    findings = [
        Finding("etc/app.conf", "peer-a", 2, 2),  # on the first secret's line
        Finding("etc/app.conf", "peer-b", 11, 11, digest=digest),  # wrong line, right digest
        Finding("root/.ssh/id", "peer-c", 1, 3),  # covers the key block
        Finding("etc/app.conf", "peer-d", 7, 7),  # on the UUID decoy's line
        Finding("other/file", "peer-e", 2, 2),  # another file: matches nothing
    ]
    result = score(HAND_MADE, findings, "line")
    assert result.found == 3
    assert result.decoys_reported == 1
    assert result.reported[0][0].kind == "uuid"
    assert result.true_findings == 3
    assert len(result.false_findings) == 2
    # the same findings scored by value: no values, so only the digest counts
    assert score(HAND_MADE, findings, "value").found == 1


def test_block_containment_needs_32_characters() -> None:
    key = _label("secret", "openssh-private-key", PEM, 0, 1, block=True, path="k")
    short = Finding("k", "r", 1, 1, "-----BEGIN", 0)
    long = Finding("k", "r", 1, 1, PEM + "\n-----", 0)
    assert score([key], [short]).found == 0
    assert score([key], [long]).found == 1
    plain = _label("secret", "ini-password", "abcdefghijklmnopqrstuvwxyz0123456789", 0, 1)
    assert score([plain], [Finding("etc/app.conf", "r", 1, 1, plain.value[:-1], 0)]).found == 0


# --- peer reports ---------------------------------------------------------------------------


def test_peer_parsers(tmp_path: Path) -> None:
    fs = tmp_path / "fs"
    gitleaks = [
        {"File": f"{fs}/etc/a", "StartLine": 3, "EndLine": 4, "Secret": "s3", "RuleID": "x"}
    ]
    trivy = {
        "Results": [
            {"Target": "etc/b", "Class": "secret", "Secrets": [{"RuleID": "y", "StartLine": 2}]},
            {"Target": "fs (none)", "Class": "os-pkgs", "Packages": []},
        ]
    }
    kingfisher = {
        "findings": [
            {"rule": {"id": "kf.z"}, "finding": {"path": f"{fs}/c", "line": 5, "snippet": "v"}}
        ]
    }
    detect = {"results": {"./d/e": [{"type": "T", "line_number": 7, "hashed_secret": "ab"}]}}
    creds = [
        {"rule": "UUID", "severity": "info", "line_data_list": [{"path": "x", "line_num": 1}]},
        {
            "rule": "AWS Multi",
            "severity": "high",
            "line_data_list": [
                {"path": f"{fs}/f", "line_num": 2, "value": "AKIA"},
                {"path": f"{fs}/f", "line_num": 3, "value": "secret"},
            ],
        },
    ]
    assert parse_gitleaks(gitleaks, fs) == [Finding("etc/a", "x", 3, 4, "s3")]
    assert parse_trivy(trivy, fs) == [Finding("etc/b", "y", 2, 2)]
    assert parse_kingfisher(kingfisher, fs) == [Finding("c", "kf.z", 5, 5, "v")]
    assert parse_detect_secrets(detect, fs) == [Finding("d/e", "T", 7, 7, digest="ab")]
    assert parse_credsweeper(creds, fs) == [
        Finding("f", "AWS Multi", 2, 2, "AKIA"),
        Finding("f", "AWS Multi", 3, 3, "secret"),
    ]


# --- the harness end to end, on a few files ---------------------------------------------------


def test_harness_runs_on_a_few_files(
    corpus: Corpus, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = {
        "root/.aws/credentials",
        "etc/shadow",
        "srv/shop/.env",
        "srv/shop/.env.example",
        "srv/ml/.env",
    }
    mini = Corpus(
        tmp_path / "mini", corpus.seed, tuple(lab for lab in corpus.labels if lab.path in keep)
    )
    for rel in keep:
        (mini.fs / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(corpus.fs / rel, mini.fs / rel)
    write_labels(mini)
    out = tmp_path / "figures.json"
    assert harness.main(["--corpus", str(mini.root), "--no-peers", "--json", str(out)], engine) == 0
    figures = json.loads(out.read_text())
    imgscan = figures["imgscan"]["value"]
    assert imgscan["secrets"] == len(mini.secrets)
    assert imgscan["decoys"] == len(mini.decoys)
    assert 0 <= imgscan["recall"] <= 1 and 0 <= imgscan["precision"] <= 1
    assert set(imgscan["by_category"]) == set(CATEGORIES)
    # the per-kind table: every kind of the files, with its category and counts
    kinds = {lab.kind: lab.category for lab in mini.secrets}
    assert {k: v["category"] for k, v in imgscan["by_kind"].items()} == kinds
    assert sum(v["total"] for v in imgscan["by_kind"].values()) == len(mini.secrets)
    assert all(0 <= v["found"] <= v["total"] for v in imgscan["by_kind"].values())
    assert figures["peers"] == {}
    text = capsys.readouterr().out
    assert "recall" in text and "peers not run" in text
    assert "secrets by kind" in text and all(kind in text for kind in kinds)
    print(text)  # the figures, for whoever runs pytest -s
